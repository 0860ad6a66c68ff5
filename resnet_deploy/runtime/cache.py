"""The package's cache of what it can rebuild (compiled models, data statistics), kept so that nobody else can plant
a file in it.

A cached compiled model is code the process will run, so a cache entry must be one this user wrote for exactly the
content it is used for:

- folders are opened one component at a time below the cache root, without following links (`O_NOFOLLOW`), made
  0700 when this process creates them, and refused when owned by another user or writable by group or others (a
  cache root another user made beforehand, mode 0777, is not used, with a one-line warning, and the caller runs
  without a cache);
- an entry is written to a new file in that folder and renamed over its name (a link planted at the name is
  replaced, never followed), and begins with a header holding the digest of the name's binding (what the entry was
  made from: the checked model content and the compile settings) and of the entry's bytes; a read recomputes the
  digest over the bytes it got and returns them only when it matches.

What remains: this user (and root) can write the folder, so they can write an entry whose digest matches; the
digest guards against damaged and misplaced entries, the folder checks against everyone else.
"""

from __future__ import annotations

import mmap
import os
import secrets
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from resnet_deploy.runtime.checksum import blake3_available, hasher

CACHE_ENV = "RESNET_DEPLOY_CACHE"
MAGIC = b"resnet-deploy cache entry 1"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def cache_root() -> Path:
    """Where resnet-deploy caches what it can rebuild (data statistics, compiled models): `$RESNET_DEPLOY_CACHE`,
    else `$XDG_CACHE_HOME/resnet-deploy`, else `~/.cache/resnet-deploy`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet-deploy"


def _unsafe(st: os.stat_result, what: str) -> str | None:
    """Why a folder or entry with this lstat/fstat must not be trusted, or None."""
    if stat.S_ISLNK(st.st_mode):
        return f"{what} is a symbolic link"
    if st.st_uid != os.geteuid():
        return f"{what} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


@dataclass
class PrivateDir:
    """An open cache folder that passed the checks (see the module docstring); `close` releases it."""

    path: Path
    fd: int

    def read(self, name: str, binding: bytes) -> tuple[memoryview, str] | None:
        """The entry `name` (header removed: a private, writable mapping of its bytes) and its digest, when it
        exists, is a regular file of this user's, and its digest matches `binding` and its bytes; None otherwise (a
        damaged or foreign entry is said in a warning, then treated as missing)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as e:  # ELOOP: a link planted at the entry's name
            _warn(f"cache entry {self.path / name} not used ({e.strerror}); it will be replaced")
            return None
        try:
            st = os.fstat(fd)
            why = _unsafe(st, "it") or (None if stat.S_ISREG(st.st_mode) else "it is not a regular file")
            if why is None and st.st_size > len(MAGIC):
                # copy-on-write: a mapping the reader may treat as writable memory without touching the file
                view = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_COPY)
            else:
                why, view = why or "it is empty", None
        finally:
            os.close(fd)
        if view is not None:
            entry = _check_entry(view, binding)
            if entry is not None:
                return entry
            view.close()
            why = "its digest does not match its bytes or what it was made from"
        _warn(f"cache entry {self.path / name} not used ({why}); it will be replaced")
        return None

    def write(self, name: str, binding: bytes, data: bytes | memoryview) -> None:
        """Write entry `name` for `binding` atomically (a new 0600 file renamed over the name); errors are ignored,
        since a cache that cannot be written only costs time."""
        algorithm, digest = _digest(binding, data)
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=self.fd)
            try:
                with os.fdopen(fd, "wb", closefd=False) as f:
                    f.write(b"%s %s %s\n" % (MAGIC, algorithm.encode(), digest.encode()))
                    f.write(data)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError:
            try:
                os.unlink(tmp, dir_fd=self.fd)
            except OSError:
                pass

    def close(self) -> None:
        """Release the folder."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _digest(binding: bytes, data: bytes | memoryview | mmap.mmap, algorithm: str | None = None) -> tuple[str, str]:
    algorithm = algorithm or ("blake3" if blake3_available() else "sha256")
    h = hasher(algorithm)
    h.update(len(binding).to_bytes(8, "little") + binding)
    h.update(data)
    return algorithm, h.hexdigest()


def _check_entry(view: mmap.mmap, binding: bytes) -> tuple[memoryview, str] | None:
    end = view.find(b"\n", 0, 200)
    header = view[:end].split(b" ") if end > 0 else []
    if len(header) != 6 or b" ".join(header[:4]) != MAGIC or header[4] not in (b"blake3", b"sha256"):
        return None
    algorithm = header[4].decode()
    if algorithm == "blake3" and not blake3_available():
        return None
    data = memoryview(view)[end + 1:]
    if _digest(binding, data, algorithm)[1].encode() != header[5]:
        data.release()
        return None
    return data, f"{algorithm}-{header[5].decode()}"


def private_dir(*parts: str, purpose: str = "cache") -> PrivateDir | None:
    """The folder cache_root()/parts..., made where missing (0700) and opened without following links; None (and a
    one-line warning naming the reason) when it cannot be made, or is a link, another user's, or writable by group
    or others."""
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(root, _DIR_FLAGS)
    except OSError as e:
        if root.is_symlink():
            _warn(f"{purpose} off: cannot use {root} (a symbolic link)")
        elif not isinstance(e, (PermissionError, FileExistsError, NotADirectoryError, FileNotFoundError, OSError)):
            _warn(f"{purpose} off: cannot use {root} ({e.strerror})")
        return None  # a read-only home or a file in the way: quietly without a cache, as before
    where = root
    try:
        for part in ("", *parts):
            if part:
                where = where / part
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = sub
            why = _unsafe(os.fstat(fd), str(where))
            if why is not None:
                os.close(fd)
                _warn(f"{purpose} off: {why}")
                return None
    except OSError as e:
        os.close(fd)
        _warn(f"{purpose} off: cannot use {where} ({'a symbolic link' if where.is_symlink() else e.strerror})")
        return None
    return PrivateDir(where, fd)


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
