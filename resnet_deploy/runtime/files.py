"""Writing a file whole or not at all: the one atomic-write helper of the package (reports, manifests of the
`auto` record, calibration caches, checkpoints, plots, cached statistics).

Torch-free: part of the runtime's ground floor.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# `.<name>.<pid>.<random>.tmp`: the pid tells a killed writer's leftover from a file another process writes now
# (`checkpoint.remove_stale_temps`).
TEMP_NAME = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], *, fsync: bool = False) -> Path:
    """Call `write(f)` on a uniquely named temporary file beside `path`, then rename it over `path`: a reader (or a
    crash) sees the old file or the new one, never half of one, and two writers never share a temporary file. A
    failure removes the temporary file and re-raises. `fsync` flushes the data to the disk before the rename (for
    files a power cut must not lose: checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode()))
