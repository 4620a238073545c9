"""The Kubernetes launcher: one ``batch/v1`` Job per message, its status turned into a result.

Implements the dispatcher's ``Launcher`` protocol for one WaveflowQueue:

- ``launch`` creates the Job built by :func:`waveflow_operator.k8s.jobs.build_job` →
  ``Created``; a 409 means the Job exists (a redelivered message, a restart) and it is adopted —
  never a second Job — ``Adopted``, with its result when it has already ended; a body too large
  for the environment goes into a ConfigMap owned by the Job, created right after it and again
  on adoption (an earlier run may have died between the two; a 409 is then fine), see
  :mod:`.message`;
- Job events arrive on the queue's :class:`JobWatch` (kopf's ``on.event`` handler feeds it); a
  Job with a final condition becomes a :class:`JobResult` (:func:`result_from_status`, through
  the one rule :func:`~waveflow_operator.runner.protocol.ending_outcome`), with the job's
  one-line summary read from its pod's termination message;
- ``recover`` lists this queue's Jobs by label (filtered client-side too) so a restart resumes
  tracking; a finished Job already reported by an earlier run carries the annotation
  ``waveflow.io/reported`` and is not reported again;
- ``note_settling`` marks a Job whose message was copied to the dead-letter queue with the
  annotation ``waveflow.io/dead-lettered`` before the message is deleted; adoption and
  ``recover`` read it back, so an operator that died before the delete only deletes the
  redelivery (the Job lives ``ttlSecondsAfterFinished`` after it ended: the Job's status is the
  rest of the note);
- an invalid message has no Job: once its dead letter is sent, ``note_settling`` keeps that in
  the queue's notes ConfigMap (:mod:`.notes`), ``recover`` reads it back and ``forget`` patches
  the entry out with the message;
- ``drain`` abandons nothing: Jobs keep running in the cluster; the dispatcher hands their
  messages back and the next run adopts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from waveflow_job.contract import ErrorCode, JobSummary, Outcome
from waveflow_operator.k8s.api import KubeApi, KubeApiError
from waveflow_operator.k8s.crd import JobTemplate
from waveflow_operator.k8s.jobs import (
    CONTAINER_NAME,
    LABEL_MANAGED_BY,
    LABEL_QUEUE,
    MANAGED_BY,
    build_job,
    queue_selector,
)
from waveflow_operator.k8s.message import message_config_map, needs_config_map, owned_by
from waveflow_operator.k8s.notes import (
    expired_entries,
    forget_patch,
    is_note_key,
    notes_config_map,
    notes_name,
    notes_patch,
    results_from_notes,
)
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
from waveflow_operator.runner.spec import QueueSpec

__all__ = ["ANNOTATION_DEAD_LETTERED", "ANNOTATION_REPORTED", "JobWatch", "KubernetesLauncher",
           "job_outcome", "result_from_status"]

log = logging.getLogger(__name__)

#: Set on a Job once its result was handed to a dispatcher (value: the outcome).
ANNOTATION_REPORTED = "waveflow.io/reported"
#: Set on a failed Job once its message was copied to the dead-letter queue.
ANNOTATION_DEAD_LETTERED = "waveflow.io/dead-lettered"
_IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                                 "ErrImageNeverPull"})


def job_outcome(job: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """``("Complete" | "Failed", condition)`` once the Job is final, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"]), condition
    return None


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER_NAME:
            state = status.get("state") or {}
            return state.get("terminated") or (status.get("lastState") or {}).get("terminated")
    return None


def _waiting_reason(pod: Mapping[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER_NAME:
            return ((status.get("state") or {}).get("waiting") or {}).get("reason")
    return None


def _disrupted(pod: Mapping[str, Any]) -> bool:
    """Evicted, preempted, drained: the podFailurePolicy does not count such a pod."""
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _latest_first(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pod a result is named after first: the one that succeeded, else the latest counted
    failure; disrupted pods last. finishedAt has whole seconds, so ties are common and the
    API's list order (by name) says nothing."""
    def key(pod: Mapping[str, Any]) -> tuple[bool, bool, str]:
        terminated = _terminated(pod) or {}
        return ((pod.get("status") or {}).get("phase") == "Succeeded", not _disrupted(pod),
                str(terminated.get("finishedAt") or
                    (pod.get("metadata") or {}).get("creationTimestamp") or ""))
    return sorted(pods, key=key, reverse=True)


def result_from_status(job: Mapping[str, Any],
                       pods: Sequence[Mapping[str, Any]]) -> JobResult | None:
    """The final result of a finished Job (None while it runs), from its status and pods.

    Complete → succeeded. Failed by the podFailurePolicy (exit 3) → rejected. Otherwise failed,
    named: OOMKilled, image pull, deadline, or backoff limit.
    """
    final = job_outcome(job)
    if final is None:
        return None
    kind, condition = final
    name = str(job["metadata"]["name"])
    ordered = _latest_first(pods)
    terminations = [t for t in (_terminated(p) for p in ordered) if t]
    summary = next((s for s in (JobSummary.from_json(t.get("message") or "")
                                for t in terminations) if s), None)
    duration = _duration(job)
    reason = str(condition.get("reason") or "")
    message = str(condition.get("message") or reason or "the Job failed")
    last = terminations[0] if terminations else {}
    exit_code = 0 if kind == "Complete" else 3 if reason == "PodFailurePolicy" else \
        last.get("exitCode")
    outcome, code = ending_outcome(Ending(
        exit_code, oom_killed=last.get("reason") == "OOMKilled",
        deadline_exceeded=reason == "DeadlineExceeded",
        image_pull_failed=any(_waiting_reason(p) in _IMAGE_PULL_REASONS for p in ordered),
        failed=kind == "Failed"))
    if outcome is Outcome.SUCCEEDED:
        return JobResult(name, outcome, summary=summary, duration_seconds=duration)
    if outcome is Outcome.REJECTED:
        return JobResult(name, outcome, summary.error_code if summary else None, message,
                         summary, duration)
    if code is ErrorCode.JOB_OOM_KILLED:
        message = f"the job was killed for using too much memory ({message})"
    elif code is ErrorCode.JOB_IMAGE_PULL:
        message = f"the job's image could not be pulled ({message})"
    elif code is ErrorCode.JOB_BACKOFF_LIMIT:
        failed = (job.get("status") or {}).get("failed")
        if failed:
            message = f"{message}: the job failed {failed} time(s)"
    assert code is not None
    return JobResult(name, outcome, code.value, message, summary, duration)


def _duration(job: Mapping[str, Any]) -> float | None:
    status = job.get("status") or {}
    start, end = status.get("startTime"), status.get("completionTime")
    if not start:
        return None
    try:
        begin = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        finish = (datetime.fromisoformat(str(end).replace("Z", "+00:00")) if end else None)
    except ValueError:
        return None
    if finish is None:
        return None
    return max(0.0, (finish - begin).total_seconds())


class JobWatch:
    """The Job events of one queue, as kopf delivers them (handlers → runtime → launcher)."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[tuple[Mapping[str, Any], bool]] = asyncio.Queue()

    def put(self, job: Mapping[str, Any], *, deleted: bool = False) -> None:
        self._events.put_nowait((job, deleted))

    async def get(self) -> tuple[Mapping[str, Any], bool]:
        return await self._events.get()


class KubernetesLauncher:
    """The ``Launcher`` of one WaveflowQueue: its Jobs live in the queue's namespace."""

    def __init__(self, api: KubeApi, namespace: str, owner: Mapping[str, Any],
                 queue: QueueSpec, template: JobTemplate, watch: JobWatch) -> None:
        self.api = api
        self.namespace = namespace
        #: The WaveflowQueue's metadata (name, namespace, uid) for labels and ownerReferences.
        self.owner = dict(owner)
        self.queue = queue
        self.template = template
        self.watch = watch
        self._on_result: ResultCallback | None = None
        #: Jobs whose result this process must still report: job name → monotonic start.
        self._tracked: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ protocol

    async def start(self, on_result: ResultCallback) -> None:
        self._on_result = on_result
        self._spawn(self._follow())

    async def recover(self) -> Recovered:
        """This queue's Jobs left by an earlier run: running, and finished but not reported."""
        jobs = await self.api.list_jobs(self.namespace, queue_selector(self.queue.name))
        running: set[str] = set()
        finished: dict[str, JobResult] = {}
        for job in jobs:
            if not self._ours(job):
                continue
            name = str(job["metadata"]["name"])
            if job_outcome(job) is None:
                self._tracked.setdefault(name, time.monotonic())
                running.add(name)
            elif ANNOTATION_REPORTED not in (job["metadata"].get("annotations") or {}):
                result = await self._result(job)
                if result is not None:
                    finished[name] = result
                    self._spawn(self._mark_reported(name, result))
        notes = await self.api.get_config_map(self.namespace, notes_name(self.queue.name))
        finished.update(results_from_notes(notes, time.time()))
        for key in expired_entries(notes, time.time()):
            self._spawn(self.forget(key))
        return Recovered(frozenset(running), finished)

    async def launch(self, request: JobRequest) -> Created | Adopted:
        """Create the Job, or adopt the existing one of that name."""
        name = request.job_name
        body = build_job(request, self.queue, self.template, self.owner)
        self._tracked[name] = time.monotonic()
        try:
            if (created := await self.api.create_job(self.namespace, body)) is not None:
                await self._hand_over(request, created)
                return Created()
            existing = await self.api.get_job(self.namespace, name)
            if existing is None:  # deleted between the 409 and the read: try again later
                raise LaunchError(f"job {name} vanished while being adopted", retryable=True)
            log.info("job %s exists already; adopting it", name)
            if job_outcome(existing) is None:
                await self._hand_over(request, existing)
                return Adopted()
            result = await self._result(existing)
        except KubeApiError as error:
            self._tracked.pop(name, None)
            raise LaunchError(str(error), retryable=error.retryable) from error
        except LaunchError:
            self._tracked.pop(name, None)
            raise
        self._tracked.pop(name, None)
        if result is not None:
            self._spawn(self._mark_reported(name, result))
        return Adopted(result)

    async def _hand_over(self, request: JobRequest, job: Mapping[str, Any]) -> None:
        """A large body's ConfigMap, owned by ``job``; its pod waits for it until it exists."""
        if not needs_config_map(request):
            return
        body = message_config_map(request, job)
        if await self.api.create_config_map(self.namespace, body) is not None:
            return
        name = body["metadata"]["name"]
        existing = await self.api.get_config_map(self.namespace, name)
        if existing is None or not owned_by(existing, job):
            # An earlier Job of this name still owns it (garbage collection pending): the
            # message returns to the queue and the adoption on its redelivery creates ours.
            raise LaunchError(f"ConfigMap {name} belongs to an earlier Job of that name",
                              retryable=True)

    async def drain(self, grace_seconds: float) -> list[str]:
        """Jobs keep running in the cluster; report which ones are still unfinished."""
        for task in list(self._tasks):
            task.cancel()
        return sorted(self._tracked)

    async def hurry(self) -> None:
        """Nothing to hurry: Jobs are never killed by a stopping operator."""

    async def note_settling(self, result: JobResult) -> None:
        """The Job's status already holds its result; only a dead letter needs noting (on the
        Job, or for an invalid message, which has none, in a ConfigMap)."""
        if not result.dead_lettered:
            return
        if is_note_key(result.job_name):
            try:
                await self._note_invalid(result)
            except KubeApiError as error:
                log.warning("could not note that %s was dead-lettered: %s", result.job_name,
                            error)
            return
        try:
            await self.api.annotate_job(self.namespace, result.job_name,
                                        {ANNOTATION_DEAD_LETTERED: "true"})
        except KubeApiError as error:
            log.warning("could not mark job %s as dead-lettered: %s", result.job_name, error)

    async def forget(self, job_name: str) -> None:
        """A Job goes at its ttlSecondsAfterFinished; an invalid message's note goes now."""
        if not is_note_key(job_name):
            return
        try:
            await self.api.patch_config_map(self.namespace, notes_name(self.queue.name),
                                            forget_patch(job_name))
        except KubeApiError as error:
            log.warning("could not remove the settling note of %s: %s", job_name, error)

    async def _note_invalid(self, result: JobResult) -> None:
        """Patch the entry in; the first note of the queue creates the ConfigMap (409: another
        task created it meanwhile, patch again)."""
        name, patch = notes_name(self.queue.name), notes_patch(result, time.time())
        if await self.api.patch_config_map(self.namespace, name, patch) is not None:
            return
        body = notes_config_map(self.queue.name, self.owner, patch)
        if await self.api.create_config_map(self.namespace, body) is None:
            await self.api.patch_config_map(self.namespace, name, patch)

    def tracked(self) -> list[str]:
        """Jobs this launcher waits for (for status and tests)."""
        return sorted(self._tracked)

    # ------------------------------------------------------------------ Job events

    async def _follow(self) -> None:
        while True:
            job, deleted = await self.watch.get()
            try:
                await self._event(job, deleted)
            except Exception:  # one odd event must not stop the watch
                log.exception("handling an event of job %s failed",
                              (job.get("metadata") or {}).get("name"))

    async def _event(self, job: Mapping[str, Any], deleted: bool) -> None:
        """Report a tracked Job's result once it is final. A tracked Job deleted before it
        finished (by hand, or by an admission policy) fails with INTERNAL_ERROR, so its message
        is dead-lettered instead of held for 12 hours."""
        name = str((job.get("metadata") or {}).get("name"))
        if name not in self._tracked or not self._ours(job):
            return
        assert self._on_result is not None, "start() first"
        if job_outcome(job) is not None:
            try:
                result = await self._result(job)
            except KubeApiError as error:
                # The pod list failed: report without the summary rather than never.
                log.warning("reading the pods of %s failed: %s", name, error)
                result = result_from_status(job, [])
            if result is None:
                return
            self._tracked.pop(name, None)
            await self._on_result(result)
            await self._mark_reported(name, result)
        elif deleted:
            log.warning("job %s was deleted before it finished", name)
            self._tracked.pop(name, None)
            await self._on_result(JobResult(name, Outcome.FAILED, ErrorCode.INTERNAL_ERROR.value,
                                            "the Job was deleted before it finished"))

    # ------------------------------------------------------------------ internals

    def _ours(self, job: Mapping[str, Any]) -> bool:
        """kmock and some proxies ignore labelSelector: check the labels here too."""
        labels = (job.get("metadata") or {}).get("labels") or {}
        return (labels.get(LABEL_MANAGED_BY) == MANAGED_BY
                and labels.get(LABEL_QUEUE) == self.queue.name)

    async def _result(self, job: Mapping[str, Any]) -> JobResult | None:
        name = str(job["metadata"]["name"])
        pods = await self.api.list_pods(self.namespace, f"batch.kubernetes.io/job-name={name}")
        result = result_from_status(job, [p for p in pods if _pod_of(p, name)])
        annotations = (job.get("metadata") or {}).get("annotations") or {}
        if result is not None and result.outcome is Outcome.FAILED \
                and annotations.get(ANNOTATION_DEAD_LETTERED) == "true":
            result = replace(result, dead_lettered=True)
        return result

    async def _mark_reported(self, name: str, result: JobResult) -> None:
        try:
            await self.api.annotate_job(self.namespace, name,
                                        {ANNOTATION_REPORTED: result.outcome.value})
        except KubeApiError as error:
            log.warning("could not mark job %s as reported: %s", name, error)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _pod_of(pod: Mapping[str, Any], job_name: str) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return job_name in (labels.get("batch.kubernetes.io/job-name"), labels.get("job-name"))
