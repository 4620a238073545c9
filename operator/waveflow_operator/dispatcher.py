"""The ONE dispatcher both launchers share: receive → validate → launch → heartbeat → settle.

Plain asyncio; no kopf, no Kubernetes. A launcher (``launch_local`` or ``launch_k8s``) runs
jobs; the dispatcher owns each SQS message from receipt to deletion:

- **Backpressure.** It receives only while messages held < ``max_in_flight``, at most
  ``min(receive_batch_size, 10, free slots)`` per long poll: work waits in SQS, not in memory.
- **Validation.** Every body goes through ``contract.parse_message``. An invalid message never
  becomes a job: a FAILURE completion (``retryable: false``) when its stemId could be read,
  then a copy to the dead-letter queue with the reason as message attributes, then delete.
- **Launch.** ``job_name`` is derived from the SQS MessageId, so a redelivered message maps to
  the same job; ``Launcher.launch`` adopts an existing job of that name.
- **Heartbeat.** ChangeMessageVisibility renews each held message's invisibility halfway through
  its timeout, up to SQS's 12-hour cap per receipt.
- **Settle** (exactly once per message): succeeded → delete; rejected (exit 3, the job already
  told the backend) → delete; failed → FAILURE completion (``retryable: true``) → dead-letter
  queue → delete.
- **Restart-safe.** ``Launcher.running()`` lists jobs left by an earlier run. A result for a job
  whose message is not held now is kept until that message is redelivered, then settled once;
  a redelivery of a message settled by this process is just deleted.
- **Clean stop.** ``stop(grace)`` stops receiving, lets running jobs finish within ``grace``,
  and returns unfinished messages to the queue (visibility 0) so no work is lost.
- **Weather.** SQS throttling, 5xx and network errors back off (full jitter, ≤ 30 s); a bad
  queue URL or a missing permission backs off too and shows in ``status`` — never a crash. A
  launch refused for now (``LaunchError(retryable=True)``) returns the message after a delay.

Dead letters keep the original body and carry ``WaveflowReason`` (an ErrorCode),
``WaveflowReasonDetail``, ``WaveflowSourceQueue``, ``WaveflowSourceMessageId``,
``WaveflowReceiveCount`` and ``WaveflowBackendNotified`` (did the backend accept the FAILURE).

Launchers call ``on_result`` once per job with its *final* outcome; retries happen inside the
launcher. See docs/ARCHITECTURE.md for the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from waveflow_job.contract import (
    ErrorCode,
    InvalidMessage,
    JobSummary,
    Outcome,
    StemMessage,
    Task,
    failure_completion,
    parse_message,
)
from waveflow_operator.config import SQS_MAX_VISIBILITY_SECONDS, QueueSettings
from waveflow_operator.metrics import Metrics
from waveflow_operator.sqs import ReceivedMessage, SqsError, SqsPoller

__all__ = ["Delivery", "Dispatcher", "DispatcherStatus", "FailureNotifier", "JobResult",
           "LaunchError", "Launcher", "WebhookFailureNotifier", "job_name_for"]

log = logging.getLogger(__name__)

_TASK_SHORT = {Task.HASH: "hash", Task.DUPLICATE: "dup", Task.ANALYSIS: "analysis"}
#: Messages settled by this process, remembered so an at-least-once duplicate is only deleted.
_SETTLED_MEMORY = 20_000
#: Stop extending a receipt this long before SQS's 12-hour cap.
_CAP_MARGIN_SECONDS = 5


def job_name_for(task: Task, sqs_message_id: str) -> str:
    """``wf-<task>-<24 hex of sha256(MessageId)>``: DNS-1123 safe, ≤ 63 chars, deterministic."""
    digest = hashlib.sha256(sqs_message_id.encode("utf-8")).hexdigest()[:24]
    return f"wf-{_TASK_SHORT[task]}-{digest}"


@dataclass(frozen=True)
class Delivery:
    """One received, valid message and the job that runs it."""

    #: The SQS MessageId (stable across redeliveries).
    sqs_message_id: str
    #: The receipt handle of the receive that produced this Delivery.
    receipt_handle: str
    #: The raw body, byte-for-byte: the job parses it again (``WAVEFLOW_MESSAGE``).
    body: str
    #: Epoch milliseconds when SQS accepted the message; None when SQS did not say.
    sent_timestamp_ms: int | None
    #: ``ApproximateReceiveCount`` of this receive.
    receive_count: int
    #: The parsed message.
    message: StemMessage
    #: Deterministic job name (see :func:`job_name_for`).
    job_name: str
    #: The queue's name (QueueSettings.name / the WaveflowQueue's name).
    queue: str


@dataclass(frozen=True)
class JobResult:
    """A job's final outcome, as a launcher reports it (retries already spent)."""

    job_name: str
    outcome: Outcome
    #: For ``failed``: why (JOB_DEADLINE_EXCEEDED, JOB_BACKOFF_LIMIT, JOB_OOM_KILLED…).
    error_code: str | None = None
    error_message: str | None = None
    #: The job's one-line summary, when it wrote one.
    summary: JobSummary | None = None
    #: Wall time from launch to outcome when the launcher knows it better than the dispatcher.
    duration_seconds: float | None = None


class LaunchError(Exception):
    """``Launcher.launch`` could not start the job.

    ``retryable``: the message is returned to SQS after a backoff (API throttled, 5xx).
    Otherwise the message settles as failed with ``code`` (e.g. the API refused the Job).
    """

    def __init__(self, message: str, *, retryable: bool,
                 code: ErrorCode = ErrorCode.JOB_NOT_CREATED) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


ResultCallback = Callable[[JobResult], Awaitable[None]]


class Launcher(Protocol):
    """Runs jobs; the dispatcher never knows whether they are Pods or processes."""

    async def start(self, on_result: ResultCallback) -> None:
        """Begin; call ``on_result`` once per job with its final outcome."""

    async def launch(self, delivery: Delivery) -> bool | None:
        """Start ``delivery.job_name``; idempotent. Return False when an existing job of that
        name was adopted (not created). Raise :class:`LaunchError` when it cannot start."""

    async def running(self) -> Mapping[str, JobResult | None]:
        """Jobs this launcher knows (restart recovery): name → final result, or None if running."""

    async def stop(self, grace_seconds: float) -> list[str]:
        """Let jobs finish within ``grace_seconds``, then abandon them; returns their names.
        Abandoned jobs never report a result. Calling again with a smaller grace hurries."""


class FailureNotifier(Protocol):
    """Sends the FAILURE completion the runner owes the backend."""

    async def notify_failure(self, *, stem_id: str, task: str | None, code: str,
                             message: str, retryable: bool, message_id: str | None,
                             raw_body: str) -> bool:
        """Deliver it; True when the backend accepted it."""


class WebhookFailureNotifier:
    """:class:`FailureNotifier` on the job's own ``WebhookClient`` (one client in the project)."""

    def __init__(self, webhook_url: str, secret: str | None = None, *, budget: float = 30.0,
                 timeout: float = 10.0, backoff: float = 0.5) -> None:
        from waveflow_job.webhooks import WebhookClient

        self._client = WebhookClient(webhook_url, secret, timeout=timeout, budget=budget,
                                     backoff=backoff)

    async def notify_failure(self, *, stem_id: str, task: str | None, code: str,
                             message: str, retryable: bool, message_id: str | None,
                             raw_body: str) -> bool:
        from waveflow_job.errors import WebhookUndelivered

        failure = failure_completion(stem_id=stem_id, task=task, code=code, message=message,
                                     retryable=retryable, message_id=message_id,
                                     raw_body=raw_body)
        try:
            await asyncio.to_thread(self._client.send, failure)
        except WebhookUndelivered as error:
            log.error("FAILURE completion for stem %s not delivered: %s", stem_id, error)
            return False
        return True

    def close(self) -> None:
        self._client.close()


@dataclass
class DispatcherStatus:
    """What the WaveflowQueue's status shows (and ``waveflow local`` logs)."""

    received: int = 0
    running: int = 0
    succeeded: int = 0
    rejected: int = 0
    failed: int = 0
    dead_lettered: int = 0
    #: Whether the last ReceiveMessage worked.
    polling: bool = False
    last_poll_time: datetime | None = None
    last_error: str | None = None
    #: False when the last error looks like configuration (bad URL, permission), not weather.
    last_error_retryable: bool = True


@dataclass
class _Held:
    """A message the dispatcher holds (invisible in SQS) until it is settled."""

    key: str
    raw: ReceivedMessage
    delivery: Delivery | None
    invalid: InvalidMessage | None
    receipt_handle: str
    received_at: float
    visible_until: float
    launched_at: float | None = None
    result: JobResult | None = None
    settling: bool = False
    notified: bool = False
    #: Whether the backend accepted our FAILURE completion: "yes", "no", "no stemId".
    told: str = "unknown"
    dead_lettered: bool = False
    retry_settle_at: float = 0.0
    warned_cap: bool = False


@dataclass
class _Pending:
    """A final result whose message is not held right now (restart, stale receipt)."""

    result: JobResult
    notified: bool = False
    dead_lettered: bool = False


@dataclass
class _Backoff:
    attempt: int = 0
    base: float = 0.5
    cap: float = 30.0

    def next(self) -> float:
        self.attempt += 1
        return random.uniform(0, min(self.cap, self.base * 2 ** self.attempt))

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class _Tasks:
    items: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coroutine: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self.items.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self.items.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())


class Dispatcher:
    """One queue's dispatcher. ``await start()``, later ``await stop(grace)``."""

    def __init__(self, settings: QueueSettings, launcher: Launcher, *,
                 sqs: SqsPoller | None = None, notifier: FailureNotifier | None = None,
                 metrics: Metrics | None = None,
                 on_settled: Callable[[Delivery, JobResult], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.launcher = launcher
        self.sqs = sqs or SqsPoller(settings)
        self.notifier: FailureNotifier = notifier or WebhookFailureNotifier(
            settings.webhook_url, settings.webhook_secret)
        self.metrics = metrics or Metrics()
        self.status = DispatcherStatus()
        #: Called once per settled job (after its message is deleted): status, demo, tests.
        self.on_settled = on_settled
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._pending: dict[str, _Pending] = {}
        self._orphans: dict[str, float] = {}  # job name → when to stop counting it
        self._settled: OrderedDict[str, Outcome] = OrderedDict()
        self._tasks = _Tasks()
        self._loops: list[asyncio.Task[None]] = []
        self._poll_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._capacity = asyncio.Event()
        self._started = False
        q = settings.name
        self._m_in_flight = self.metrics.jobs_in_flight.labels(queue=q)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Recover jobs of an earlier run, then start polling, heartbeats and depth polls."""
        if self._started:
            return
        self._started = True
        await self.launcher.start(self._on_result)
        forget_at = self._clock() + self.settings.visibility_timeout_seconds + 60
        for name, result in (await self.launcher.running()).items():
            if result is None:
                self._orphans[name] = forget_at
            else:
                self._pending[name] = _Pending(result)
        if self._orphans or self._pending:
            log.info("recovered %d running and %d finished jobs of an earlier run",
                     len(self._orphans), len(self._pending))
        self._update_in_flight()
        self._poll_task = asyncio.create_task(self._poll_loop(), name="poll")
        self._loops = [asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                       asyncio.create_task(self._depth_loop(), name="depth")]

    async def stop(self, grace_seconds: float) -> list[str]:
        """Stop receiving; running jobs get ``grace_seconds`` to finish; unfinished messages go
        back to the queue (visibility 0). Returns the job names that did not finish."""
        self._stopping.set()
        self._capacity.set()
        # The grace period starts now, not after a long poll in progress has returned.
        stopping_launcher = asyncio.ensure_future(self.launcher.stop(grace_seconds))
        if self._poll_task is not None:
            await self._poll_task
        unfinished = await stopping_launcher
        # Settlements already under way (a job that just finished) are allowed to complete.
        if self._tasks.items:
            await asyncio.wait(set(self._tasks.items), timeout=max(grace_seconds, 5.0) + 30)
        returned = []
        for key, held in list(self._held.items()):
            if held.settling:
                continue
            try:
                await self.sqs.change_visibility(held.receipt_handle, 0)
                returned.append(key)
            except SqsError as error:
                log.warning("could not return %s to the queue (it reappears after its "
                            "visibility timeout): %s", key, error)
            self._held.pop(key, None)
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        self._update_in_flight()
        if returned:
            log.info("returned %d unfinished message(s) to the queue", len(returned))
        return sorted(set(unfinished) | set(returned))

    async def hurry(self) -> None:
        """A second signal: abandon the grace period (the launcher kills what still runs)."""
        await self.launcher.stop(0.0)

    def alive(self) -> tuple[bool, str]:
        """For a liveness probe: is the receive loop running (or stopping on purpose)?"""
        if self._poll_task is None:
            return False, "not started"
        if self._poll_task.done() and not self._stopping.is_set():
            return False, "the receive loop ended unexpectedly"
        if not self.status.polling and self.status.last_error:
            return True, f"running; last error: {self.status.last_error}"
        return True, "running"

    @property
    def in_flight(self) -> int:
        """Messages held plus jobs of an earlier run still running (they take a slot too)."""
        now = self._clock()
        orphans = [k for k, until in self._orphans.items() if until > now and k not in self._held]
        return len(self._held) + len(orphans)

    # ------------------------------------------------------------------ receive

    async def _poll_loop(self) -> None:
        backoff = _Backoff()
        while not self._stopping.is_set():
            free = self.settings.max_in_flight - self.in_flight
            if free <= 0:
                self._capacity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._capacity.wait(), timeout=1.0)
                continue
            count = min(self.settings.receive_batch_size, 10, free)
            try:
                messages = await self.sqs.receive(count)
            except SqsError as error:
                self._poll_failed(error)
                await self._sleep(backoff.next() if error.retryable else
                                  max(5.0, backoff.next()))
                continue
            except Exception as error:  # a bug or an unexpected library error: keep polling
                log.exception("receiving from %s failed unexpectedly", self.settings.name)
                self.status.polling = False
                self.status.last_error = f"{type(error).__name__}: {error}"
                await self._sleep(max(1.0, backoff.next()))
                continue
            backoff.reset()
            self._poll_succeeded()
            if self._stopping.is_set():
                await self._release(messages)
                break
            for message in messages:
                try:
                    self._accept(message)
                except Exception:  # never lose the loop over one message; SQS redelivers it
                    log.exception("could not route message %s", message.message_id)

    def _poll_failed(self, error: SqsError) -> None:
        self.metrics.sqs_errors.labels(queue=self.settings.name, operation=error.operation).inc()
        self.status.polling = False
        self.status.last_error = str(error)
        self.status.last_error_retryable = error.retryable
        level = logging.WARNING if error.retryable else logging.ERROR
        log.log(level, "receiving from %s failed: %s", self.settings.name, error)

    def _poll_succeeded(self) -> None:
        now = datetime.now(UTC)
        self.status.polling = True
        self.status.last_poll_time = now
        self.metrics.last_poll_timestamp.labels(queue=self.settings.name).set(now.timestamp())

    async def _release(self, messages: list[ReceivedMessage]) -> None:
        for message in messages:
            with contextlib.suppress(SqsError):
                await self.sqs.change_visibility(message.receipt_handle, 0)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _accept(self, received: ReceivedMessage) -> None:
        """Route one received message: reject, adopt a held/pending job, or launch."""
        self.metrics.messages_received.labels(queue=self.settings.name).inc()
        self.status.received += 1
        now = self._clock()
        visible_until = now + self.settings.visibility_timeout_seconds
        try:
            message = parse_message(received.body)
        except InvalidMessage as invalid:
            key = f"invalid-{received.message_id}"
            if key in self._held:
                self._held[key].receipt_handle = received.receipt_handle
                return
            held = _Held(key, received, None, invalid, received.receipt_handle, now,
                         visible_until)
            self._hold(held)
            self._tasks.spawn(self._settle(held), f"reject {received.message_id}")
            return
        name = job_name_for(message.task, received.message_id)
        if name in self._settled:
            log.info("message %s was already settled (%s); deleting the duplicate delivery",
                     received.message_id, self._settled[name])
            self._tasks.spawn(self._delete_quietly(received.receipt_handle), f"dup {name}")
            return
        existing = self._held.get(name)
        if existing is not None:
            # Redelivered while held (a missed heartbeat): the newest receipt is the valid one.
            existing.receipt_handle = received.receipt_handle
            existing.received_at = now
            existing.visible_until = visible_until
            return
        delivery = Delivery(
            sqs_message_id=received.message_id, receipt_handle=received.receipt_handle,
            body=received.body, sent_timestamp_ms=received.sent_timestamp_ms,
            receive_count=received.receive_count, message=message, job_name=name,
            queue=self.settings.name)
        held = _Held(name, received, delivery, None, received.receipt_handle, now, visible_until)
        self._hold(held)
        pending = self._pending.pop(name, None)
        if pending is not None:
            log.info("job %s finished while its message was not held; settling it now", name)
            held.result, held.notified = pending.result, pending.notified
            held.dead_lettered = pending.dead_lettered
            self._tasks.spawn(self._settle(held), f"settle {name}")
            return
        self._orphans.pop(name, None)
        self._tasks.spawn(self._launch(held), f"launch {name}")

    def _hold(self, held: _Held) -> None:
        self._held[held.key] = held
        self._update_in_flight()

    # ------------------------------------------------------------------ launch

    async def _launch(self, held: _Held) -> None:
        assert held.delivery is not None
        delivery = held.delivery
        held.launched_at = self._clock()
        try:
            created = await self.launcher.launch(delivery)
        except LaunchError as error:
            if not error.retryable:
                await self._on_result(JobResult(delivery.job_name, Outcome.FAILED,
                                                error.code.value, str(error)))
                return
            await self._give_back(held, f"launch failed, will retry: {error}")
            return
        except Exception as error:  # a launcher bug must not lose the message
            log.exception("launching %s failed unexpectedly", delivery.job_name)
            await self._give_back(held, f"launch failed unexpectedly: {error}")
            return
        if created is False:
            log.info("adopted existing job %s", delivery.job_name)
            return
        task = delivery.message.task.value
        self.metrics.jobs_created.labels(queue=self.settings.name, task=task).inc()
        if delivery.sent_timestamp_ms is not None:
            latency = max(0.0, time.time() - delivery.sent_timestamp_ms / 1000)
            self.metrics.dispatch_latency.labels(queue=self.settings.name).observe(latency)
        log.info("launched job %s", delivery.job_name,
                 extra={**delivery.message.log_context(), "job": delivery.job_name})

    async def _give_back(self, held: _Held, why: str) -> None:
        """Return a message to SQS after a backoff (the launch could not happen now)."""
        self._held.pop(held.key, None)
        self._update_in_flight()
        delay = 0 if self._stopping.is_set() else min(300, 5 * max(1, held.raw.receive_count))
        log.warning("%s; message %s returns in %ds", why, held.raw.message_id, delay)
        self.status.last_error = why
        with contextlib.suppress(SqsError):
            await self.sqs.change_visibility(held.receipt_handle, delay)

    # ------------------------------------------------------------------ results

    async def _on_result(self, result: JobResult) -> None:
        """Launcher callback: settle now if the message is held, else keep it for later."""
        held = self._held.get(result.job_name)
        if held is None:
            if result.job_name not in self._settled:
                self._pending[result.job_name] = _Pending(result)
                self._orphans.pop(result.job_name, None)
                log.info("job %s finished (%s) while its message is not held; kept until the "
                         "message is redelivered", result.job_name, result.outcome.value)
            return
        if held.result is not None:
            return  # a launcher reported twice; the first result wins
        held.result = result
        self._tasks.spawn(self._settle(held), f"settle {result.job_name}")

    async def _settle(self, held: _Held) -> None:
        """Delete, or notify + dead-letter + delete. Exactly once; retried if SQS fails."""
        if held.settling:
            return
        held.settling = True
        held.retry_settle_at = 0.0
        try:
            if held.invalid is not None:
                await self._settle_invalid(held, held.invalid)
            else:
                await self._settle_result(held)
        except SqsError as error:
            self.metrics.sqs_errors.labels(queue=self.settings.name,
                                           operation=error.operation).inc()
            self.status.last_error = str(error)
            held.settling = False
            if not error.retryable and error.operation == "delete":
                # The receipt is stale: the message was received again elsewhere or expired.
                self._held.pop(held.key, None)
                if held.result is not None:
                    self._pending[held.key] = _Pending(held.result, held.notified,
                                                       held.dead_lettered)
                self._update_in_flight()
                log.warning("could not delete %s (%s); settling on its redelivery",
                            held.key, error)
                return
            held.retry_settle_at = self._clock() + 2.0
            log.warning("settling %s failed, retrying: %s", held.key, error)
            return
        self._held.pop(held.key, None)
        self._update_in_flight()
        self._capacity.set()

    async def _settle_invalid(self, held: _Held, invalid: InvalidMessage) -> None:
        reason = invalid.code.value
        if not held.notified:
            log.warning("invalid message %s: %s", held.raw.message_id, invalid,
                        extra={"stemId": invalid.stem_id, "task": invalid.task})
            held.told = "no stemId"
            if invalid.stem_id:
                delivered = await self.notifier.notify_failure(
                    stem_id=invalid.stem_id, task=invalid.task, code=reason,
                    message=str(invalid), retryable=False, message_id=invalid.message_id,
                    raw_body=held.raw.body)
                held.told = "yes" if delivered else "no"
            held.notified = True
        await self._dead_letter(held, reason, str(invalid))
        await self.sqs.delete(held.receipt_handle)

    async def _settle_result(self, held: _Held) -> None:
        result, delivery = held.result, held.delivery
        assert result is not None and delivery is not None
        message = delivery.message
        if result.outcome is Outcome.FAILED:
            code = result.error_code or ErrorCode.JOB_BACKOFF_LIMIT.value
            detail = result.error_message or code
            if not held.notified:
                delivered = await self.notifier.notify_failure(
                    stem_id=message.stem_id, task=message.task.value, code=code,
                    message=detail, retryable=True, message_id=message.message_id,
                    raw_body=delivery.body)
                held.notified, held.told = True, "yes" if delivered else "no"
            await self._dead_letter(held, code, detail)
        await self.sqs.delete(held.receipt_handle)
        self._record_finished(held, result)

    async def _dead_letter(self, held: _Held, reason: str, detail: str) -> None:
        if held.dead_lettered:
            return
        group = held.delivery.message.stem_id if held.delivery else None
        await self.sqs.dead_letter(held.raw.body, reason=reason, detail=detail,
                                   message_id=held.raw.message_id,
                                   receive_count=held.raw.receive_count, group_id=group,
                                   backend_notified=held.told)
        held.dead_lettered = True
        self.metrics.messages_dead_lettered.labels(queue=self.settings.name,
                                                   reason=reason).inc()
        self.status.dead_lettered += 1
        log.warning("message %s moved to the dead-letter queue: %s (%s)",
                    held.raw.message_id, reason, detail)

    def _record_finished(self, held: _Held, result: JobResult) -> None:
        assert held.delivery is not None
        task = held.delivery.message.task.value
        q = self.settings.name
        self.metrics.jobs_finished.labels(queue=q, task=task, outcome=result.outcome.value).inc()
        duration = result.duration_seconds
        if duration is None and held.launched_at is not None:
            duration = self._clock() - held.launched_at
        if duration is not None:
            self.metrics.job_duration.labels(queue=q, task=task).observe(duration)
        if result.summary is not None:
            if result.summary.audio_seconds:
                self.metrics.audio_seconds_processed.labels(queue=q).inc(
                    result.summary.audio_seconds)
            if result.summary.bytes:
                self.metrics.bytes_processed.labels(queue=q, task=task).inc(result.summary.bytes)
        setattr(self.status, result.outcome.value, getattr(self.status, result.outcome.value) + 1)
        self._settled[held.key] = result.outcome
        while len(self._settled) > _SETTLED_MEMORY:
            self._settled.popitem(last=False)
        if self.on_settled is not None:
            try:
                self.on_settled(held.delivery, result)
            except Exception:
                log.exception("on_settled callback failed")
        log.info("settled job %s: %s%s", held.key, result.outcome.value,
                 f" ({result.error_code})" if result.error_code else "",
                 extra={**held.delivery.message.log_context(), "job": held.key})

    async def _delete_quietly(self, receipt_handle: str) -> None:
        try:
            await self.sqs.delete(receipt_handle)
        except SqsError as error:
            log.warning("could not delete a duplicate delivery: %s", error)

    def _update_in_flight(self) -> None:
        self.status.running = self.in_flight
        self._m_in_flight.set(self.status.running)

    # ------------------------------------------------------------------ heartbeat

    async def _heartbeat_loop(self) -> None:
        timeout = self.settings.visibility_timeout_seconds
        tick = max(0.2, min(5.0, timeout / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                await self._heartbeat_once()
            except Exception:  # never let the heartbeat die
                log.exception("heartbeat round failed")

    async def _heartbeat_once(self) -> None:
        now = self._clock()
        timeout = self.settings.visibility_timeout_seconds
        due: dict[str, tuple[str, int]] = {}
        for key, held in list(self._held.items()):
            if held.retry_settle_at and not held.settling and now >= held.retry_settle_at:
                self._tasks.spawn(self._settle(held), f"settle {key}")
            if now < held.visible_until - timeout / 2:
                continue
            left = SQS_MAX_VISIBILITY_SECONDS - (now - held.received_at) - _CAP_MARGIN_SECONDS
            extend = int(min(timeout, left))
            if extend <= 0:
                if not held.warned_cap:
                    held.warned_cap = True
                    log.warning("message %s reached SQS's 12-hour visibility cap; it will be "
                                "redelivered and adopted", held.raw.message_id)
                continue
            due[key] = (held.receipt_handle, extend)
        if not due:
            return
        try:
            failed = await self.sqs.change_visibility_batch(due)
        except SqsError as error:
            failed = {key: str(error) for key in due}
        for key, (_, extend) in due.items():
            held_now = self._held.get(key)
            if key in failed:
                self.metrics.heartbeat_errors.labels(queue=self.settings.name).inc()
                log.warning("heartbeat for %s failed: %s", key, failed[key])
            elif held_now is not None:
                held_now.visible_until = now + extend

    # ------------------------------------------------------------------ depth

    async def _depth_loop(self) -> None:
        q = self.settings.name
        while True:
            try:
                depth = await self.sqs.depth()
                self.metrics.queue_messages.labels(queue=q, state="visible").set(depth.visible)
                self.metrics.queue_messages.labels(queue=q, state="in_flight").set(
                    depth.in_flight)
                self.metrics.queue_messages.labels(queue=q, state="delayed").set(depth.delayed)
                dlq = await self.sqs.depth(await self.sqs.dlq_url())
                self.metrics.dead_letter_queue_messages.labels(queue=q).set(dlq.visible)
            except SqsError as error:
                self.metrics.sqs_errors.labels(queue=q, operation=error.operation).inc()
                log.debug("queue depth unavailable: %s", error)
            await asyncio.sleep(self.settings.depth_poll_seconds)
