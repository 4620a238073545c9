"""Settling one message, exactly once: notify → dead-letter → delete (each step at most once).

- succeeded, rejected (exit 3: the job already told the backend): delete;
- failed: FAILURE completion (``retryable: true``) → copy to the dead-letter queue → delete;
- invalid (never a job): FAILURE completion (``retryable: false``) when its stemId could be
  read → dead-letter queue → delete.

The ledger says which step is next, so a step that failed (SQS down) is retried from where it
stopped, and a message whose receipt went stale is finished on its redelivery. A failed job's
progress also survives the runner: before its FAILURE the launcher notes the result, once the
copy is in the dead-letter queue it notes that, and only then is the message deleted (and the
note dropped); a runner that died in between gets the note back from ``recover``/``launch``, so
the redelivery neither runs the job again nor sends a second dead letter. An invalid message
gets its first result (dead-lettered) from the ledger once its copy is sent, and that is noted
the same way (keyed ``invalid-<MessageId>``). Dead letters keep the original body and carry
``WaveflowReason`` (an ErrorCode), ``WaveflowReasonDetail``, ``WaveflowSourceQueue``,
``WaveflowSourceMessageId``, ``WaveflowReceiveCount`` and ``WaveflowBackendNotified`` (did the
backend accept the FAILURE), as many of them as fit beside the body (:mod:`.deadletter`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from waveflow_job.contract import ErrorCode, Outcome
from waveflow_operator.metrics import Metrics
from waveflow_operator.runner.ledger import Entry, Ledger, Step
from waveflow_operator.runner.notify import FailureNotifier
from waveflow_operator.runner.protocol import JobRequest, JobResult
from waveflow_operator.runner.spec import QueueSpec
from waveflow_operator.runner.sqs import SqsError, SqsQueue
from waveflow_operator.runner.status import DispatcherStatus

__all__ = ["SettleNotes", "SettledCallback", "Settler"]

log = logging.getLogger(__name__)

class SettleNotes(Protocol):
    """Where a failed job's settling progress is kept across a crash (the launcher)."""

    async def note_settling(self, result: JobResult) -> None: ...

    async def forget(self, job_name: str) -> None: ...


#: Called once per settled job (after its message is deleted): the demo's table, tests.
SettledCallback = Callable[[JobRequest, JobResult], None]


class Settler:
    """Performs the ledger's settle steps against the backend and SQS."""

    def __init__(self, spec: QueueSpec, ledger: Ledger, sqs: SqsQueue,
                 notifier: FailureNotifier, metrics: Metrics, status: DispatcherStatus, *,
                 notes: SettleNotes, on_deleted: Callable[[], None],
                 on_settled: SettledCallback | None = None) -> None:
        self.spec = spec
        self.notes = notes
        self.ledger = ledger
        self.sqs = sqs
        self.notifier = notifier
        self.metrics = metrics
        self.status = status
        self._on_deleted = on_deleted
        self._on_settled = on_settled

    async def settle(self, key: str) -> None:
        """Run every step still due; a failed step is left for a retry (or the redelivery)."""
        entry = self.ledger.claim(key)
        if entry is None:
            return
        try:
            while (step := entry.next_step()) is not None:
                if step is Step.NOTIFY:
                    if entry.result is not None:  # a rerun could contradict the FAILURE
                        await self.notes.note_settling(entry.result)
                    self.ledger.notified(key, await self._notify(entry))
                elif step is Step.DEAD_LETTER:
                    await self._dead_letter(entry)
                    if (result := self.ledger.dead_lettered(key).result) is not None:
                        await self.notes.note_settling(result)
                else:
                    assert entry.delivery is not None
                    await self.sqs.delete(entry.delivery.receipt_handle)
                    self._record(self.ledger.deleted(key))
                    if entry.result is not None and entry.result.outcome is Outcome.FAILED:
                        await self.notes.forget(key)
                    self._on_deleted()
                    return
        except SqsError as error:
            self.metrics.sqs_errors.labels(queue=self.spec.name, operation=error.operation).inc()
            self.status.last_error = str(error)
            stale = not error.retryable and error.operation == "delete"
            self.ledger.settle_failed(key, receipt_stale=stale)
            if stale:
                log.warning("could not delete %s (%s); settling on its redelivery", key, error)
                self._on_deleted()
            else:
                log.warning("settling %s failed, retrying: %s", key, error)

    async def _notify(self, entry: Entry) -> str:
        """The FAILURE completion; returns what the dead letter records about it."""
        assert entry.delivery is not None
        if entry.invalid is not None:
            invalid = entry.invalid
            log.warning("invalid message %s: %s", entry.delivery.sqs_message_id, invalid,
                        extra={"stemId": invalid.stem_id, "task": invalid.task})
            if not invalid.stem_id:
                return "no stemId"
            delivered = await self.notifier.notify_failure(
                stem_id=invalid.stem_id, task=invalid.task, code=invalid.code.value,
                message=str(invalid), retryable=False, message_id=invalid.message_id,
                raw_body=entry.delivery.body)
        else:
            assert entry.message is not None
            code, detail = _failure(entry)
            delivered = await self.notifier.notify_failure(
                stem_id=entry.message.stem_id, task=entry.message.task.value, code=code,
                message=detail, retryable=True, message_id=entry.message.message_id,
                raw_body=entry.delivery.body)
        return "yes" if delivered else "no"

    async def _dead_letter(self, entry: Entry) -> None:
        assert entry.delivery is not None
        delivery = entry.delivery
        if entry.invalid is not None:
            reason, detail = entry.invalid.code.value, str(entry.invalid)
        else:
            reason, detail = _failure(entry)
        await self.sqs.dead_letter(delivery.body, reason=reason, detail=detail,
                                   message_id=delivery.sqs_message_id,
                                   receive_count=delivery.receive_count,
                                   group_id=entry.message.stem_id if entry.message else None,
                                   backend_notified=entry.backend_told)
        self.metrics.messages_dead_lettered.labels(queue=self.spec.name, reason=reason).inc()
        self.status.dead_lettered += 1
        log.warning("message %s moved to the dead-letter queue: %s (%s)",
                    delivery.sqs_message_id, reason, detail)

    def _record(self, entry: Entry) -> None:
        """Metrics, status counts and the callback of one settled job."""
        result = entry.result
        if result is None or entry.message is None:
            return  # an invalid message: counted when it was dead-lettered
        task, q = entry.message.task.value, self.spec.name
        self.metrics.jobs_finished.labels(queue=q, task=task, outcome=result.outcome.value).inc()
        duration = result.duration_seconds
        if duration is None and entry.launched_at is not None:
            duration = self.ledger.now() - entry.launched_at
        if duration is not None:
            self.metrics.job_duration.labels(queue=q, task=task).observe(duration)
        if result.summary is not None:
            if result.summary.audio_seconds:
                self.metrics.audio_seconds_processed.labels(queue=q).inc(
                    result.summary.audio_seconds)
            if result.summary.bytes:
                self.metrics.bytes_processed.labels(queue=q, task=task).inc(result.summary.bytes)
        setattr(self.status, result.outcome.value, getattr(self.status, result.outcome.value) + 1)
        if self._on_settled is not None:
            try:
                self._on_settled(entry.request(), result)
            except Exception:
                log.exception("on_settled callback failed")
        log.info("settled job %s: %s%s", entry.key, result.outcome.value,
                 f" ({result.error_code})" if result.error_code else "",
                 extra={**entry.message.log_context(), "job": entry.key})


def _failure(entry: Entry) -> tuple[str, str]:
    """(error code, detail) of a failed job's result."""
    result = entry.result
    assert result is not None and result.outcome is Outcome.FAILED
    code = result.error_code or ErrorCode.JOB_BACKOFF_LIMIT.value
    return code, result.error_message or code
