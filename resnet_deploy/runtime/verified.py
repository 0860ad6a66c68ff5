"""Bundle files checked against their manifest entry before anything reads them: `VerifiedFile`, the one way a
loader gets at a file (the checked bytes, or the checked descriptor), and `verify_files` over a whole bundle.
Torch-free (docs/architecture.md, "Floors").
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_deploy.runtime.checksum import blake3_available, hash_stream, hasher
from resnet_deploy.runtime.errors import BundleError, quote
from resnet_deploy.runtime.manifest import FileEntry, Manifest, bundle_path


def verify_files(bundle: str | Path, manifest: Manifest, paths: list[str] | None = None) -> None:
    """Check size and every listed checksum this machine can compute (sha256, and blake3) of the named files (all
    files when None), so that a bundle passing here loads the same bytes on runtimes with or without blake3;
    BundleError names the first that differs."""
    for entry in manifest.files:
        if paths is None or entry.path in paths:
            VerifiedFile(Path(bundle), entry).check(every_checksum=True)


FD_DIR = "/proc/self/fd"  # Linux: opening FD_DIR/N opens the very file that descriptor N has open


@dataclass(frozen=True)
class VerifiedFile:
    """A bundle file handed to a loader, which gets at it only through a check against the manifest's entry (size,
    and `FileEntry.checksum`: blake3, or sha256 in older bundles or without the module).

    Two ways in, neither of which opens the file's path again after the check: `read()` returns the very bytes it
    checked (for TensorRT plans, which may carry host code); `opened()` opens the file once, checks it through that
    descriptor and hands the library `/proc/self/fd/N`, which opens that same file whatever is renamed over its path
    meanwhile (ONNX Runtime and OpenVINO build from a path as fast as from the file they had opened themselves, and
    faster than from bytes: benchmarks/RESULTS.md). What `opened()` cannot stop is a process allowed to write the
    file itself changing it in place during the load; the file's size, inode and change times are compared before
    and after, which catches writes (within the file system's timestamp resolution, a few milliseconds on older
    kernels), but not stores through a shared writable mapping made earlier, which move no timestamp. A bundle
    should be writable only by whoever installs it.
    """

    bundle: Path
    entry: FileEntry

    @property
    def name(self) -> str:
        """The file's path inside the bundle, for messages."""
        return self.entry.path

    @property
    def content_id(self) -> str:
        """"<algorithm>-<digest>" of the checksum a load verifies: names the content, e.g. for compiled-model caches
        (with `opened()`, the content the library read)."""
        return "-".join(self.entry.checksum)

    def _open(self) -> tuple[int, os.stat_result]:
        """A descriptor of the listed file and its stat: opened without following a link in the last component
        (the path is already resolved inside the bundle), a regular file, and, where /proc shows it, the file that
        path named (a directory swapped for a link after the path was resolved would show there)."""
        real = bundle_path(self.bundle, self.entry.path)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BundleError(f"bundle file {self.entry.path} is missing from {self.bundle}") from None
        except OSError as e:
            raise BundleError(f"bundle file {quote(self.entry.path)} cannot be opened ({e.strerror})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(f"bundle file {quote(self.entry.path)} is not a regular file; refused")
            # the kernel's own name for what was opened ("... (deleted)" once something was renamed over it)
            opened = os.readlink(f"{FD_DIR}/{fd}").removesuffix(" (deleted)") if os.path.isdir(FD_DIR) else str(real)
            if opened != str(real):
                raise BundleError(f"bundle file {quote(self.entry.path)} moved while it was opened; refused")
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def _check(self, found: int, checks: list[tuple[str, str, Any]]) -> None:
        """`found`: the bytes seen; `checks`: (algorithm, listed digest, hasher fed those bytes)."""
        bad = next((algorithm for algorithm, digest, h in checks if h.hexdigest() != digest), None)
        if found != self.entry.size or bad is not None:
            raise BundleError(f"bundle file {self.entry.path} does not match the manifest's {bad or checks[0][0]}/size "
                              f"(expected {self.entry.size} bytes, found {found}); it was changed after export")

    def _checks(self, every: bool) -> list[tuple[str, str, Any]]:
        listed = [self.entry.checksum]  # the load's own first, so that errors name it
        if every and self.entry.blake3 and blake3_available():
            listed.append(("sha256", self.entry.sha256))
        return [(algorithm, digest, hasher(algorithm)) for algorithm, digest in listed]

    def _hash(self, fd: int, size: int, checks: list[tuple[str, str, Any]]) -> None:
        with open(fd, "rb", closefd=False) as f:
            found = hash_stream(f, [h for _, _, h in checks]) if size == self.entry.size else size
        self._check(found, checks)

    def read(self) -> bytes:
        """The file's bytes, once their size and checksum match the manifest (BundleError otherwise)."""
        checks = self._checks(every=False)
        fd, st = self._open()
        with open(fd, "rb") as f:
            # one byte more than listed shows a file that grew since its size was read
            data = f.read(st.st_size + 1) if st.st_size == self.entry.size else b""
        checks[0][2].update(data)
        self._check(len(data) if st.st_size == self.entry.size else st.st_size, checks)
        return data

    def check(self, every_checksum: bool = False) -> None:
        """Check size and checksum (with `every_checksum`, each one listed that this machine can compute) against
        the manifest; BundleError otherwise."""
        checks = self._checks(every_checksum)
        fd, st = self._open()
        try:
            self._hash(fd, st.st_size, checks)
        finally:
            os.close(fd)

    @contextmanager
    def opened(self) -> Iterator[str]:
        """A path that opens the checked file itself (`/proc/self/fd/N`), valid inside the `with` block; the file is
        checked through that descriptor first, and compared with its first stat when the block ends (BundleError:
        it changed in place while the library read it). Where /proc is missing, a private copy of the checked bytes.
        """
        if not os.path.isdir(FD_DIR):
            with tempfile.TemporaryDirectory(prefix="resnet-deploy-") as tmp:  # made 0700
                copy = Path(tmp) / Path(self.entry.path).name
                copy.write_bytes(self.read())
                yield str(copy)
            return
        fd, st = self._open()
        try:
            self._hash(fd, st.st_size, self._checks(every=False))
            yield f"{FD_DIR}/{fd}"
            if _identity(os.fstat(fd)) != _identity(st):
                raise BundleError(f"bundle file {self.entry.path} was changed while it was loaded; refused")
        finally:
            os.close(fd)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
