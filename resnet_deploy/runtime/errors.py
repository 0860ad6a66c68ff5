"""The one exception type for user errors (bad input, bad files, missing pieces).

It lives in `runtime/` because that is the ground floor: every other part of the package may import it, and edge apps
that install only the runtime can catch it. The CLI turns it into a one-line message and a non-zero exit code.
"""


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
