"""The local launcher: each message runs ``waveflow-job run`` as a child process.

What a Kubernetes Job gives the job, a child process gets here too:

- the same environment (:func:`waveflow_operator.runner.jobenv.job_env`), plus ``TMPDIR``
  pointing at a fresh scratch directory and ``WAVEFLOW_SUMMARY_FILE`` at a summary file of its
  own beside it (:mod:`.scratch`);
- the message body in a file beside them, passed as ``--message-file <dir>/message`` after the
  job command (an environment variable cannot hold a body over 128 KiB: exec fails with E2BIG);
- emptyDir semantics: that directory is removed when the process ends, whatever happens;
- ``backoffLimit``: a failing attempt (exit code other than 0 and 3) is retried with exponential
  backoff; exit 3 is final (``podFailurePolicy: FailJob``);
- ``activeDeadlineSeconds``: the whole job, retries included, is killed at its task's deadline
  and reported as failed with ``JOB_DEADLINE_EXCEEDED``.

The outcome of an attempt is named by :func:`~waveflow_operator.runner.protocol.ending_outcome`,
the rule the Kubernetes launcher uses too. Children run in their own session, so a Ctrl-C aimed
at ``waveflow local`` reaches them only through :meth:`LocalLauncher.drain`.

Children never outlive the runner (:mod:`.child_lifetime`): the kernel kills each job when the
runner dies, and on start the launcher ends whatever a dead runner's jobs left running before it
starts anything; what resists keeps a slot until it is gone, so the in-flight limit holds across
restarts and a redelivered message never runs beside its own orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from waveflow_job.contract import ErrorCode, JobSummary, Outcome
from waveflow_operator.local import child_lifetime
from waveflow_operator.local.config import RunnerConfig, default_job_command
from waveflow_operator.local.notes import read_notes, remove_note, sweep_notes, write_note
from waveflow_operator.local.scratch import (
    OWNER_FILE,
    SCRATCH_PREFIX,
    STALE_SECONDS,
    remove_scratch,
    sweep_scratch,
)
from waveflow_operator.metrics import Metrics
from waveflow_operator.runner.dispatcher import Dispatcher
from waveflow_operator.runner.jobenv import job_env
from waveflow_operator.runner.notify import FailureNotifier
from waveflow_operator.runner.protocol import (
    Adopted,
    Created,
    Ending,
    JobRequest,
    JobResult,
    LaunchError,
    Recovered,
    ResultCallback,
    ending_outcome,
)
from waveflow_operator.runner.settle import SettledCallback
from waveflow_operator.runner.spec import QueueSpec

__all__ = ["LocalLauncher", "local_dispatcher"]

log = logging.getLogger(__name__)
job_log = logging.getLogger(f"{__name__}.job")

#: The longest wait between two attempts (Kubernetes caps its own backoff at 6 minutes).
MAX_RETRY_DELAY = 360.0
_TAIL_LINES = 20


@dataclass
class _Job:
    request: JobRequest
    started: float
    task: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None
    attempts: int = 0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))


class LocalLauncher:
    """Runs jobs as child processes; implements the dispatcher's ``Launcher`` protocol."""

    def __init__(self, spec: QueueSpec, scratch_root: Path, *,
                 job_command: Sequence[str] | None = None, retry_backoff_seconds: float = 1.0,
                 kill_grace_seconds: float = 2.0,
                 base_env: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.scratch_root = Path(scratch_root)
        self.job_command = tuple(job_command or default_job_command())
        self.retry_backoff_seconds = retry_backoff_seconds
        self.kill_grace_seconds = kill_grace_seconds
        #: The parent's environment (credentials, PATH); the job's own variables override it.
        self.base_env = dict(os.environ if base_env is None else base_env)
        self._on_result: ResultCallback | None = None
        self._jobs: dict[str, _Job] = {}
        self._slots = asyncio.Semaphore(spec.max_in_flight)
        self._draining = False
        self._drain_by: float | None = None
        self._hurry = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        #: Jobs of a dead runner that resisted SIGKILL so far: job name → set once gone.
        self._orphans: dict[str, asyncio.Event] = {}
        self._orphan_watches: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ protocol

    async def start(self, on_result: ResultCallback) -> None:
        """Remember the callback, create the scratch root and sweep what a crash left —
        now and every 30 minutes (the old service's clean-up ran from cron that often)."""
        self._on_result = on_result
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        for orphan in await asyncio.to_thread(child_lifetime.end_orphans, self.scratch_root,
                                              SCRATCH_PREFIX, remove=_remove_tree):
            self._orphans[orphan.job_name] = asyncio.Event()
            watch = asyncio.create_task(self._hold_slot_while(orphan),
                                        name=f"orphan {orphan.job_name}")
            self._orphan_watches.add(watch)
            watch.add_done_callback(self._orphan_watches.discard)
        await self._sweep()
        self._sweeper = asyncio.create_task(self._sweep_periodically(), name="scratch sweep")

    async def recover(self) -> Recovered:
        """Child processes do not outlive this process's memory of them; what an earlier run
        noted about settling failed jobs (:mod:`.notes`) comes back as finished results."""
        return Recovered(finished=await asyncio.to_thread(read_notes, self.scratch_root))

    async def launch(self, request: JobRequest) -> Created | Adopted:
        """Start the job; a job of that name already running is adopted."""
        name = request.job_name
        if self._draining:
            raise LaunchError("the runner is stopping", retryable=True)
        if name in self._jobs:
            return Adopted()
        job = _Job(request, time.monotonic())
        self._jobs[name] = job
        job.task = asyncio.create_task(self._run(job), name=f"job {name}")
        return Created()

    async def drain(self, grace_seconds: float) -> list[str]:
        """Wait up to ``grace_seconds`` for running jobs, then kill the rest (no result is
        reported for them) and return their names."""
        self._draining = True
        for task in (self._sweeper, *self._orphan_watches):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        drain_by = time.monotonic() + max(0.0, grace_seconds)
        # hurry() may have come first (two signals at once): the earlier end wins.
        self._drain_by = drain_by if self._drain_by is None else min(drain_by, self._drain_by)
        while self._jobs:
            self._hurry.clear()
            remaining = (self._drain_by or 0.0) - time.monotonic()
            if remaining <= 0:
                break
            tasks = {job.task for job in self._jobs.values() if job.task is not None}
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait(tasks | {hurry}, timeout=remaining,
                               return_when=asyncio.FIRST_COMPLETED)
            hurry.cancel()
        abandoned = sorted(self._jobs)
        doomed = [job.task for job in self._jobs.values() if job.task is not None]
        for task in doomed:
            task.cancel()
        for task in doomed:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if abandoned:
            log.warning("abandoned %d unfinished job(s): %s", len(abandoned),
                        ", ".join(abandoned))
        return abandoned

    async def hurry(self) -> None:
        """The second signal: the drain in progress kills what still runs, now."""
        self._drain_by = time.monotonic()
        self._hurry.set()

    async def note_settling(self, result: JobResult) -> None:
        """A settling note in the scratch root (:mod:`.notes`), read back by ``recover``."""
        try:
            await asyncio.to_thread(write_note, self.scratch_root, result)
        except OSError as error:
            log.warning("could not note how far settling %s got: %s", result.job_name, error)

    async def forget(self, job_name: str) -> None:
        try:
            await asyncio.to_thread(remove_note, self.scratch_root, job_name)
        except OSError as error:
            log.warning("could not remove the settling note of %s: %s", job_name, error)

    # ------------------------------------------------------------------ sweeping

    async def _hold_slot_while(self, orphan: child_lifetime.Orphan) -> None:
        """A dead runner's job that is not gone yet counts against the in-flight limit."""
        async with self._slots:
            while await asyncio.to_thread(child_lifetime.end_session, orphan.job):
                await asyncio.sleep(1.0)
        await asyncio.to_thread(_remove_tree, orphan.directory)
        self._orphans.pop(orphan.job_name).set()

    async def _sweep(self) -> None:
        await asyncio.to_thread(child_lifetime.end_orphans, self.scratch_root, SCRATCH_PREFIX,
                                wait_seconds=0.0, remove=_remove_tree)
        await asyncio.to_thread(sweep_notes, self.scratch_root)
        removed = await asyncio.to_thread(sweep_scratch, self.scratch_root)
        if removed:
            log.info("removed %d stale scratch director%s", len(removed),
                     "y" if len(removed) == 1 else "ies")

    async def _sweep_periodically(self) -> None:
        while True:
            await asyncio.sleep(STALE_SECONDS)
            try:
                await self._sweep()
            except OSError as error:
                log.warning("scratch sweep failed: %s", error)

    # ------------------------------------------------------------------ one job

    async def _run(self, job: _Job) -> None:
        name = job.request.job_name
        deadline_seconds = self.spec.deadline(job.request.message.task)
        if (orphan := self._orphans.get(name)) is not None:
            await orphan.wait()  # never beside a dead runner's job for the same message
        async with self._slots:
            try:
                result = await self._attempts(job, job.started + deadline_seconds,
                                              deadline_seconds)
            except OSError as error:  # the command is missing, fork failed, disk full…
                log.error("job %s could not be started: %s", name, error)
                result = JobResult(name, Outcome.FAILED, ErrorCode.JOB_NOT_CREATED.value,
                                   f"could not start {self.job_command[0]!r}: {error}",
                                   None, time.monotonic() - job.started)
        self._jobs.pop(name, None)
        if self._on_result is not None:
            await self._on_result(result)

    async def _attempts(self, job: _Job, deadline: float, deadline_seconds: float) -> JobResult:
        name = job.request.job_name
        while True:
            job.attempts += 1
            code, summary = await self._attempt(job, deadline)
            elapsed = time.monotonic() - job.started
            # SIGKILL is only sent by the runner at the deadline (code None then) or by the
            # kernel's OOM killer: the same rule a pod's "OOMKilled" follows.
            ending = Ending(code, oom_killed=code == -signal.SIGKILL,
                            deadline_exceeded=code is None, failed=code != 0)
            outcome, error = ending_outcome(ending)
            if outcome is Outcome.SUCCEEDED:
                return JobResult(name, outcome, None, None, summary, elapsed)
            if outcome is Outcome.REJECTED:
                return JobResult(name, outcome, summary.error_code if summary else None,
                                 self._last_words(job), summary, elapsed)
            assert error is not None
            if code is None:
                return JobResult(name, outcome, error.value,
                                 f"killed at its {deadline_seconds:g} s deadline after "
                                 f"{job.attempts} attempt(s)", summary, elapsed)
            detail = f"exit {code}" + (f" ({summary.error_code})"
                                       if summary and summary.error_code else "")
            if job.attempts > self.spec.backoff_limit:
                return JobResult(name, outcome, error.value,
                                 f"failed {job.attempts} time(s); last attempt: {detail}. "
                                 f"{self._last_words(job)}".strip(), summary, elapsed)
            delay = min(MAX_RETRY_DELAY, self.retry_backoff_seconds * 2 ** (job.attempts - 1))
            log.warning("job %s attempt %d failed (%s); retrying in %.1fs", name, job.attempts,
                        detail, delay)
            if time.monotonic() + delay >= deadline:
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                return JobResult(name, outcome, ErrorCode.JOB_DEADLINE_EXCEEDED.value,
                                 f"deadline of {deadline_seconds:g} s reached while waiting to "
                                 f"retry after {detail}", summary, time.monotonic() - job.started)
            await asyncio.sleep(delay)

    async def _attempt(self, job: _Job, deadline: float) -> tuple[int | None, JobSummary | None]:
        """One process in a fresh scratch directory; (exit code or None at the deadline,
        summary). The directory is gone when this returns or is cancelled."""
        workdir = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{job.request.job_name}-",
                                        dir=self.scratch_root))
        summary_path = workdir / "summary.json"
        try:
            (workdir / OWNER_FILE).write_text(str(os.getpid()))
            scratch = workdir / "tmp"
            scratch.mkdir()
            message = workdir / "message"
            message.write_bytes(job.request.body.encode("utf-8"))
            env = {**self.base_env, **job_env(job.request, self.spec),
                   "TMPDIR": str(scratch), "WAVEFLOW_SUMMARY_FILE": str(summary_path)}
            process = await asyncio.create_subprocess_exec(
                *self.job_command, "--message-file", str(message), env=env, cwd=scratch,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                preexec_fn=child_lifetime.die_with_parent())
            job.process = process
            child_lifetime.write_record(workdir, job.request.job_name, process.pid)
            relay = asyncio.create_task(self._relay(process, job))
            try:
                code: int | None = await asyncio.wait_for(
                    process.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("job %s ran past its deadline; killing it", job.request.job_name)
                await self._kill(process)
                code = None
            finally:
                if process.returncode is None:  # cancelled: the runner is stopping
                    await asyncio.shield(self._kill(process))
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(relay)
            return code, _read_summary(summary_path)
        finally:
            job.process = None
            # Off the event loop: removing a tree costs milliseconds per job on slow disks.
            await asyncio.to_thread(remove_scratch, workdir)

    async def _kill(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM the job's process group, SIGKILL it after the kill grace period."""
        for sig, wait in ((signal.SIGTERM, self.kill_grace_seconds), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
            try:
                await asyncio.wait_for(process.wait(), timeout=wait)
                break
            except TimeoutError:
                continue
        # Orphaned grandchildren die with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    async def _relay(self, process: asyncio.subprocess.Process, job: _Job) -> None:
        """The job's output (JSON log lines) into our log at DEBUG; keep a tail for errors."""
        assert process.stdout is not None
        pending = b""
        # Chunks, not readline(): one enormous line must not stop the draining (a child
        # blocked on a full pipe would hang until its deadline).
        while chunk := await process.stdout.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._note(job, line)
            if len(pending) > 65536:
                self._note(job, pending)
                pending = b""
        if pending:
            self._note(job, pending)

    def _note(self, job: _Job, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()[:4000]
        job.tail.append(text)
        job_log.debug("%s: %s", job.request.job_name, text)

    def _last_words(self, job: _Job) -> str:
        """The job's last log message (its JSON ``message`` field when it logged JSON)."""
        if not job.tail:
            return ""
        last = job.tail[-1]
        with contextlib.suppress(ValueError, AttributeError):
            document = json.loads(last)
            last = str(document.get("message", last))
        return last[:500]


def _remove_tree(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _read_summary(path: Path) -> JobSummary | None:
    try:
        return JobSummary.from_json(path.read_text(encoding="utf-8"))
    except OSError:
        return None


def local_dispatcher(config: RunnerConfig, *, metrics: Metrics | None = None,
                     notifier: FailureNotifier | None = None,
                     base_env: Mapping[str, str] | None = None,
                     on_settled: SettledCallback | None = None) -> Dispatcher:
    """The dispatcher with a local launcher, as ``waveflow local`` and ``waveflow demo`` run it."""
    launcher = LocalLauncher(config.queue, config.scratch_root, job_command=config.job_command,
                             retry_backoff_seconds=config.retry_backoff_seconds,
                             kill_grace_seconds=config.kill_grace_seconds, base_env=base_env)
    return Dispatcher(config.queue, launcher, metrics=metrics, notifier=notifier,
                      on_settled=on_settled)
