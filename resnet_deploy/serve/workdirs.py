"""The work directories of `serve` and `triton` runs, and what a run killed without a chance to clean up leaves.

Each run writes who made its directory (`OWNER_FILE`: the pid, that process's start time, the prefix of the shared
memory its server makes); a later run removes the directories, and those regions, of runs whose process is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

SHM_DIR = "/dev/shm"
WORKDIR_PREFIXES = ("resnet-deploy-serve-", "resnet-deploy-triton-")
OWNER_FILE = "owner.json"  # in each work directory: the process that made it, to tell leftovers of dead runs


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/PID/stat, clock ticks since boot), None when it is gone:
    with the pid it names one process, never a later one that got the same pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()[19]


def claim_workdir(workdir: Path, shm_prefix: str | None = None) -> None:
    """Write who owns a work directory (this process, and the prefix of the shared memory its server makes), so that
    a later run can tell a leftover of a dead run from the directory of a live one."""
    owner = {"pid": os.getpid(), "start": _process_start(os.getpid()), "shm_prefix": shm_prefix}
    (workdir / OWNER_FILE).write_text(json.dumps(owner) + "\n")


def remove_leftovers(tmp: str | Path | None = None) -> list[str]:
    """Remove the work directories and shared memory of earlier runs whose process is gone (killed with SIGKILL,
    say), and return their names. Only what this user owns, only directories that say who made them (one being made
    right now does not yet, and is left alone), no links followed."""
    tmp = Path(tmp or tempfile.gettempdir())
    removed = []
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(WORKDIR_PREFIXES):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            fd = os.open(Path(entry.path) / OWNER_FILE, os.O_RDONLY | os.O_NOFOLLOW)
            with open(fd) as f:
                owner = json.loads(f.read(4096))
            pid, start, prefix = int(owner["pid"]), owner.get("start"), owner.get("shm_prefix")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _process_start(pid) is not None and _process_start(pid) == start:
            continue  # its run is alive
        if isinstance(prefix, str) and prefix.startswith("resnet-deploy-") and "/" not in prefix:
            for region in Path(SHM_DIR).glob(f"{prefix}*"):
                if region.lstat().st_uid == os.geteuid():
                    region.unlink(missing_ok=True)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.name)
    return removed
