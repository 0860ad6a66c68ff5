"""File checksums of bundles: sha256 (every manifest lists it) and BLAKE3 (where the manifest and this machine have it).

Every load checks its model file, and BLAKE3 hashes a ResNet-50 file (97 MiB) in 16 ms here against sha256's 59 ms
(benchmarks/RESULTS.md), so loads check BLAKE3 where they can. pip installs `blake3` with the package; where it is
missing (a machine without a package index), files are checked by their sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO

try:
    from blake3 import blake3 as _Blake3
except ImportError:
    _Blake3 = None


def blake3_available() -> bool:
    """True when the `blake3` module can be used here."""
    return _Blake3 is not None


def hasher(algorithm: str) -> Any:
    """A new hashlib-style object ("sha256" or "blake3")."""
    if algorithm == "blake3":
        # One thread: BLAKE3's multi-threaded mode (10.8 ms for ResNet-50) uses a thread pool that hangs in a process
        # forked after its parent hashed (multiprocessing's fork, pre-forking servers).
        return _Blake3()
    return hashlib.sha256()


def hash_stream(f: BinaryIO, hashers: list[Any], chunk: int = 1 << 22) -> int:
    """Feed the rest of an open binary file to every hasher through one reused buffer; returns the bytes read."""
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    while n := f.readinto(buf):
        total += n
        for h in hashers:
            h.update(view[:n])
    return total


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hasher("sha256")
    with open(path, "rb") as f:
        hash_stream(f, [h])
    return h.hexdigest()


def file_digests(path: str | Path) -> tuple[str, str | None]:
    """(sha256, blake3) hex digests of a file, in one read; blake3 None where the module is missing."""
    hashers = [hasher("sha256"), *([hasher("blake3")] if blake3_available() else [])]
    with open(path, "rb") as f:
        hash_stream(f, hashers)
    return hashers[0].hexdigest(), hashers[1].hexdigest() if len(hashers) > 1 else None
