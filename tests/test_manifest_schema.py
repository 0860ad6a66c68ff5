"""docs/manifest.schema.json is the bundle contract for readers in other languages: it must say what the Python
reader accepts and refuses (the shared corpus in manifest_cases.py), and mirror the reader's limits and the
registry's values, so that neither can change without the other."""

from __future__ import annotations

import json

import pytest
from conftest import SCHEMA_PATH, manifest_validator
from manifest_cases import CASES, changed

from resnet_deploy.runtime import BundleError, FileEntry, Manifest, Preprocess
from resnet_deploy.runtime import manifest as M
from resnet_deploy.runtime.preprocess import MAX_SIDE

END = "(?![\\s\\S])"  # end of the string in both Python's and ECMA-262's regular expressions

validator = manifest_validator()
pytestmark = pytest.mark.skipif(validator is None, reason="jsonschema is not installed (the dev extra installs it)")


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def base_manifest() -> dict:
    pre = Preprocess(input_size=(32, 32), channels=3, resize=36, crop=32, mean=(0.49, 0.48, 0.45),
                     std=(0.25, 0.24, 0.26))
    files = [FileEntry("model.onnx", "ab" * 32, 1234, "fp32", blake3="cd" * 32, info={"opset": 18}),
             FileEntry("export.log", "ef" * 32, 99, "none", "text")]
    return Manifest(arch="cifar_resnet20", classes=["ant", "bee", "cat"], preprocess=pre, files=files,
                    versions={"torch": "2.14.1"}, source={"kind": "checkpoint", "path": "ck.pt", "sha256": None}
                    ).to_dict()


def test_the_schema_is_valid_json_schema(schema):
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(("name", "change", "accepted", "in_schema"), CASES, ids=[c[0] for c in CASES])
def test_schema_and_python_reader_agree(name, change, accepted, in_schema):
    d = changed(base_manifest(), change)
    try:
        Manifest.from_dict(json.loads(json.dumps(d)))
        python_accepts = True
    except BundleError:
        python_accepts = False
    assert python_accepts == accepted, f"{name}: the Python reader {'accepts' if python_accepts else 'refuses'} it"
    assert validator.is_valid(d) == (accepted or not in_schema), name


def test_the_schema_mirrors_the_readers_limits(schema):
    props, defs = schema["properties"], schema["$defs"]
    assert defs["tensor_name"]["pattern"] == "^" + M.TENSOR_NAME.pattern + END
    assert props["arch"]["pattern"] == "^" + M.ARCH_NAME.pattern + END
    assert defs["batch_size"]["maximum"] == M.MAX_BATCH
    assert defs["side"]["maximum"] == MAX_SIDE
    assert props["files"]["maxItems"] == M.MAX_FILES
    assert props["classes"]["maxItems"] == M.MAX_CLASSES
    assert props["format_version"]["const"] == M.FORMAT_VERSION
    assert any(str(M.MAX_MANIFEST_BYTES >> 20) in rule for rule in schema["x-reader-rules"])


def test_the_schema_lists_the_registrys_values(schema):
    file_props = schema["$defs"]["file"]["properties"]
    assert file_props["precision"]["enum"] == list(M.allowed("precision", "none"))
    assert file_props["format"]["enum"] == list(M.allowed("format", "text"))
    assert set(file_props["target"]["enum"]) == set(M.allowed("target", "any"))
