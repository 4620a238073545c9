"""The dispatcher's async loops, for one queue: receive, launch, heartbeat, queue depth, stop.

Plain asyncio; no kopf, no Kubernetes. What happens to each message is decided by the pure
:class:`~waveflow_operator.runner.ledger.Ledger`; settling is :mod:`.settle`; SQS is
:mod:`.sqs`; the jobs run in a :class:`~waveflow_operator.runner.protocol.Launcher`.

- **Backpressure.** It receives only while messages held < ``max_in_flight``, at most
  ``min(receive_batch_size, 10, free slots)`` per long poll: work waits in SQS, not in memory.
- **Launch.** The job name is derived from the SQS MessageId, so a redelivered message maps to
  the same job and the launcher adopts it. A launch refused for now
  (``LaunchError(retryable=True)``) hands the message back after a delay.
- **Heartbeat.** ChangeMessageVisibility renews each held message halfway through its timeout,
  up to SQS's 12-hour cap per receipt.
- **Restart-safe.** ``Launcher.recover()`` lists jobs of an earlier run: running ones take a slot
  until their message comes back; finished ones settle once their message is redelivered.
- **Clean stop.** ``stop(grace)`` stops receiving, lets running jobs finish within ``grace`` and
  hands unfinished messages back (visibility 0) so no work waits for a timeout.
- **Weather.** SQS throttling, 5xx and network errors back off (full jitter, ≤ 30 s); a bad
  queue URL or a missing permission backs off too and shows in ``status``: never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from waveflow_job.contract import Outcome
from waveflow_operator.metrics import Metrics
from waveflow_operator.runner.ledger import Duplicate, Entry, Launch, Ledger, Settle
from waveflow_operator.runner.notify import FailureNotifier, WebhookFailureNotifier
from waveflow_operator.runner.protocol import (
    Adopted,
    Delivery,
    JobResult,
    Launcher,
    LaunchError,
)
from waveflow_operator.runner.settle import SettledCallback, Settler
from waveflow_operator.runner.spec import QueueSpec
from waveflow_operator.runner.sqs import SqsError, SqsQueue
from waveflow_operator.runner.status import DispatcherStatus

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)


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

    def spawn(self, coroutine: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self.items.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.items.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())


class Dispatcher:
    """One queue's dispatcher. ``await start()``, later ``await stop(grace)``."""

    def __init__(self, spec: QueueSpec, launcher: Launcher, *,
                 sqs: SqsQueue | None = None, notifier: FailureNotifier | None = None,
                 metrics: Metrics | None = None, on_settled: SettledCallback | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.launcher = launcher
        self.sqs = sqs or SqsQueue(spec)
        self.metrics = metrics or Metrics()
        self.status = DispatcherStatus()
        self.ledger = Ledger(spec.visibility_timeout_seconds, clock=clock)
        self.settler = Settler(
            spec, self.ledger, self.sqs,
            notifier or WebhookFailureNotifier(spec.webhook_url, spec.webhook_secret),
            self.metrics, self.status, notes=launcher, on_deleted=self._freed,
            on_settled=on_settled)
        self._tasks = _Tasks()
        self._loops: list[asyncio.Task[None]] = []
        self._poll_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[list[str]] | None = None
        self._stopping = asyncio.Event()
        self._capacity = asyncio.Event()
        self._started = False
        self._m_in_flight = self.metrics.jobs_in_flight.labels(queue=spec.name)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Recover jobs of an earlier run, then start polling, heartbeats and depth polls."""
        if self._started:
            return
        self._started = True
        await self.launcher.start(self._on_result)
        recovered = await self.launcher.recover()
        self.ledger.recover(recovered.running, recovered.finished)
        if recovered.running or recovered.finished:
            log.info("recovered %d running and %d finished jobs of an earlier run",
                     len(recovered.running), len(recovered.finished))
        self._update_in_flight()
        self._poll_task = asyncio.create_task(self._poll_loop(), name="poll")
        self._loops = [asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                       asyncio.create_task(self._depth_loop(), name="depth")]

    async def stop(self, grace_seconds: float) -> list[str]:
        """Stop receiving; running jobs get ``grace_seconds`` to finish; unfinished messages go
        back to the queue (visibility 0). Returns the job names that did not finish.

        One stop per dispatcher: a second call (kopf's cleanup while the daemon already stops)
        waits for the same one, and cancelling a caller does not cancel the stop."""
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._stop(grace_seconds))
        return await asyncio.shield(self._stop_task)

    async def _stop(self, grace_seconds: float) -> list[str]:
        self._stopping.set()
        self._capacity.set()
        unfinished = await self.launcher.drain(grace_seconds)
        # Settlements already under way (a job that just finished) are allowed to complete.
        if self._tasks.items:
            await asyncio.wait(set(self._tasks.items), timeout=max(grace_seconds, 5.0) + 30)
        # Handed back before the long poll in progress returns (it may take 20 s); what that
        # poll still brings is handed back by the poll loop itself.
        returned = []
        for entry in self.ledger.unsettled():
            self.ledger.returned(entry.key)
            if await self._hand_back(entry, 0):
                returned.append(entry.key)
        self._update_in_flight()
        if returned:
            log.info("returned %d unfinished message(s) to the queue", len(returned))
        if self._poll_task is not None:
            await self._poll_task
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        return sorted(set(unfinished) | set(returned))

    async def hurry(self) -> None:
        """A second signal: abandon the grace period (the launcher kills what still runs)."""
        await self.launcher.hurry()

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
        return self.ledger.in_flight

    # ------------------------------------------------------------------ receive

    async def _poll_loop(self) -> None:
        backoff = _Backoff()
        while not self._stopping.is_set():
            free = self.spec.max_in_flight - self.in_flight
            if free <= 0:
                self._capacity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._capacity.wait(), timeout=1.0)
                continue
            try:
                deliveries = await self.sqs.receive(min(self.spec.receive_batch_size, 10, free))
            except SqsError as error:
                self._poll_failed(str(error), error.retryable, error.operation)
                await self._sleep(backoff.next() if error.retryable else
                                  max(5.0, backoff.next()))
                continue
            except Exception as error:  # a bug or an unexpected library error: keep polling
                log.exception("receiving from %s failed unexpectedly", self.spec.name)
                self._poll_failed(f"{type(error).__name__}: {error}", True, None)
                await self._sleep(max(1.0, backoff.next()))
                continue
            backoff.reset()
            self._poll_succeeded()
            if self._stopping.is_set():
                for delivery in deliveries:
                    with contextlib.suppress(SqsError):
                        await self.sqs.change_visibility(delivery.receipt_handle, 0)
                break
            for delivery in deliveries:
                try:
                    self._accept(delivery)
                except Exception:  # never lose the loop over one message; SQS redelivers it
                    log.exception("could not route message %s", delivery.sqs_message_id)

    def _poll_failed(self, error: str, retryable: bool, operation: str | None) -> None:
        if operation is not None:
            self.metrics.sqs_errors.labels(queue=self.spec.name, operation=operation).inc()
            level = logging.WARNING if retryable else logging.ERROR
            log.log(level, "receiving from %s failed: %s", self.spec.name, error)
        self.status.polling = False
        self.status.last_error = error
        self.status.last_error_retryable = retryable

    def _poll_succeeded(self) -> None:
        now = datetime.now(UTC)
        self.status.polling = True
        self.status.last_poll_time = now
        self.metrics.last_poll_timestamp.labels(queue=self.spec.name).set(now.timestamp())

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _accept(self, delivery: Delivery) -> None:
        """Hand one receive to the ledger and act on its decision."""
        self.metrics.messages_received.labels(queue=self.spec.name).inc()
        self.status.received += 1
        decision = self.ledger.receive(delivery)
        self._update_in_flight()
        if isinstance(decision, Duplicate):
            log.info("message %s was already settled (%s); deleting the duplicate delivery",
                     delivery.sqs_message_id, decision.outcome)
            self._tasks.spawn(self._delete_duplicate(delivery), f"dup {delivery.sqs_message_id}")
        elif isinstance(decision, Settle):
            if decision.entry.result is not None:
                log.info("%s %s while its message was not held; settling it now",
                         decision.entry.key, "was dead-lettered" if decision.entry.invalid
                         else "finished")
            self._tasks.spawn(self.settler.settle(decision.entry.key),
                              f"settle {decision.entry.key}")
        elif isinstance(decision, Launch):
            self._tasks.spawn(self._launch(decision.entry), f"launch {decision.entry.key}")

    async def _delete_duplicate(self, delivery: Delivery) -> None:
        try:
            await self.sqs.delete(delivery.receipt_handle)
        except SqsError as error:
            log.warning("could not delete a duplicate delivery: %s", error)

    # ------------------------------------------------------------------ launch

    async def _launch(self, entry: Entry) -> None:
        request = entry.request()
        try:
            answer = await self.launcher.launch(request)
        except LaunchError as error:
            if not error.retryable:
                await self._on_result(JobResult(entry.key, Outcome.FAILED, error.code.value,
                                                str(error)))
                return
            await self._give_back(entry, f"launch failed, will retry: {error}")
            return
        except Exception as error:  # a launcher bug must not lose the message
            log.exception("launching %s failed unexpectedly", entry.key)
            await self._give_back(entry, f"launch failed unexpectedly: {error}")
            return
        self.ledger.launched(entry.key)
        if isinstance(answer, Adopted):
            log.info("adopted existing job %s", entry.key)
            if answer.result is not None:
                await self._on_result(answer.result)
            return
        task = request.message.task.value
        self.metrics.jobs_created.labels(queue=self.spec.name, task=task).inc()
        if request.delivery.sent_timestamp_ms is not None:
            latency = max(0.0, time.time() - request.delivery.sent_timestamp_ms / 1000)
            self.metrics.dispatch_latency.labels(queue=self.spec.name).observe(latency)
        log.info("launched job %s", entry.key,
                 extra={**request.message.log_context(), "job": entry.key})

    async def _give_back(self, entry: Entry, why: str) -> None:
        """Hand a message back to SQS after a backoff (the launch could not happen now)."""
        self.ledger.returned(entry.key)
        self._update_in_flight()
        assert entry.delivery is not None
        delay = 0 if self._stopping.is_set() else min(300, 5 * max(1, entry.delivery.receive_count))
        log.warning("%s; message %s returns in %ds", why, entry.delivery.sqs_message_id, delay)
        self.status.last_error = why
        await self._hand_back(entry, delay)

    async def _hand_back(self, entry: Entry, delay: int) -> bool:
        assert entry.delivery is not None
        try:
            await self.sqs.change_visibility(entry.delivery.receipt_handle, delay)
        except SqsError as error:
            log.warning("could not return %s to the queue (it reappears after its visibility "
                        "timeout): %s", entry.key, error)
            return False
        return True

    async def _on_result(self, result: JobResult) -> None:
        """Launcher callback: settle now if the message is held, else keep it for later."""
        entry = self.ledger.finished(result)
        self._update_in_flight()
        if entry is not None:
            self._tasks.spawn(self.settler.settle(entry.key), f"settle {entry.key}")
        elif (kept := self.ledger.get(result.job_name)) is not None and not kept.held:
            log.info("job %s finished (%s) while its message is not held; kept until the "
                     "message is redelivered", result.job_name, result.outcome.value)

    def _freed(self) -> None:
        self._update_in_flight()
        self._capacity.set()

    def _update_in_flight(self) -> None:
        self.status.running = self.in_flight
        self._m_in_flight.set(self.status.running)

    # ------------------------------------------------------------------ heartbeat, depth

    async def _heartbeat_loop(self) -> None:
        tick = max(0.2, min(5.0, self.spec.visibility_timeout_seconds / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                await self._heartbeat_once()
            except Exception:  # never let the heartbeat die
                log.exception("heartbeat round failed")

    async def _heartbeat_once(self) -> None:
        for key in self.ledger.retries_due():
            self._tasks.spawn(self.settler.settle(key), f"settle {key}")
        since = self.ledger.now()
        due, capped = self.ledger.heartbeats_due()
        for key in capped:
            log.warning("message of %s reached SQS's 12-hour visibility cap; it will be "
                        "redelivered and adopted", key)
        if not due:
            return
        try:
            failed = await self.sqs.change_visibility_batch(due)
        except SqsError as error:
            failed = {key: str(error) for key in due}
        for key, (_, extend) in due.items():
            if key in failed:
                self.metrics.heartbeat_errors.labels(queue=self.spec.name).inc()
                log.warning("heartbeat for %s failed: %s", key, failed[key])
            else:
                self.ledger.extended(key, extend, since)

    async def _depth_loop(self) -> None:
        q = self.spec.name
        while True:
            try:
                depth = await self.sqs.depth()
                for state in ("visible", "in_flight", "delayed"):
                    self.metrics.queue_messages.labels(queue=q, state=state).set(
                        getattr(depth, state))
                dlq = await self.sqs.depth(await self.sqs.dlq_url())
                self.metrics.dead_letter_queue_messages.labels(queue=q).set(dlq.visible)
            except SqsError as error:
                self.metrics.sqs_errors.labels(queue=q, operation=error.operation).inc()
                log.debug("queue depth unavailable: %s", error)
            await asyncio.sleep(self.spec.depth_poll_seconds)
