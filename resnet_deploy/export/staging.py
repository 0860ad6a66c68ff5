"""Where an export keeps its temporary data, and how a finished bundle takes the place of the old one.

Everything temporary lives in one work directory per destination, `.<name>.export/` beside it (the same file system,
so renames are atomic):

    new/   the bundle being built
    tmp/   the system temporary directory while the export runs (ONNX Runtime's quantization tools write there)
    old/   during `--force` without an atomic exchange: the old bundle, between its two renames
    lock   held (flock) by the export that owns the directory; the kernel drops it when the process dies

A process killed at any point leaves nothing but that directory. The next export to the same destination takes the
lock, puts a bundle back if a `--force` was cut between its two renames, removes the rest, and says so.

Replacing a bundle: on Linux, renameat2(RENAME_EXCHANGE) swaps the new and the old directory in one step, so the
destination holds a complete bundle at every instant. Where that call is missing (other systems, file systems
without it) the old bundle is renamed to `old/` and the new one into place; a crash between the two renames leaves
the destination missing until the next export puts back the new bundle (or the old one if the new is incomplete).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from resnet_deploy.runtime.errors import ResnetDeployError
from resnet_deploy.runtime.manifest import MANIFEST_NAME, read_manifest
from resnet_deploy.runtime.verified import verify_files

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def workdir_of(out: Path) -> Path:
    """The work directory of destination `out`."""
    return out.parent / f".{out.name}.export"


class Workdir:
    """The locked work directory of one export to `out`; use as a context manager around the export.

    Args:
        out: the destination bundle directory (its parent must exist).
        note: called with one line for each thing recovered or removed from an interrupted export.
    """

    def __init__(self, out: Path, note: Callable[[str], None] = lambda line: None) -> None:
        self.out, self.root, self.note = out, workdir_of(out), note
        self.new, self.tmp, self.old = self.root / "new", self.root / "tmp", self.root / "old"
        self._lock: int | None = None
        self._tempdir: str | None = None

    def __enter__(self) -> Workdir:
        if self.root.is_symlink() or self.root.exists() and not self.root.is_dir():
            raise ResnetDeployError(f"{self.root} is in the way of the export's work directory; remove it")
        self.root.mkdir(exist_ok=True)
        self._lock = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            import fcntl

            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): one export per destination is the user's care
            pass
        except BlockingIOError:
            os.close(self._lock)
            self._lock = None
            raise ResnetDeployError(f"another export to {self.out} is running (it holds {self.root / 'lock'}); "
                                    "wait for it to finish or choose another --out") from None
        try:
            self._recover()
            self.new.mkdir()
            self.tmp.mkdir()
        except BaseException:
            os.close(self._lock)
            raise
        # Tools that take no directory argument (ONNX Runtime's quant_pre_process, quantize_static) write to the
        # system temporary directory: point it here so that a kill leaves nothing there.
        self._tempdir, tempfile.tempdir = tempfile.tempdir, str(self.tmp)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        tempfile.tempdir = self._tempdir
        shutil.rmtree(self.root, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)

    def _recover(self) -> None:
        if self.old.is_dir() and not (self.out.exists() or self.out.is_symlink()):
            back = self.new if _complete(self.new) else self.old
            os.replace(back, self.out)
            self.note(f"an interrupted --force left {self.out} missing: put back the "
                      f"{'new' if back == self.new else 'old'} bundle")
        leftovers = sorted(p.name for p in self.root.iterdir() if p.name != "lock")
        for name in leftovers:
            p = self.root / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        if leftovers:
            self.note(f"removed what an interrupted export left in {self.root}: {', '.join(leftovers)}")

    def commit(self) -> None:
        """Put the complete bundle in `new/` at the destination, replacing what is there in one step if possible."""
        if not (self.out.exists() or self.out.is_symlink()):
            os.rename(self.new, self.out)
            return
        if _exchange(self.new, self.out):
            return  # new/ now holds the old bundle, removed with the work directory
        os.replace(self.out, self.old)
        os.replace(self.new, self.out)


def _complete(bundle: Path) -> bool:
    try:
        verify_files(bundle, read_manifest(bundle))
    except ResnetDeployError:
        return False
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28 or another libc
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system or kernel does not offer it
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def check_destination(out: Path, force: bool, marker: str = MANIFEST_NAME, kind: str = "bundle") -> None:
    """Refuse an existing DIR unless `force`, and never replace something that is not a `kind` (a non-empty
    directory without `marker`): a bundle here, a Triton model repository for `resnet-deploy triton`."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ResnetDeployError(f"{out} exists and is not a directory; choose another --out")
        if not force:
            raise ResnetDeployError(f"{out} already exists; add --force to replace it, or choose another --out")
        if any(out.iterdir()) and not (out / marker).is_file():
            raise ResnetDeployError(f"{out} is a non-empty directory that is not a {kind} (no {marker}); "
                                    f"--force replaces only a {kind}")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ResnetDeployError(f"cannot write {out}: {parent} is not a writable directory")
