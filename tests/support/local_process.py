"""``waveflow local`` as a real process, and a watch on the job processes it starts.

The jobs are ``tests/support/fakejob.py`` (``WAVEFLOW_JOB_COMMAND``) unless a test passes the real
command; everything else is real: the CLI, moto over HTTP, the reference backend.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from support.runner import Stack

FAKEJOB = Path(__file__).resolve().parent / "fakejob.py"
WAVEFLOW = Path(sys.executable).parent / "waveflow"


def start_local(stack: Stack, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``waveflow local`` against the stack, 2 jobs at most, jobs steered by ``env``."""
    environment = {
        **os.environ,
        "SQS_QUEUE_URL": stack.queues.url, "S3_BUCKET_NAME": stack.bucket,
        "WEBHOOK_URL": stack.backend.webhook_url, "WEBHOOK_SECRET": "runner-test-secret",
        "WAVEFLOW_JOB_COMMAND": f"{sys.executable} {FAKEJOB}",
        "WAVEFLOW_SCRATCH_ROOT": str(stack.scratch), "WAVEFLOW_MAX_IN_FLIGHT": "2",
        "WAVEFLOW_WAIT_TIME_SECONDS": "1", "WAVEFLOW_METRICS_PORT": "0",
        "WAVEFLOW_HEALTH_PORT": "0", "WAVEFLOW_KILL_GRACE_SECONDS": "0.5",
        "FAKEJOB_LOG": str(log), "LOG_LEVEL": "INFO", **env,
    }
    return subprocess.Popen([str(WAVEFLOW), "local"], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def events(log: Path) -> Counter[str]:
    """The fake jobs' ``start <stem>`` / ``done <stem>`` lines, counted."""
    return Counter(log.read_text().splitlines()) if log.exists() else Counter()


def finish(process: subprocess.Popen[bytes]) -> int:
    """Wait for a runner that was asked to stop; it must exit 0."""
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    return process.returncode


def process_alive(pid: int, marker: bytes = b"fakejob") -> bool:
    """Whether ``pid`` is a live process with ``marker`` in its command line (so a recycled pid
    does not count); a zombie nobody reaped yet counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX" and marker in cmdline


@dataclass(frozen=True)
class FakeProcess:
    """One line of FAKEJOB_RECORD: a fake job (``job``) or a process it started (``child``)."""

    stem: str
    pid: int
    role: str
    #: The fake job's pid (for a child: its parent's).
    job_pid: int


def recorded(record: Path) -> list[FakeProcess]:
    """Every process the fake jobs wrote to FAKEJOB_RECORD (``<role> <stem> <pid> <job pid>``)."""
    if not record.exists():
        return []
    found = []
    for line in record.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] in ("job", "child"):
            found.append(FakeProcess(parts[1], int(parts[2]), parts[0], int(parts[3])))
    return found


@dataclass
class JobWatch:
    """Samples which fake jobs are running (their own process or one they started is alive).

    Runs in a thread every ``interval`` seconds; remembers the largest number of jobs seen
    running at once and every stem seen running in two jobs at once.
    """

    record: Path
    interval: float = 0.05
    most_at_once: int = 0
    doubled: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def running(self) -> dict[int, str]:
        """Job pid → stem of every job with a live process right now."""
        live: dict[int, str] = {}
        for process in recorded(self.record):
            if process_alive(process.pid):
                live[process.job_pid] = process.stem
        return live

    def alive(self) -> list[FakeProcess]:
        """Every recorded process still alive."""
        return [p for p in recorded(self.record) if process_alive(p.pid)]

    def __enter__(self) -> JobWatch:
        self._thread = threading.Thread(target=self._sample, name="job watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        """Stop sampling; SIGKILL whatever recorded process a failed test left running."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for process in self.alive():
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGKILL)

    def _sample(self) -> None:
        while not self._stop.is_set():
            live = self.running()
            self.most_at_once = max(self.most_at_once, len(live))
            stems = Counter(live.values())
            self.doubled.update(stem for stem, count in stems.items() if count > 1)
            time.sleep(self.interval)
