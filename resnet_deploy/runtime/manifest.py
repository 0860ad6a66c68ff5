"""The bundle contract: `manifest.json`, its schema, reading it and checking every file against it.

`export/` writes manifests with `Manifest.to_dict()`; the runtime and the validation harness read them with
`read_manifest` and refuse a bundle whose files do not match (`runtime/verified.py`: `verify_files`, and loaders
get a file only as a `VerifiedFile`). Torch-free (docs/architecture.md, "Floors").
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from resnet_deploy.runtime import fields as F
from resnet_deploy.runtime import variants
from resnet_deploy.runtime.checksum import blake3_available, file_digests
from resnet_deploy.runtime.errors import BundleError, ResnetDeployError, first_line, quote
from resnet_deploy.runtime.limits import MAX_BATCH, MAX_CLASSES
from resnet_deploy.runtime.preprocess import Preprocess

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
REPORTS_DIR = "reports"  # where `resnet-deploy validate` and `bench` write inside a bundle (not listed, not loaded)
SIGNATURE_NAME = "model.sig"  # the publisher's signature (`resnet-deploy sign`, runtime/signature.py); not listed
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Bounds of a sane manifest: larger values are refused before anything is allocated for them.
MAX_MANIFEST_BYTES = 32 << 20  # a per-pixel mean image at 224 x 224 x 3 is about 3 MB of JSON
MAX_FILES = 64  # MAX_CLASSES and MAX_BATCH: runtime/limits.py, with every other bound
# Names a bundle gives that end up in serving configurations, URLs and code: identifiers only, matched whole
# (`fullmatch`; a `$` would let a final newline through). docs/manifest.schema.json states the same patterns. The
# architecture is also Triton's default model name, and `triton`/`serve --name` are held to ARCH_NAME.
TENSOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
ARCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ARCH_RULE = "letters, digits, '_', '.' or '-'"


@dataclass(frozen=True)
class FileEntry:
    """One model file of a bundle.

    Attributes:
        path: relative to the bundle directory, e.g. "model.int8.onnx".
        sha256, size: of the file's bytes.
        blake3: the BLAKE3 digest of the same bytes, which the runtime checks instead of sha256 (faster); None in
            bundles written before it was added (or without the module), whose sha256 is checked.
        precision: "fp32", "fp16", "int8", "fp8"; "none" for the text files (config.yaml, export.log).
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
    blake3: str | None = None

    @classmethod
    def for_file(cls, bundle: Path, rel: str, precision: str, fmt: str = "onnx", target: str = "any",
                 info: dict[str, Any] | None = None) -> FileEntry:
        """Entry for a file already written under `bundle`, with its checksums and size."""
        p = bundle / rel
        sha, b3 = file_digests(p)
        return cls(rel, sha, p.stat().st_size, precision, fmt, target, dict(info or {}), b3)

    @property
    def checksum(self) -> tuple[str, str]:
        """(algorithm, hex digest) the file is checked with at load: blake3 where listed and installed, else sha256."""
        return ("blake3", self.blake3) if self.blake3 and blake3_available() else ("sha256", self.sha256)


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
            "files": [{"path": f.path, "sha256": f.sha256, **({"blake3": f.blake3} if f.blake3 else {}),
                       "size": f.size, "precision": f.precision, "format": f.format, "target": f.target,
                       "info": f.info} for f in self.files],
            "versions": dict(self.versions),
            "export_args": dict(self.export_args),
            "source": dict(self.source),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Inverse of `to_dict`, checking every field: one BundleError names the first missing or bad one.

        A manifest may have been edited by hand or come from anywhere, so types and ranges are checked here, once:
        file paths must be relative and inside the bundle (no "..", no absolute paths), sizes and batch bounds
        positive integers, preprocessing values in range (`Preprocess`).
        """
        if not isinstance(d, dict):
            raise BundleError(f"{MANIFEST_NAME} does not hold a JSON object; the bundle is damaged, export it again")
        version = d.get("format_version")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise BundleError(f"manifest format_version {quote(version)} is not supported; expected {FORMAT_VERSION} "
                              "(re-export the bundle with this version of resnet-deploy)")
        try:
            return _parse(d)
        except ResnetDeployError as e:  # FieldError, from here or from Preprocess
            raise BundleError(f"manifest field {e}") from None


def _parse(d: dict[str, Any]) -> Manifest:
    arch = check_name(F.get(d, "arch", "arch"), "arch", ARCH_NAME, ARCH_RULE)
    classes = F.items(F.get(d, "classes", "classes"), "classes", lambda v, f: F.string(v, f, max_len=1000), 1,
                      MAX_CLASSES)
    pre = Preprocess.from_dict(F.get(d, "preprocess", "preprocess"))
    inp = F.mapping(F.get(d, "input", "input"), "input")
    batch = F.mapping(F.get(inp, "batch", "input.batch"), "input.batch")
    low, opt, high = (F.integer(F.get(batch, k, f"input.batch.{k}"), f"input.batch.{k}", 1, MAX_BATCH)
                      for k in ("min", "opt", "max"))
    F.need(low <= opt <= high, "input.batch", "min <= opt <= max", f"{low}, {opt}, {high}")
    if "shape" in inp:
        F.need(inp["shape"] == [pre.channels, *pre.input_size], "input.shape", "[C, H, W] of preprocess",
               inp["shape"])
    F.string(inp.get("dtype", "float32"), "input.dtype", ("float32",))  # the schema's const: the model's only dtype
    out = F.mapping(d.get("output", {}), "output")
    if "shape" in out:
        F.need(out["shape"] == [len(classes)], "output.shape", "[number of classes]", out["shape"])
    F.string(out.get("dtype", "float32"), "output.dtype", ("float32",))
    files = F.items(F.get(d, "files", "files"), "files", _file_entry, 1, MAX_FILES)
    seen = [f.path for f in files]
    dup = next((p for i, p in enumerate(seen) if p in seen[:i]), None)
    F.need(dup is None, "files", "distinct paths", dup)
    src = F.mapping(d.get("source", {}), "source")
    for key in ("kind", "path", "sha256"):
        if src.get(key) is not None:
            F.string(src[key], f"source.{key}", max_len=4096)
    return Manifest(arch=arch, classes=classes, preprocess=pre, files=files, batch=(low, opt, high),
                    versions=dict(F.mapping(d.get("versions", {}), "versions")),
                    export_args=dict(F.mapping(d.get("export_args", {}), "export_args")), source=dict(src),
                    input_name=check_name(inp.get("name", INPUT_NAME), "input.name", TENSOR_NAME, "an identifier"),
                    output_name=check_name(out.get("name", OUTPUT_NAME), "output.name", TENSOR_NAME, "an identifier"))


def check_name(value: Any, field: str, pattern: re.Pattern[str], what: str) -> str:
    """`value` when the whole of it matches `pattern` (TENSOR_NAME, ARCH_NAME); a FieldError naming `field`."""
    F.need(isinstance(value, str) and pattern.fullmatch(value) is not None, field,
           f"{what} of 1 to 64 characters ({pattern.pattern})", value)
    return value


def allowed(attribute: str, text: str) -> tuple[str, ...]:
    """The values a file entry's `format`, `precision` or `target` may take: the variant registry's, and `text`
    (format, "text"; precision, "none") for config.yaml and export.log. Read from the registry when a manifest is
    read, so that a registered variant's files are accepted."""
    return (*dict.fromkeys(getattr(v, attribute) for v in variants.variants() if v.runs is None), text)


def _file_entry(v: Any, field: str) -> FileEntry:
    f = F.mapping(v, field)
    path = check_relative(F.get(f, "path", f"{field}.path"), f"{field}.path")
    sha = _hex_digest(F.get(f, "sha256", f"{field}.sha256"), f"{field}.sha256")
    b3 = _hex_digest(f["blake3"], f"{field}.blake3") if "blake3" in f else None
    fmt = F.string(f.get("format", "onnx"), f"{field}.format", allowed("format", "text"))
    info = F.mapping(f.get("info", {}), f"{field}.info")
    if fmt == "engine":
        for key in ("tensorrt_version", "gpu", "compute_capability"):
            F.string(F.get(info, key, f"{field}.info.{key}"), f"{field}.info.{key}", max_len=200)
    precision = F.string(F.get(f, "precision", f"{field}.precision"), f"{field}.precision",
                         allowed("precision", "none"))
    target = F.string(f.get("target", "any"), f"{field}.target", allowed("target", "any"))
    return FileEntry(path, sha, F.integer(F.get(f, "size", f"{field}.size"), f"{field}.size", 0), precision, fmt,
                     target, dict(info), b3)


def _hex_digest(value: Any, field: str) -> str:
    F.need(isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value), field,
           "64 lower-case hex digits", value)
    return value


def check_relative(path: Any, field: str = "path") -> str:
    """`path` if it is a plain relative path inside a directory (no "..", not absolute); FieldError otherwise."""
    F.need(isinstance(path, str) and 0 < len(path) <= 255, field, "a relative path of 1 to 255 characters", path)
    parts = PurePosixPath(path).parts
    ok = (not PurePosixPath(path).is_absolute() and not PureWindowsPath(path).drive and "\\" not in path
          and "\0" not in path and ".." not in parts and parts != () and path == PurePosixPath(path).as_posix())
    F.need(ok, field, "a relative path inside the bundle (no '..', not absolute)", path)
    return path


def check_writable(path: str | Path, what: str = "output file") -> Path:
    """`path` once a file can be written there (its folder made where missing, a trial file made and removed in it);
    a one-line ResnetDeployError otherwise. For outputs of long runs, checked before the run rather than found out
    after it."""
    path = Path(path)
    if path.is_dir():
        raise ResnetDeployError(f"cannot write {what} {path}: it is a directory; give a file name")
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if folder is not None and not folder.is_dir():
        raise ResnetDeployError(f"cannot write {what} {path}: {folder} is not a folder; choose a path you can write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, trial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".trial", dir=path.parent)
        os.close(fd)
        os.unlink(trial)
    except OSError as e:
        raise ResnetDeployError(f"cannot write {what} {path} ({e.strerror or type(e).__name__}); choose a path you "
                                "can write") from None
    return path


def write_manifest(bundle: str | Path, manifest: Manifest) -> Path:
    """Write `bundle/manifest.json` (the bundle directory itself is made atomic by its writer)."""
    path = Path(bundle) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return path


def check_bundle_dir(bundle: str | Path) -> Path:
    """`bundle` as a Path once it is a folder holding a manifest.json; a BundleError naming what is missing."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"bundle directory not found: {bundle}")
    path = bundle / MANIFEST_NAME
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{bundle} is not a bundle: it has no {MANIFEST_NAME} (make one with `resnet-deploy export`)")
    return bundle


def read_manifest(bundle: str | Path) -> Manifest:
    """Read and parse `bundle/manifest.json`; a missing, truncated, foreign or malformed manifest is a BundleError.

    Every file the manifest lists is checked to resolve inside the bundle (links followed) before anything opens it.
    A bundle that must be signed is read with `runtime/signature.py`'s `open_manifest` instead.
    """
    bundle = check_bundle_dir(bundle)
    path = bundle_path(bundle, MANIFEST_NAME)
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{bundle / MANIFEST_NAME} is over {MAX_MANIFEST_BYTES >> 20} MB; a manifest is a few "
                              "kB, so this is not a bundle written by `resnet-deploy export`")
        data = path.read_bytes()
    except OSError as e:
        raise BundleError(f"{bundle / MANIFEST_NAME} is not valid JSON ({first_line(e)[:200]}); the bundle is "
                          "damaged, export it again") from None
    return parse_manifest(bundle, data)


def parse_manifest(bundle: Path, data: bytes) -> Manifest:
    """The Manifest in `data`, the bytes of `bundle/manifest.json`, with every listed path checked to resolve inside
    the bundle; BundleError otherwise."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else first_line(e)[:200]
        raise BundleError(f"{bundle / MANIFEST_NAME} is not valid JSON ({why}); the bundle is damaged, export it "
                          "again") from None
    manifest = Manifest.from_dict(parsed)
    for entry in manifest.files:
        bundle_path(bundle, entry.path)
    return manifest


def bundle_path(bundle: str | Path, rel: str) -> Path:
    """The real path of `bundle/rel`, refused (BundleError naming `rel`) when it resolves outside the bundle.

    Links are followed before the check, so a listed file that is a link to /etc/passwd is refused; the message says
    nothing about the target (whether it exists, its size or contents). Nothing is opened here.
    """
    root = Path(bundle).resolve()
    try:
        check_relative(rel, "path")
        target = (root / rel).resolve()
    except (ResnetDeployError, OSError, RuntimeError) as e:  # RuntimeError: a symlink loop on Python < 3.13
        raise BundleError(f"bundle file {quote(rel)} is not a plain relative path inside the bundle ({e})") from None
    if target != root and root not in target.parents:
        raise BundleError(f"bundle file {quote(rel)} resolves outside the bundle (a link that leads out of it); "
                          "refused without opening it")
    return target


def reports_path(bundle: str | Path, name: str = "") -> Path:
    """`bundle/reports[/name]`, refused (BundleError) when the folder or the file is a link out of the bundle: a
    downloaded bundle may carry `reports` as a link, and writing through it would overwrite files elsewhere."""
    folder = bundle_path(bundle, REPORTS_DIR)
    return bundle_path(bundle, f"{REPORTS_DIR}/{name}") if name else folder


def unlisted_files(bundle: str | Path, manifest: Manifest) -> list[str]:
    """Files and links in the bundle that its manifest does not list (never verified, never loaded), sorted.

    manifest.json, the signature and the reports folder that `validate` and `bench` write are expected and left out.
    """
    bundle = Path(bundle)
    listed = {f.path for f in manifest.files} | {MANIFEST_NAME, SIGNATURE_NAME}
    found = []
    for top, dirs, files in os.walk(bundle):  # links to directories are listed, not followed
        rel_top = Path(top).relative_to(bundle)
        if rel_top == Path("."):
            dirs[:] = [d for d in dirs if d != REPORTS_DIR or (bundle / d).is_symlink()]
        names = files + [d for d in dirs if (Path(top) / d).is_symlink()]
        found += [(rel_top / n).as_posix() for n in names]
    return sorted(p for p in found if p not in listed)
