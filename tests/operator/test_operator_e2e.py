"""End to end through the operator: kopf runs ``waveflow_operator.handlers`` against the kmock
emulator; Jobs are run by the test kubelet with the real ``waveflow-job`` (or, where a job must
fail on purpose, ``tests/support/fakejob.py``); SQS and S3 are moto; the backend is the reference
backend that sends the next stage's message when a webhook arrives.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests

from support.kubelet import Kubelet
from support.operator_e2e import Cluster, running_operator
from support.runner import eventually
from waveflow_job.audio import synth
from waveflow_operator.jobs import LABEL_QUEUE

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
