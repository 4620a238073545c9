"""The job image, run the way the Job builder says, against moto and a recording backend.

Each test builds the Job for one message with ``build_job()``, turns its pod into podman flags
(tests/support/containers.py: user, read-only root, dropped capabilities, no-new-privileges,
memory limit, environment, the scratch emptyDir and the termination-message file) and runs the
image the pod names. So the test breaks when the builder and the image disagree: a variable
the image does not read, a path it cannot write, a command it does not have.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import soundfile

from support.aws import MotoEndpoint
from support.containers import Finished, PodRun, run_to_end
from support.jobpod import SECRET, job_pod, queue_spec
from support.jobrun import TIMESTAMP, wav_bytes
from support.webhooks import WebhookRecorder
from waveflow_dev import synth
from waveflow_job.contract import Task, waveform_key
from waveflow_job.originals import deletion_record_key
from waveflow_job.webhooks import signature_hex


class JobPod:
    """One Job's pod, run to its end in the image it names."""

    def __init__(self, engine: Any, spec: dict[str, Any], workdir: Path) -> None:
        self.engine, self.spec, self.workdir = engine, spec, workdir
        self.runs = 0

    def run(self, task: Task, **kwargs: Any) -> tuple[Finished, PodRun]:
        self.runs += 1
        image, run = job_pod(self.spec, task, self.workdir / f"pod-{self.runs}", **kwargs)
        return run_to_end(self.engine, run, image), run


def summary_of(run: PodRun) -> dict[str, Any]:
    """What the kubelet would report as the container's termination message."""
    assert run.termination_message is not None
    summary: dict[str, Any] = json.loads(run.termination_message.read_text())
    return summary


def assert_left_nothing_behind(finished: Finished, run: PodRun) -> None:
    """Nothing written outside the mounts, the scratch emptyDir empty, logs JSON."""
    assert finished.changed == [], finished.changed
    assert [p.name for p in run.volumes["scratch"].iterdir()] == []
    lines = [line for line in (finished.stdout + finished.stderr).splitlines() if line]
    assert lines, "the job logged nothing"
    for line in lines:
        assert isinstance(json.loads(line), dict), line


@pytest.fixture
def pods(engine: Any, job_image: str, aws: MotoEndpoint, bucket: str,
         webhooks: WebhookRecorder, tmp_path: Path) -> JobPod:
    return JobPod(engine, queue_spec(aws, bucket, webhooks.url, job_image), tmp_path)


def signed(body: bytes, signature: str | None) -> bool:
    """Whether ``signature`` is the secret's ``t=<unix>,v1=<hmac>`` of this body."""
    fields = dict(part.split("=", 1) for part in (signature or "").split(","))
    return "t" in fields and fields.get("v1") == signature_hex(SECRET, int(fields["t"]), body)


def test_the_hash_stage_posts_the_signed_hash_and_writes_its_summary(
        pods: JobPod, aws: MotoEndpoint, bucket: str, webhooks: WebhookRecorder) -> None:
    data = wav_bytes()
    key = "audio/사용자 업로드/곡 #1.wav"
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=data)

    finished, run = pods.run(Task.HASH, filepath=key, timestamp=TIMESTAMP,
                             original_filename="곡 1.wav")

    assert finished.returncode == 0, finished.stderr
    [request] = webhooks.received()
    assert request.path == "/webhook/hash-check"
    assert request.json()["audio_hash"] == hashlib.sha256(data).hexdigest()
    assert signed(request.body, request.header("X-WaveFlow-Signature"))
    summary = summary_of(run)
    assert (summary["outcome"], summary["task"], summary["bytes"]) == (
        "succeeded", "generate_hash_and_webhook", len(data))
    assert_left_nothing_behind(finished, run)


def test_the_duplicate_stage_deletes_only_the_duplicate(
        pods: JobPod, aws: MotoEndpoint, bucket: str, webhooks: WebhookRecorder) -> None:
    s3 = aws.client("s3")
    data = b"the same bytes the backend already has"
    s3.put_object(Bucket=bucket, Key="audio/dup.wav", Body=data)
    s3.put_object(Bucket=bucket, Key="audio/other.wav", Body=b"another upload")

    finished, run = pods.run(Task.DUPLICATE, filepath="audio/dup.wav",
                             audio_hash=hashlib.sha256(data).hexdigest())

    assert finished.returncode == 0, finished.stderr
    uploads = s3.list_objects_v2(Bucket=bucket, Prefix="audio/")["Contents"]
    assert [item["Key"] for item in uploads] == ["audio/other.wav"]
    tombstone = s3.get_object(Bucket=bucket, Key=deletion_record_key("audio/dup.wav", "stem-789"))
    assert json.loads(tombstone["Body"].read())["deleted_key"] == "audio/dup.wav"
    [request] = webhooks.received()
    assert request.json()["result"]["status"] == "duplicate_file_deleted"
    assert summary_of(run)["outcome"] == "succeeded"
    assert_left_nothing_behind(finished, run)


#: One file per decoder: numpy's own WAV reader, libsndfile (FLAC) and FFmpeg through PyAV
#: (AAC in MP4), whose stripped native extensions must still load.
ANALYSED = [("wav-16", "WAV", 8000), ("flac-16", "FLAC", 44100), ("m4a-aac", "M4A", 44100)]


@pytest.mark.parametrize(("fmt", "container", "rate"), ANALYSED, ids=[a[0] for a in ANALYSED])
def test_the_analysis_stage_stores_the_waveform_for_every_decoder(
        pods: JobPod, aws: MotoEndpoint, bucket: str, webhooks: WebhookRecorder,
        tmp_path: Path, fmt: str, container: str, rate: int) -> None:
    path = synth.write_audio(tmp_path / f"in{synth.FORMATS[fmt].suffix}", fmt,
                             synth.tone(rate // 2, rate, 2), rate)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = f"audio/user123/take{synth.FORMATS[fmt].suffix}"
    s3 = aws.client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=data)

    finished, run = pods.run(Task.ANALYSIS, filepath=key, audio_hash=sha, timestamp=TIMESTAMP,
                             num_peaks=64)

    assert finished.returncode == 0, finished.stderr
    [request] = webhooks.received("/completion")
    body = request.json()
    assert body["status"] == "SUCCESS", body
    result = body["result"]
    assert (result["format"], result["sample_rate"], result["channels"]) == (container, rate, 2)
    assert result["waveform_data_path"] == waveform_key("stem-789", sha)
    document = json.loads(s3.get_object(Bucket=bucket, Key=result["waveform_data_path"])
                          ["Body"].read())
    assert len(document["peaks"]) == 64 and max(document["peaks"]) == 1.0
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert summary_of(run)["outcome"] == "succeeded"
    assert_left_nothing_behind(finished, run)


def test_a_corrupt_file_is_rejected_for_good_with_exit_3_and_one_failure(
        pods: JobPod, aws: MotoEndpoint, bucket: str, webhooks: WebhookRecorder) -> None:
    whole = wav_bytes(seconds=1.0)
    info = soundfile.info(io.BytesIO(whole))
    assert info.frames == 8000
    cut = whole[: len(whole) // 2]  # the data chunk still promises the whole second
    key = "audio/user123/cut.wav"
    s3 = aws.client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=cut)

    finished, run = pods.run(Task.ANALYSIS, filepath=key,
                             audio_hash=hashlib.sha256(cut).hexdigest(), timestamp=TIMESTAMP)

    assert finished.returncode == 3, finished.stderr
    [request] = webhooks.received()
    body = request.json()
    assert body["status"] == "FAILURE"
    assert (body["result"]["error_code"], body["result"]["retryable"]) == ("AUDIO_CORRUPT", False)
    summary = summary_of(run)
    assert (summary["outcome"], summary["error_code"]) == ("rejected", "AUDIO_CORRUPT")
    listing = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listing] == [key]
    assert_left_nothing_behind(finished, run)
