"""Transfer on real data: does fine-tuning from pretrained weights beat training from scratch on a small folder?

1. Pretrain a CIFAR ResNet-20 on Fashion-MNIST classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat; 30,000
   training images, as RGB so that the weights fit folder images).
2. Write classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) as a folder of PNGs: `train/` with few images per
   class from Fashion-MNIST's training split, `test/` from its test split (never seen by any stage before the end).
3. Fine-tune `recipes/finetune_folder_small.yaml` from the pretrained checkpoint, and train the same recipe from
   scratch (He initialisation): same iterations, learning rates and augmentation; only the first weights differ.
   Both for several seeds (the head's initialisation, batch order and augmentation), since a thousand test images
   move by a point or two from one seed to the next.
4. Print both accuracies on the held-out images and write them to OUT/transfer.json.

    .venv/bin/python benchmarks/finetune_transfer.py [--out runs/finetune-demo] [--data fashion-mnist] [--force]
        [--download] [--pretrain-iterations 1500] [--train-per-class 10] [--seeds 3] [--set schedule.iterations=300]
        [--scratch-set optim.lr=0.1]

Finished stages are reused when their recipe and data are unchanged (--force redoes them). `make finetune-demo` runs
this, then exports the seed-0 fine-tuned model and validates and runs it with the CLI. Every run reports its last
iterate (no model selection on the test images).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from resnet_deploy.config import load_train_config, to_dict
from resnet_deploy.data import load_arrays, parse_spec
from resnet_deploy.data.pipeline import InMemoryData
from resnet_deploy.data.sources import FMNIST_CLASSES
from resnet_deploy.data.stats import chunks, make_preprocess, mean_std
from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.train import train

ROOT = Path(__file__).resolve().parent.parent
QUICK, SMALL = ROOT / "recipes" / "fashion_mnist_quick.yaml", ROOT / "recipes" / "finetune_folder_small.yaml"
PRETRAIN, TRANSFER = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


def folder_name(label: int) -> str:
    return FMNIST_CLASSES[label].lower().replace(" ", "_").replace("/", "_")


def write_folder(train, test, root: Path, per_train: int, per_test: int) -> Path:
    """Classes 5-9 as grey PNGs: root/train/<class>/ from the training split, root/test/<class>/ from the test split."""
    done = root / ".complete"
    if done.is_file() and json.loads(done.read_text()) == [per_train, per_test]:
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    for split, arrays, n in (("train", train, per_train), ("test", test, per_test)):
        for label in TRANSFER:
            d = root / split / folder_name(label)
            d.mkdir(parents=True)
            for i, k in enumerate(rng.choice(np.flatnonzero(arrays.labels == label), n, replace=False)):
                Image.fromarray(arrays.images[k, 0], mode="L").save(d / f"{i:04d}.png")
    done.write_text(json.dumps([per_train, per_test]))
    return root


def pretrain_data(train, test, batch: int) -> InMemoryData:
    """Classes 0-4, grey replicated to RGB (folder images are read as RGB, so the first layer must take 3 channels)."""
    def pick(a):
        keep = np.isin(a.labels, PRETRAIN)
        return np.repeat(a.images[keep], 3, axis=1), a.labels[keep]

    x, y = pick(train)
    tx, ty = pick(test)
    mean, std = mean_std(chunks(x))
    return InMemoryData(x, y, [FMNIST_CLASSES[i] for i in PRETRAIN], make_preprocess(mean, std, x.shape[2]),
                        eval_images=tx, eval_labels=ty, batch_size=batch, pad=2, seed=0)


def run(name: str, cfg, out: Path, force: bool, data=None, key: object = None) -> dict:
    """Train, or reuse the figures of a finished run in `out` of the same recipe and `key` (the folder's make-up)."""
    summary = out / "summary.json"
    if summary.is_file() and not force:
        old = json.loads(summary.read_text())
        if old.get("config") == to_dict(cfg) and old.get("key") == key:
            print(f"== {name}: reusing {out} (top-1 {old['top1']:.2%}; --force retrains)", flush=True)
            return old
    shutil.rmtree(out, ignore_errors=True)
    print(f"== {name}: {cfg.model.arch}, {cfg.schedule.iterations} iterations of {cfg.optim.batch_size} -> {out}",
          flush=True)
    r = train(cfg, out, data=data, progress=False)  # prints its precision and notes as it starts
    keep = {**{k: r[k] for k in ("top1", "top5", "eval_images", "wall_s", "img_per_s", "iteration")},
            "config": to_dict(cfg), "key": key}
    summary.write_text(json.dumps(keep, indent=2) + "\n")
    print(f"   top-1 {keep['top1']:.2%} on {keep['eval_images']} held-out images, {keep['wall_s']:.0f} s", flush=True)
    return keep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/finetune-demo"))
    ap.add_argument("--data", default="fashion-mnist", help="Data SPEC of Fashion-MNIST's IDX files.")
    ap.add_argument("--pretrain-iterations", type=int, default=1500)
    ap.add_argument("--train-per-class", type=int, default=10)
    ap.add_argument("--test-per-class", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3, help="Fine-tune and scratch runs with run.seed 0..N-1.")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="Override a field of finetune_folder_small.yaml for both runs, e.g. schedule.iterations=300.")
    ap.add_argument("--scratch-set", dest="scratch", action="append", default=[],
                    help="Override a field for the scratch runs only, e.g. optim.lr=0.1.")
    ap.add_argument("--download", action="store_true", help="Let torchvision fetch Fashion-MNIST if not on disk.")
    ap.add_argument("--force", action="store_true", help="Redo every stage.")
    a = ap.parse_args()
    t0 = time.perf_counter()
    try:
        spec = parse_spec(a.data)
        train_set, test_set = load_arrays(spec, "train", a.download), load_arrays(spec, "test")
        root = write_folder(train_set, test_set, a.out / "data", a.train_per_class, a.test_per_class)
        n = a.pretrain_iterations
        pre_cfg = load_train_config(QUICK, ["name=finetune_pretrain", f"schedule.iterations={n}",
                                            f"schedule.milestones=[{n // 2}, {3 * n // 4}]",
                                            "run.checkpoint_every=0"])
        pre = run("pretrain on Fashion-MNIST classes 0-4", pre_cfg, a.out / "pretrain", a.force,
                  pretrain_data(train_set, test_set, pre_cfg.optim.batch_size))
        weights, key = f"model.weights={a.out / 'pretrain' / 'last.pt'}", [a.train_per_class, a.test_per_class]
        ft, sc = [], []
        for seed in range(a.seeds):
            common, tag = [f"data.spec=folder:{root}", f"run.seed={seed}", *a.overrides], f"-seed{seed}" * (seed > 0)
            ft.append(run(f"fine-tune on the folder of classes 5-9, seed {seed}",
                          load_train_config(SMALL, [*common, weights]), a.out / f"finetune{tag}", a.force, key=key))
            sc.append(run(f"from scratch on the same folder, seed {seed}",
                          load_train_config(SMALL, [*common, "model.weights=null", *a.scratch]),
                          a.out / f"scratch{tag}", a.force, key=key))
    except ResnetDeployError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    report(a, pre, ft, sc, time.perf_counter() - t0)
    return 0


def report(a: argparse.Namespace, pre: dict, ft: list[dict], sc: list[dict], wall: float) -> None:
    """The Markdown table of both runs per seed, and OUT/transfer.json."""
    f, s = [r["top1"] for r in ft], [r["top1"] for r in sc]
    margin = [100 * (x - y) for x, y in zip(f, s, strict=True)]
    result = {"pretrain_top1_classes_0_4": pre["top1"], "finetune_top1": f, "scratch_top1": s,
              "margin_points": [round(m, 2) for m in margin], "mean_margin_points": round(float(np.mean(margin)), 2),
              "held_out_images": ft[0]["eval_images"], "train_images_per_class": a.train_per_class,
              "iterations": ft[0]["iteration"], "overrides": a.overrides, "scratch_overrides": a.scratch,
              "wall_s": {"pretrain": pre["wall_s"], "finetune": [r["wall_s"] for r in ft],
                         "scratch": [r["wall_s"] for r in sc]}}
    (a.out / "transfer.json").write_text(json.dumps(result, indent=2) + "\n")
    seeds = " | ".join(f"seed {i}" for i in range(len(f)))
    print(f"\n{ft[0]['eval_images']} held-out images of classes 5-9, {a.train_per_class} training images per class, "
          f"{ft[0]['iteration']} iterations\n| top-1 | {seeds} | mean |\n|---|{'---:|' * (len(f) + 1)}")
    for name, v in (("fine-tuned from classes 0-4", f), ("from scratch, same recipe", s)):
        print(f"| {name} | {' | '.join(f'{x:.2%}' for x in v)} | {np.mean(v):.2%} |")
    print(f"| margin (points) | {' | '.join(f'{m:+.1f}' for m in margin)} | {np.mean(margin):+.1f} |")
    print(f"(pretraining reached {pre['top1']:.2%} on classes 0-4; this script took {wall:.0f} s; "
          f"{a.out / 'transfer.json'})")


if __name__ == "__main__":
    sys.exit(main())
