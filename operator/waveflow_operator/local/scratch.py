"""Scratch directories of local jobs: where each attempt's ``TMPDIR`` lives, and the sweep that
removes what a crashed run left behind.

Each attempt gets ``<scratch root>/wfjob-<job name>-<random>/{tmp/, summary.json, owner.pid}``
and the launcher removes it when the process ends (:func:`remove_scratch`: ``owner.pid`` last,
so a runner killed half-way still leaves a directory that names its dead owner). At start (and
every 30 minutes) the sweep removes only ``wfjob-*`` directories:

- at once, when the runner that made it is gone and no job of it still runs (a runner killed
  between two steps: its jobs die with it, see :mod:`.child_lifetime`);
- older than 30 minutes and their owner process gone, or older than 2 hours in any case (the
  old service's clean-up rule).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from waveflow_operator.local.child_lifetime import job_alive

__all__ = ["FORCED_SECONDS", "OWNER_FILE", "SCRATCH_PREFIX", "STALE_SECONDS", "remove_scratch",
           "sweep_scratch"]

#: Every scratch directory the local launcher creates starts with this; the sweep touches
#: nothing else.
SCRATCH_PREFIX = "wfjob-"
#: Older than this and not owned by a live process: removed (the old 30-minute rule).
STALE_SECONDS = 30 * 60
#: Older than this: removed whatever its owner (the old 2-hour rule).
FORCED_SECONDS = 2 * 3600
#: The pid of the runner that made the directory.
OWNER_FILE = "owner.pid"


def sweep_scratch(root: Path, *, now: float | None = None, stale_seconds: float = STALE_SECONDS,
                  forced_seconds: float = FORCED_SECONDS) -> list[Path]:
    """Remove ``wfjob-*`` directories left by crashed runs (30-minute / 2-hour rule)."""
    moment = time.time() if now is None else now
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if not entry.name.startswith(SCRATCH_PREFIX) or not entry.is_dir() \
                or entry.is_symlink():
            continue
        age = moment - _newest_mtime(entry)
        owner = _owner_pid(entry)
        # A directory bearing our own pid was made by an earlier process that had it.
        owner_gone = owner is None or owner == os.getpid() or not _pid_alive(owner)
        left_by_a_dead_runner = owner is not None and owner != os.getpid() and owner_gone \
            and not job_alive(entry)
        if age > forced_seconds or (age > stale_seconds and owner_gone) or left_by_a_dead_runner:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _newest_mtime(directory: Path) -> float:
    newest = directory.lstat().st_mtime
    for base, dirs, files in os.walk(directory):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(base, name)).st_mtime)
    return newest


def _owner_pid(directory: Path) -> int | None:
    """The pid of the runner that made the directory, or None when none is named (yet)."""
    try:
        return int((directory / OWNER_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_scratch(directory: Path) -> None:
    """Remove one attempt's directory, ``owner.pid`` last (see the module docstring)."""
    for entry in directory.iterdir() if directory.is_dir() else ():
        if entry.name == OWNER_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    shutil.rmtree(directory, ignore_errors=True)
