"""ctypes binding of the C++ SDK's C API (cpp/include/resnet_deploy/resnet_deploy.h), for Python apps that embed the
C++ library and for the tests and benchmarks that compare it with the Python runtime.

    lib = CLib("build/cpp/libresnet_deploy.so")
    with lib.predictor("bundles/demo", variant="ov-fp32") as p:
        logits = p.classify_encoded(open("shoe.png", "rb").read(), k=3)[1]

Every failed call raises CError(status, message) with the library's one-line message.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

STATUS = {0: "ok", 1: "argument", 2: "bundle", 3: "image", 4: "backend", 5: "memory", 6: "internal"}
DEFAULT_LIB = Path(__file__).resolve().parents[2] / "build" / "cpp" / "libresnet_deploy.so"
LIB_ENV = "RESNET_DEPLOY_CPP_LIB"


class CError(Exception):
    """A failed C API call: `status` ("bundle", "image", ...) and the library's message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = STATUS.get(code, str(code))


class _Options(ctypes.Structure):
    _fields_ = [("variant", ctypes.c_char_p), ("threads", ctypes.c_int32), ("cache_dir", ctypes.c_char_p)]


class _Info(ctypes.Structure):
    _fields_ = [("variant", ctypes.c_char_p), ("why", ctypes.c_char_p), ("arch", ctypes.c_char_p),
                ("num_classes", ctypes.c_int32), ("channels", ctypes.c_int32), ("height", ctypes.c_int32),
                ("width", ctypes.c_int32), ("max_batch", ctypes.c_int32)]


class _Score(ctypes.Structure):
    _fields_ = [("class_id", ctypes.c_int32), ("score", ctypes.c_float)]


def library_path() -> Path:
    """Where the built library is: $RESNET_DEPLOY_CPP_LIB, else build/cpp/libresnet_deploy.so of this checkout."""
    return Path(os.environ.get(LIB_ENV) or DEFAULT_LIB)


_P = ctypes.c_void_p
_F = ctypes.POINTER(ctypes.c_float)
_U8 = ctypes.POINTER(ctypes.c_uint8)


class CLib:
    """The loaded library and its functions with their C signatures."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else library_path()
        self.lib = ctypes.CDLL(str(self.path))
        sig = {
            "rd_last_error": (ctypes.c_char_p, []), "rd_version": (ctypes.c_char_p, []),
            "rd_registry_json": (ctypes.c_char_p, []),
            "rd_preprocessor_create": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_P)]),
            "rd_preprocessor_destroy": (None, [_P]),
            "rd_preprocessor_shape": (ctypes.c_int, [_P] + [ctypes.POINTER(ctypes.c_int32)] * 3),
            "rd_preprocess_encoded": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t, _F, ctypes.c_size_t]),
            "rd_preprocess_pixels": (ctypes.c_int, [_P, _U8, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                                    ctypes.c_size_t, _F, ctypes.c_size_t]),
            "rd_predictor_create": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_Options), ctypes.POINTER(_P)]),
            "rd_predictor_destroy": (None, [_P]),
            "rd_predictor_info": (ctypes.c_int, [_P, ctypes.POINTER(_Info)]),
            "rd_predictor_label": (ctypes.c_char_p, [_P, ctypes.c_int32]),
            "rd_predictor_preprocessor": (_P, [_P]),
            "rd_predictor_describe": (ctypes.c_char_p, [_P, ctypes.c_char_p]),
            "rd_predictor_run": (ctypes.c_int, [_P, _F, ctypes.c_size_t, ctypes.c_size_t, _F, ctypes.c_size_t]),
            "rd_classify_encoded": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_Score),
                                                   ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t), _F,
                                                   ctypes.c_size_t]),
            "rd_classify_pixels": (ctypes.c_int, [_P, _U8, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                                  ctypes.c_size_t, ctypes.POINTER(_Score), ctypes.c_size_t,
                                                  ctypes.POINTER(ctypes.c_size_t), _F, ctypes.c_size_t]),
            "rd_manifest_check": (ctypes.c_int, [ctypes.c_char_p]),
            "rd_manifest_check_json": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t]),
        }
        for name, (res, args) in sig.items():
            fn = getattr(self.lib, name)
            fn.restype, fn.argtypes = res, args
            setattr(self, name, fn)

    def check(self, code: int) -> None:
        """Raise CError for a failed call, with the calling thread's message."""
        if code != 0:
            raise CError(code, self.rd_last_error().decode())

    def registry(self) -> dict[str, Any]:
        """The SDK's variant registry and CPU facts (rd_registry_json)."""
        return json.loads(self.rd_registry_json().decode())

    def preprocessor(self, preprocess: dict[str, Any]) -> Preprocessor:
        """A preprocessor from a manifest's "preprocess" object."""
        handle = _P()
        self.check(self.rd_preprocessor_create(json.dumps(preprocess).encode(), ctypes.byref(handle)))
        return Preprocessor(self, handle, owned=True)

    def predictor(self, bundle: str | Path, variant: str = "auto", threads: int = 0,
                  cache_dir: str | Path | None = None) -> CPredictor:
        """rd_predictor_create on a bundle directory."""
        opts = _Options(variant.encode(), threads, None if cache_dir is None else str(cache_dir).encode())
        handle = _P()
        self.check(self.rd_predictor_create(str(bundle).encode(), ctypes.byref(opts), ctypes.byref(handle)))
        return CPredictor(self, handle)

    def manifest_check(self, bundle: str | Path) -> None:
        """rd_manifest_check: CError when the manifest is refused."""
        self.check(self.rd_manifest_check(str(bundle).encode()))

    def manifest_check_json(self, text: str | bytes) -> None:
        """rd_manifest_check_json on a manifest's text."""
        data = text.encode() if isinstance(text, str) else text
        self.check(self.rd_manifest_check_json(data, len(data)))


def _floats(a: np.ndarray) -> Any:
    return a.ctypes.data_as(_F)


class Preprocessor:
    """A preprocessor handle (owned, or borrowed from a predictor)."""

    def __init__(self, lib: CLib, handle: ctypes.c_void_p, owned: bool) -> None:
        self.lib, self.handle, self.owned = lib, handle, owned
        c, h, w = ctypes.c_int32(), ctypes.c_int32(), ctypes.c_int32()
        lib.check(lib.rd_preprocessor_shape(handle, ctypes.byref(c), ctypes.byref(h), ctypes.byref(w)))
        self.shape = (c.value, h.value, w.value)

    def encoded(self, data: bytes) -> np.ndarray:
        """Encoded image bytes -> float32 (C, H, W)."""
        out = np.empty(self.shape, np.float32)
        self.lib.check(self.lib.rd_preprocess_encoded(self.handle, data, len(data), _floats(out), out.size))
        return out

    def pixels(self, a: np.ndarray) -> np.ndarray:
        """uint8 HxW, HxWx1, HxWx3 or HxWx4 array -> float32 (C, H, W)."""
        a = np.ascontiguousarray(a, dtype=np.uint8)
        h, w = a.shape[:2]
        c = 1 if a.ndim == 2 else a.shape[2]
        out = np.empty(self.shape, np.float32)
        self.lib.check(self.lib.rd_preprocess_pixels(self.handle, a.ctypes.data_as(_U8), h, w, c, 0, _floats(out),
                                                     out.size))
        return out

    def close(self) -> None:
        if self.owned and self.handle:
            self.lib.rd_preprocessor_destroy(self.handle)
        self.handle = None

    def __enter__(self) -> Preprocessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CPredictor:
    """A predictor handle."""

    def __init__(self, lib: CLib, handle: ctypes.c_void_p) -> None:
        self.lib, self.handle = lib, handle
        info = _Info()
        lib.check(lib.rd_predictor_info(handle, ctypes.byref(info)))
        self.variant, self.why = info.variant.decode(), info.why.decode()
        self.num_classes = info.num_classes
        self.shape = (info.channels, info.height, info.width)
        self.max_batch = info.max_batch
        self.preprocessor = Preprocessor(lib, lib.rd_predictor_preprocessor(handle), owned=False)

    def label(self, class_id: int) -> str | None:
        out = self.lib.rd_predictor_label(self.handle, class_id)
        return None if out is None else out.decode()

    def describe(self) -> dict[str, str]:
        """What runs the model (rd_predictor_describe): runtime, version, inference precision, and the model cache:
        its folder, whether it was used (and why not), and a warning when a folder or entry was refused."""
        return json.loads(self.lib.rd_predictor_describe(self.handle, None).decode())

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) -> logits (N, K)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        out = np.empty((len(x), self.num_classes), np.float32)
        self.lib.check(self.lib.rd_predictor_run(self.handle, _floats(x), x.size, len(x), _floats(out), out.size))
        return out

    def _classify(self, call: Any, k: int) -> tuple[list[tuple[int, float]], np.ndarray]:
        top = (_Score * max(k, 1))()
        n = ctypes.c_size_t()
        logits = np.empty(self.num_classes, np.float32)
        self.lib.check(call(top, k, ctypes.byref(n), _floats(logits), logits.size))
        return [(top[i].class_id, top[i].score) for i in range(n.value)], logits

    def classify_encoded(self, data: bytes, k: int = 5) -> tuple[list[tuple[int, float]], np.ndarray]:
        """(top k as (class_id, score), logits) of an encoded image."""
        return self._classify(lambda *a: self.lib.rd_classify_encoded(self.handle, data, len(data), *a), k)

    def classify_pixels(self, a: np.ndarray, k: int = 5) -> tuple[list[tuple[int, float]], np.ndarray]:
        """(top k, logits) of a uint8 HxW[xC] array."""
        a = np.ascontiguousarray(a, dtype=np.uint8)
        c = 1 if a.ndim == 2 else a.shape[2]
        return self._classify(lambda *r: self.lib.rd_classify_pixels(self.handle, a.ctypes.data_as(_U8), a.shape[0],
                                                                     a.shape[1], c, 0, *r), k)

    def close(self) -> None:
        if self.handle:
            self.lib.rd_predictor_destroy(self.handle)
        self.handle = None

    def __enter__(self) -> CPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
