"""Try the bad inputs of each class (bundle paths, image memory, 16-bit images, references, recipe values, YAML aliases,
manifest values, API misuse, crash leftovers, malicious checkpoints; then, in `bad_inputs_serving.py`, code from a
bundle, the OpenVINO cache, clients killing the server, swaps after the check, `kill -9` of serve, training folders,
request options, lost results, CLI numbers and misleading messages) against a source tree; print what happened.

    python benchmarks/bad_inputs.py --tree /path/to/old/checkout --tree .   # one column per tree
    python benchmarks/bad_inputs.py --tree . --classes 11-20                 # only the later classes

Each probe runs in its own process with that tree first on PYTHONPATH; image probes run under a 4 GB address-space
limit so that an unbounded allocation fails fast instead of taking the machine, and report their peak memory above
the baseline. The table is Markdown, for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(HERE), str(HERE / "tests"), str(HERE / "benchmarks")]

IMAGE_PROBE = """
import resource, sys, numpy as np
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from resnet_deploy.runtime.preprocess import Preprocess
def mb(key):  # /proc, not getrusage: ru_maxrss survives fork + exec and would start at the parent's peak
    return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith(key)) / 1024
c = int(sys.argv[2])
pre = Preprocess(input_size=(224, 224), channels=c, resize=256, crop=224, mean=(0.5,) * c, std=(0.25,) * c)
pre(np.full((300, 300, 3), 7, np.uint8))
open("/proc/self/clear_refs", "w").write("5")  # peak := now
base = mb("VmRSS:")
try:
    x = pre(sys.argv[1])
    out = f"ok, {(x > 0.99 * x.max()).mean():.0%} of values at the maximum"
except BaseException as e:
    out = f"{type(e).__name__}: {str(e).splitlines()[0][:90] if str(e) else ''}"
print(f"{out}; peak {mb('VmHWM:') - base:.0f} MB above the baseline")
"""

API_PROBE = """
import sys, numpy as np
from resnet_deploy.runtime import Predictor, ResnetDeployError
p = Predictor.from_bundle(sys.argv[1], backend="onnx", threads=1)
case = sys.argv[2]
try:
    if case == "threads":
        Predictor.from_bundle(sys.argv[1], threads=1.5); print("accepted threads=1.5")
    elif case == "nan":
        print("ran, logits:", p.run(np.full((1, 3, 32, 32), np.nan, np.float32))[0][:2])
    elif case == "closed":
        p.close(); p.predict(np.zeros((40, 40, 3), np.uint8))
    elif case == "empty":
        p.predict(np.zeros((0, 0, 3), np.uint8))
except ResnetDeployError as e:
    print("ResnetDeployError:", e)
"""


def outcome(r: subprocess.CompletedProcess) -> str:
    """One short cell: the exit status and the line that matters."""
    text = (r.stdout + r.stderr).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if "Traceback" in text:
        last = lines[-1]
        return f"traceback: {last[:110]}" + ("..." if len(last) > 110 else "")
    last = lines[-1] if lines else ""
    return f"exit {r.returncode}: {last[:140]}" + (f"... ({len(last):,} chars)" if len(last) > 140 else "")


def run(tree: Path, args: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> str:
    e = {**os.environ, "PYTHONPATH": str(tree), **(env or {})}
    try:
        r = subprocess.run([sys.executable, *args], env=e, capture_output=True, text=True, timeout=timeout,
                           cwd=tree)
    except subprocess.TimeoutExpired:
        return f"still running after {timeout} s"
    return outcome(r) if r.returncode != 0 or not args[0].startswith("-c") else (r.stdout + r.stderr).strip()[-160:]


def cli(tree: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return run(tree, ["-m", "resnet_deploy.cli", *args], env)


def image(tree: Path, path: Path | str, channels: int) -> str:
    return run(tree, ["-c", IMAGE_PROBE, str(path), str(channels)])


def fixtures(root: Path) -> dict[str, Path]:
    """A bundle, a checkpoint, data, images and recipes, made once with this tree."""
    import numpy as np
    import torch
    from helpers import tiny_checkpoint, write_png
    from PIL import Image
    from test_data import write_folder

    from resnet_deploy.export import ExportOptions, export_bundle
    from resnet_deploy.runtime.preprocess import Preprocess

    pre = Preprocess(input_size=(32, 32), channels=3, resize=36, crop=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    f = {"ckpt": tiny_checkpoint(root / "tiny.pt", ["a", "b", "c"], pre)}
    f["bundle"] = export_bundle(root / "bundle", ExportOptions(batch=(1, 4, 8)), checkpoint=f["ckpt"])
    f["data"] = write_folder(root / "data", classes=("a", "b", "c"), per_class=2, size=(40, 36))
    f["strip"], f["big"], f["g16"] = root / "strip.png", root / "big.png", root / "g16.png"
    write_png(f["strip"], 65535, 1, 16, 6)
    write_png(f["big"], 6000, 4000, 8, 6)
    Image.fromarray((np.random.default_rng(0).integers(0, 65536, (64, 64))).astype(np.uint16)).save(f["g16"])
    f["cmyk"] = root / "cmyk.jpg"
    rgb = np.random.default_rng(0).integers(0, 256, (500, 600, 3), dtype=np.uint8)
    Image.fromarray(rgb).resize((6000, 4000)).convert("CMYK").save(f["cmyk"], quality=90)
    f["bomb"] = root / "bomb.yaml"  # billion laughs inside one field: `name` becomes a list of 9^8 strings
    levels = ['  - &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"  - &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefg", "bcdefgh", strict=True)]
    f["bomb"].write_text("\n".join(["name:", *levels]) + "\n")
    f["evil"] = root / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"model": Payload()}, f["evil"])
    return f


def edited(bundle: Path, where: Path, change) -> Path:
    out = Path(shutil.copytree(bundle, where))
    d = json.loads((out / "manifest.json").read_text())
    change(d)
    (out / "manifest.json").write_text(json.dumps(d))
    return out


def leftovers_after_kill(tree: Path, f: dict[str, Path], root: Path) -> str:
    """Export with --int8 --force killed once its temporary files exist; what is left; then after the next export."""
    work = Path(tempfile.mkdtemp(dir=root))
    (work / "tmp").mkdir()
    env = {**os.environ, "PYTHONPATH": str(tree), "TMPDIR": str(work / "tmp")}
    args = [sys.executable, "-m", "resnet_deploy.cli", "export", str(f["ckpt"]), "--out", str(work / "b"), "--int8",
            "--calib-data", f"folder:{f['data'] / 'train'}", "--calib-size", "8", "--force", "--quiet"]
    subprocess.run(args, env=env, capture_output=True, cwd=tree, timeout=600)
    before = set((work / "tmp").iterdir())
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tree)
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < 300:
        if any("quant" in p.name for p in work.rglob("*")):  # $TMPDIR/resnet-deploy-quant-*, or in .b.export/tmp
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    found = sorted(p.name for p in work.iterdir() if p.name.startswith(".")) + sorted(
        f"$TMPDIR/{p.name}" for p in set((work / "tmp").iterdir()) - before)
    subprocess.run(args, env=env, capture_output=True, cwd=tree, timeout=600)
    after = sorted(p.name for p in work.iterdir() if p.name.startswith(".")) + sorted(
        f"$TMPDIR/{p.name}" for p in set((work / "tmp").iterdir()) - before)
    return (f"killed: {', '.join(found) or 'nothing left'}; next export: {', '.join(after) or 'nothing left'}; "
            f"bundle {'complete' if (work / 'b' / 'manifest.json').exists() else 'MISSING'}")


def probes(f: dict[str, Path], root: Path) -> list[tuple[str, str, object]]:
    b, quick = f["bundle"], str(HERE / "recipes" / "fashion_mnist_quick.yaml")
    outside = edited(b, root / "abs", lambda d: d["files"][0].update(path="/etc/hostname"))
    dotdot = edited(b, root / "dotdot", lambda d: d["files"][0].update(path="../tiny.pt"))
    std0 = edited(b, root / "std0", lambda d: d["preprocess"].update(std=[0, 0.25, 0.25]))
    batch0 = edited(b, root / "batch0", lambda d: d["input"]["batch"].update(max=0))
    resize = edited(b, root / "resize", lambda d: d["preprocess"].update(resize="36"))
    img = str(f["strip"])
    return [
        ("1 paths", "files[0].path = /etc/hostname", lambda t: cli(t, "predict", str(outside), img)),
        ("1 paths", "files[0].path = ../tiny.pt", lambda t: cli(t, "predict", str(dotdot), img)),
        ("2 image memory", "65535x1 16-bit RGBA PNG (2 kB), 224 model", lambda t: image(t, img, 3)),
        ("2 image memory", "6000x4000 RGBA PNG, 224 RGB model", lambda t: image(t, f["big"], 3)),
        ("2 image memory", "6000x4000 CMYK JPEG, 224 grey model", lambda t: image(t, f["cmyk"], 1)),
        ("3 16-bit", "random 16-bit grey PNG", lambda t: image(t, f["g16"], 1)),
        ("4 reference", "validate --checkpoint /no/such.pt",
         lambda t: cli(t, "validate", str(b), "--data", f"folder:{f['data']}", "--checkpoint", "/no/such.pt")),
        *[("5 ranges", f"train --set {s}", lambda t, s=s: cli(t, "train", "--recipe", quick, "--out",
                                                               str(root / "run"), "--set", s))
          for s in ("optim.batch_size=0", "run.log_every=0", "optim.lr=-0.1", "run.device=gpu0",
                    "schedule.iterations=-5")],
        ("5 ranges", "export --input-size 100000",
         lambda t: cli(t, "export", str(f["ckpt"]), "--out", str(root / "big-input"), "--input-size", "100000")),
        ("6 aliases", "recipe whose `name` expands to 9^8 strings", lambda t: cli(t, "train", "--recipe",
                                                                                   str(f["bomb"]))),
        ("7 manifest values", "preprocess.std = [0, ...]", lambda t: cli(t, "predict", str(std0), img)),
        ("7 manifest values", "input.batch.max = 0", lambda t: cli(t, "predict", str(batch0), img)),
        ("7 manifest values", 'preprocess.resize = "36"', lambda t: cli(t, "predict", str(resize), img)),
        *[("8 API misuse", case, lambda t, c=case: run(t, ["-c", API_PROBE, str(b), c]))
          for case in ("threads", "empty", "closed", "nan")],
        ("9 crash leftovers", "export --int8 --force killed during quantization",
         lambda t: leftovers_after_kill(t, f, root)),
        ("10 pickles", "export of a checkpoint holding os.system", lambda t: cli(t, "export", str(f["evil"]), "--out",
                                                                                 str(root / "evil-out"))),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", type=Path, required=True, help="a source tree to try (repeatable)")
    ap.add_argument("--classes", default="1-20", help="a range of classes to try, e.g. 11-20")
    args = ap.parse_args()
    low, high = (int(v) for v in args.classes.split("-"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # a probe may hand a folder in here to another user
        f = fixtures(root)
        rows = probes(f, root) if low <= 10 else []
        if high > 10:
            import bad_inputs_serving

            rows += bad_inputs_serving.probes(f, bad_inputs_serving.fixtures(f, root), root)
        rows = [r for r in rows if low <= int(r[0].split()[0]) <= high]
        print("| class | input | " + " | ".join(str(t) for t in args.tree) + " |")
        print("| --- | --- |" + " --- |" * len(args.tree))
        for kind, what, probe in rows:
            cells = [str(probe(t.resolve())).replace("|", "\\|").replace(str(root), "$T") for t in args.tree]
            print(f"| {kind} | {what} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
