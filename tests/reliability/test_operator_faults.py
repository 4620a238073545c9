"""Faults through the operator on the Kubernetes emulator (issue 8): ``waveflow operator`` as a
real process (SIGKILLed where a test says so), the kmock emulator answering injected errors
(``KubeFault``), the test kubelet running ``tests/support/fakejob.py`` per Job, and the fault
proxy in front of moto parking the operator's SQS calls at an exact settling step.

After each fault the same verdict (:func:`assert_settled_once`): every message deleted once
(seen on the wire), at most one dead letter per message and as many as expected, no second Job
for one MessageId, no duplicate or contradictory completion per stem and step, no Job scratch
left, and every API call one the chart's Role allows.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from support.aws import REGION, MotoEndpoint
from support.faultproxy import FaultProxy, Rule, running_fault_proxy
from support.kube import CONFIGMAPS, JOBS, PODS, QUEUES, SECRETS, KubeFault, running_kube
from support.kubelet import Kubelet
from support.queues import Queues, backend_message, make_queues
from support.waiting import eventually
from waveflow_dev import synth
from waveflow_dev.backend import DevBackend
from waveflow_job.contract import Task
from waveflow_operator.k8s.launcher import job_outcome
from waveflow_operator.k8s.permissions import PERMISSIONS
from waveflow_operator.runner.protocol import job_name_for

pytestmark = pytest.mark.slow

NAMESPACE = "audio"
SECRET = "operator-faults-secret"
FAKEJOB = Path(__file__).resolve().parents[1] / "support" / "fakejob.py"
ALLOWED_CALLS = {(group, resource, verb) for group, resource, verbs in PERMISSIONS
                 for verb in verbs}


class World:
    """The emulators, the proxy in front of moto, and the operator process (restartable)."""

    def __init__(self, kube: Any, queues: Queues, backend: DevBackend, proxy: FaultProxy,
                 aws: MotoEndpoint, scratch: Path) -> None:
        self.kube, self.queues, self.backend, self.proxy, self.aws = kube, queues, backend, \
            proxy, aws
        #: Where the test writes its audio before uploading it.
        self.scratch = scratch
        self.operator: asyncio.subprocess.Process | None = None
        self.sent: list[str] = []

    async def start_operator(self) -> None:
        command = Path(sys.executable).parent / "waveflow"
        self.operator = await asyncio.create_subprocess_exec(
            str(command), "operator", "--namespace", NAMESPACE, "--standalone",
            "--metrics-port", "0", env=dict(os.environ),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def kill_operator(self) -> None:
        assert self.operator is not None
        self.operator.kill()
        await self.operator.wait()
        self.operator = None

    async def stop_operator(self) -> None:
        if self.operator is not None and self.operator.returncode is None:
            self.operator.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.operator.wait(), 60)
            except TimeoutError:
                self.operator.kill()
                await self.operator.wait()
        self.operator = None

    async def create_queue(self, **job: Any) -> None:
        spec = {
            "queueUrl": self.queues.url, "region": REGION, "endpointUrl": self.proxy.url,
            "bucket": "waveflow-test", "uploadPrefixes": ["audio/"],
            "webhookUrl": self.backend.webhook_url,
            "webhookSecretRef": {"name": "waveflow-webhook", "key": "WEBHOOK_SECRET"},
            "maxInFlight": 4, "receiveBatchSize": 10, "waitTimeSeconds": 1,
            # Below the CRD's minimum of 30 s (the emulator does not validate): a message an
            # operator held when it died comes back within seconds.
            "visibilityTimeoutSeconds": 3,
            "job": {"image": "ghcr.io/waveflow/job:test", "backoffLimit": 0,
                    "activeDeadlineSeconds": {"hash": 60}, **job},
        }
        await self.kube.create(QUEUES, {
            "apiVersion": "waveflow.io/v1alpha1", "kind": "WaveflowQueue",
            "metadata": {"name": "audio", "namespace": NAMESPACE}, "spec": spec})

    def send(self, stem: str) -> str:
        message_id = self.queues.send(backend_message("generate_hash_and_webhook", stem,
                                                      filepath=f"audio/{stem}.wav"))
        self.sent.append(message_id)
        return message_id

    def upload(self, stem: str, seconds: float = 0.3, rate: int = 22050) -> bytes:
        """A short tone at ``audio/<stem>.wav``, for the real ``waveflow-job``."""
        path = synth.write_audio(self.scratch / f"{stem}.wav", "wav-16",
                                 synth.tone(int(seconds * rate), rate, 1), rate)
        data = path.read_bytes()
        self.aws.client("s3").put_object(Bucket="waveflow-test", Key=f"audio/{stem}.wav",
                                         Body=data)
        return data

    def message_ids(self) -> set[str]:
        """What the test sent and what the backend sent (next stages), as the proxy saw it."""
        with self.proxy.ledger.lock:
            return set(self.sent) | set(self.proxy.ledger.receives)

    def jobs(self) -> list[dict[str, Any]]:
        return self.kube.emulator.stored_all(JOBS, NAMESPACE)

    def deleted_ids(self) -> Counter[str]:
        with self.proxy.ledger.lock:
            return Counter(self.proxy.ledger.deletes)

    def settled(self) -> bool:
        deleted = self.deleted_ids()
        return self.queues.counts() == (0, 0) and all(deleted[m] for m in self.message_ids())


@pytest.fixture
def proxy(aws: MotoEndpoint) -> Iterator[FaultProxy]:
    with running_fault_proxy(aws.url) as running:
        yield running


@pytest.fixture
async def world(aws: MotoEndpoint, bucket: str, proxy: FaultProxy, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    queues = make_queues(aws)
    backend = DevBackend(queues.url, secret=SECRET, region=REGION, endpoint_url=aws.url).start()
    try:
        async with running_kube(tmp_path) as kube:
            monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
            monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
            await kube.create(SECRETS, {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "waveflow-webhook", "namespace": NAMESPACE},
                "data": {"WEBHOOK_SECRET": base64.b64encode(SECRET.encode()).decode()}})
            state = World(kube, queues, backend, proxy, aws, tmp_path)
            try:
                yield state
            finally:
                await state.stop_operator()
            calls = kube.emulator.api_calls()
            assert calls <= ALLOWED_CALLS, f"calls missing from PERMISSIONS: " \
                                           f"{calls - ALLOWED_CALLS}"
    finally:
        backend.stop()


def real_kubelet(world: World, evictions: Mapping[int, str] | None = None) -> Kubelet:
    """The kubelet running each Job's own command: the real ``waveflow-job run``."""
    return Kubelet(world.kube, base_env=dict(os.environ), evictions=evictions or {})


def fake_kubelet(world: World, evictions: Mapping[int, str] | None = None,
                 **env: str) -> Kubelet:
    return Kubelet(world.kube, base_env={**os.environ, **env},
                   command=(sys.executable, str(FAKEJOB)), evictions=evictions or {})


def dead_letter_ids(world: World) -> Counter[str]:
    return Counter(m["MessageAttributes"]["WaveflowSourceMessageId"]["StringValue"]
                   for m in world.queues.drain_dlq())


def assert_settled_once(world: World, kubelet: Kubelet, *, dead: int = 0) -> None:
    """The verdict every fault test ends with (see the module docstring)."""
    assert world.queues.counts() == (0, 0)
    deleted, messages = world.deleted_ids(), world.message_ids()
    assert {m: deleted[m] for m in messages} == {m: 1 for m in messages}
    letters = dead_letter_ids(world)
    assert all(n == 1 for n in letters.values()), f"dead-lettered twice: {letters}"
    assert sum(letters.values()) == dead and set(letters) <= messages
    creates = world.kube.emulator.creates
    for message_id in messages:
        for task in Task:
            assert creates[("jobs", job_name_for(task, message_id))] <= 1
    seen: Counter[tuple[str, str]] = Counter()
    for webhook in world.backend.webhooks:
        if webhook["event"] == "completion" and webhook.get("answered") == 201 \
                and not webhook.get("repeat"):
            seen[(webhook["body"]["stemId"], webhook["body"]["status"])] += 1
    assert all(n == 1 for n in seen.values()), f"a completion acted on twice: {seen}"
    stems = Counter(stem for stem, _ in seen)
    assert all(n == 1 for n in stems.values()), f"SUCCESS and FAILURE for one stem: {seen}"
    assert kubelet.scratch_leftovers() == []


def sqs_call(*operations: str):  # type: ignore[no-untyped-def]
    return lambda r: r.service == "sqs" and r.operation in operations


async def kill_at_the_held_call(world: World) -> None:
    """The operator is parked on an SQS call the proxy holds: kill it there, drop the call."""
    await asyncio.to_thread(world.proxy.wait_held, 60)
    await world.kill_operator()
    world.proxy.release(forward=False)
    world.proxy.clear()


async def test_sigkill_after_the_dead_letter_before_the_delete_sends_one_dead_letter(
        world: World) -> None:
    """The Job's ``waveflow.io/dead-lettered`` note survives the operator: the redelivery
    adopts the Job (409) and is only deleted."""
    async with fake_kubelet(world, FAKEJOB_EXIT="1") as kubelet:
        await world.start_operator()
        await world.create_queue()
        message_id = world.send("stem-d")
        world.proxy.add(Rule(sqs_call("DeleteMessage", "DeleteMessageBatch"), "hold"))
        await kill_at_the_held_call(world)
        [job] = world.jobs()
        assert job["metadata"]["annotations"]["waveflow.io/dead-lettered"] == "true"
        await world.start_operator()
        await eventually(world.settled, 60, "the delete")
        await world.stop_operator()
        assert_settled_once(world, kubelet, dead=1)
        assert world.kube.emulator.creates[("jobs", job_name_for(Task.HASH, message_id))] == 1
        assert len(kubelet.runs) == 1


def notes(world: World) -> dict[str, str]:
    """The entries of the queue's settling notes ConfigMap."""
    stored = world.kube.emulator.stored(CONFIGMAPS, NAMESPACE, "wf-settle-notes-audio")
    return dict((stored or {}).get("data") or {})


async def test_sigkill_between_an_invalid_messages_dead_letter_and_its_delete_sends_one(
        world: World) -> None:
    """An invalid message has no Job to carry the note: the queue's notes ConfigMap does
    (k8s/notes.py). The redelivery to the next operator is only deleted, and the note goes
    with the message (patched out: the operator deletes no object)."""
    async with fake_kubelet(world) as kubelet:
        await world.start_operator()
        await world.create_queue()
        world.sent.append(world.queues.send(
            '{"task": "app.tasks.generate_hash_and_webhook", "id": "poison-1", "args": [], '
            '"kwargs": {"userId": "u", "filepath": "audio/p.wav"}}'))
        world.proxy.add(Rule(sqs_call("DeleteMessage", "DeleteMessageBatch"), "hold"))
        await kill_at_the_held_call(world)
        assert len(notes(world)) == 1
        await world.start_operator()
        await eventually(world.settled, 60, "the delete")
        await eventually(lambda: notes(world) == {}, 30, "the note removed")
        await world.stop_operator()
        assert_settled_once(world, kubelet, dead=1)
        assert world.jobs() == [] and kubelet.runs == []


async def test_sigkill_after_the_failure_before_the_dead_letter_sends_it_once(
        world: World) -> None:
    async with fake_kubelet(world, FAKEJOB_EXIT="1") as kubelet:
        await world.start_operator()
        await world.create_queue()
        world.send("stem-f")
        world.proxy.add(Rule(lambda r: r.service == "sqs" and r.operation == "SendMessage"
                             and r.target == world.queues.dlq_url, "hold"))
        await kill_at_the_held_call(world)
        await world.start_operator()
        await eventually(world.settled, 60, "the dead letter and the delete")
        await world.stop_operator()
        assert_settled_once(world, kubelet, dead=1)
        assert len(kubelet.runs) == 1


async def test_sigkill_after_the_job_started_and_before_a_successful_delete(
        world: World) -> None:
    async with fake_kubelet(world) as kubelet:
        kubelet.hold()
        await world.start_operator()
        await world.create_queue()
        world.send("stem-a")
        await eventually(lambda: len(world.jobs()) == 1, 30, "the Job")
        await world.kill_operator()  # the Job started; nobody watches it end
        kubelet.release()
        await eventually(lambda: len(kubelet.runs) == 1, 30, "the Job to end")
        world.send("stem-b")
        world.proxy.add(Rule(sqs_call("DeleteMessage", "DeleteMessageBatch"), "hold"))
        await world.start_operator()
        await kill_at_the_held_call(world)  # both ended; the delete never happened
        await world.start_operator()
        await eventually(world.settled, 60, "both deletes")
        await world.stop_operator()
        assert_settled_once(world, kubelet)
        assert len(kubelet.runs) == 2


async def test_api_5xx_and_a_409_without_a_job_on_create_make_one_job_later(
        world: World) -> None:
    """503s on create hand the message back; a 409 whose Job cannot be read is retried too."""
    def creating_a_job(request: Any) -> bool:
        return str(request.method).upper().endswith("POST") and request.resource is not None \
            and request.resource.plural == "jobs"

    emulator = world.kube.emulator
    emulator.faults += [KubeFault(creating_a_job, 503, times=2),
                        KubeFault(creating_a_job, 409, "AlreadyExists", times=1)]
    async with fake_kubelet(world) as kubelet:
        await world.start_operator()
        await world.create_queue()
        world.send("stem-c")
        await eventually(world.settled, 90, "the delete")
        await world.stop_operator()
        assert [f.fired for f in emulator.faults] == [2, 1]
        assert_settled_once(world, kubelet)
        assert len(kubelet.runs) == 1


async def test_a_job_deleted_mid_flight_is_dead_lettered_once(world: World) -> None:
    async with fake_kubelet(world) as kubelet:
        kubelet.hold()
        await world.start_operator()
        await world.create_queue()
        world.send("stem-z")
        await eventually(lambda: len(world.jobs()) == 1, 30, "the Job")
        [job] = world.jobs()
        await world.kube.delete(JOBS, NAMESPACE, job["metadata"]["name"])
        await eventually(world.settled, 60, "the dead letter and the delete")
        await world.stop_operator()
        assert_settled_once(world, kubelet, dead=1)
        [failure] = [w["body"] for w in world.backend.webhooks if w["event"] == "completion"]
        assert failure["result"]["error_code"] == "INTERNAL_ERROR"


def finished_jobs(world: World) -> int:
    return sum(1 for job in world.jobs() if any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []))


async def test_a_410_on_the_job_watch_relists_and_settles_what_ended_unseen(
        world: World) -> None:
    """The Job watch goes silent while three Jobs end (their events are lost), then the API
    server answers it ``ERROR 410 Expired`` as after an etcd compaction: kopf lists the Jobs
    again, and the endings only that list shows are settled, each once."""
    emulator = world.kube.emulator
    stems = ("stem-g1", "stem-g2", "stem-g3")
    async with real_kubelet(world) as kubelet:
        kubelet.hold()
        await world.start_operator()
        await world.create_queue()
        for stem in stems:
            world.upload(stem)
            world.send(stem)
        await eventually(lambda: len(world.jobs()) == 3, 30, "three Jobs")
        emulator.partitioned.add(JOBS)
        kubelet.release()
        await eventually(lambda: finished_jobs(world) == 3, 30, "the Jobs to end")
        await asyncio.sleep(1.5)  # a receive loop's turn or two: nothing may settle unseen
        assert world.deleted_ids() == Counter()
        lists = emulator.calls[("jobs", "list")]
        emulator.partitioned.discard(JOBS)
        await emulator.expire_watches(JOBS)
        await eventually(world.settled, 60, "the deletes")
        await world.stop_operator()
        assert emulator.gone_sent >= 1
        assert emulator.calls[("jobs", "list")] > lists  # kopf listed the Jobs again
        assert_settled_once(world, kubelet)
        assert len(kubelet.runs) == 6 and all(run.exit_code == 0 for run in kubelet.runs)
        assert {stem: world.backend.stems[stem].status for stem in stems} == \
            dict.fromkeys(stems, "completed")  # hash, then analysis: the results arrived



async def test_an_http_410_on_the_job_watch_stops_the_operator_and_its_restart_settles(
        world: World) -> None:
    """An API server sends 410 inside the watch stream (above); a proxy in front of it may
    answer the watch request itself with HTTP 410. kopf gives up on that watch and stops the
    operator (exit 1, the Deployment restarts it): the message goes back to SQS at once, no
    second dispatcher takes it while the operator exits, and the restarted operator finds the
    Job that ended in between and settles its message once."""
    def rewatching_jobs(request: Any) -> bool:
        return request.resource is not None and request.resource.plural == "jobs" \
            and request.params.get("watch") == "true"

    emulator = world.kube.emulator
    async with fake_kubelet(world) as kubelet:
        kubelet.hold()
        await world.start_operator()
        await world.create_queue()
        message_id = world.send("stem-h")
        await eventually(lambda: len(world.jobs()) == 1, 30, "the Job")
        emulator.faults.append(KubeFault(rewatching_jobs, 410, "Gone", times=1))
        await emulator.drop_watches(JOBS)  # the watch reconnects from its last revision
        assert world.operator is not None
        assert await asyncio.wait_for(world.operator.wait(), 30) == 1
        world.operator = None
        assert emulator.faults[0].fired == 1
        assert world.queues.counts() == (1, 0)  # handed back at once
        with world.proxy.ledger.lock:
            assert world.proxy.ledger.receives[message_id] == 1  # and not taken again
        kubelet.release()
        await eventually(lambda: finished_jobs(world) == 1, 30, "the Job to end")
        await world.start_operator()
        await eventually(world.settled, 60, "the delete")
        await world.stop_operator()
        assert_settled_once(world, kubelet)
        assert len(kubelet.runs) == 1


def completions(world: World) -> list[dict[str, Any]]:
    return [w["body"] for w in world.backend.webhooks if w["event"] == "completion"]


async def test_an_evicted_pod_is_replaced_and_its_message_settles_once_with_the_real_result(
        world: World) -> None:
    """backoffLimit 0, and the one pod each Job may fail is evicted (a drain: SIGTERM,
    ``DisruptionTarget``, the pod deleted). The podFailurePolicy's Ignore rule does not count
    it: the operator settles nothing on it (no FAILURE, no dead letter, no delete), the Job
    controller starts a replacement, and the real job's result settles the message once."""
    stem = "stem-e"
    async with real_kubelet(world, evictions={1: "EvictionByEvictionAPI"}) as kubelet:
        kubelet.hold_retries()
        await world.start_operator()
        await world.create_queue()
        data = world.upload(stem)
        hash_job = job_name_for(Task.HASH, world.send(stem))
        await eventually(lambda: len(kubelet.runs) == 1, 30, "the evicted pod")
        [evicted] = kubelet.runs
        assert (evicted.job, evicted.exit_code, evicted.evicted) == \
            (hash_job, 143, "EvictionByEvictionAPI")
        await asyncio.sleep(1.5)  # the operator's turn to (wrongly) settle on that pod
        assert world.deleted_ids() == Counter() and completions(world) == []
        assert world.queues.counts(world.queues.dlq_url) == (0, 0)
        assert world.kube.emulator.stored_all(PODS, NAMESPACE) == []  # the eviction deleted it
        kubelet.release_retries()
        await eventually(world.settled, 60, "both stages' deletes")
        await world.stop_operator()
        assert_settled_once(world, kubelet)
        attempts: dict[str, list[tuple[int, str | None]]] = {}
        for run in kubelet.runs:  # hash, then analysis (maybe begun by the evicted hash pod)
            attempts.setdefault(run.job, []).append((run.exit_code, run.evicted))
        assert hash_job in attempts and len(attempts) == len(world.jobs()) >= 2
        assert all(runs == [(143, "EvictionByEvictionAPI"), (0, None)]
                   for runs in attempts.values()), attempts
        for job in world.jobs():
            assert job["status"].get("failed", 0) == 0 and job["status"]["succeeded"] == 1
        record = world.backend.stems[stem]
        assert record.status == "completed"
        assert record.audio_hash == hashlib.sha256(data).hexdigest()
        assert [c["status"] for c in completions(world)] == ["SUCCESS"]


async def test_an_evicted_last_attempt_is_not_counted_and_the_spent_budget_dead_letters_once(
        world: World) -> None:
    """backoffLimit 1: the first pod fails (exit 1, counted: one attempt left), the last
    allowed one is evicted under node pressure (SIGKILL, ``reason: Evicted``): not counted, a
    third pod runs; it fails too, the budget is spent (BackoffLimitExceeded): final — one
    FAILURE, one dead letter, one delete."""
    async with fake_kubelet(world, evictions={2: "TerminationByKubelet"}, FAKEJOB_EXIT="1",
                            FAKEJOB_SLEEP="1") as kubelet:
        await world.start_operator()
        await world.create_queue(backoffLimit=1)
        world.send("stem-b")
        await eventually(world.settled, 60, "the dead letter and the delete")
        await world.stop_operator()
        assert_settled_once(world, kubelet, dead=1)
        assert [(run.exit_code, run.evicted) for run in kubelet.runs] == \
            [(1, None), (137, "TerminationByKubelet"), (1, None)]
        [job] = world.jobs()
        assert job["status"]["failed"] == 2
        assert job_outcome(job) is not None and job_outcome(job)[1]["reason"] == \
            "BackoffLimitExceeded"
        [evicted] = [pod for pod in world.kube.emulator.stored_all(PODS, NAMESPACE)
                     if pod["status"].get("reason") == "Evicted"]
        assert evicted["status"]["conditions"][0]["type"] == "DisruptionTarget"
        [failure] = completions(world)
        assert (failure["status"], failure["result"]["error_code"]) == \
            ("FAILURE", "JOB_BACKOFF_LIMIT")
