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
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.aws import REGION, MotoEndpoint
from support.faultproxy import FaultProxy, Rule, running_fault_proxy
from support.kube import JOBS, QUEUES, SECRETS, KubeFault, running_kube
from support.kubelet import Kubelet
from support.queues import Queues, backend_message, make_queues
from support.waiting import eventually
from waveflow_dev.backend import DevBackend
from waveflow_job.contract import Task
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
                 aws: MotoEndpoint) -> None:
        self.kube, self.queues, self.backend, self.proxy, self.aws = kube, queues, backend, \
            proxy, aws
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

    def jobs(self) -> list[dict[str, Any]]:
        return self.kube.emulator.stored_all(JOBS, NAMESPACE)

    def deleted_ids(self) -> Counter[str]:
        with self.proxy.ledger.lock:
            return Counter(self.proxy.ledger.deletes)

    def settled(self) -> bool:
        deleted = self.deleted_ids()
        return self.queues.counts() == (0, 0) and all(deleted[m] for m in self.sent)


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
            state = World(kube, queues, backend, proxy, aws)
            try:
                yield state
            finally:
                await state.stop_operator()
            calls = kube.emulator.api_calls()
            assert calls <= ALLOWED_CALLS, f"calls missing from PERMISSIONS: " \
                                           f"{calls - ALLOWED_CALLS}"
    finally:
        backend.stop()


def fake_kubelet(world: World, **env: str) -> Kubelet:
    return Kubelet(world.kube, base_env={**os.environ, **env},
                   command=(sys.executable, str(FAKEJOB)))


def dead_letter_ids(world: World) -> Counter[str]:
    return Counter(m["MessageAttributes"]["WaveflowSourceMessageId"]["StringValue"]
                   for m in world.queues.drain_dlq())


def assert_settled_once(world: World, kubelet: Kubelet, *, dead: int = 0) -> None:
    """The verdict every fault test ends with (see the module docstring)."""
    assert world.queues.counts() == (0, 0)
    deleted = world.deleted_ids()
    assert {m: deleted[m] for m in world.sent} == {m: 1 for m in world.sent}
    letters = dead_letter_ids(world)
    assert all(n == 1 for n in letters.values()), f"dead-lettered twice: {letters}"
    assert sum(letters.values()) == dead and set(letters) <= set(world.sent)
    creates = world.kube.emulator.creates
    for message_id in world.sent:
        assert creates[("jobs", job_name_for(Task.HASH, message_id))] <= 1
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
