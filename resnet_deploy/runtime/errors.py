"""The one exception type for user errors (bad input, bad files, missing pieces), and how messages quote values.

It lives in `runtime/` because that is the ground floor: every other part of the package may import it, and edge apps
that install only the runtime can catch it. The CLI turns it into a one-line message and a non-zero exit code.
"""

from __future__ import annotations

import reprlib
from typing import Any

QUOTE_LIMIT = 200  # characters of a user's value that an error message repeats

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = QUOTE_LIMIT
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxlevel = 3


class ResnetDeployError(Exception):
    """A user-facing error: the message says what was expected, what was found and what to do."""


class BundleError(ResnetDeployError):
    """A bundle directory is missing, incomplete, tampered with, or built for another machine."""


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message (library messages can span pages), or its type name when empty."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` in at most `limit` characters (with "..." when cut), however large or nested the value is.

    reprlib bounds the work as well as the text: a list of a million items is not rendered first and cut after.
    """
    text = _repr.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
