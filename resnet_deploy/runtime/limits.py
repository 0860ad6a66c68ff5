"""The range of every kind of number a user or a file gives: one bound per kind, defined here once.

The command line's option types (`cli_options.bounded`), the library functions that take the same numbers
(`Predictor.from_bundle(threads=...)`, `write_repository`, `run_loadtest`, `ExportOptions`) and the manifest reader
check against these, so a number that one of them accepts is one every later stage can take: a batch of 99,999,999
is refused when an export is asked for, not after it wrote a bundle no runtime loads.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from resnet_deploy.runtime.errors import ResnetDeployError, quote

MAX_BATCH = 4096  # images in one batch: export --batch, the manifest, bench --batch, Triton's max_batch_size
MAX_CLASSES = 100_000

# kind -> (lowest, highest). Why each high bound: far above any real use, below where the number costs memory or
# time that cannot be given (a thread, a connection or a buffer per unit) or overflows a consumer's field (Triton's
# config takes int32 counts).
BOUNDS: dict[str, tuple[float, float]] = {
    "batch": (1, MAX_BATCH),
    "threads": (1, 1024),  # intra-op threads of one runtime
    "instances": (1, 64),  # Triton model instances: each holds a copy of the model
    "queue_delay_us": (0, 10_000_000),  # Triton's dynamic batcher may hold a request up to 10 s
    "concurrency": (1, 1024),  # loadtest clients: a thread and a connection each
    "rate": (0.01, 100_000),  # loadtest --rate, requests per second: far above what one Python client sends
    "requests": (1, 100_000_000),
    "seconds": (0, 86_400),  # durations, warm-ups and timeouts: at most a day
    "images": (1, 100_000_000),  # --limit, --calib-size
    "topk": (1, MAX_CLASSES),
    "workers": (0, 256),  # DataLoader worker processes
    "rounds": (1, 1000),
    "port": (1, 65535),
    "gib": (0, 1024),  # TensorRT workspace
    "tolerance": (0, 1000),  # a relative error
}


def bound(kind: str) -> tuple[float, float]:
    """(lowest, highest) of a kind of number."""
    return BOUNDS[kind]


def check(kind: str, value: Any, name: str, *, integer: bool = True) -> Any:
    """`value` when it is a number (an integer unless `integer` is False) within the kind's bounds; else a
    ResnetDeployError naming `name` (an option or argument), the range and the value."""
    low, high = BOUNDS[kind]
    ok = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and low <= value <= high
    if not ok:
        what = "an integer" if integer else "a number"
        raise ResnetDeployError(f"{name} must be {what} from {low:g} to {high:g}, found {quote(value)}")
    return int(value) if integer else float(value)
