"""Misuse of the Predictor API (wrong types, empty images, a closed predictor, non-finite input): one exact line each.

Part of the trust-boundary tests (tests/test_security.py holds the other classes of bad input).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_checkpoint
from PIL import Image

from resnet_deploy.runtime import Predictor, ResnetDeployError
from resnet_deploy.runtime.preprocess import Preprocess

PRE = Preprocess(input_size=(32, 32), channels=3, resize=36, crop=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from resnet_deploy.export import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("misuse")
    ckpt = tiny_checkpoint(root / "tiny.pt", ["ant", "bee", "cat", "dog"], PRE)
    return export_bundle(root / "bundle", ExportOptions(batch=(1, 4, 8)), checkpoint=ckpt)


def test_api_misuse_is_one_clear_error(bundle: Path) -> None:
    rng = np.random.default_rng()
    for call, line in [
        (lambda: Predictor.from_bundle(None), "expected a bundle directory path, found NoneType"),
        (lambda: Predictor.from_bundle(bundle, threads=1.5), "threads must be a positive integer or None, found 1.5"),
        (lambda: Predictor.from_bundle(bundle, threads="2"), "threads must be a positive integer or None, found '2'"),
        (lambda: Predictor.from_bundle(bundle, device="gpu"), "unknown device 'gpu'; choose one of: cpu, cuda"),
    ]:
        with pytest.raises(ResnetDeployError) as e:
            call()
        assert str(e.value) == line
    p = Predictor.from_bundle(bundle, backend="onnx", threads=1)
    image = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    for call, line in [
        (lambda: p.predict(image, topk=1.5), "topk must be a positive integer, found 1.5"),
        (lambda: p.predict(image, topk="3"), "topk must be a positive integer, found '3'"),
        (lambda: p.predict(np.zeros((0, 0, 3), np.uint8)), "image array is 0x0 pixels: an image needs at least 1x1"),
        (lambda: p.predict([image, Image.new("RGB", (5, 0))]), "image 2 of 2: image is 5x0 pixels: an image needs at "
                                                               "least 1x1"),
    ]:
        with pytest.raises(ResnetDeployError) as e:
            call()
        assert str(e.value) == line
    x = rng.standard_normal((3, 3, 32, 32), dtype=np.float32)
    x[1, 0, 5, 5], x[2, 2, 0, 0] = np.nan, np.inf
    with pytest.raises(ResnetDeployError) as e:
        p.run(x)
    assert str(e.value) == "input image(s) 1, 2 of 3 hold NaN or Inf; pass allow_nonfinite=True to run them anyway"
    assert p.run(x, allow_nonfinite=True).shape == (3, 4)  # asked for: it runs (and NaN comes out)
    p.close()
    with pytest.raises(ResnetDeployError) as e:
        p.predict(image)
    assert str(e.value) == "this Predictor is closed; load the bundle again with Predictor.from_bundle"
