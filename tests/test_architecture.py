"""The package's shape, read from its source: imports only go down the floors of docs/architecture.md, there are no
import circles, imports inside functions are only the lazy imports listed below (each with why), and the document
names every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "resnet_deploy"

# Floors, lowest first (docs/architecture.md, "Floors"): a module imports only modules on its own floor or below.
# Keyed by the module's first name inside the package; COMMANDS below override.
FLOORS = {
    "runtime": 0, "__init__": 0,
    "paper": 1, "system": 1, "config": 1, "models": 1, "data": 1, "checkpoint": 1,
    "train": 2,
    "console": 1,
    "export": 3, "validate": 3,
    "serve": 4, "doctor": 4,
    "cli_options": 5, "cli": 5,
}
# The command layer: click commands that parse, call the library and print. A command imports its stage when it
# runs, so that one command does not load every other's libraries (`predict` stays torch-free and starts in a
# fraction of `train`'s time). Elsewhere a package module is imported inside a function only when it brings torch
# into a module that is torch-free (see `_lazy_torch`).
COMMANDS = ("resnet_deploy.cli", "resnet_deploy.cli_options", "resnet_deploy.export.cli", "resnet_deploy.serve.cli",
            "resnet_deploy.train.cli")
# Pairs of packages that never import each other, whatever their floors (export and validate are siblings; export
# works from a checkpoint without the training code; validate reads the bundle and the reference model only).
NEVER = {("export", "train"), ("export", "validate"), ("validate", "export"), ("validate", "train")}

# Libraries imported inside functions, and why. Nothing else is (stdlib and required libraries go at the top).
LAZY = {
    # Optional engines (extras): the package imports and tests on machines without them.
    "tensorrt": "the trt extra; CUDA machines only",
    "tensorrt_lean": "the trt-lean extra; runs version-compatible engines",
    "cuda": "cuda-python, the trt extra",
    "openvino": "the openvino extra (CPU only)",
    "onnxruntime": "the runtime's engine, but an edge app may install only TensorRT (runtime/onnx_backend.py)",
    "onnxsim": "optional graph simplifier (`export --simplify`)",
    "tritonclient": "the serve extra (`loadtest`)",
    "model_signing": "the signing extra (signing a bundle); 430 ms to import, so never on a load",
    "cryptography": "the signing extra: a signature checked only when trusted keys are given",
    "torch.utils.tensorboard": "tensorboard is optional (`log.tensorboard`)",
    # Heavy libraries a light path does not pay for: torch-free modules (doctor, validate/, system.py, data/'s
    # folder readers) import torch/torchvision only in the function that needs it; plots and tables import
    # matplotlib/rich when drawn (the CLI's light commands start without them).
    "torch": "the torch-free floors and commands (doctor, validate, system) import it where used",
    "torchvision": "as torch",
    "onnx": "validate's layerwise comparison and ceiling only; the runtime never imports it",
    "matplotlib": "plots only (about 0.5 s to import)",
    "rich": "tables and progress bars only",
    "fcntl": "POSIX only (the staging lock); absent on Windows",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import statement of module `name`; `from a import b`
    names a.b when that is a module of the package, else a."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*parts, base] if base else parts)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        out += [(t, node.lineno, id(node) in in_function) for t in dict.fromkeys(targets)]
    return out


def _floor(module: str) -> int:
    if module in COMMANDS:
        return FLOORS["cli"]
    parts = module.split(".")
    return FLOORS[parts[1] if len(parts) > 1 else "__init__"]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edges(*, inner: bool) -> dict[str, set[str]]:
    """Package-internal imports: module -> modules (top-level imports; with `inner`, function-level ones too).
    Importing a module imports its packages' __init__ first, which is an edge too."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _, in_function in _imports(m):
            if target.split(".")[0] == "resnet_deploy" and (inner or not in_function):
                graph[m].add(target)
    return graph


def _loads(module: str, libraries: tuple[str, ...]) -> bool:
    """Whether importing `module` imports one of `libraries` (its top-level imports, followed through the package
    and its parents' __init__)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in MODULES]
        for target, _, in_function in _imports(m):
            if in_function:
                continue
            if target.split(".")[0] in libraries:
                return True
            if target in MODULES:
                todo.append(target)
    return False


TORCH = ("torch", "torchvision")


def _lazy_torch(module: str, target: str) -> bool:
    """An import of `target` inside a function of `module` that is torch's lazy import: `module` imports without
    torch, `target` does not."""
    return _loads(target, TORCH) and not _loads(module, TORCH)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_floor() -> None:
    assert {_package(m) for m in MODULES} <= set(FLOORS)


def test_no_import_circles() -> None:
    # Function-level imports count: an import moved into a function to break a circle leaves the circle.
    assert _circles(_edges(inner=True)) == []


def test_imports_only_go_down() -> None:
    wrong = [f"{m} (floor {_floor(m)}) imports {t} (floor {_floor(t)})"
             for m, targets in _edges(inner=True).items() for t in targets
             if _floor(t) > _floor(m) or (_package(m), _package(t)) in NEVER]
    assert wrong == []


def test_imports_inside_functions_are_lazy_engines() -> None:
    """Inside functions: only the LAZY libraries, and package modules only in the command layer or for torch."""
    wrong = []
    for m in MODULES:
        for target, line, in_function in _imports(m):
            if not in_function:
                continue
            if target.split(".")[0] == "resnet_deploy":
                if m not in COMMANDS and not _lazy_torch(m, target):
                    wrong.append(f"{m}:{line} imports {target} inside a function")
            elif not any(target == lazy or target.startswith(f"{lazy}.") for lazy in LAZY):
                wrong.append(f"{m}:{line} imports {target} inside a function (not a lazy library)")
    assert wrong == []


def test_the_runtime_imports_only_the_runtime() -> None:
    # Edge apps install the runtime alone (examples/edge_app/): it imports nothing else of the package.
    wrong = [f"{m} imports {t}" for m, targets in _edges(inner=True).items() if _package(m) == "runtime"
             for t in targets if _package(t) not in ("runtime", "__init__")]
    assert wrong == []
def test_the_architecture_document_names_every_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for path in MODULES.values():
        rel = path.relative_to(PACKAGE)
        if rel.name == "__init__.py":
            continue
        # Named by its path inside the package (`runtime/machine.py`), or at the top level by its file name.
        if str(rel) not in text and not (len(rel.parts) == 1 and rel.name in text):
            missing.append(str(rel))
    assert missing == [], f"docs/architecture.md does not mention: {', '.join(missing)}"


@pytest.mark.parametrize("folder", ["examples", "benchmarks", "cpp"])
def test_the_architecture_document_names_the_folders_beside_the_package(folder: str) -> None:
    assert f"{folder}/" in (ROOT / "docs" / "architecture.md").read_text()
