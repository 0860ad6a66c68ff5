"""The one exception type for user errors (bad input, bad files, missing pieces), and how messages quote values.

It lives in `runtime/` because that is the ground floor: every other part of the package may import it, and edge apps
that install only the runtime can catch it. The CLI turns it into a one-line message and a non-zero exit code.
"""

from __future__ import annotations

import reprlib
import unicodedata
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


def printable(text: str) -> str:
    """`text` safe to print as (part of) one line on a terminal: control characters (line breaks and escape
    sequences among them), Unicode format characters (bidi overrides such as U+202E, zero-width ones) and line or
    paragraph separators are written as Python escapes (`\\n`, `\\x1b`, `\\u202e`), everything else as it is.

    Names from outside (class folders, a bundle's class list, file names, a server's answers) go through this
    before they are printed, so none can move the cursor, recolour the screen, reverse the text that follows or
    start a line that looks like the program's own.
    """
    if text.isprintable() and text.isascii():  # the common case, without a loop
        return text
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in _UNPRINTABLE or (ch.isspace() and ch != " ") else ch for ch in text)


_UNPRINTABLE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` in at most `limit` characters (with "..." when cut), however large or nested the value is.

    reprlib bounds the work as well as the text: a list of a million items is not rendered first and cut after.
    """
    text = _repr.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
