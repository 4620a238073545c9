"""No log level shows a secret (issue 8, item 9).

``waveflow local`` and its real ``waveflow-job`` children run the whole pipeline at
``LOG_LEVEL=DEBUG`` against moto and the signing reference backend, with AWS credentials, a
session token and a webhook secret this test chose; every line either process wrote is then
searched for each of them, and for the shapes a secret takes in HTTP (an ``Authorization``
header, ``X-Amz-Security-Token``, a webhook signature).
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile

from support.runner import SECRET, Stack
from support.waiting import wait_for

WAVEFLOW = Path(sys.executable).parent / "waveflow"
pytestmark = pytest.mark.slow

#: Credentials moto accepts as they are; shaped like real ones so patterns would match too.
ACCESS_KEY_ID = "AKIAWAVEFLOW7TEST042"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYwaveflowSECRET"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEwaveflowSESSIONtoken//////////wEaCXVzLWVhc3QtMSJHMEUCIQ=="
SECRETS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
           "AWS_SESSION_TOKEN": SESSION_TOKEN, "WEBHOOK_SECRET": SECRET}
#: How secrets look in HTTP traffic, whatever their value.
SHAPES = {
    "an Authorization header": re.compile(r"AWS4-HMAC-SHA256 Credential=\w"),
    "a security token header": re.compile(r"X-Amz-Security-Token['\"]?\s*[:=]\s*['\"]?\w",
                                          re.IGNORECASE),
    "a webhook signature": re.compile(r"v1=[0-9a-f]{64}"),
    "a request signature": re.compile(r"Signature=[0-9a-f]{64}"),
}


def wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(buffer, 0.5 * np.sin(2 * np.pi * 330 * t), rate, format="WAV")
    return buffer.getvalue()


def upload(stack: Stack, key: str, data: bytes, stem: str) -> None:
    stack.aws.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=data)
    answer = requests.post(f"{stack.backend.url}/upload-complete", timeout=10, json={
        "userId": "user-1", "trackId": "track-1", "stemId": stem, "filepath": key})
    assert answer.status_code == 201


def status(stack: Stack, stem: str) -> str | None:
    return getattr(stack.backend.stems.get(stem), "status", None)


def test_debug_logs_of_the_runner_and_its_jobs_hold_no_secret(stack: Stack,
                                                              tmp_path: Path) -> None:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **stack.aws.env(), **SECRETS,
        "SQS_QUEUE_URL": stack.queues.url, "S3_BUCKET_NAME": stack.bucket,
        "WEBHOOK_URL": stack.backend.webhook_url,
        "WAVEFLOW_SCRATCH_ROOT": str(stack.scratch), "WAVEFLOW_MAX_IN_FLIGHT": "2",
        "WAVEFLOW_WAIT_TIME_SECONDS": "1", "WAVEFLOW_METRICS_PORT": "0",
        "WAVEFLOW_HEALTH_PORT": "0", "LOG_LEVEL": "DEBUG",
    }
    environment.pop("WAVEFLOW_JOB_COMMAND", None)  # the real waveflow-job
    log_path = tmp_path / "runner.log"  # a file, not a pipe: DEBUG output would fill one
    with log_path.open("wb") as log:
        runner = subprocess.Popen([str(WAVEFLOW), "local"], env=environment, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        data = wav()
        upload(stack, "audio/original.wav", data, "stem-a")  # hash, then analysis
        wait_for(lambda: status(stack, "stem-a") == "completed", 60, message="stem-a done")
        upload(stack, "audio/copy.wav", data, "stem-b")  # hash, then duplicate: deleted
        wait_for(lambda: status(stack, "stem-b") in ("duplicate_deleted", "completed",
                                                     "failed"), 60, message="stem-b done")
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=60)
    logs = log_path.read_text(encoding="utf-8", errors="replace")

    assert runner.returncode == 0, logs[-3000:]
    assert status(stack, "stem-b") == "duplicate_deleted"
    lines = logs.splitlines()
    assert sum('"level": "DEBUG"' in line for line in lines) > 0, "nothing logged at DEBUG"
    assert any('"task": "process_audio_analysis"' in line for line in lines), \
        "the jobs' own logs did not reach the runner's output"
    leaked = [name for name, value in SECRETS.items() if value in logs]
    assert leaked == [], f"{leaked} found in the logs"
    shapes = [name for name, shape in SHAPES.items() if shape.search(logs)]
    assert shapes == [], f"{shapes} found in the logs"
