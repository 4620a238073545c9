"""A valid message near SQS's size limit runs as a Job through the operator on the emulator.

An environment string over 128 KiB makes exec fail with E2BIG (in a container just the same), so
a large body travels in a ConfigMap the Job owns, mounted into the pod. The test kubelet mounts
it as a kubelet does: from the Job's pod spec, the pod waiting until the ConfigMap exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from support.kube import CONFIGMAPS, JOBS
from support.kubelet import Kubelet
from support.local_process import FAKEJOB
from support.operator_e2e import NAMESPACE, Cluster, running_operator
from support.queues import backend_message
from support.waiting import eventually
from waveflow_dev import synth
from waveflow_job.contract import parse_message
from waveflow_operator.k8s.crd import parse_spec
from waveflow_operator.k8s.jobs import build_job
from waveflow_operator.k8s.message import message_config_map
from waveflow_operator.runner.protocol import Delivery, JobRequest, job_name_for

pytestmark = pytest.mark.slow

#: A 250 KiB unknown kwarg: the contract carries unknown kwargs through, so the message is valid.
BIG_KWARG = "wave" * (250 * 1024 // 4)


def big_hash_body(stem: str, key: str) -> str:
    body = json.dumps(backend_message("generate_hash_and_webhook", stem, filepath=key,
                                      stageNotes=BIG_KWARG))
    assert 250 * 1024 < len(body.encode()) <= 262_144
    return body


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"])


def config_maps(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c
            for c in cluster.kube.emulator.stored_all(CONFIGMAPS, NAMESPACE)}


async def test_a_250_kib_message_runs_with_its_body_in_a_configmap_the_job_owns(
        cluster: Cluster, kubelet: Kubelet, tmp_path: Path) -> None:
    rate = 22050
    audio = synth.write_audio(tmp_path / "big.wav", "wav-16", synth.tone(rate // 2, rate, 1),
                              rate).read_bytes()
    cluster.aws.client("s3").put_object(Bucket="waveflow-test", Key="audio/big.wav", Body=audio)
    body = big_hash_body("stem-big", "audio/big.wav")
    async with running_operator():
        await cluster.create_queue()
        cluster.queues.send(body)
        # The real waveflow-job hashes it; the backend sends the (small) analysis message.
        await eventually(lambda: getattr(cluster.backend.stems.get("stem-big"), "status", None)
                         == "completed", 60, "the big message's stem to complete")
        await eventually(lambda: cluster.queues.counts() == (0, 0), 20, "an empty queue")
    assert cluster.backend.stems["stem-big"].audio_hash == hashlib.sha256(audio).hexdigest()
    jobs = {job["metadata"]["labels"]["waveflow.io/task"]: job for job in cluster.jobs()}
    hashing, analysis = jobs["generate_hash_and_webhook"], jobs["process_audio_analysis"]
    [volume] = [v for v in pod_spec(hashing)["volumes"] if "configMap" in v]
    stored = config_maps(cluster)[volume["configMap"]["name"]]
    assert stored["data"] == {"body": body}  # byte for byte, the big kwarg included
    assert stored["metadata"]["ownerReferences"] == [{
        "apiVersion": "batch/v1", "kind": "Job", "name": hashing["metadata"]["name"],
        "uid": hashing["metadata"]["uid"], "blockOwnerDeletion": False}]
    [container] = pod_spec(hashing)["containers"]
    assert container["args"] == ["--message-file", "/message/body"]
    assert "WAVEFLOW_MESSAGE" not in {item["name"] for item in container["env"]}
    # A small body still travels in the environment, with no ConfigMap.
    [small] = pod_spec(analysis)["containers"]
    assert "WAVEFLOW_MESSAGE" in {item["name"] for item in small["env"]} and "args" not in small
    assert len(config_maps(cluster)) == 1
    assert [run.exit_code for run in kubelet.runs] == [0, 0]
    assert cluster.queues.drain_dlq() == []
    # Deleting the Job (its TTL) takes the ConfigMap with it (garbage collection).
    await cluster.kube.delete(JOBS, NAMESPACE, hashing["metadata"]["name"])
    await eventually(lambda: config_maps(cluster) == {}, 10, "the ConfigMap to go with its Job")


async def test_an_adopted_job_gets_its_message_configmap_whatever_the_last_operator_did(
        cluster: Cluster, tmp_path: Path) -> None:
    """A previous operator created the Job and died before (stem-a) or after (stem-b) its
    ConfigMap: the next one adopts each Job, creates the missing ConfigMap, keeps the other."""
    record = tmp_path / "processes.txt"
    bodies = {stem: big_hash_body(stem, f"audio/{stem}.wav") for stem in ("stem-a", "stem-b")}
    sent = {stem: cluster.queues.send(body) for stem, body in bodies.items()}
    owner = (await cluster.create_queue())["metadata"]
    queue, template = parse_spec("audio", cluster.spec())
    async with Kubelet(cluster.kube, base_env={**os.environ, "FAKEJOB_RECORD": str(record)},
                       command=(sys.executable, str(FAKEJOB))) as kubelet:
        kubelet.hold()  # the pods start only once the new operator has adopted both Jobs
        jobs = {}
        for stem, body in bodies.items():
            message = parse_message(body)
            request = JobRequest(job_name_for(message.task, sent[stem]), message,
                                 Delivery(sent[stem], "receipt", body, None, 1))
            jobs[stem] = await cluster.kube.create(
                JOBS, build_job(request, queue, template, owner))
            if stem == "stem-b":
                await cluster.kube.create(CONFIGMAPS, message_config_map(request, jobs[stem]))
        async with running_operator():
            # It created stem-a's ConfigMap and found stem-b's (a 409, then a read: ours).
            await eventually(lambda: len(config_maps(cluster)) == 2 and (
                "", "configmaps", "get") in cluster.kube.emulator.api_calls(), 30, "adoption")
            kubelet.release()
            await eventually(lambda: cluster.queues.counts() == (0, 0), 60, "an empty queue")
            await eventually(lambda: cluster.counts().get("succeeded") == 2, 20, "settling")
    assert sorted(cluster.kube.emulator.ever_created(JOBS)) == sorted(
        job["metadata"]["name"] for job in jobs.values())  # adopted, never a second Job
    stored = config_maps(cluster)
    for stem, job in jobs.items():
        config_map = stored[f"{job['metadata']['name']}-message"]
        assert config_map["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        assert config_map["data"] == {"body": bodies[stem]}
    digests = sorted(line.split()[2] for line in record.read_text().splitlines()
                     if line.startswith("body "))
    assert digests == sorted(hashlib.sha256(b.encode()).hexdigest() for b in bodies.values())
    assert [run.exit_code for run in kubelet.runs] == [0, 0]
    assert cluster.queues.drain_dlq() == []
