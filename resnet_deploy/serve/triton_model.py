"""Triton Python-backend model for a resnet-deploy bundle, copied into a model repository as `<model>/1/model.py`.

Roles (the config's "role" parameter):

- "classify": loads `1/bundle/` with `resnet_deploy.runtime.Predictor` (every checksum verified at load, and with a
  "trusted_keys" parameter the bundle's signature, against the key files it names beside config.pbtxt; the backend
  from the "runtime_backend" parameter, "auto" choosing as `Predictor` does); takes `image` (BYTES: a JPEG, PNG or
  other file of the runtime's IMAGE_FORMATS, decoded and preprocessed here with the bundle's own preprocessing and the
  runtime's limits on untrusted images) or the model's float32 `input` (N x C x H x W, already preprocessed); answers
  `logits` and the top-k `labels`, `scores` (softmax) and `class_ids`.
- "preprocess": `image` -> the model's float32 input, in an ensemble before an ONNX Runtime or TensorRT model.

Triton hands `execute` every request of a dynamic batch: each is checked on its own, the good ones run as one batch,
and a bad one gets an error response while the others are answered. Imports: resnet_deploy.runtime only (numpy, PIL,
onnxruntime), never torch. Not importable outside Triton (it needs triton_python_backend_utils).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _extend_sys_path() -> None:
    # Triton's Python stub embeds the base interpreter and ignores PYTHONPATH and virtual environments: put the server
    # environment first, before anything imports numpy: the one `serve` started this server with (its paths in
    # RESNET_DEPLOY_SYS_PATH, which the stub inherits), else the one the repository was written for (sys_path.txt
    # beside config.pbtxt). Paths that do not exist here (another machine, NVIDIA's container) are skipped.
    listing = Path(__file__).resolve().parents[1] / "sys_path.txt"
    given = os.environ.get("RESNET_DEPLOY_SYS_PATH")
    paths = given.split(os.pathsep) if given else listing.read_text().splitlines() if listing.is_file() else []
    for p in reversed(paths):
        if p and os.path.isdir(p):
            sys.path.insert(0, p)


_extend_sys_path()

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from resnet_deploy.runtime import Predictor, ResnetDeployError, read_manifest  # noqa: E402
from resnet_deploy.runtime.errors import first_line  # noqa: E402
from resnet_deploy.runtime.predictor import top_predictions  # noqa: E402

IMAGE = "image"
TOPK_OUTPUTS = {"labels", "scores", "class_ids"}


def _error(message: str) -> Any:
    # INVALID_ARG makes it an HTTP 400 / gRPC INVALID_ARGUMENT: the request was bad, not the server.
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    """The entry points Triton's Python backend calls: initialize, execute, finalize."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.role = params.get("role", "classify")
        self.max_bytes = int(params["max_image_bytes"])
        bundle = Path(__file__).resolve().parent / "bundle"
        # a signed bundle's publishers' keys: copies the repository's writer made beside config.pbtxt, named there
        model_dir = Path(__file__).resolve().parents[1]
        keys = [model_dir / k for k in params["trusted_keys"].split(",")] if "trusted_keys" in params else None
        self.predictor: Predictor | None = None
        if self.role == "preprocess":
            self.manifest = read_manifest(bundle)
        else:
            self.predictor = Predictor.from_bundle(bundle, backend=params.get("runtime_backend", "auto"),
                                                   threads=int(params.get("threads", "0")) or None, trusted_keys=keys)
            self.manifest = self.predictor.manifest
            self.topk = next(int(o["dims"][0]) for o in config["output"] if o["name"] == "labels")
            pb_utils.Logger.log_info(f"{args['model_name']}: {self.predictor!r} ({self.predictor.why})")
        self.preprocess = self.manifest.preprocess

    def execute(self, requests: list[Any]) -> list[Any]:
        good: list[tuple[int, np.ndarray]] = []
        errors: dict[int, str] = {}
        for i, request in enumerate(requests):
            try:
                good.append((i, self._read(request)))
            except ResnetDeployError as e:
                errors[i] = str(e)
            except Exception as e:  # an image PIL or the preprocessing cannot take: still this request's error only
                errors[i] = f"could not read the request ({type(e).__name__}: {first_line(e)})"
        if self.predictor is None:
            outputs = {i: [pb_utils.Tensor(self.manifest.input_name, x)] for i, x in good}
        else:
            outputs = self._classify(requests, good, errors)
        return [_error(errors[i]) if i in errors else pb_utils.InferenceResponse(output_tensors=outputs[i])
                for i in range(len(requests))]

    def _read(self, request: Any) -> np.ndarray:
        """One request's images as float32 (n, C, H, W)."""
        image = pb_utils.get_input_tensor_by_name(request, IMAGE)
        name = self.manifest.input_name
        tensor = pb_utils.get_input_tensor_by_name(request, name) if self.predictor is not None else None
        if (image is None) == (tensor is None):
            raise ResnetDeployError(f"send exactly one input: '{IMAGE}' (JPEG/PNG bytes) or '{name}' (float32 "
                                    f"N x {' x '.join(map(str, self.manifest.input_shape))})")
        if tensor is not None:
            x = tensor.as_numpy()  # dtype and shape already checked by Triton against config.pbtxt
            if len(x) == 0:
                raise ResnetDeployError(f"empty input: '{name}' holds no images")
            return x
        items = image.as_numpy().reshape(-1)
        if items.size == 0:
            raise ResnetDeployError(f"empty input: '{IMAGE}' holds no images")
        arrays = []
        for k, data in enumerate(items):
            try:
                if len(data) > self.max_bytes:
                    raise ResnetDeployError(f"image of {len(data)} bytes is larger than the limit of "
                                            f"{self.max_bytes} bytes")
                # The runtime's own decoding limits (formats, pixels, sides) apply, as for any untrusted image.
                arrays.append(self.preprocess(bytes(data)))
            except ResnetDeployError as e:
                raise ResnetDeployError(f"image {k + 1} of {items.size}: {e}" if items.size > 1 else str(e)) from None
        return np.stack(arrays)

    def _classify(self, requests: list[Any], good: list[tuple[int, np.ndarray]],
                  errors: dict[int, str]) -> dict[int, list[Any]]:
        """Run every good request as one batch; split the answers back, only the outputs each request asked for."""
        if not good:
            return {}
        try:
            logits = self.predictor.run(np.concatenate([x for _, x in good]))
        except ResnetDeployError as e:
            errors.update((i, str(e)) for i, _ in good)
            return {}
        wanted = {i: set(requests[i].requested_output_names()) for i, _ in good}
        top = None
        if any(w & TOPK_OUTPUTS for w in wanted.values()):
            top = [p.topk for p in top_predictions(logits, self.manifest.classes, self.topk)]
        outputs, start = {}, 0
        for i, x in good:
            rows = slice(start, start + len(x))
            start += len(x)
            tensors = [pb_utils.Tensor(self.manifest.output_name, logits[rows])]
            if top is not None and wanted[i] & TOPK_OUTPUTS:
                best = top[rows]
                tensors += [
                    pb_utils.Tensor("labels", np.array([[lab.encode() for _, lab, _ in t] for t in best], np.object_)),
                    pb_utils.Tensor("scores", np.array([[s for _, _, s in t] for t in best], np.float32)),
                    pb_utils.Tensor("class_ids", np.array([[c for c, _, _ in t] for t in best], np.int64)),
                ]
            outputs[i] = [t for t in tensors if t.name() in wanted[i]]
        return outputs

    def finalize(self) -> None:
        if self.predictor is not None:
            self.predictor.close()
