"""The C++ SDK against the Python runtime on the whole Fashion-MNIST test set (10,000 images) with a real bundle:
input tensors bit for bit, top-1 identical on every image, logits within 1e-5 (fp32), accuracy of both.

    .venv/bin/python benchmarks/cpp_fashion_top1.py bundles/demo [--variants ov-fp32,ov-int8] [--limit N]

Each image goes through C++ twice, as raw pixels (rd_classify_pixels) and as a PNG file's bytes (rd_classify_encoded,
libpng's decoding), and through Python's Predictor on the same variant (OpenVINO). Needs the built library
(make cpp), the `openvino` extra and Fashion-MNIST (`make data`).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cpp" / "python"))

from resnet_deploy_c import CLib  # noqa: E402

from resnet_deploy.data.sources import load_arrays  # noqa: E402
from resnet_deploy.data.spec import parse_spec  # noqa: E402
from resnet_deploy.runtime import Predictor, read_manifest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--variants", default="ov-fp32,ov-int8")
    parser.add_argument("--limit", type=int, default=10000)
    args = parser.parse_args()
    data = load_arrays(parse_spec("fashion-mnist"), "test")
    images, labels = data.images[:args.limit, 0], data.labels[:args.limit]
    pngs = []
    for a in images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        pngs.append(buf.getvalue())
    lib = CLib()
    pre = read_manifest(args.bundle).preprocess
    t0 = time.perf_counter()
    x = np.stack([pre(a) for a in images])
    with lib.preprocessor(pre.to_dict()) as cpre:
        same = sum(np.array_equal(cpre.pixels(a), x[i]) for i, a in enumerate(images))
        same_png = sum(np.array_equal(cpre.encoded(b), x[i]) for i, b in enumerate(pngs))
    print(f"{args.bundle} ({read_manifest(args.bundle).arch}), {len(images)} Fashion-MNIST test images")
    print(f"input tensors equal to Python's bit for bit: {same}/{len(images)} from pixels, {same_png}/{len(images)} "
          f"from PNG files ({time.perf_counter() - t0:.1f} s)")
    for variant in args.variants.split(","):
        with Predictor.from_bundle(args.bundle, backend=variant) as py, lib.predictor(args.bundle, variant) as cc:
            want = py.run(x)
            got_px = np.stack([cc.classify_pixels(a, k=1)[1] for a in images])
            got_png = np.stack([cc.classify_encoded(b, k=1)[1] for b in pngs])
        for how, got in (("pixels", got_px), ("PNG", got_png)):
            agree = int((got.argmax(1) == want.argmax(1)).sum())
            print(f"{variant} from {how}: top-1 equal on {agree}/{len(images)}; largest |logit difference| "
                  f"{np.abs(got - want).max():.2e}; accuracy C++ {(got.argmax(1) == labels).mean():.2%}, Python "
                  f"{(want.argmax(1) == labels).mean():.2%}")


if __name__ == "__main__":
    main()
