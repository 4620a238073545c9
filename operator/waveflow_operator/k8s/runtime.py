"""One WaveflowQueue at run time: its dispatcher, its Kubernetes launcher and its status.

``serve_queue`` is what the kopf daemon of each WaveflowQueue runs (handlers.py stays thin):
read the webhook Secret, build the settings from the spec, start the dispatcher with a
:class:`KubernetesLauncher`, and write the resource's status every few seconds until kopf says
stop (the resource is deleted, or the operator exits). A spec change restarts the dispatcher
with the new settings.

Nothing here crash-loops: a missing Secret, an invalid spec or an API error shows in the status
(``Ready=False`` with a reason) and the logs, and is retried after a delay (``NotReady``); a bad
queue URL or missing SQS permission is the dispatcher's own retry loop, shown the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from waveflow_operator.k8s.api import KubeApi, KubeApiError
from waveflow_operator.k8s.crd import JobTemplate, parse_spec
from waveflow_operator.k8s.launcher import JobWatch, KubernetesLauncher
from waveflow_operator.metrics import Metrics
from waveflow_operator.runner.dispatcher import Dispatcher
from waveflow_operator.runner.spec import ConfigError, QueueSpec
from waveflow_operator.runner.sqs import SqsError
from waveflow_operator.runner.status import DispatcherStatus

__all__ = ["NotReady", "OperatorRuntime", "QueueStatus", "serve_queue"]

log = logging.getLogger(__name__)

#: Seconds between two status writes of a running queue.
STATUS_INTERVAL = 2.0


class NotReady(Exception):
    """The queue cannot run yet (Secret missing, spec invalid, API down): retry after ``delay``."""

    def __init__(self, reason: str, message: str, delay: float = 30.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.delay = delay


@dataclass
class OperatorRuntime:
    """What the kopf handlers share (kept in kopf's ``memo``)."""

    api: KubeApi
    metrics: Metrics
    #: (namespace, queue name) → where that queue's Job events go (its launcher reads them).
    watches: dict[tuple[str, str], JobWatch] = field(default_factory=dict)
    #: (namespace, queue name) → the running dispatcher (for the liveness probe).
    dispatchers: dict[tuple[str, str], Dispatcher] = field(default_factory=dict)
    #: Set by kopf's cleanup: the operator exits, no dispatcher may start any more (kopf can
    #: spawn a queue's daemon again while it exits, e.g. after a watch failed).
    closing: bool = False

    def job_event(self, namespace: str, queue: str | None, job: Mapping[str, Any],
                  event: str | None = None) -> None:
        """Route one Job event to its queue's watch (Jobs of other queues are ignored)."""
        watch = self.watches.get((namespace, queue or ""))
        if watch is not None:
            watch.put(job, deleted=event == "DELETED")

    def liveness(self) -> dict[str, str]:
        """Each queue's receive loop; raises when one died unexpectedly."""
        report = {}
        for (namespace, name), dispatcher in self.dispatchers.items():
            alive, detail = dispatcher.alive()
            if not alive:
                raise RuntimeError(f"queue {namespace}/{name}: {detail}")
            report[f"{namespace}/{name}"] = detail
        return report

    async def stop_all(self) -> None:
        """On operator exit: stop every dispatcher so its messages go back to SQS at once.

        kopf waits for daemons only briefly when the operator exits (then cancels them), but it
        runs the cleanup handlers first and waits for them: the stop each daemon began is
        awaited here to its end (``Dispatcher.stop`` is one shared stop).
        """
        dispatchers = list(self.dispatchers.values())
        if dispatchers:
            await asyncio.gather(*(d.stop(0) for d in dispatchers), return_exceptions=True)

    async def close(self) -> None:
        self.closing = True
        await self.stop_all()
        await self.api.close()


@dataclass
class QueueStatus:
    """Builds the ``status`` of a WaveflowQueue; keeps lastTransitionTime across writes."""

    conditions: dict[str, dict[str, str]] = field(default_factory=dict)

    def condition(self, kind: str, ok: bool | None, reason: str, message: str) -> None:
        status = "Unknown" if ok is None else ("True" if ok else "False")
        previous = self.conditions.get(kind)
        since = (previous["lastTransitionTime"] if previous and previous["status"] == status
                 else _now())
        self.conditions[kind] = {"type": kind, "status": status, "reason": reason,
                                 "message": message, "lastTransitionTime": since}

    def from_dispatcher(self, status: DispatcherStatus, queue: QueueSpec,
                        reachable: bool = False) -> dict[str, Any]:
        """Ready and Polling from what the dispatcher saw last (``reachable``: the queue
        answered GetQueueAttributes at start, before the first long poll returned)."""
        max_in_flight = queue.max_in_flight
        if status.polling or (reachable and not status.last_error):
            self.condition("Ready", True, "Polling", f"receiving from {queue.queue_url}")
        elif status.last_error and not status.last_error_retryable:
            self.condition("Ready", False, "QueueUnavailable",
                           f"{queue.queue_url}: {status.last_error}")
        elif status.last_error:
            self.condition("Ready", False, "QueueError",
                           f"{queue.queue_url}: {status.last_error}")
        else:
            self.condition("Ready", None, "Starting", "waiting for the first receive")
        if status.running >= max_in_flight:
            self.condition("Polling", False, "MaxInFlight",
                           f"{status.running} message(s) in flight, the maximum")
        elif status.polling:
            self.condition("Polling", True, "LongPolling", "waiting for messages")
        else:
            self.condition("Polling", False, "NotPolling", status.last_error or "starting")
        return self.render(status)

    def render(self, status: DispatcherStatus | None = None,
               error: str | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {"conditions": list(self.conditions.values())}
        if status is not None:
            document["counts"] = {
                "received": status.received, "running": status.running,
                "succeeded": status.succeeded, "rejected": status.rejected,
                "failed": status.failed, "deadLettered": status.dead_lettered}
            if status.last_poll_time is not None:
                document["lastPollTime"] = status.last_poll_time.strftime("%Y-%m-%dT%H:%M:%SZ")
            error = error or status.last_error
        document["lastError"] = error or ""
        return document


async def serve_queue(runtime: OperatorRuntime, meta: Mapping[str, Any],
                      body: Mapping[str, Any], stopped: Any) -> None:
    """Run one queue until kopf's ``stopped`` flag is set; raises :class:`NotReady` to be
    retried later. ``body`` is kopf's live view of the resource: a changed spec restarts the
    dispatcher with the new settings.
    """
    namespace, name = str(meta["namespace"]), str(meta["name"])
    if runtime.closing:
        log.info("queue %s/%s: the operator is exiting; not starting it again", namespace, name)
        return
    status = QueueStatus()
    last: DispatcherStatus | None = None
    while not stopped and not runtime.closing:
        spec = _plain(body.get("spec") or {})
        dispatcher = await _start(runtime, namespace, name, meta, spec, status)
        key = (namespace, name)
        runtime.dispatchers[key] = dispatcher
        written: Mapping[str, Any] | None = None
        try:
            reachable = await _reachable(dispatcher)
            while not stopped and not runtime.closing \
                    and _plain(body.get("spec") or {}) == spec:
                document = status.from_dispatcher(dispatcher.status, dispatcher.spec,
                                                  reachable)
                if document != written:  # an idle queue costs no API calls
                    written = document if await _write_status(
                        runtime, namespace, name, document) else None
                await stopped.wait(STATUS_INTERVAL)
        finally:
            # Stopped while still registered: kopf's cleanup (operator exit) finds it and waits
            # for the same stop, even when kopf cancels this daemon half-way.
            try:
                await dispatcher.stop(0)
            finally:
                runtime.watches.pop(key, None)
                runtime.dispatchers.pop(key, None)
            last = dispatcher.status
        if not stopped and not runtime.closing:
            log.info("queue %s/%s: the spec changed; restarting its dispatcher", namespace, name)
    status.condition("Polling", False, "Stopped", "the operator stopped serving this queue")
    with contextlib.suppress(KubeApiError):
        await runtime.api.patch_queue_status(namespace, name, status.render(last))


async def _start(runtime: OperatorRuntime, namespace: str, name: str, meta: Mapping[str, Any],
                 spec: dict[str, Any], status: QueueStatus) -> Dispatcher:
    """Spec → Secret → launcher → dispatcher, or NotReady with the status written."""
    try:
        queue, template = parse_spec(name, spec)
        queue = dataclasses.replace(queue, webhook_secret=await _webhook_secret(
            runtime.api, namespace, template))
        watch = runtime.watches[(namespace, name)] = JobWatch()
        launcher = KubernetesLauncher(runtime.api, namespace, meta, queue, template, watch)
        dispatcher = Dispatcher(queue, launcher, metrics=runtime.metrics)
        await dispatcher.start()
        return dispatcher
    except NotReady as error:
        failure: Exception = error
        reason, delay = error.reason, error.delay
    except ConfigError as error:
        failure, reason, delay = error, "InvalidSpec", 60.0
    except KubeApiError as error:
        failure, reason, delay = error, "KubernetesApiError", 10.0 if error.retryable else 60.0
    runtime.watches.pop((namespace, name), None)
    log.error("queue %s/%s is not ready (%s): %s", namespace, name, reason, failure)
    status.condition("Ready", False, reason, str(failure))
    status.condition("Polling", False, "NotStarted", str(failure))
    with contextlib.suppress(KubeApiError):
        await runtime.api.patch_queue_status(namespace, name, status.render(error=str(failure)))
    raise NotReady(reason, str(failure), delay)


async def _reachable(dispatcher: Dispatcher) -> bool:
    """One GetQueueAttributes, so Ready does not wait for the first long poll to return."""
    try:
        await dispatcher.sqs.depth()
    except SqsError as error:
        log.warning("queue %s is not reachable: %s", dispatcher.spec.queue_url, error)
        return False
    return True


async def _webhook_secret(api: KubeApi, namespace: str, template: JobTemplate) -> str | None:
    if not template.secret_name:
        return None
    value = await api.read_secret_key(namespace, template.secret_name, template.secret_key)
    if value is None:
        raise NotReady("SecretNotFound", f"Secret {template.secret_name!r} has no key "
                                         f"{template.secret_key!r}")
    return value


async def _write_status(runtime: OperatorRuntime, namespace: str, name: str,
                        document: Mapping[str, Any]) -> bool:
    try:
        await runtime.api.patch_queue_status(namespace, name, document)
    except KubeApiError as error:
        log.warning("could not write the status of %s/%s: %s", namespace, name, error)
        return False
    return True


def _plain(value: Any) -> Any:
    """A deep, plain copy of kopf's live views (for comparisons that do not move)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

