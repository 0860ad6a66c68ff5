"""Triton model repositories for a bundle: `config.pbtxt`, the model files, and a Python-backend model.

Targets (`write_repository(target=...)`):

- "python": one Python-backend model (`triton_model.py` copied as `1/model.py`) that loads the bundle, copied into
  `1/bundle/`, through `resnet_deploy.runtime`; it takes encoded images (`image`, BYTES: JPEG/PNG) or preprocessed
  float32 tensors (`input`), and answers `logits` and the top-k `labels`, `scores` and `class_ids`. It runs wherever
  Triton runs, CPUs included.
- "onnxruntime" / "tensorrt": the bundle's ONNX file or TensorRT engine as `<name>/1/model.onnx|model.plan` for
  NVIDIA's Triton containers on GPUs, a Python preprocessing model `<name>_preprocess`, and an ensemble
  `<name>_image` that chains the two for encoded images.

Every model carries `labels.txt` on its `logits` output, so Triton's classification extension answers top-k labels
for any of them (`InferRequestedOutput("logits", class_count=k)`). The layout follows Triton's model repository
documentation (docs/user_guide/model_repository.md, model_configuration.md).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from resnet_deploy import __version__
from resnet_deploy.export.staging import Workdir, check_destination
from resnet_deploy.runtime import FileEntry, Manifest, ResnetDeployError, limits, read_manifest, variants, verify_files
from resnet_deploy.runtime.autotune import copy_records, measured_order
from resnet_deploy.runtime.errors import printable
from resnet_deploy.runtime.manifest import (
    ARCH_NAME,
    ARCH_RULE,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    bundle_path,
    check_name,
    write_manifest,
)
from resnet_deploy.runtime.predictor import choose_backend, find_entry
from resnet_deploy.runtime.signature import load_trusted_keys, open_manifest
from resnet_deploy.runtime.verified import VerifiedFile
from resnet_deploy.serve import TARGETS, TRITON_BACKENDS, precisions
from resnet_deploy.serve.environment import probe

IMAGE_INPUT = "image"
MARKER = "resnet-deploy.json"  # what wrote the repository, and from which bundle
SYS_PATH_FILE = "sys_path.txt"  # read by model.py before its imports (see triton_model.py)
SYS_PATH_ENV = "RESNET_DEPLOY_SYS_PATH"  # set by `serve`'s server: its environment's paths, taken before the file
MODEL_PY = Path(__file__).with_name("triton_model.py")
KEYS_DIR = "trusted_keys"  # a signed bundle's python model: the publishers' keys it checks the bundle with
# Which runtime serves each target: the Python backend runs the runtime's own backends on the CPU; NVIDIA's
# containers run a file of the bundle with their ONNX Runtime or TensorRT backend on a GPU.
TARGET_DEVICE = {"python": "cpu", **{name: b.device for name, b in TRITON_BACKENDS.items()}}
MAX_IMAGE_BYTES = 32 << 20  # a larger encoded image is refused unread (pixels: the runtime's MAX_IMAGE_PIXELS)


def pbtxt_string(value: str) -> str:
    """`value` as a protobuf text-format string literal, the one way every string gets into a config.pbtxt: quoted,
    with quotes and backslashes escaped and every byte outside printable ASCII written as an octal escape (UTF-8
    text included), so that nothing in it can end the string and start a field of its own."""
    out = []
    for byte in str(value).encode("utf-8"):
        char = chr(byte)
        out.append("\\" + char if char in "\\\"'" else char if 0x20 <= byte < 0x7F else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def environment_paths() -> list[str]:
    """Where the Python backend's stub finds resnet_deploy and its dependencies: the server environment's paths
    (`environment.py`: numpy<2, as the stub needs) when there is one, else this interpreter's.

    The stub embeds the base interpreter and ignores PYTHONPATH and virtual environments, so model.py puts these
    first on sys.path itself: the directory holding the resnet_deploy package, then the environment's site-packages.
    """
    try:
        return list(probe().paths)
    except ResnetDeployError:
        paths = [str(Path(__file__).resolve().parents[2]), sysconfig.get_paths()["purelib"],
                 sysconfig.get_paths()["platlib"]]
        return list(dict.fromkeys(p for p in paths if p))


def write_repository(bundle: str | Path, out: str | Path, *, name: str | None = None, target: str = "python",
                     precision: str = "auto", max_batch: int | None = None, instances: int = 1,
                     max_queue_delay_us: int = 0, topk: int = 5, threads: int | None = None,
                     force: bool = False, sys_path: list[str] | None = None,
                     trusted_keys: Sequence[str | Path] | None = None) -> Path:
    """Write a Triton model repository serving `bundle`, atomically.

    Args:
        bundle: a bundle directory written by `resnet-deploy export` (its files are checked against the manifest).
        out: the repository directory to create.
        name: the model's name in Triton (default: the bundle's architecture).
        target: "python", "onnxruntime" or "tensorrt" (see the module docstring).
        precision: "auto", "fp32", "fp16" or "int8": which of the bundle's models is served.
        max_batch: Triton's max_batch_size (default, and for onnxruntime/tensorrt at most, the bundle's largest
            batch).
        instances: model instances (instance_group count); each runs its own copy of the model.
        max_queue_delay_us: how long the dynamic batcher may hold a request to form a larger batch.
        topk: how many classes the Python model's labels/scores/class_ids outputs hold (capped at the class count).
        threads: ONNX Runtime intra-op threads per Python-model instance (None: one per core).
        force: replace an existing repository at `out` (only once the new one is complete).
        sys_path: paths model.py puts first on sys.path (default: `environment_paths()`).
        trusted_keys: publishers' public keys (PEM files): the bundle must be signed by one of them. The python
            model then holds the signed bundle as it is (every listed file, manifest.json, model.sig) and copies of
            these keys (`<name>/trusted_keys/`, named in its config), and checks the signature again when the server
            loads it. The onnxruntime/tensorrt targets are checked here only: NVIDIA's backends load their file
            without a check of their own.

    Returns:
        `out`.

    Raises:
        ResnetDeployError: a bad option, a changed bundle, or a model file the bundle does not have.
    """
    out, bundle = Path(out), Path(bundle)
    _check_options(target, precision, instances, max_queue_delay_us, topk, threads, max_batch)
    manifest = open_manifest(bundle, trusted_keys)
    verify_files(bundle, manifest)
    name = name or manifest.arch
    check_model_name(name)
    batch = _max_batch(manifest, target, max_batch)
    check_destination(out, force, marker=MARKER, kind="model repository")
    out.parent.mkdir(parents=True, exist_ok=True)
    with Workdir(out) as work:  # export's staging: built beside `out`, swapped in whole, nothing left on failure
        check_destination(out, force, marker=MARKER, kind="model repository")
        tmp, info, here = work.new, {}, {}
        if target == "python":
            # "auto" is chosen at load, on the serving machine, as `Predictor` chooses (with the orders `bench`
            # measured, copied beside the model files); a fixed precision now
            backend = "auto" if precision == "auto" else _entry(manifest, target, precision, bundle)[1]
            params = {"role": "classify", "runtime_backend": backend, "threads": str(threads or 0)}
            if trusted_keys is not None:
                params["trusted_keys"] = ",".join(_copy_keys(tmp / name, trusted_keys))
            _python_model(tmp / name, bundle, manifest, batch, instances, max_queue_delay_us, params,
                          min(topk, len(manifest.classes)), sys_path,
                          manifest.files if trusted_keys is not None else _served_files(manifest, backend))
            served = tmp / name / "1" / "bundle"
            measured = copy_records(bundle, served) if backend == "auto" else None
            # what the model loads when served on this machine: the same choice, on the same files
            try:
                loads, _, why = choose_backend(served, read_manifest(served), backend, "cpu")
            except ResnetDeployError as e:  # nothing runs here; the serving machine may differ
                loads, why = None, str(e)
            here = {"loads_here": loads, "why": why, "auto_record": measured is not None}
        else:
            backend, info = _file_model(tmp / name, bundle, manifest, target, precision, batch, instances,
                                        max_queue_delay_us)
            _python_model(tmp / f"{name}_preprocess", bundle, manifest, batch, instances, max_queue_delay_us,
                          {"role": "preprocess"}, 0, sys_path)
            _ensemble(tmp / f"{name}_image", name, manifest, batch)
        marker = {"written_by": f"resnet-deploy {__version__}", "bundle": str(bundle.resolve()), "model": name,
                  "target": target, "precision": precision, "backend": backend, "max_batch_size": batch,
                  "file_info": info, **here}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        work.commit()
    return out


def backend_line(repo: str | Path) -> str:
    """What the repository's model runs, from its marker: for a Python model, the backend it loads on this machine and
    why (the choice `Predictor` makes on the served files); for a file model, the file's variant."""
    facts = json.loads((Path(repo) / MARKER).read_text())
    if facts.get("target") != "python":
        return f"backend {facts['backend']} (its file, chosen when the repository was written)"
    if facts.get("loads_here") is None:
        return f"backend {facts['backend']}: nothing runs on this machine ({facts.get('why', '?')})"
    return f"backend {facts['loads_here']} ({facts['why']})"


def check_model_name(name: str) -> str:
    """`name` if it may name a model in Triton (the manifest's architecture rule: it becomes a directory, a URL path
    and a config.pbtxt string); ResnetDeployError otherwise."""
    try:
        return check_name(name, "model name", ARCH_NAME, ARCH_RULE)
    except ResnetDeployError as e:
        raise ResnetDeployError(f"{e} (it becomes a directory and a URL path)") from None


def _check_options(target: str, precision: str, instances: int, delay_us: int, topk: int, threads: int | None,
                   max_batch: int | None) -> None:
    if target not in TARGETS:
        raise ResnetDeployError(f"unknown Triton backend {target!r}; choose one of: {', '.join(TARGETS)}")
    if precision not in precisions():
        raise ResnetDeployError(f"unknown precision {precision!r}; choose one of: {', '.join(precisions())}")
    for kind, what, value in (("instances", "instances", instances), ("queue_delay_us", "max queue delay", delay_us),
                              ("topk", "topk", topk), ("threads", "threads", threads), ("batch", "max batch",
                                                                                         max_batch)):
        if value is not None:
            limits.check(kind, value, what)


def _max_batch(manifest: Manifest, target: str, max_batch: int | None) -> int:
    low, _, high = manifest.batch
    if target == variants.TRT and low > 1:
        raise ResnetDeployError(f"the bundle's engines take batches of {low} to {high}, but Triton sends batches "
                                "from 1; export again with --batch 1:OPT:MAX")
    if max_batch is None:
        return high
    if target != "python" and max_batch > high:
        raise ResnetDeployError(f"max batch {max_batch} is larger than the bundle's largest batch {high} "
                                "(export again with --batch 1:OPT:MAX to raise it)")
    return int(max_batch)


def _dims(dims: tuple[int, ...] | list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor(name: str, dtype: str, dims: tuple[int, ...] | list[int], extra: str = "") -> str:
    return f'  {{\n    name: {pbtxt_string(name)}\n    data_type: {dtype}\n    dims: {_dims(dims)}\n{extra}  }}'


def _section(key: str, tensors: list[str]) -> str:
    return f"{key} [\n" + ",\n".join(tensors) + "\n]\n"


def _batching(batch: int, instances: int, kind: str, delay_us: int) -> str:
    return (f"max_batch_size: {batch}\n"
            f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay_us}\n}}\n"
            f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]\n")


def _labels(model_dir: Path, manifest: Manifest) -> str:
    # One label per line, line i = class i (Triton's label_filename format): a line break inside a name would shift
    # every later class, so names are written escaped, as they are printed.
    (model_dir / "labels.txt").write_text("".join(printable(c) + "\n" for c in manifest.classes))
    return f"    label_filename: {pbtxt_string('labels.txt')}\n"


def _served_files(manifest: Manifest, backend: str) -> list[FileEntry]:
    """The model files a Python model needs: the one variant asked for, or for "auto" every file a CPU variant runs
    (chosen at load). Never the bundle's other files (export.log, config.yaml, anything else it lists)."""
    names = candidates("python", "auto") if backend == "auto" else (backend,)
    entries = [find_entry(manifest, n) for n in names]
    return list({e.path: e for e in entries if e is not None}.values())


def _python_model(model_dir: Path, bundle: Path, manifest: Manifest, batch: int, instances: int, delay_us: int,
                  params: dict[str, str], topk: int, sys_path: list[str] | None,
                  files: list[FileEntry] | None = None) -> None:
    """A Python-backend model: "classify" (image or tensor in, logits and top-k out; `files`, the model files it
    runs, copied into 1/bundle/ as checked bytes) or "preprocess" (image in, tensor out; no model file). 1/bundle/
    holds a manifest that lists exactly the files copied."""
    classify = params["role"] == "classify"
    version = model_dir / "1"
    (version / "bundle").mkdir(parents=True)
    shutil.copyfile(MODEL_PY, version / "model.py")
    files = files or []
    for entry in files:
        (version / "bundle" / entry.path).parent.mkdir(parents=True, exist_ok=True)
        (version / "bundle" / entry.path).write_bytes(VerifiedFile(bundle, entry).read())
    if "trusted_keys" in params:  # the signed bundle as it is, for the server to check the signature again
        for rel in (MANIFEST_NAME, SIGNATURE_NAME):
            (version / "bundle" / rel).write_bytes(bundle_path(bundle, rel).read_bytes())
    else:  # a preprocessing model lists the fp32 file without holding it: it never loads one, and a manifest lists one
        write_manifest(version / "bundle", dataclasses.replace(manifest, files=files or manifest.files[:1]))
    (model_dir / SYS_PATH_FILE).write_text("".join(p + "\n" for p in (sys_path or environment_paths())))
    shape = list(manifest.input_shape)
    if classify:
        optional = "    optional: true\n"  # a request sends one of the two
        inputs = [_tensor(IMAGE_INPUT, "TYPE_STRING", [1], optional),
                  _tensor(manifest.input_name, "TYPE_FP32", shape, optional)]
        outputs = [_tensor(manifest.output_name, "TYPE_FP32", [len(manifest.classes)], _labels(model_dir, manifest)),
                   _tensor("labels", "TYPE_STRING", [topk]), _tensor("scores", "TYPE_FP32", [topk]),
                   _tensor("class_ids", "TYPE_INT64", [topk])]
    else:
        inputs = [_tensor(IMAGE_INPUT, "TYPE_STRING", [1])]
        outputs = [_tensor(manifest.input_name, "TYPE_FP32", shape)]
    params = {**params, "max_image_bytes": str(MAX_IMAGE_BYTES)}
    q = pbtxt_string
    text = (f"name: {q(model_dir.name)}\nbackend: {q('python')}\n" + _batching(batch, instances, "KIND_CPU", delay_us)
            + _section("input", inputs) + _section("output", outputs)
            + "".join(f"parameters {{\n  key: {q(k)}\n  value: {{ string_value: {q(v)} }}\n}}\n"
                      for k, v in params.items()))
    (model_dir / "config.pbtxt").write_text(text)


def _copy_keys(model_dir: Path, trusted_keys: Sequence[str | Path]) -> list[str]:
    """Each trusted public key, as loaded and checked, written into `model_dir/trusted_keys/`; their paths relative
    to `model_dir`, which model.py reads from its config (never from the bundle)."""
    from cryptography.hazmat.primitives import serialization

    folder = model_dir / KEYS_DIR
    folder.mkdir(parents=True)
    names = []
    for i, trusted in enumerate(load_trusted_keys(trusted_keys)):
        names.append(f"{KEYS_DIR}/key-{i}.pem")
        (model_dir / names[-1]).write_bytes(trusted.key.public_bytes(serialization.Encoding.PEM,
                                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return names


def candidates(target: str, precision: str) -> tuple[str, ...]:
    """The registry's variants that can serve `precision` ("auto": any) for `target`, best first: those of the
    target's runtime, in the order `auto` tries them on its device."""
    device = TARGET_DEVICE[target]
    ranked = [v for v in variants.ranked(device) if target == "python" or v.loader == target]
    return tuple(v.name for v in ranked if precision in ("auto", v.precision))


def _entry(manifest: Manifest, target: str, precision: str, bundle: Path) -> tuple[FileEntry, str]:
    """The bundle's file for the best variant it has among `candidates` (for "auto", in the order `bench` measured on
    this machine and the target's device when the bundle records one), and that variant's name."""
    names = candidates(target, precision)
    if precision == "auto" and (measured := measured_order(bundle, TARGET_DEVICE[target])) is not None:
        names = (*(n for n in measured[0] if n in names), *(n for n in names if n not in measured[0]))
    if not names:
        raise ResnetDeployError(f"--backend {target} cannot serve precision {precision}: no variant runs it on "
                                f"{TARGET_DEVICE[target]}")
    for name in names:
        entry = find_entry(manifest, name)
        if entry is not None:
            return entry, name
    flags = " ".join(("...", *variants.get(names[-1]).flags))
    raise ResnetDeployError(f"the bundle has no {' or '.join(names)} model for --backend {target} "
                            f"--precision {precision}; export it with `resnet-deploy export {flags}`")


def _file_model(model_dir: Path, bundle: Path, manifest: Manifest, target: str, precision: str, batch: int,
                instances: int, delay_us: int) -> tuple[str, dict]:
    """The bundle's ONNX file or engine for NVIDIA's Triton containers; returns the runtime backend name it came
    from and the file's facts (an engine's TensorRT version and GPU)."""
    entry, backend = _entry(manifest, target, precision, bundle)
    version = model_dir / "1"
    version.mkdir(parents=True)
    # the checked bytes themselves: a plan may carry host code, and Triton loads this copy with no check of its own
    triton = TRITON_BACKENDS[target]
    (version / triton.model_file).write_bytes(VerifiedFile(bundle, entry).read())
    text = (f"name: {pbtxt_string(model_dir.name)}\nplatform: {pbtxt_string(triton.platform)}\n"
            + _batching(batch, instances, "KIND_GPU", delay_us)
            + _section("input", [_tensor(manifest.input_name, "TYPE_FP32", list(manifest.input_shape))])
            + _section("output", [_tensor(manifest.output_name, "TYPE_FP32", [len(manifest.classes)],
                                          _labels(model_dir, manifest))]))
    (model_dir / "config.pbtxt").write_text(text)
    return backend, dict(entry.info)


def _ensemble(model_dir: Path, name: str, manifest: Manifest, batch: int) -> None:
    """Encoded image -> `<name>_preprocess` -> `<name>`: one request, two models, inside the server."""
    (model_dir / "1").mkdir(parents=True)  # an ensemble's version directory is empty but must exist
    k = len(manifest.classes)
    q, inp, out = pbtxt_string, manifest.input_name, manifest.output_name
    text = (f"name: {q(model_dir.name)}\nplatform: {q('ensemble')}\nmax_batch_size: {batch}\n"
            + _section("input", [_tensor(IMAGE_INPUT, "TYPE_STRING", [1])])
            + _section("output", [_tensor(out, "TYPE_FP32", [k], _labels(model_dir, manifest))])
            + "ensemble_scheduling {\n  step [\n"
            f"    {{\n      model_name: {q(name + '_preprocess')}\n      model_version: -1\n"
            f"      input_map {{ key: {q(IMAGE_INPUT)} value: {q(IMAGE_INPUT)} }}\n"
            f"      output_map {{ key: {q(inp)} value: {q('preprocessed')} }}\n    }},\n"
            f"    {{\n      model_name: {q(name)}\n      model_version: -1\n"
            f"      input_map {{ key: {q(inp)} value: {q('preprocessed')} }}\n"
            f"      output_map {{ key: {q(out)} value: {q(out)} }}\n    }}\n"
            "  ]\n}\n")
    (model_dir / "config.pbtxt").write_text(text)

