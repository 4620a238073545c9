"""End to end through the operator: kopf runs ``waveflow_operator.k8s.handlers`` against the kmock
emulator; Jobs are run by the test kubelet with the real ``waveflow-job`` (or, where a job must
fail on purpose, ``tests/support/fakejob.py``); SQS and S3 are moto; the backend is the reference
backend that sends the next stage's message when a webhook arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from support.kube import JOBS, QUEUES
from support.kubelet import Kubelet
from support.operator_e2e import Cluster, running_operator
from support.queues import backend_message, make_queues
from support.waiting import eventually
from waveflow_dev import synth
from waveflow_job.contract import Task, kombu_envelope
from waveflow_operator.k8s.jobs import LABEL_QUEUE

pytestmark = pytest.mark.slow

NAMESPACE = "audio"
FAKEJOB = Path(__file__).resolve().parents[1] / "support" / "fakejob.py"


def upload(cluster: Cluster, key: str, data: bytes, stem: str) -> None:
    """Put the object in S3 and tell the backend, as the platform does after an upload."""
    cluster.aws.client("s3").put_object(Bucket="waveflow-test", Key=key, Body=data)
    answer = requests.post(f"{cluster.backend.url}/upload-complete", timeout=10, json={
        "userId": "user-1", "trackId": "track-1", "stemId": stem, "filepath": key})
    assert answer.status_code == 201


def wav(tmp_path: Path, seconds: float = 0.5, rate: int = 22050) -> bytes:
    path = synth.write_audio(tmp_path / "tone.wav", "wav-16",
                             synth.tone(int(seconds * rate), rate, 1), rate)
    return path.read_bytes()


def stem_status(cluster: Cluster, stem: str) -> str | None:
    return getattr(cluster.backend.stems.get(stem), "status", None)


def completions(cluster: Cluster) -> list[dict[str, Any]]:
    return [w["body"] for w in cluster.backend.webhooks if w["event"] == "completion"]


async def test_the_three_stages_run_as_jobs_and_every_message_is_deleted(
        cluster: Cluster, kubelet: Kubelet, tmp_path: Path) -> None:
    data = wav(tmp_path)
    async with running_operator():
        await cluster.create_queue()
        upload(cluster, "audio/original.wav", data, "stem-a")
        await eventually(lambda: stem_status(cluster, "stem-a") == "completed", 60, "analysis")
        upload(cluster, "audio/copy.wav", data, "stem-b")
        await eventually(lambda: stem_status(cluster, "stem-b") == "duplicate_deleted", 60,
                         "the duplicate's deletion")
        await eventually(lambda: cluster.counts().get("succeeded") == 4, 20, "status counts")
        await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
        assert cluster.condition("Ready")["status"] == "True"

    jobs = cluster.jobs()
    tasks = sorted(job["metadata"]["labels"]["waveflow.io/task"] for job in jobs)
    assert tasks == ["generate_hash_and_webhook", "generate_hash_and_webhook",
                     "process_audio_analysis", "process_duplicate_file"]
    for job in jobs:
        assert job["metadata"]["ownerReferences"][0]["kind"] == "WaveflowQueue"
        assert job["metadata"]["labels"][LABEL_QUEUE] == "audio"
        assert job["metadata"]["annotations"]["waveflow.io/reported"] == "succeeded"
    digest = hashlib.sha256(data).hexdigest()
    stem = cluster.backend.stems["stem-a"]
    assert stem.audio_hash == digest and stem.result["audio_data_hash"] == digest
    assert all(w["answered"] == 201 for w in cluster.backend.webhooks)  # signed from the Secret
    assert [run.exit_code for run in kubelet.runs] == [0] * 4
    assert [run.scratch_left for run in kubelet.runs] == [[]] * 4  # the job cleans up itself
    assert kubelet.scratch_leftovers() == []
    assert cluster.counts() == {"received": 4, "running": 0, "succeeded": 4, "rejected": 0,
                                "failed": 0, "deadLettered": 0}
    assert cluster.queues.drain_dlq() == []


def kombu_body(task: str, kwargs: dict[str, Any], message_id: str) -> str:
    """Celery protocol 2 as kombu's SQS transport writes it: base64 JSON, base64 body."""
    return kombu_envelope(Task(task), kwargs, message_id=message_id)


def fake_kubelet(cluster: Cluster, **env: str) -> Kubelet:
    """A kubelet running tests/support/fakejob.py, steered by FAKEJOB_* variables."""
    return Kubelet(cluster.kube, base_env={**os.environ, **env},
                   command=(sys.executable, str(FAKEJOB)))


def hash_message(stem: str, key: str = "audio/x.wav") -> dict[str, Any]:
    return backend_message("generate_hash_and_webhook", stem, filepath=key)


def dead_letters(cluster: Cluster) -> dict[str, str]:
    """Dead-lettered bodies' stems (or bodies) → the reason attribute, draining the DLQ."""
    found = {}
    for message in cluster.queues.drain_dlq():
        reason = message["MessageAttributes"]["WaveflowReason"]["StringValue"]
        found[message["Body"]] = reason
    return found


async def test_each_envelope_form_becomes_a_job(cluster: Cluster, kubelet: Kubelet,
                                                tmp_path: Path) -> None:
    data = wav(tmp_path)
    s3 = cluster.aws.client("s3")
    for stem in ("stem-j", "stem-f", "stem-k"):
        s3.put_object(Bucket="waveflow-test", Key=f"audio/{stem}.wav", Body=data)
    kwargs = {"userId": "user-1", "trackId": "track-1", "filepath": "audio/stem-k.wav",
              "stemId": "stem-k"}
    async with running_operator():
        await cluster.create_queue()
        cluster.queues.send(hash_message("stem-j", "audio/stem-j.wav"))
        cluster.queues.send({"task": "generate_hash_and_webhook", "userId": "user-2",
                             "trackId": "track-2", "stemId": "stem-f",
                             "filepath": "audio/stem-f.wav"})
        cluster.queues.send(kombu_body("generate_hash_and_webhook", kwargs, "hash-stem-k-1"))
        await eventually(lambda: all(stem_status(cluster, s) == "completed"
                                     for s in ("stem-j", "stem-f", "stem-k")), 60, "analyses")
        await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
    checks = {w["body"]["stemId"] for w in cluster.backend.webhooks if w["event"] == "hash-check"}
    assert checks == {"stem-j", "stem-f", "stem-k"}
    assert len(cluster.jobs()) == 6  # three hashes, three analyses
    assert cluster.queues.drain_dlq() == []


async def test_a_poison_message_is_dead_lettered_with_its_reason_and_never_becomes_a_job(
        cluster: Cluster, kubelet: Kubelet) -> None:
    async with running_operator():
        await cluster.create_queue()
        cluster.queues.send("this is not json")
        cluster.queues.send({"task": "app.tasks.transcode", "id": "x-1", "args": [],
                             "kwargs": {"stemId": "stem-p"}})
        await eventually(lambda: cluster.counts().get("deadLettered") == 2, 30, "dead letters")
        await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
    assert cluster.jobs() == [] and cluster.kube.emulator.ever_created(JOBS) == []
    reasons = dead_letters(cluster)
    assert reasons["this is not json"] == "MESSAGE_INVALID"
    assert sorted(reasons.values()) == ["MESSAGE_INVALID", "UNKNOWN_TASK"]
    # The stem could be read from the second one: the backend hears of it, once, as final.
    [failure] = completions(cluster)
    assert failure["stemId"] == "stem-p" and failure["result"]["retryable"] is False


async def test_a_rejected_job_has_its_message_deleted_without_a_dead_letter(
        cluster: Cluster, kubelet: Kubelet) -> None:
    async with running_operator():
        await cluster.create_queue()
        cluster.queues.send(hash_message("stem-r", "audio/missing.wav"))
        await eventually(lambda: cluster.counts().get("rejected") == 1, 60, "the rejection")
        await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
    [job] = cluster.jobs()
    failed = [c for c in job["status"]["conditions"] if c["type"] == "Failed"]
    assert failed[0]["reason"] == "PodFailurePolicy"
    assert job["metadata"]["annotations"]["waveflow.io/reported"] == "rejected"
    assert [run.exit_code for run in kubelet.runs] == [3]  # no retry after exit 3
    # The job itself told the backend (final, not retryable); the runner adds nothing.
    [failure] = completions(cluster)
    assert failure["result"]["error_code"] == "OBJECT_NOT_FOUND"
    assert failure["result"]["retryable"] is False
    assert cluster.queues.drain_dlq() == []


async def test_failing_jobs_get_a_failure_webhook_and_go_to_the_dead_letter_queue(
        cluster: Cluster) -> None:
    job = {"backoffLimit": 1, "activeDeadlineSeconds": {"hash": 3}}
    async with fake_kubelet(cluster, FAKEJOB_EXIT="1", FAKEJOB_HANG_STEMS="stem-h") as kubelet, \
            running_operator():
        await cluster.create_queue(job=job)
        cluster.queues.send(hash_message("stem-f"))
        cluster.queues.send(hash_message("stem-h"))
        await eventually(lambda: cluster.counts().get("failed") == 2, 60, "two failures")
        await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
    runs = sorted(run.exit_code for run in kubelet.runs if run.job)
    assert runs == [1, 1, 137]  # stem-f retried once (backoffLimit 1); stem-h killed once
    codes = {c["stemId"]: c["result"] for c in completions(cluster)}
    assert codes["stem-f"]["error_code"] == "JOB_BACKOFF_LIMIT"
    assert codes["stem-h"]["error_code"] == "JOB_DEADLINE_EXCEEDED"
    assert codes["stem-f"]["retryable"] is True and codes["stem-h"]["retryable"] is True
    assert sorted(dead_letters(cluster).values()) == ["JOB_BACKOFF_LIMIT",
                                                      "JOB_DEADLINE_EXCEEDED"]


async def test_a_job_running_past_the_visibility_timeout_is_not_redelivered(
        cluster: Cluster, kubelet: Kubelet, tmp_path: Path) -> None:
    cluster.aws.client("s3").put_object(Bucket="waveflow-test", Key="audio/long.wav",
                                        Body=wav(tmp_path))
    kubelet.hold()
    # Below the CRD's minimum of 30 s (the emulator does not validate): two timeouts pass.
    async with running_operator():
        await cluster.create_queue(visibilityTimeoutSeconds=4)
        cluster.queues.send(hash_message("stem-l", "audio/long.wav"))
        await eventually(lambda: len(cluster.jobs()) == 1, 30, "the Job")
        await asyncio.sleep(9)
        assert cluster.queues.counts() == (0, 1)  # still invisible, still held
        kubelet.release()
        await eventually(lambda: stem_status(cluster, "stem-l") == "completed", 60, "analysis")
        await eventually(lambda: cluster.counts().get("succeeded") == 2, 20, "status counts")
    assert cluster.counts()["received"] == 2  # the hash message once, then the analysis
    assert len(cluster.kube.emulator.ever_created(JOBS)) == 2


async def test_an_operator_restarted_mid_flight_creates_no_second_job_and_settles_each_once(
        cluster: Cluster) -> None:
    async with fake_kubelet(cluster) as kubelet:
        kubelet.hold()
        async with running_operator():
            await cluster.create_queue()
            cluster.queues.send(hash_message("stem-1"))
            cluster.queues.send(hash_message("stem-2"))
            await eventually(lambda: len(cluster.jobs()) == 2, 30, "two Jobs")
        # The operator is down: both Jobs finish, and one more message arrives.
        kubelet.release()
        await eventually(lambda: len(kubelet.runs) == 2, 30, "the Jobs to finish")
        cluster.queues.send(hash_message("stem-3"))
        async with running_operator():
            await eventually(lambda: cluster.counts().get("succeeded") == 3, 30, "settling")
            await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
            kubelet.hold()
            cluster.queues.send(hash_message("stem-4"))
            await eventually(lambda: len(cluster.jobs()) == 4, 30, "the fourth Job")
        # Down again while the fourth Job runs; the next operator adopts it when its message
        # comes back (the 409 path), and settles it once it finishes.
        async with running_operator():
            await eventually(lambda: cluster.counts().get("received") == 1, 30, "redelivery")
            kubelet.release()
            await eventually(lambda: cluster.counts().get("succeeded") == 1, 30, "settling")
            await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
    assert len(cluster.kube.emulator.ever_created(JOBS)) == 4
    assert sorted(run.job for run in kubelet.runs) == sorted(cluster.kube.emulator.ever_created(
        JOBS))  # each Job ran once
    assert all(job["metadata"]["annotations"]["waveflow.io/reported"] == "succeeded"
               for job in cluster.jobs())
    assert ("batch", "jobs", "get") in cluster.kube.emulator.api_calls()  # adopted after a 409
    assert cluster.queues.drain_dlq() == []


async def test_at_the_in_flight_maximum_messages_wait_in_sqs(cluster: Cluster) -> None:
    async with fake_kubelet(cluster) as kubelet:
        kubelet.hold()
        async with running_operator():
            await cluster.create_queue(maxInFlight=2)
            for i in range(4):
                cluster.queues.send(hash_message(f"stem-{i}"))
            await eventually(lambda: len(cluster.jobs()) == 2, 30, "two Jobs")
            await eventually(lambda: cluster.condition("Polling").get("reason") == "MaxInFlight",
                             20, "the Polling condition")
            await asyncio.sleep(3)  # several poll cycles: nothing more is received
            assert len(cluster.jobs()) == 2
            assert cluster.queues.counts() == (2, 2)
            kubelet.release()
            await eventually(lambda: cluster.counts().get("succeeded") == 4, 30, "all four")
            await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
    assert len(cluster.kube.emulator.ever_created(JOBS)) == 4


async def test_two_queues_are_served_side_by_side(cluster: Cluster) -> None:
    other = make_queues(cluster.aws, "waveflow-other")
    async with fake_kubelet(cluster), running_operator():
        await cluster.create_queue("audio")
        await cluster.kube.create(QUEUES, {
            "apiVersion": "waveflow.io/v1alpha1", "kind": "WaveflowQueue",
            "metadata": {"name": "other", "namespace": NAMESPACE},
            "spec": cluster.spec(other)})
        cluster.queues.send(hash_message("stem-a"))
        other.send(hash_message("stem-o"))
        other.send(hash_message("stem-p"))
        await eventually(lambda: cluster.counts("audio").get("succeeded") == 1
                         and cluster.counts("other").get("succeeded") == 2, 30, "both queues")
    by_queue = sorted((job["metadata"]["labels"][LABEL_QUEUE],
                       job["metadata"]["annotations"]["waveflow.io/stem-id"])
                      for job in cluster.jobs())
    assert by_queue == [("audio", "stem-a"), ("other", "stem-o"), ("other", "stem-p")]
    assert cluster.queues.counts() == (0, 0) and other.counts() == (0, 0)


async def test_deleting_a_queue_stops_its_polling(cluster: Cluster, kubelet: Kubelet) -> None:
    async with running_operator():
        await cluster.create_queue()
        await eventually(lambda: cluster.condition("Ready").get("status") == "True", 20, "Ready")
        await cluster.kube.delete(QUEUES, NAMESPACE, "audio")
        # kopf releases its finalizer only once the daemon (and its dispatcher) has stopped.
        await eventually(lambda: cluster.kube.emulator.stored(QUEUES, NAMESPACE, "audio") is None,
                         30, "the queue's removal")
        cluster.queues.send(hash_message("stem-z"))
        await asyncio.sleep(3)  # three long polls' worth: nobody receives it
        assert cluster.queues.counts() == (1, 0)
    assert cluster.jobs() == []


async def test_a_bad_queue_url_or_a_missing_secret_shows_in_the_status_without_a_crash(
        cluster: Cluster, kubelet: Kubelet) -> None:
    bad_url = cluster.queues.url.rsplit("/", 1)[0] + "/no-such-queue"
    async with running_operator():
        await cluster.create_queue("bad-url", queueUrl=bad_url)
        await cluster.create_queue("no-secret", webhookSecretRef={"name": "missing"})
        await cluster.create_queue("good")
        await eventually(lambda: cluster.condition("Ready", "bad-url").get("status") == "False",
                         30, "bad-url not ready")
        await eventually(lambda: cluster.condition("Ready", "no-secret").get("reason")
                         == "SecretNotFound", 30, "no-secret not ready")
        await eventually(lambda: cluster.condition("Ready", "good").get("status") == "True",
                         30, "good ready")
        ready = cluster.condition("Ready", "bad-url")
        assert ready["reason"] == "QueueUnavailable" and "no-such-queue" in ready["message"]
        assert "NonExistentQueue" in cluster.queue_status("bad-url")["lastError"]
        assert "missing" in cluster.queue_status("no-secret")["lastError"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_command(liveness_port: int, scope: tuple[str, ...] = ("--all-namespaces",)
                        ) -> asyncio.subprocess.Process:
    """``waveflow operator`` as deployed: its own process, kopf's own login (the kubeconfig)."""
    command = Path(sys.executable).parent / "waveflow"
    return await asyncio.create_subprocess_exec(
        str(command), "operator", *scope, "--standalone", "--metrics-port", "0",
        "--liveness", f"http://127.0.0.1:{liveness_port}/healthz", env=dict(os.environ),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


@pytest.mark.parametrize("scope", [("--all-namespaces",), ("--namespace", NAMESPACE)],
                         ids=["cluster-wide", "one namespace as the chart runs it"])
async def test_waveflow_operator_command_serves_liveness_runs_jobs_and_stops_on_sigterm(
        cluster: Cluster, kubelet: Kubelet, tmp_path: Path, scope: tuple[str, ...]) -> None:
    port = free_port()
    cluster.aws.client("s3").put_object(Bucket="waveflow-test", Key="audio/cli.wav",
                                        Body=wav(tmp_path))
    process = await start_command(port, scope)
    try:
        await cluster.create_queue()
        await eventually(lambda: cluster.condition("Ready").get("status") == "True", 30, "Ready")
        health = await asyncio.to_thread(requests.get, f"http://127.0.0.1:{port}/healthz",
                                         timeout=5)
        assert health.status_code == 200
        assert health.json()["queues"] == {f"{NAMESPACE}/audio": "running"}
        cluster.queues.send(hash_message("stem-c", "audio/cli.wav"))
        await eventually(lambda: stem_status(cluster, "stem-c") == "completed", 60, "analysis")
        await eventually(lambda: cluster.counts().get("succeeded") == 2, 30, "settling")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert cluster.condition("Polling")["reason"] == "Stopped"
    assert cluster.queues.counts() == (0, 0)


async def test_an_operator_killed_mid_flight_leaves_its_jobs_to_the_next_one(
        cluster: Cluster) -> None:
    """SIGKILL: nothing is returned to SQS; the messages reappear after their visibility
    timeout (3 s here, below the CRD's minimum) and the next operator settles each once."""
    async with fake_kubelet(cluster) as kubelet:
        kubelet.hold()
        process = await start_command(free_port())
        try:
            await cluster.create_queue(visibilityTimeoutSeconds=3)
            cluster.queues.send(hash_message("stem-1"))
            cluster.queues.send(hash_message("stem-2"))
            await eventually(lambda: len(cluster.jobs()) == 2, 30, "two Jobs")
        finally:
            process.kill()
            await process.communicate()
        kubelet.release()  # the Jobs finish while no operator watches
        await eventually(lambda: len(kubelet.runs) == 2, 30, "the Jobs to finish")
        process = await start_command(free_port())
        try:
            await eventually(lambda: cluster.queues.counts() == (0, 0), 60, "an empty queue")
            await eventually(lambda: cluster.counts().get("succeeded") == 2, 30, "settling")
        finally:
            process.send_signal(signal.SIGTERM)
            await process.communicate()
    assert len(cluster.kube.emulator.ever_created(JOBS)) == 2
    assert len(kubelet.runs) == 2
    assert cluster.queues.drain_dlq() == []


async def test_a_changed_spec_restarts_the_dispatcher_with_the_new_settings(
        cluster: Cluster) -> None:
    async with fake_kubelet(cluster) as kubelet:
        kubelet.hold()
        async with running_operator():
            await cluster.create_queue(maxInFlight=1)
            for i in range(3):
                cluster.queues.send(hash_message(f"stem-{i}"))
            await eventually(lambda: len(cluster.jobs()) == 1, 30, "one Job")
            await cluster.kube.patch(QUEUES, NAMESPACE, "audio", {"spec": {"maxInFlight": 3}})
            # The held message goes back to SQS, comes back and adopts its Job; two more start.
            await eventually(lambda: len(cluster.jobs()) == 3, 30, "three Jobs")
            kubelet.release()
            await eventually(lambda: cluster.counts().get("succeeded") == 3, 30, "settling")
            await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
    assert len(kubelet.runs) == 3
    assert len(cluster.kube.emulator.ever_created(JOBS)) == 3


async def test_a_job_deleted_before_it_finished_is_failed_instead_of_held(
        cluster: Cluster) -> None:
    async with fake_kubelet(cluster) as kubelet:
        kubelet.hold()
        async with running_operator():
            await cluster.create_queue()
            cluster.queues.send(hash_message("stem-d"))
            await eventually(lambda: len(cluster.jobs()) == 1, 30, "the Job")
            [job] = cluster.jobs()
            await cluster.kube.delete(JOBS, NAMESPACE, job["metadata"]["name"])
            await eventually(lambda: cluster.counts().get("failed") == 1, 30, "the failure")
            await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
    [failure] = completions(cluster)
    assert failure["stemId"] == "stem-d"
    assert failure["result"]["error_code"] == "INTERNAL_ERROR"
    assert list(dead_letters(cluster).values()) == ["INTERNAL_ERROR"]


async def test_a_clean_stop_hands_running_messages_back_at_once_for_the_next_operator(
        cluster: Cluster) -> None:
    """SIGTERM (a rollout): the held messages become visible at once (visibility 0), not after
    their 30 s visibility timeout, and the next operator adopts the still-running Jobs. The
    queue long-polls for 20 s, as in production: the stop must not wait for the poll."""
    async with fake_kubelet(cluster) as kubelet:
        kubelet.hold()
        process = await start_command(free_port())
        try:
            await cluster.create_queue(waitTimeSeconds=20)  # visibilityTimeoutSeconds: 30
            cluster.queues.send(hash_message("stem-1"))
            cluster.queues.send(hash_message("stem-2"))
            await eventually(lambda: len(cluster.jobs()) == 2, 30, "two Jobs")
            await eventually(lambda: cluster.counts().get("running") == 2, 30, "two in flight")
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()[-2000:]
        assert "returned 2 unfinished message(s) to the queue" in stderr.decode()
        assert cluster.queues.counts() == (2, 0)  # visible now, not in 30 s
        kubelet.release()
        # Short polls for the next operator, so its own stop does not wait out a 20 s poll.
        await cluster.kube.patch(QUEUES, NAMESPACE, "audio", {"spec": {"waitTimeSeconds": 1}})
        process = await start_command(free_port())
        try:
            await eventually(lambda: cluster.counts().get("succeeded") == 2, 30, "settling")
            await eventually(lambda: cluster.queues.counts() == (0, 0), 10, "an empty queue")
        finally:
            process.send_signal(signal.SIGTERM)
            await process.communicate()
    assert len(cluster.kube.emulator.ever_created(JOBS)) == 2  # adopted, not created again
    assert len(kubelet.runs) == 2
    assert cluster.queues.drain_dlq() == []
