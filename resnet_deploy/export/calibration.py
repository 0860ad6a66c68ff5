"""Calibration data, provenance and the calibration cache.

`ArrayReader` hands a calibration batch to ONNX Runtime's calibrators (`quantize.py`'s int8 for CPUs, `qdq.py`'s
TensorRT-rule ranges), `calibration_method` maps export's method names onto theirs.

Every quantized file's manifest entry records where its scales came from: the calibration data SPEC, the number of
images, the sha256 of the calibration batch (the preprocessed float32 array) and of the checkpoint, and the method.
The cache (`--calib-cache FILE`, JSON) keeps the activation ranges of the TensorRT-rule Q/DQ models (`qdq.py`) so that
a re-export (another TensorRT version, more engines, --trt-compat) skips calibration; it is reused only when its
provenance is this export's, and otherwise ignored with a message and rewritten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.files import atomic_write_text
from resnet_deploy.runtime.manifest import INPUT_NAME

CACHE_SCHEMA = "resnet-deploy/calibration-cache"
CACHE_VERSION = 1
CALIB_BATCH = 8  # images per calibration run; ranges are merged batch by batch to bound memory


class ArrayReader:
    """`onnxruntime.quantization.CalibrationDataReader` over a float32 (N, C, H, W) array, CALIB_BATCH at a time.

    Implements `set_range` and `__len__` so that `quantize_static(extra_options={"CalibStridedMinMax": 1})` collects
    ranges one batch at a time instead of keeping every intermediate tensor of every image (GBs for ResNet-50).
    """

    def __init__(self, arrays: np.ndarray, batch: int = CALIB_BATCH) -> None:
        self.batches = [np.ascontiguousarray(arrays[i:i + batch], dtype=np.float32)
                        for i in range(0, len(arrays), batch)]
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: x}

    def rewind(self) -> None:
        self.set_range(0, len(self.batches))


def calibration_method(method: str) -> Any:
    """ONNX Runtime's CalibrationMethod for one of export's names ("minmax", "entropy", "percentile")."""
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def batch_sha256(calib: np.ndarray) -> str:
    """sha256 of a calibration batch: its shape, then its float32 values in C order."""
    x = np.ascontiguousarray(calib, dtype=np.float32)
    h = hashlib.sha256(json.dumps(list(x.shape)).encode())
    h.update(x.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Provenance:
    """What a set of calibrated scales was computed from (the manifest's `calibration` record)."""

    checkpoint_sha256: str
    spec: str | None  # the --calib-data SPEC; None when the images were given as arrays (API)
    images: int
    sha256: str  # of the calibration batch, `batch_sha256`

    @classmethod
    def of(cls, calib: np.ndarray, spec: str | None, checkpoint_sha256: str) -> Provenance:
        """The provenance of calibrating on `calib` (loaded from `spec`) for the checkpoint with that sha256."""
        return cls(checkpoint_sha256, spec, int(len(calib)), batch_sha256(calib))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def difference(self, other: dict[str, Any]) -> str | None:
        """The first fact in which `other` (a cache's provenance) differs from this one, or None when none does."""
        names = {"checkpoint_sha256": "checkpoint sha256", "spec": "calibration data", "images": "image count",
                 "sha256": "calibration batch sha256"}
        for key, name in names.items():
            mine, theirs = getattr(self, key), other.get(key)
            if mine != theirs:
                return f"its {name} is {_short(theirs)}, this export's is {_short(mine)}"
        return None


def _short(value: Any) -> str:
    text = str(value)
    return f"{text[:12]}..." if len(text) == 64 else repr(value) if isinstance(value, str) else text


class CalibrationCache:
    """Activation ranges per calibration method, in a JSON file tied to one `Provenance`."""

    def __init__(self, path: str | Path | None, provenance: Provenance, log: Callable[[str], None]) -> None:
        self.path = None if path is None else Path(path)
        self.provenance = provenance
        self.log = log
        self.ranges: dict[str, dict[str, float]] = self._read()
        self.used: dict[str, str] = {}  # method -> "reused" or "written"

    def _read(self) -> dict[str, dict[str, float]]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if data.get("schema") != CACHE_SCHEMA or data.get("version") != CACHE_VERSION:
                raise ValueError(f"not a {CACHE_SCHEMA} v{CACHE_VERSION} file")
            why = self.provenance.difference(data["provenance"])
            ranges = {m: {t: float(v) for t, v in r.items()} for m, r in data["ranges"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            self.log(f"calibration cache {self.path} ignored: it cannot be read ({e}); recalibrating")
            return {}
        if why is not None:
            self.log(f"calibration cache {self.path} ignored: {why}; recalibrating")
            return {}
        return ranges

    def get(self, method: str, tensors: list[str], compute: Callable[[], dict[str, float]]) -> dict[str, float]:
        """amax of each of `tensors` by `method`: from the cache when it holds them all, else `compute()`d and saved."""
        cached = self.ranges.get(method, {})
        if tensors and all(t in cached for t in tensors):
            self.used[method] = "reused"
            self.log(f"calibration cache {self.path}: {method} ranges of {len(tensors)} tensors reused")
            return {t: cached[t] for t in tensors}
        if cached:
            self.log(f"calibration cache {self.path} ignored for {method}: it lacks some of this model's tensors "
                     "(another opset or input size?); recalibrating")
        amax = compute()
        self.ranges[method] = {**cached, **amax}
        if self.path is not None:
            self._write()
            self.used[method] = "written"
        return amax

    def _write(self) -> None:
        data = {"schema": CACHE_SCHEMA, "version": CACHE_VERSION, "provenance": self.provenance.to_dict(),
                "ranges": self.ranges}
        try:
            atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")
        except OSError as e:
            raise ResnetDeployError(f"cannot write the calibration cache {self.path}: {e}") from None

    def record(self, method: str) -> dict[str, Any]:
        """The manifest's `calibration` record for scales computed by `method`."""
        cache = None if self.path is None else {"path": str(self.path), "use": self.used.get(method, "not used")}
        return {**self.provenance.to_dict(), "method": method, "cache": cache}
