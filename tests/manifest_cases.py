"""Manifests one field away from a valid one, and whether a reader must accept them: the shared corpus that holds
the Python reader (`Manifest.from_dict`), `docs/manifest.schema.json` and the C++ reader (cpp/) to one contract.

Each case is (name, change, accepted, in_schema): `change(d)` edits a copy of a valid manifest dict in place;
`accepted` says whether a reader must accept the result; `in_schema` is False for the rules JSON Schema cannot state
(the schema's `x-reader-rules`), which the schema accepts and readers still refuse.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

Change = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Change:
    """A change that sets the value at a dotted path ("input.batch.min", "files.0.size")."""

    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[int(key)] if isinstance(d, list) else d[key]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    return change


def _drop(path: str) -> Change:
    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[int(key)] if isinstance(d, list) else d[key]
        del d[last]

    return change


def _dup_file(d: dict[str, Any]) -> None:
    d["files"].append(copy.deepcopy(d["files"][0]))


def _mean_image(d: dict[str, Any]) -> None:
    c = d["preprocess"]["channels"]
    h, w = d["preprocess"]["input_size"]
    d["preprocess"]["mean"] = [[[0.5] * w for _ in range(h)] for _ in range(c)]


def _mean_image_wrong_size(d: dict[str, Any]) -> None:
    c = d["preprocess"]["channels"]
    h, w = d["preprocess"]["input_size"]
    d["preprocess"]["mean"] = [[[0.5] * (w + 1) for _ in range(h)] for _ in range(c)]


CASES: list[tuple[str, Change, bool, bool]] = [
    # accepted variations
    ("unchanged", lambda d: None, True, True),
    ("unknown top-level key", _set("x_future", {"a": 1}), True, True),
    ("resize null", _set("preprocess.resize", None), True, True),
    ("no output object", _drop("output"), True, True),
    ("no input name", _drop("input.name"), True, True),
    ("no dtypes (float32 by default)", lambda d: (d["input"].pop("dtype"), d["output"].pop("dtype")), True, True),
    ("no format (onnx by default)", _drop("files.0.format"), True, True),
    ("no blake3 (older bundle)", _drop("files.0.blake3"), True, True),
    ("per-pixel mean image", _mean_image, True, True),
    ("file path in a sub-folder", _set("files.0.path", "models/model.onnx"), True, True),
    ("class name with spaces and unicode", _set("classes.0", "T-shirt / top \u00e9"), True, True),
    # refused by the schema and by every reader
    ("format_version 2", _set("format_version", 2), False, True),
    ("format_version as a string", _set("format_version", "1"), False, True),
    ("no arch", _drop("arch"), False, True),
    ("arch not a string", _set("arch", 5), False, True),
    ("empty classes", _set("classes", []), False, True),
    ("class not a string", _set("classes.0", 3), False, True),
    ("empty class name", _set("classes.0", ""), False, True),
    ("no input", _drop("input"), False, True),
    ("no batch", _drop("input.batch"), False, True),
    ("batch min 0", _set("input.batch.min", 0), False, True),
    ("batch max over 4096", _set("input.batch.max", 4097), False, True),
    ("batch opt a float", _set("input.batch.opt", 8.5), False, True),
    ("batch min a bool", _set("input.batch.min", True), False, True),
    ("no preprocess", _drop("preprocess"), False, True),
    ("channels 2", _set("preprocess.channels", 2), False, True),
    ("input_size of 3 values", _set("preprocess.input_size", [32, 32, 3]), False, True),
    ("input_size 0", _set("preprocess.input_size", [0, 32]), False, True),
    ("input_size over 4096", _set("preprocess.input_size", [4097, 32]), False, True),
    ("resize 0", _set("preprocess.resize", 0), False, True),
    ("std 0", _set("preprocess.std", [0.25, 0.0, 0.25]), False, True),
    ("std negative", _set("preprocess.std", [0.25, -1.0, 0.25]), False, True),
    ("std of the wrong length", _set("preprocess.std", [0.25]), False, True),
    ("mean of the wrong length", _set("preprocess.mean", [0.5, 0.5]), False, True),
    ("mean a string", _set("preprocess.mean", "0.5"), False, True),
    ("channel_order BGR", _set("preprocess.channel_order", "BGR"), False, True),
    ("interpolation nearest", _set("preprocess.interpolation", "nearest"), False, True),
    ("scale 1", _set("preprocess.scale", 1.0), False, True),
    ("no files", _set("files", []), False, True),
    ("file path absolute", _set("files.0.path", "/etc/passwd"), False, True),
    ("file path with ..", _set("files.0.path", "../model.onnx"), False, True),
    ("file path with .. inside", _set("files.0.path", "a/../../model.onnx"), False, True),
    ("file path with a . part", _set("files.0.path", "./model.onnx"), False, True),
    ("file path with a backslash", _set("files.0.path", "a\\model.onnx"), False, True),
    ("file path with a drive", _set("files.0.path", "C:model.onnx"), False, True),
    ("file path with an empty part", _set("files.0.path", "a//model.onnx"), False, True),
    ("file path ending in /", _set("files.0.path", "models/"), False, True),
    ("file path with NUL", _set("files.0.path", "model\u0000.onnx"), False, True),
    ("file path empty", _set("files.0.path", ""), False, True),
    ("file path over 255 characters", _set("files.0.path", "m" * 256), False, True),
    ("sha256 upper-case", lambda d: d["files"][0].update(sha256=d["files"][0]["sha256"].upper()), False, True),
    ("sha256 short", _set("files.0.sha256", "ab" * 31), False, True),
    ("sha256 with a newline", lambda d: d["files"][0].update(sha256=d["files"][0]["sha256"][:63] + "\n"), False,
     True),
    ("size negative", _set("files.0.size", -1), False, True),
    ("size a string", _set("files.0.size", "12"), False, True),
    ("precision unknown", _set("files.0.precision", "int4"), False, True),
    ("format unknown", _set("files.0.format", "tflite"), False, True),
    ("target unknown", _set("files.0.target", "gpu"), False, True),
    ("engine without its facts", lambda d: d["files"][0].update(format="engine", target="trt", info={}), False,
     True),
    ("info not an object", _set("files.0.info", []), False, True),
    ("source path not a string", _set("source", {"path": 3}), False, True),
    ("versions not an object", _set("versions", []), False, True),
    ("input name with a quote and a newline", _set("input.name", 'x"\nparameters {'), False, True),
    ("input name with a final newline", _set("input.name", "input\n"), False, True),
    ("output name with a space", _set("output.name", "log its"), False, True),
    ("input dtype float16", _set("input.dtype", "float16"), False, True),
    ("output dtype not a string", _set("output.dtype", 32), False, True),
    ("output name starting with a digit", _set("output.name", "0logits"), False, True),
    ("arch with a slash", _set("arch", "../resnet"), False, True),
    ("arch with a final newline", _set("arch", "resnet50\n"), False, True),
    # refused by readers by rules JSON Schema cannot state (x-reader-rules)
    ("batch min above opt", _set("input.batch.min", 9), False, False),
    ("input shape not the preprocess's", _set("input.shape", [1, 32, 32]), False, False),
    ("output shape not the class count", _set("output.shape", [4]), False, False),
    ("crop larger than resize", _set("preprocess.crop", 40), False, False),
    ("mean image of the wrong size", _mean_image_wrong_size, False, False),
    ("two files with one path", _dup_file, False, False),
    ("size written as 3.0", lambda d: d["files"][0].update(size=float(d["files"][0]["size"])), False, False),
]


def changed(manifest: dict[str, Any], change: Change) -> dict[str, Any]:
    """A deep copy of `manifest` with `change` applied."""
    d = copy.deepcopy(manifest)
    change(d)
    return d
