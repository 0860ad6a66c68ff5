"""Signed bundles: `sign`, `export --sign-key`, `verify`, and `trusted_keys` wherever a bundle is loaded.

Keys are made here with `cryptography`; nothing touches the network. Every hostile case is refused in one line by
`verify` (exit 1) and by a load, and model-signing's own verifier gives the same verdict on the same files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import tiny_checkpoint

from resnet_deploy.cli import main
from resnet_deploy.runtime import Predictor, ResnetDeployError, SignatureError
from resnet_deploy.runtime.preprocess import Preprocess

pytest.importorskip("cryptography", reason="the signing extra is not installed (pip install 'resnet-deploy[signing]')")
model_signing = pytest.importorskip("model_signing",
                                    reason="the signing extra is not installed (pip install 'resnet-deploy[signing]')")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["ant", "bee", "cat"]
PRE = Preprocess(input_size=(32, 32), channels=3, resize=36, crop=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))


def write_key(folder: Path, name: str, key) -> tuple[Path, Path]:
    """(private.pem, public.pem) of `key`, written under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    private = folder / f"{name}.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public = folder / f"{name}.pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("keys")
    return {"p256": write_key(root, "p256", ec.generate_private_key(ec.SECP256R1())),
            "p384": write_key(root, "p384", ec.generate_private_key(ec.SECP384R1())),
            "other": write_key(root, "other", ec.generate_private_key(ec.SECP256R1())),
            "k1": write_key(root, "k1", ec.generate_private_key(ec.SECP256K1())),
            "ed25519": write_key(root, "ed25519", ed25519.Ed25519PrivateKey.generate()),
            "rsa": write_key(root, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, keys) -> dict[str, Path]:
    """Two bundles of differently seeded nets: "a" signed at export with p256, "b" signed afterwards with p256."""
    from resnet_deploy.export import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("signed")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        ckpt = tiny_checkpoint(root / f"{name}.pt", CLASSES, PRE, seed=seed)
        out[name] = export_bundle(root / name, ExportOptions(batch=(1, 2, 4)), checkpoint=ckpt,
                                  sign_key=keys["p256"][0] if name == "a" else None)
    r = cli("sign", out["b"], "--key", keys["p256"][0])
    assert r.exit_code == 0 and r.output.strip() == f"signed {out['b']}: {out['b'] / 'model.sig'}", r.output
    return out


@pytest.fixture
def bundle(exported, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported["a"], tmp_path / "bundle"))


def refused_by_verify(bundle: Path, *keys: Path) -> str:
    r = CliRunner().invoke(main, ["verify", str(bundle), *(a for k in keys for a in ("--trusted-key", str(k)))])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("FAIL: "), (r.exit_code, r.output)
    return lines[0].removeprefix("FAIL: ")


def model_signing_verdict(bundle: Path, public: Path) -> str | None:
    """model-signing's own verifier on the same files: None when it accepts them, else its error."""
    try:
        model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public).verify(
            bundle, bundle / "model.sig")
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def test_signed_bundle_verifies_and_loads_the_same_model(exported, keys, tmp_path: Path) -> None:
    bundle = exported["a"]
    r = cli("verify", bundle, "--trusted-key", keys["p256"][1])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"OK: {bundle} is signed by {keys['p256'][1]} (sha256:")
    assert r.output.strip().endswith("; 4 files verified")  # manifest.json, model.onnx, config.yaml, export.log
    assert model_signing_verdict(bundle, keys["p256"][1]) is None
    x = np.random.default_rng().standard_normal((3, 3, 32, 32), dtype=np.float32)
    with Predictor.from_bundle(bundle, backend="onnx") as plain, \
            Predictor.from_bundle(bundle, backend="onnx", trusted_keys=[keys["p256"][1]]) as checked:
        assert np.array_equal(plain.run(x), checked.run(x))
    # rotation: any one of several trusted keys will do, in any order
    with Predictor.from_bundle(bundle, trusted_keys=[keys["other"][1], keys["p256"][1]]) as p:
        assert p.manifest.classes == CLASSES


def test_the_key_never_enters_the_bundle(exported, keys) -> None:
    private = keys["p256"][0]
    secret = serialization.load_pem_private_key(private.read_bytes(), None).private_numbers().private_value
    for f in exported["a"].rglob("*"):
        data = f.read_bytes()
        assert str(private).encode() not in data and private.name.encode() not in data, f
        assert secret.to_bytes(32, "big") not in data and b"PRIVATE KEY" not in data, f
    assert sorted(p.name for p in exported["a"].iterdir()) == ["config.yaml", "export.log", "manifest.json",
                                                                "model.onnx", "model.sig"]


def test_reports_written_later_keep_the_signature(bundle: Path, keys) -> None:
    (bundle / "reports").mkdir()
    (bundle / "reports" / "bench.json").write_text(json.dumps({"anything": np.random.default_rng().random()}))
    assert cli("verify", bundle, "--trusted-key", keys["p256"][1]).exit_code == 0
    assert model_signing_verdict(bundle, keys["p256"][1]) is None


def _flip_last_byte(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


def _edit_manifest(bundle: Path) -> None:
    d = json.loads((bundle / "manifest.json").read_text())
    d["classes"][0] = "wasp"
    (bundle / "manifest.json").write_text(json.dumps(d, indent=2) + "\n")


def _signature_of_b(bundle: Path, exported) -> None:
    shutil.copyfile(exported["b"] / "model.sig", bundle / "model.sig")


# (case, change, what verify and a load say: one line each)
HOSTILE = [
    ("unsigned", lambda b, e: (b / "model.sig").unlink(), "is not signed: it has no model.sig"),
    ("changed model file", lambda b, e: _flip_last_byte(b / "model.onnx"), "bundle file model.onnx does not match"),
    ("changed manifest", lambda b, e: _edit_manifest(b), "manifest.json of {b} is not the one signed"),
    ("added file", lambda b, e: (b / "extra.onnx").write_bytes(b"\0" * 10), "holds 'extra.onnx', which the signature"),
    ("removed file", lambda b, e: (b / "config.yaml").unlink(), "bundle file 'config.yaml' is missing"),
    ("another bundle's signature", _signature_of_b, "manifest.json of {b} is not the one signed"),
    ("truncated signature", lambda b, e: (b / "model.sig").write_bytes((b / "model.sig").read_bytes()[:300]),
     "signature file model.sig is damaged or not a model-signing signature (JSONDecodeError"),
    ("garbage signature", lambda b, e: (b / "model.sig").write_bytes(np.random.default_rng().bytes(900)),
     "signature file model.sig is damaged or not a model-signing signature"),
]


@pytest.mark.parametrize("case, change, expected", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_each_hostile_bundle_is_refused_in_one_line(bundle: Path, exported, keys, case, change, expected) -> None:
    change(bundle, exported)
    expected = expected.format(b=bundle)
    assert expected in refused_by_verify(bundle, keys["p256"][1])
    if case != "changed model file":  # a load checks the file it runs when it opens it: the same words
        with pytest.raises(SignatureError) as e:
            Predictor.from_bundle(bundle, trusted_keys=[keys["p256"][1]])
        assert expected in str(e.value) and "\n" not in str(e.value)
    else:
        with pytest.raises(ResnetDeployError, match="does not match the manifest's blake3/size"):
            Predictor.from_bundle(bundle, trusted_keys=[keys["p256"][1]])
    if case != "unsigned":  # model-signing's verifier agrees
        assert model_signing_verdict(bundle, keys["p256"][1]) is not None
    r = cli("predict", bundle, str(ROOT / "docs"), "--trusted-key", keys["p256"][1])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and expected in r.output.replace("\n", "")


def test_a_signature_by_another_key_is_refused(bundle: Path, keys) -> None:
    line = refused_by_verify(bundle, keys["other"][1], keys["p384"][1])
    assert line.startswith(f"{bundle} is not signed by a trusted key (it names key sha256:")
    assert f"trusted: {keys['other'][1]} (sha256:" in line
    assert model_signing_verdict(bundle, keys["other"][1]) is not None


@pytest.mark.parametrize("key, expected", [
    ("ed25519", "is a Ed25519 key; bundle signatures use ECDSA keys on P-256, P-384, P-521"),
    ("rsa", "is a RSA-2048 key; bundle signatures use ECDSA keys"),
    ("k1", "is a EC secp256k1 key; bundle signatures use ECDSA keys"),
])
def test_keys_of_other_types_are_refused(bundle: Path, keys, key: str, expected: str) -> None:
    assert expected in refused_by_verify(bundle, keys[key][1])
    with pytest.raises(ResnetDeployError, match=expected):
        Predictor.from_bundle(bundle, trusted_keys=[keys[key][1]])
    r = cli("sign", bundle, "--key", keys[key][0])
    assert r.exit_code == 2 and expected in r.output and len(r.output.strip().splitlines()) == 1


def test_bad_trusted_key_arguments_are_one_line(bundle: Path, keys, tmp_path: Path) -> None:
    assert "holds a private key; give its public half" in refused_by_verify(bundle, keys["p256"][0])
    (tmp_path / "junk.pem").write_bytes(np.random.default_rng().bytes(200))
    assert "is not a PEM public key" in refused_by_verify(bundle, tmp_path / "junk.pem")
    assert "cannot read trusted key" in refused_by_verify(bundle, tmp_path / "missing.pem")
    with pytest.raises(ResnetDeployError, match="no trusted keys given"):
        Predictor.from_bundle(bundle, trusted_keys=[])


def test_without_trusted_keys_nothing_changes(exported, bundle: Path) -> None:
    (bundle / "model.sig").write_bytes(b"garbage")  # not read at all without trusted keys
    with Predictor.from_bundle(bundle) as p, Predictor.from_bundle(exported["b"]) as q:
        assert p.manifest.classes == q.manifest.classes == CLASSES


def test_export_with_a_bad_key_writes_nothing(tmp_path: Path, keys) -> None:
    ckpt = tiny_checkpoint(tmp_path / "t.pt", CLASSES, PRE)
    r = cli("export", ckpt, "--out", tmp_path / "out", "--sign-key", keys["ed25519"][0])
    assert r.exit_code == 2 and "is a Ed25519 key" in r.output and len(r.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.pt"]


def test_validate_and_bench_check_the_signature(bundle: Path, keys) -> None:
    from resnet_deploy.validate.bench import bench_bundle
    from resnet_deploy.validate.parity import check_parity_arrays

    x = np.random.default_rng().standard_normal((4, 3, 32, 32), dtype=np.float32)
    labels = np.arange(4) % len(CLASSES)
    report = check_parity_arrays(bundle, x, labels, CLASSES, trusted_keys=[keys["p256"][1]])
    assert report.passed
    _edit_manifest(bundle)
    for run in (lambda: check_parity_arrays(bundle, x, labels, CLASSES, trusted_keys=[keys["p256"][1]]),
                lambda: bench_bundle(bundle, batches=(1,), duration_s=0.01, warmup_s=0, pytorch=False,
                                     trusted_keys=[keys["p256"][1]])):
        with pytest.raises(SignatureError, match="is not the one signed"):
            run()


def test_the_runtime_without_cryptography_names_the_install_command(exported, keys) -> None:
    code = f"""
import sys
sys.modules["cryptography"] = None  # as on a device without it
from resnet_deploy.runtime import Predictor, ResnetDeployError
Predictor.from_bundle({str(exported['a'])!r}).close()  # without keys: loads as before
assert "cryptography" not in sys.modules or sys.modules["cryptography"] is None
assert not any(m.startswith("model_signing") for m in sys.modules)
try:
    Predictor.from_bundle({str(exported['a'])!r}, trusted_keys=[{str(keys['p256'][1])!r}])
except ResnetDeployError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert out == ("checking bundle signatures needs the `cryptography` package: pip install "
                   "'resnet-deploy[signing]' (a device that only verifies needs just `pip install cryptography`)")


def test_loads_never_import_model_signing(exported, keys) -> None:
    code = f"""
import sys
from resnet_deploy.runtime import Predictor
Predictor.from_bundle({str(exported['a'])!r}, trusted_keys=[{str(keys['p256'][1])!r}]).close()
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"model_signing", "sigstore", "torch", "click"}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert out == "[]"


def test_triton_repository_carries_the_signature_and_the_keys(exported, keys, tmp_path: Path) -> None:
    from resnet_deploy.runtime.signature import check_signature
    from resnet_deploy.serve.repository import write_repository

    repo = write_repository(exported["a"], tmp_path / "repo", name="tiny",
                            trusted_keys=[keys["other"][1], keys["p256"][1]])
    model = repo / "tiny"
    served = model / "1" / "bundle"
    assert (served / "manifest.json").read_bytes() == (exported["a"] / "manifest.json").read_bytes()
    assert (served / "model.sig").read_bytes() == (exported["a"] / "model.sig").read_bytes()
    config = (model / "config.pbtxt").read_text()
    assert 'key: "trusted_keys"\n  value: { string_value: "trusted_keys/key-0.pem,trusted_keys/key-1.pem" }' in config
    assert (model / "trusted_keys" / "key-1.pem").read_bytes() == keys["p256"][1].read_bytes()
    assert check_signature(served, [model / "trusted_keys" / "key-1.pem"]).signer.name.endswith("key-1.pem")
    with pytest.raises(SignatureError, match="is not signed by a trusted key"):
        write_repository(exported["a"], tmp_path / "repo2", trusted_keys=[keys["other"][1]])
    assert not (tmp_path / "repo2").exists()
