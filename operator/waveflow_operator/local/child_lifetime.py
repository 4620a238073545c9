"""Jobs started by ``waveflow local`` never outlive the runner that started them (Linux).

A runner can die in ways no clean-up code of its own survives (SIGKILL, the OOM killer), so
three layers make sure its jobs go with it and the in-flight limit holds across a restart:

1. **The kernel.** Between fork and exec each job asks to receive SIGKILL when the thread that
   started it ends (``prctl(PR_SET_PDEATHSIG)``; it is the *thread*, not the process, so the
   launcher starts jobs from its event loop's thread, which lives as long as the runner).
2. **A session.** Each job leads a session of its own (``setsid``), so whatever it starts belongs
   to it; the kernel's signal reaches only the job itself, the session names the rest.
3. **A record.** ``process.json`` in the job's scratch directory names the runner and the job by
   pid *and* start time (and boot): a recycled pid is never mistaken for either. The next
   runner, before it starts anything, ends every session whose runner is gone
   (:func:`end_orphans`) and counts the members that have not died yet against its limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RECORD_FILE", "Orphan", "ProcessIdentity", "die_with_parent", "end_orphans",
           "end_session", "identify", "is_alive", "session_members", "write_record"]

log = logging.getLogger(__name__)

#: The record's name inside a job's scratch directory.
RECORD_FILE = "process.json"
_PR_SET_PDEATHSIG = 1
_PROC = Path("/proc")


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


#: Resolved once in the runner: the forked child only calls it.
_PRCTL = _load_prctl()


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as the kernel knows it: a pid alone may be recycled, a pid + start time not."""

    pid: int
    #: Field 22 of ``/proc/<pid>/stat``: clock ticks after boot when the process started.
    start_ticks: int
    #: ``/proc/sys/kernel/random/boot_id``: start times count from this boot.
    boot_id: str


@dataclass(frozen=True)
class _Stat:
    state: str
    session: int
    start_ticks: int


@dataclass(frozen=True)
class Orphan:
    """A job whose runner is gone but some process of whose session still lives."""

    job_name: str
    job: ProcessIdentity
    directory: Path


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> _Stat | None:
    """State, session and start time of ``pid`` (None when it does not exist)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text[text.rindex(")") + 2:].split()
    return _Stat(state=fields[0], session=int(fields[3]), start_ticks=int(fields[19]))


def identify(pid: int) -> ProcessIdentity | None:
    """The identity of a live process, or None."""
    stat = _stat(pid)
    if stat is None or stat.state in "ZX":
        return None
    return ProcessIdentity(pid, stat.start_ticks, _boot_id())


def is_alive(identity: ProcessIdentity) -> bool:
    """Whether that very process (not a later one with its pid) still runs."""
    return identify(identity.pid) == identity


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when the calling thread ends.

    If the runner died between fork and this call, the child would never get the signal,
    so it checks its parent is still the runner and exits otherwise. None off Linux.
    """
    prctl = _PRCTL
    if prctl is None:
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the forked child: no logging, no imports, no locks
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def write_record(directory: Path, job_name: str, job_pid: int) -> None:
    """Name the runner (this process) and the job in the job's scratch directory."""
    runner, job = identify(os.getpid()), identify(job_pid)
    if runner is None or job is None:
        return  # not Linux, or the job already ended: nothing would outlive us
    document = {"job_name": job_name, "boot_id": runner.boot_id,
                "runner": {"pid": runner.pid, "start_ticks": runner.start_ticks},
                "job": {"pid": job.pid, "start_ticks": job.start_ticks}}
    partial = directory / f".{RECORD_FILE}.partial"
    partial.write_text(json.dumps(document), encoding="utf-8")
    partial.replace(directory / RECORD_FILE)


def _read_record(directory: Path) -> tuple[str, ProcessIdentity, ProcessIdentity] | None:
    """(job name, runner, job) from a record, or None when there is none or it is unreadable."""
    try:
        document = json.loads((directory / RECORD_FILE).read_text(encoding="utf-8"))
        boot = str(document["boot_id"])
        runner = ProcessIdentity(int(document["runner"]["pid"]),
                                 int(document["runner"]["start_ticks"]), boot)
        job = ProcessIdentity(int(document["job"]["pid"]), int(document["job"]["start_ticks"]),
                              boot)
        return str(document["job_name"]), runner, job
    except (OSError, ValueError, KeyError, TypeError):
        return None


def job_alive(directory: Path) -> bool:
    """Whether the job a scratch directory's record names (or anything of its session) runs."""
    record = _read_record(directory)
    return record is not None and (is_alive(record[2]) or bool(session_members(record[2])))


def session_members(leader: ProcessIdentity) -> dict[int, int]:
    """Live processes of the session ``leader`` started: pid → start ticks.

    The kernel never hands out a pid while a process still belongs to the session of that
    number, so if the pid now names a *different* process, nothing of the session is left.
    """
    if leader.boot_id != _boot_id():
        return {}
    now = _stat(leader.pid)
    if now is not None and now.start_ticks != leader.start_ticks:
        return {}
    members: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat.session == leader.pid and stat.state not in "ZX" \
                and stat.start_ticks >= leader.start_ticks:
            members[int(entry.name)] = stat.start_ticks
    return members


def _signal_exactly(pid: int, start_ticks: int, session: int, sig: int) -> bool:
    """Signal ``pid`` only if it is still the process that was found (no pid-reuse race)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    send = getattr(signal, "pidfd_send_signal", None)
    if pidfd_open is None or send is None:
        stat = _stat(pid)
        if stat is None or stat.start_ticks != start_ticks or stat.session != session:
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            return True
        return False
    try:
        handle = pidfd_open(pid)
    except OSError:
        return False
    try:
        # The handle pins the process: check it is the one we found, then signal it.
        stat = _stat(pid)
        if stat is None or stat.start_ticks != start_ticks or stat.session != session:
            return False
        send(handle, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(handle)


def end_session(leader: ProcessIdentity, sig: int = signal.SIGKILL) -> int:
    """Signal every live process of the job's session; returns how many were signalled."""
    return sum(_signal_exactly(pid, start, leader.pid, sig)
               for pid, start in session_members(leader).items())


def _orphans(root: Path, prefix: str) -> Iterable[tuple[Path, str, ProcessIdentity]]:
    """Scratch directories with a record whose runner is gone: (directory, job name, job)."""
    if not root.is_dir():
        return
    for directory in sorted(root.iterdir()):
        if not directory.name.startswith(prefix) or directory.is_symlink() \
                or not directory.is_dir():
            continue
        record = _read_record(directory)
        if record is None:
            continue
        job_name, runner, job = record
        if not is_alive(runner):
            yield directory, job_name, job


def end_orphans(root: Path, prefix: str, *, wait_seconds: float = 10.0,
                remove: Callable[[Path], None]) -> list[Orphan]:
    """SIGKILL the sessions of jobs whose runner is gone; ``remove`` the scratch directory of
    each session once it is empty. Returns those still alive after ``wait_seconds``."""
    found = list(_orphans(root, prefix))
    for _, job_name, job in found:
        if (count := end_session(job)):
            log.warning("ended %d process(es) of job %s, left by a runner that died", count,
                        job_name, extra={"job": job_name})
    deadline = time.monotonic() + wait_seconds
    left: list[Orphan] = []
    for directory, job_name, job in found:
        while session_members(job) and time.monotonic() < deadline:
            time.sleep(0.05)
            end_session(job)
        if session_members(job):
            left.append(Orphan(job_name, job, directory))
        else:
            remove(directory)
    return left
