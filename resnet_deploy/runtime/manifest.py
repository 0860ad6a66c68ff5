"""The bundle contract: `manifest.json`, its schema, reading it and checking every file against it.

`export/` writes manifests with `Manifest.to_dict()`; the runtime and the validation harness read them with
`read_manifest` and refuse a bundle whose files do not match (`verify_files`). Torch-free (docs/architecture.md,
"Floors").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy.runtime.errors import BundleError
from resnet_deploy.runtime.preprocess import Preprocess

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One model file of a bundle.

    Attributes:
        path: relative to the bundle directory, e.g. "model.int8.onnx".
        sha256, size: of the file's bytes.
        precision: "fp32", "fp16", "int8"; "none" for the text files (config.yaml, export.log).
        format: "onnx", "engine" (TensorRT) or "text".
        target: who the file is for: "any" (fp32/fp16 ONNX), "cpu" (ORT int8 QDQ U8S8) or "trt" (symmetric INT8 QDQ,
            or a TensorRT engine).
        info: extra facts; for engines: tensorrt_version, gpu, compute_capability.
    """

    path: str
    sha256: str
    size: int
    precision: str
    format: str = "onnx"
    target: str = "any"
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_file(cls, bundle: Path, rel: str, precision: str, fmt: str = "onnx", target: str = "any",
                 info: dict[str, Any] | None = None) -> FileEntry:
        """Entry for a file already written under `bundle`, with its checksum and size."""
        p = bundle / rel
        return cls(rel, sha256_file(p), p.stat().st_size, precision, fmt, target, dict(info or {}))


@dataclass(frozen=True)
class Manifest:
    """Everything downstream needs to know about a bundle (docs/architecture.md, "The bundle")."""

    arch: str
    classes: list[str]
    preprocess: Preprocess
    files: list[FileEntry]
    batch: tuple[int, int, int] = (1, 8, 32)  # min, opt, max of the dynamic batch axis
    versions: dict[str, str | None] = field(default_factory=dict)
    export_args: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # {"checkpoint": path, "sha256": hex} of the weights
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    format_version: int = FORMAT_VERSION

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image."""
        h, w = self.preprocess.input_size
        return (self.preprocess.channels, h, w)

    def file(self, path: str) -> FileEntry:
        """The entry for `path`; BundleError if the bundle has none."""
        for f in self.files:
            if f.path == path:
                return f
        raise BundleError(f"bundle has no file {path!r}; it has: {', '.join(f.path for f in self.files) or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with stable keys (written as manifest.json)."""
        return {
            "format_version": self.format_version,
            "arch": self.arch,
            "classes": list(self.classes),
            "input": {"name": self.input_name, "shape": list(self.input_shape), "dtype": "float32",
                      "batch": {"min": self.batch[0], "opt": self.batch[1], "max": self.batch[2]}},
            "output": {"name": self.output_name, "shape": [len(self.classes)], "dtype": "float32"},
            "preprocess": self.preprocess.to_dict(),
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size, "precision": f.precision,
                       "format": f.format, "target": f.target, "info": f.info} for f in self.files],
            "versions": dict(self.versions),
            "export_args": dict(self.export_args),
            "source": dict(self.source),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Inverse of `to_dict`; raises BundleError on a wrong format version or missing keys."""
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(f"manifest format_version {version!r} is not supported; expected {FORMAT_VERSION} "
                              "(re-export the bundle with this version of resnet-deploy)")
        try:
            b = d["input"]["batch"]
            return cls(
                arch=d["arch"], classes=list(d["classes"]), preprocess=Preprocess.from_dict(d["preprocess"]),
                files=[FileEntry(f["path"], f["sha256"], int(f["size"]), f["precision"], f.get("format", "onnx"),
                                 f.get("target", "any"), dict(f.get("info", {}))) for f in d["files"]],
                batch=(int(b["min"]), int(b["opt"]), int(b["max"])), versions=dict(d.get("versions", {})),
                export_args=dict(d.get("export_args", {})), source=dict(d.get("source", {})),
                input_name=d["input"].get("name", INPUT_NAME), output_name=d.get("output", {}).get("name", OUTPUT_NAME),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"manifest is missing or has a malformed field: {e}") from None


def write_manifest(bundle: str | Path, manifest: Manifest) -> Path:
    """Write `bundle/manifest.json` (the bundle directory itself is made atomic by its writer)."""
    path = Path(bundle) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return path


def read_manifest(bundle: str | Path) -> Manifest:
    """Read and parse `bundle/manifest.json`; a missing, truncated or foreign manifest is a BundleError."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"bundle directory not found: {bundle}")
    path = bundle / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{bundle} is not a bundle: it has no {MANIFEST_NAME} "
                          "(make one with `resnet-deploy export`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}); the bundle is damaged, export it again") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} does not hold a JSON object; the bundle is damaged, export it again")
    return Manifest.from_dict(data)


def verify_files(bundle: str | Path, manifest: Manifest, paths: list[str] | None = None) -> None:
    """Check size and sha256 of the named files (all files when None); BundleError names the first that differs."""
    bundle = Path(bundle)
    for entry in manifest.files:
        if paths is not None and entry.path not in paths:
            continue
        p = bundle / entry.path
        if not p.is_file():
            raise BundleError(f"bundle file {entry.path} is missing from {bundle}")
        size = p.stat().st_size
        if size != entry.size or sha256_file(p) != entry.sha256:
            raise BundleError(f"bundle file {entry.path} does not match the manifest's sha256/size "
                              f"(expected {entry.size} bytes, found {size}); it was changed after export")
