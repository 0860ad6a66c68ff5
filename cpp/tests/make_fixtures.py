"""Write the numbers the C++ tests compare against, computed by the Python runtime (the reference):

    python cpp/tests/make_fixtures.py OUT

OUT/bundle/         a tiny untrained bundle (cifar_resnet20, 4 classes, 32x32 RGB; fp32 and int8 ONNX files)
OUT/images/         PNG and JPEG images of several kinds and sizes
OUT/fixtures.json   per image: the file, Python's input tensor (OUT/images/*.f32, float32 C x H x W) and, where the
                    `openvino` extra is installed, Python's OpenVINO logits per variant
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from cpp_corpus import jpeg_cases, pattern, png_bytes, png_cases  # noqa: E402
from test_runtime import _build_bundle  # noqa: E402

from resnet_deploy.runtime import Predictor, read_manifest  # noqa: E402
from resnet_deploy.runtime.openvino_backend import ov_installed  # noqa: E402

VARIANTS = ("ov-fp32", "ov-int8")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    bundle = out / "bundle"
    if not (bundle / "manifest.json").exists():
        _build_bundle(bundle)
    pre = read_manifest(bundle).preprocess
    rng = np.random.default_rng()
    images = out / "images"
    images.mkdir(exist_ok=True)
    chosen = {}
    for h, w in ((1, 1), (29, 40), (40, 29), (64, 48), (3, 500)):
        for name, data in (*png_cases(rng, h, w), *jpeg_cases(rng, h, w)):
            if name in ("grey1", "grey16", "rgb8", "rgba16", "palette4", "rgb8_interlaced", "jpeg_420",
                        "jpeg_progressive", "jpeg_grey"):
                ext = "jpg" if name.startswith("jpeg") else "png"
                chosen[f"{name}_{w}x{h}.{ext}"] = data
    chosen["large_3000x4000.png"] = png_bytes(pattern(rng, 3000, 4000, 3), 2, 8)
    entries = []
    logits = {}
    if ov_installed():
        for variant in VARIANTS:
            with Predictor.from_bundle(bundle, backend=variant, threads=1) as p:
                logits[variant] = p.run(np.stack([pre(data) for data in chosen.values()]))
    for i, (name, data) in enumerate(chosen.items()):
        (images / name).write_bytes(data)
        pre(data).astype("<f4").tofile(images / f"{name}.f32")
        entries.append({"image": f"images/{name}", "tensor": f"images/{name}.f32",
                        "logits": {v: logits[v][i].tolist() for v in logits}})
    (out / "fixtures.json").write_text(json.dumps({"bundle": "bundle", "shape": list(read_manifest(bundle).input_shape),
                                                   "images": entries}, indent=1) + "\n")
    print(f"fixtures: {len(entries)} images, logits for {', '.join(logits) or 'no variant (openvino missing)'} "
          f"-> {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_fixtures.py OUT")
    main(Path(sys.argv[1]))
