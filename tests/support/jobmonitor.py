"""Watches job processes and the runner from outside: how many ran at once, and runner memory.

The recording job (``tests/support/recordingjob.py``) appends a line when it starts; this
monitor reads those lines and polls each pid in ``/proc`` every few milliseconds, so a job
SIGKILLed with its runner (no "end" line) still counts as ended when it is gone, and an orphan
that outlives its runner still counts as running. It samples the runner's RSS too.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class JobProcess:
    pid: int
    #: The message's body ``id`` (unique per message the backend sends).
    body_id: str
    started: float
    ended: float | None = None
    code: int | None = None


def _alive(pid: int) -> bool:
    """Running and not a zombie (an exited child nobody reaped has finished its work)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class JobMonitor:
    """Start with :meth:`start`; read the figures after :meth:`stop`."""

    log: Path
    interval: float = 0.01
    #: Every job process seen, in start order.
    history: list[JobProcess] = field(default_factory=list)
    #: pid → its latest process (pids are reused).
    jobs: dict[int, JobProcess] = field(default_factory=dict)
    #: Most job processes alive at one moment, and when.
    peak_concurrent: int = 0
    #: Most processes alive at once for one message.
    peak_per_message: int = 0
    overlapping: set[str] = field(default_factory=set)
    #: (seconds since start, runner RSS bytes) every ``memory_interval``.
    memory: list[tuple[float, int]] = field(default_factory=list)
    memory_interval: float = 0.5
    runner_pid: int | None = None
    _offset: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> JobMonitor:
        self._began = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="job monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._poll()

    def live(self) -> list[JobProcess]:
        with self._lock:
            return [j for j in self.jobs.values() if j.ended is None]

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def _loop(self) -> None:
        next_memory = 0.0
        while not self._stop.is_set():
            self._poll()
            now = time.monotonic()
            if self.runner_pid is not None and now >= next_memory:
                rss = rss_bytes(self.runner_pid)
                if rss is not None:
                    self.memory.append((round(now - self._began, 2), rss))
                next_memory = now + self.memory_interval
            time.sleep(self.interval)

    def _poll(self) -> None:
        self._read_new_lines()
        with self._lock:
            running = [j for j in self.jobs.values() if j.ended is None]
            for job in running:
                if not _alive(job.pid):
                    job.ended = time.time()
            running = [j for j in running if j.ended is None]
            self.peak_concurrent = max(self.peak_concurrent, len(running))
            per_message = Counter(j.body_id for j in running)
            if per_message:
                top = max(per_message.values())
                self.peak_per_message = max(self.peak_per_message, top)
                self.overlapping.update(k for k, v in per_message.items() if v > 1)

    def _read_new_lines(self) -> None:
        if not self.log.exists():
            return
        with self.log.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1
        self._offset += complete
        for line in chunk[:complete].splitlines():
            record = json.loads(line)
            with self._lock:
                if record["event"] == "start":
                    job = JobProcess(record["pid"], record["body_id"], record["t"])
                    self.jobs[job.pid] = job
                    self.history.append(job)
                elif record["event"] == "end" and record["pid"] in self.jobs:
                    self.jobs[record["pid"]].code = record["code"]
