"""Typed reads of JSON values for the files a bundle carries (manifest.json and its preprocessing spec).

A bundle comes from elsewhere and may have been edited by hand, so every value is checked for its type and range
before anything uses it; the first bad one raises a `FieldError` that names the field by its path in the document
(`files[2].size`, `preprocess.std[0]`) and quotes at most a short piece of the value.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, TypeVar

from resnet_deploy.runtime.errors import ResnetDeployError, quote

T = TypeVar("T")
MISSING: Any = object()


class FieldError(ResnetDeployError):
    """One field of a document has the wrong type or value, or is missing."""


def need(ok: bool, field: str, want: str, found: Any) -> None:
    """Raise FieldError("`field` must be `want`, found `found`") unless `ok`."""
    if not ok:
        raise FieldError(f"{field} must be {want}, found {quote(found)}")


def get(d: dict[str, Any], key: str, field: str, default: Any = MISSING) -> Any:
    """`d[key]`; `default` when absent, or FieldError("`field` is missing") when there is no default."""
    if key in d:
        return d[key]
    if default is MISSING:
        raise FieldError(f"{field} is missing")
    return default


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" from {lo:g} to {hi:g}"
    return f" >= {lo:g}" if lo is not None else (f" <= {hi:g}" if hi is not None else "")


def integer(v: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (not a bool, not 3.0) within [lo, hi]."""
    ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
    need(ok and (lo is None or v >= lo) and (hi is None or v <= hi), field, "an integer" + _bounds(lo, hi), v)
    return int(v)


def number(v: Any, field: str, lo: float | None = None, hi: float | None = None, above: float | None = None) -> float:
    """A finite number (not a bool) within [lo, hi], and strictly above `above` when given."""
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (lo is None or v >= lo) and (hi is None or v <= hi) and (above is None or v > above)
    want = "a finite number" + (f" above {above:g}" if above is not None else _bounds(lo, hi))
    need(ok, field, want, v)
    return float(v)


def string(v: Any, field: str, choices: tuple[str, ...] | None = None, max_len: int = 1024) -> str:
    """A JSON string of at most `max_len` characters, one of `choices` when given."""
    if choices is not None:
        need(isinstance(v, str) and v in choices, field, "one of " + ", ".join(map(repr, choices)), v)
    need(isinstance(v, str) and 0 < len(v) <= max_len, field, f"a string of 1 to {max_len} characters", v)
    return str(v)


def mapping(v: Any, field: str) -> dict[str, Any]:
    """A JSON object."""
    need(isinstance(v, dict), field, "an object", v)
    return v


def items(v: Any, field: str, each: Callable[[Any, str], T], min_len: int = 0, max_len: int = 100_000) -> list[T]:
    """A JSON array of `min_len` to `max_len` items, each read by `each(item, "field[i]")`."""
    need(isinstance(v, list), field, "a list", v)
    if not min_len <= len(v) <= max_len:
        raise FieldError(f"{field} must hold {min_len} to {max_len} items, found {len(v)}")
    return [each(x, f"{field}[{i}]") for i, x in enumerate(v)]
