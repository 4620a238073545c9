"""The test-side kubelet and Job controller: what turns a Job in the emulator into a finished Job.

For every Job it sees (a watch on the emulator, over HTTP like any client), it:

- creates a Pod (labels ``batch.kubernetes.io/job-name`` and ``job-name``) and marks the Job
  active;
- runs the Job's container command and args — the real ``waveflow-job run`` from this
  virtualenv, or a test's stand-in — with the container's environment (``secretKeyRef``
  resolved from the emulator's Secrets) and the termination-message path mapped to a file of the
  pod's own, whose content becomes the pod's termination message;
- mounts the pod's volumes as the container's ``volumeMounts`` name them, each as a directory
  of the pod's own: an ``emptyDir`` empty, a ``configMap`` with one file per key, written from
  the emulator's ConfigMap — the pod waits (like a kubelet: the container does not start) until
  that ConfigMap exists. A mount path in the command line or an environment value is replaced by
  its directory (no chroot here). The pod's directory is removed afterwards (emptyDir
  semantics);
- writes the Pod's container status (``terminated``: exit code, reason, message) and
  merge-patches the Job's status like the Job controller: ``Complete`` after exit 0; a failed
  pod is matched against the Job's ``podFailurePolicy`` rules in order, the first match wins
  (``FailJob`` → ``Failed``/``PodFailurePolicy``; ``Ignore`` → not counted, a new pod; ``Count``
  or no match → counted) until ``backoffLimit`` → ``Failed``/``BackoffLimitExceeded``; and
  ``Failed``/``DeadlineExceeded`` when ``activeDeadlineSeconds`` runs out (the process is killed).
  A container killed by a signal exits 128 + the signal, as a container runtime reports it.

Evictions (``evictions={attempt: reason}``): that attempt of every Job is evicted a seeded moment
after its container started, as Kubernetes does it — ``EvictionByEvictionAPI`` (a drain, a spot
interruption handler): SIGTERM, the pod ends ``Failed`` with the condition ``DisruptionTarget``
and is then deleted; ``TerminationByKubelet`` (node pressure): SIGKILL, the pod stays ``Failed``
with ``reason: Evicted`` and the same condition.

Test options: ``hold()`` keeps new Jobs pending until ``release()`` (heartbeat and restart
tests); ``hold_retries()`` keeps every second and later pod pending until ``release_retries()``;
``instant=True`` completes every Job at once without running anything (benchmarks).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from support.kube import CONFIGMAPS, JOBS, PODS, SECRETS, RunningKube

#: Kubernetes keeps at most this much of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096
#: How often a pod waiting for a missing ConfigMap looks again (a kubelet retries the mount).
_MOUNT_RETRY_SECONDS = 0.1
_VENV_BIN = Path(sys.executable).parent


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: How each kind of eviction ends the container and what it writes on the pod.
EVICTIONS: dict[str, tuple[signal.Signals, dict[str, str]]] = {
    "EvictionByEvictionAPI": (signal.SIGTERM, {"message": "Eviction API: evicting"}),
    "TerminationByKubelet": (signal.SIGKILL, {
        "message": "The node was low on resource: memory.", "podReason": "Evicted"}),
}


@dataclass
class PodRun:
    """One attempt of one Job, as the test can inspect it afterwards."""

    job: str
    pod: str
    exit_code: int
    message: str
    scratch_left: list[str]
    #: The eviction reason when the pod was evicted.
    evicted: str | None = None


@dataclass
class Kubelet:
    """Runs the emulator's Jobs; see the module docstring."""

    kube: RunningKube
    #: The environment every container starts from (PATH, AWS credentials for moto…).
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    #: Replaces the container's command (e.g. tests/support/fakejob.py); None runs it as given.
    command: Sequence[str] | None = None
    #: Complete every Job at once without running anything.
    instant: bool = False
    #: Attempt number (1 = a Job's first pod) → eviction reason (a key of ``EVICTIONS``).
    evictions: Mapping[int, str] = field(default_factory=dict)
    #: Seeds when, after its container started, a pod is evicted (0.05 to 0.3 s).
    seed: int = 8
    runs: list[PodRun] = field(default_factory=list)
    #: Job name → when the kubelet first saw it (time.time()).
    seen: dict[str, float] = field(default_factory=dict)
    _gate: asyncio.Event = field(default_factory=asyncio.Event)
    _retry_gate: asyncio.Event = field(default_factory=asyncio.Event)
    _random: random.Random = field(init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _watch: asyncio.Task[None] | None = None
    _handled: set[str] = field(default_factory=set)
    _scratch_root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kubelet-")))

    def __post_init__(self) -> None:
        unknown = set(self.evictions.values()) - set(EVICTIONS)
        if unknown:
            raise ValueError(f"unknown eviction reasons: {unknown}")
        self._random = random.Random(self.seed)

    async def __aenter__(self) -> Kubelet:
        self._gate.set()
        self._retry_gate.set()
        self._watch = asyncio.create_task(self._watch_jobs())
        return self

    async def __aexit__(self, *_: object) -> None:
        tasks = [t for t in (self._watch, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        shutil.rmtree(self._scratch_root, ignore_errors=True)

    def hold(self) -> None:
        """New Jobs wait (pending) until :meth:`release`."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def hold_retries(self) -> None:
        """Every Job's second and later pods wait (pending) until :meth:`release_retries`."""
        self._retry_gate.clear()

    def release_retries(self) -> None:
        self._retry_gate.set()

    def scratch_leftovers(self) -> list[str]:
        """Scratch directories still present (none once every pod has ended)."""
        return sorted(p.name for p in self._scratch_root.iterdir())

    # ------------------------------------------------------------------ the watch

    async def _watch_jobs(self) -> None:
        while True:
            try:
                async with self.kube.emulator.get(
                        "/apis/batch/v1/jobs", params={"watch": "true"},
                        timeout=aiohttp.ClientTimeout(total=None)) as response:
                    async for line in response.content:
                        if line.strip():
                            self._on_event(json.loads(line))
            except (aiohttp.ClientError, ValueError):
                await asyncio.sleep(0.1)

    def _on_event(self, event: Mapping[str, Any]) -> None:
        job = event.get("object") or {}
        uid = (job.get("metadata") or {}).get("uid")
        if event.get("type") == "DELETED" or not uid or uid in self._handled:
            return
        self._handled.add(uid)
        self.seen.setdefault(job["metadata"]["name"], time.time())
        task = asyncio.create_task(self._run_job(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the Job controller

    async def _run_job(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job["spec"]
        namespace, name = meta["namespace"], meta["name"]
        await self._job_status(namespace, name, {"startTime": _now(), "active": 1})
        if self.instant:
            summary = json.dumps({"task": meta["labels"].get("waveflow.io/task"),
                                  "outcome": "succeeded", "bytes": 0, "audio_seconds": 0.0})
            await self._pod(job, 0, summary)
            await self._finish(namespace, name, "Complete", "", "", succeeded=1)
            return
        await self._gate.wait()
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = time.monotonic() + float(spec.get("activeDeadlineSeconds") or 3600)
        failed = attempts = 0
        while True:
            attempts += 1
            if attempts > 1:
                await self._retry_gate.wait()
            left = deadline - time.monotonic()
            code, _, evicted = await self._attempt(job, left, self.evictions.get(attempts))
            if code is None:
                await self._finish(namespace, name, "Failed", "DeadlineExceeded",
                                   "Job was active longer than specified deadline",
                                   failed=failed + 1)
                return
            if code == 0:
                await self._finish(namespace, name, "Complete", "", "", succeeded=1,
                                   failed=failed)
                return
            index, action = _policy_action(spec, code, disrupted=evicted is not None)
            if action == "Ignore":  # not counted against backoffLimit; a new pod
                await self._job_status(namespace, name, {"active": 1})
                continue
            failed += 1
            if action == "FailJob":
                await self._finish(
                    namespace, name, "Failed", "PodFailurePolicy",
                    f"Container job for pod {namespace}/{name} failed with exit code {code} "
                    f"matching FailJob rule at index {index}", failed=failed)
                return
            if failed > backoff_limit:
                await self._finish(namespace, name, "Failed", "BackoffLimitExceeded",
                                   "Job has reached the specified backoff limit", failed=failed)
                return
            await self._job_status(namespace, name, {"failed": failed, "active": 1})

    async def _attempt(self, job: dict[str, Any], seconds: float, eviction: str | None = None
                       ) -> tuple[int | None, str, str | None]:
        """One pod: run the container; None as exit code when the deadline killed it. With an
        ``eviction`` reason the pod is evicted while it runs (the third value says whether it
        was: a container that ended first was not)."""
        pod_spec = job["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        pod_dir = Path(tempfile.mkdtemp(prefix=f"{job['metadata']['name']}-",
                                        dir=self._scratch_root))
        summary = pod_dir / "termination-log"
        started = time.monotonic()
        try:
            mounts = await asyncio.wait_for(self._mount(job, pod_spec, container, pod_dir),
                                            timeout=max(0.1, seconds))
        except TimeoutError:  # the pod stayed pending (its volume never came) until the deadline
            shutil.rmtree(pod_dir, ignore_errors=True)
            return None, "", None
        seconds -= time.monotonic() - started
        env = {**self.base_env, **{key: _in_pod(value, mounts) for key, value in
                                   self._container_env(job, container).items()}}
        env["WAVEFLOW_SUMMARY_FILE"] = str(summary)
        argv = list(self.command or self._resolve(container.get("command") or []))
        argv += [_in_pod(arg, mounts) for arg in container.get("args") or []]
        scratch = Path(env.get("TMPDIR", pod_dir))
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        evicted: list[str] = []
        timer: threading.Timer | None = None
        if eviction is not None:
            # A thread, not the event loop: a loop busy with the operator's and the other
            # pods' calls must not let a container finish before its eviction comes.
            timer = threading.Timer(self._random.uniform(0.05, 0.3), _evict,
                                    (process, eviction, evicted))
            timer.start()
        code: int | None
        try:
            code = await asyncio.wait_for(process.wait(), timeout=max(0.1, seconds))
            if code < 0:  # killed by a signal: a container runtime reports 128 + the signal
                code = 128 - code
        except TimeoutError:
            process.kill()
            await process.wait()
            code = None
        except asyncio.CancelledError:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        if timer is not None:
            timer.cancel()
            timer.join()
        message = (summary.read_text(errors="replace")[:TERMINATION_MESSAGE_LIMIT]
                   if summary.exists() else "")
        left = [p.name for p in scratch.iterdir()] if scratch != pod_dir else []
        shutil.rmtree(pod_dir, ignore_errors=True)
        reason = evicted[0] if evicted and code != 0 else None
        pod = await self._pod(job, 137 if code is None else code, message, reason)
        self.runs.append(PodRun(job["metadata"]["name"], pod, 137 if code is None else code,
                                message, left, reason))
        return code, message, reason

    async def _mount(self, job: dict[str, Any], pod_spec: Mapping[str, Any],
                     container: Mapping[str, Any], pod_dir: Path) -> dict[str, Path]:
        """The container's mounts as directories of the pod: mount path → directory."""
        volumes = {volume["name"]: volume for volume in pod_spec.get("volumes") or []}
        namespace = job["metadata"]["namespace"]
        mounts: dict[str, Path] = {}
        for index, mount in enumerate(container.get("volumeMounts") or []):
            volume = volumes[mount["name"]]
            directory = pod_dir / f"volume-{index}-{mount['name']}"
            directory.mkdir()
            if "configMap" in volume:
                name = volume["configMap"]["name"]
                while (config_map := self.kube.emulator.stored(CONFIGMAPS, namespace,
                                                               name)) is None:
                    await asyncio.sleep(_MOUNT_RETRY_SECONDS)
                for key, value in (config_map.get("data") or {}).items():
                    (directory / key).write_text(value, encoding="utf-8")
            elif "emptyDir" not in volume:
                raise RuntimeError(f"the test kubelet cannot mount volume {volume}")
            mounts[str(mount["mountPath"]).rstrip("/")] = directory
        return mounts

    def _resolve(self, command: Sequence[str]) -> list[str]:
        """``waveflow-job`` is this virtualenv's script (the image's PATH, here)."""
        if command and (_VENV_BIN / command[0]).exists():
            return [str(_VENV_BIN / command[0]), *command[1:]]
        return list(command)

    def _container_env(self, job: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        namespace = job["metadata"]["namespace"]
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                secret = self.kube.emulator.stored(SECRETS, namespace, ref["name"]) or {}
                encoded = (secret.get("data") or {}).get(ref["key"])
                if encoded is None:
                    raise RuntimeError(f"secret {ref['name']}/{ref['key']} is missing")
                env[item["name"]] = base64.b64decode(encoded).decode()
        return env

    async def _pod(self, job: dict[str, Any], code: int, message: str,
                   evicted: str | None = None) -> str:
        """The ended pod; an evicted one carries ``DisruptionTarget`` (and an API eviction
        deletes it afterwards)."""
        meta = job["metadata"]
        pod_name = f"{meta['name']}-{secrets.token_hex(3)[:5]}"
        reason = "Completed" if code == 0 else "Error"
        labels = {**(job["spec"]["template"]["metadata"].get("labels") or {}),
                  "batch.kubernetes.io/job-name": meta["name"], "job-name": meta["name"],
                  "batch.kubernetes.io/controller-uid": meta["uid"]}
        status: dict[str, Any] = {
            "phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [{
                "name": "job", "ready": False, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason,
                                         "message": message, "finishedAt": _now()}}}]}
        if evicted is not None:
            written = EVICTIONS[evicted][1]
            status["conditions"] = [{"type": "DisruptionTarget", "status": "True",
                                     "reason": evicted, "message": written["message"],
                                     "lastTransitionTime": _now()}]
            if "podReason" in written:
                status.update(reason=written["podReason"], message=written["message"])
        await self.kube.create(PODS, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": meta["namespace"], "labels": labels,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                              "name": meta["name"], "uid": meta["uid"],
                                              "controller": True}]},
            "spec": job["spec"]["template"]["spec"],
            "status": status,
        })
        if evicted == "EvictionByEvictionAPI":
            await self.kube.delete(PODS, meta["namespace"], pod_name)
        return pod_name

    async def _job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(AssertionError):  # the Job may be gone (owner deleted)
            await self.kube.patch(JOBS, namespace, name, {"status": status},
                                  subresource="status")

    async def _finish(self, namespace: str, name: str, kind: str, reason: str, message: str,
                      **counts: int) -> None:
        now = _now()
        conditions = [{"type": kind, "status": "True", "reason": reason, "message": message,
                       "lastProbeTime": now, "lastTransitionTime": now}]
        if kind == "Complete":
            conditions.insert(0, {**conditions[0], "type": "SuccessCriteriaMet"})
        else:
            conditions.insert(0, {**conditions[0], "type": "FailureTarget"})
        status: dict[str, Any] = {"active": 0, "conditions": conditions, **counts}
        if kind == "Complete":
            status["completionTime"] = now
        await self._job_status(namespace, name, status)


def _in_pod(value: str, mounts: Mapping[str, Path]) -> str:
    """A container path under a mount, as the path of the pod's directory for it."""
    for mount_path, directory in mounts.items():
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(directory) + value[len(mount_path):]
    return value


def _policy_action(spec: Mapping[str, Any], code: int, *, disrupted: bool) -> tuple[int, str]:
    """(rule index, action) of the first podFailurePolicy rule matching a failed pod, as the
    Job controller evaluates them (in order); (-1, "Count") when none matches."""
    for index, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules") or []):
        codes = rule.get("onExitCodes")
        if codes is not None:
            listed = code in (codes.get("values") or [])
            matched = listed if codes.get("operator") == "In" else not listed
        else:
            matched = disrupted and any(
                pattern.get("type") == "DisruptionTarget"
                and pattern.get("status", "True") == "True"
                for pattern in rule.get("onPodConditions") or [])
        if matched:
            return index, str(rule.get("action"))
    return -1, "Count"


def _evict(process: asyncio.subprocess.Process, reason: str, evicted: list[str]) -> None:
    """End a running container as its eviction does; note that it was evicted."""
    if process.returncode is not None:
        return
    evicted.append(reason)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, EVICTIONS[reason][0])
