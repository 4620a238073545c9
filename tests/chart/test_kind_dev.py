"""The kind development path, run for real where it can be: against moto on loopback.

kind and Docker are not on CI's machines, so the cluster itself is not started. What runs in it
is ours and runs here: the emulator's bootstrap hook (rendered from the chart) and the sample
sender of `make kind-send-sample`, both against a real moto server.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from typing import Any

import boto3
import soundfile as sf
import yaml

from chart.helm import REPO, find
from support.aws import MotoEndpoint
from waveflow_job.contract import Task, parse_message

Manifests = list[dict[str, Any]]
MAKEFILE = REPO / "charts" / "Makefile.mk"


def run_python(code: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    """Run Python with only the environment a pod would have (no AWS settings leak in)."""
    result = subprocess.run(
        [sys.executable, *code],
        input=stdin,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def clients(aws: MotoEndpoint, env: dict[str, str]) -> tuple[Any, Any]:
    """SQS and S3 clients on moto, in the kind values' region."""
    region = env["AWS_DEFAULT_REGION"]
    options = {
        "endpoint_url": aws.url,
        "region_name": region,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    return boto3.client("sqs", **options), boto3.client("s3", **options)


def bootstrap(kind_manifests: Manifests, aws: MotoEndpoint) -> dict[str, str]:
    """Run the chart's emulator bootstrap hook against moto; its environment, pointed at moto."""
    job = find(kind_manifests, "Job", "-emulator-bootstrap")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    env["AWS_ENDPOINT_URL"] = aws.url
    assert container["command"][:2] == ["python", "-c"]
    output = run_python(container["command"][1:], env)
    assert output.startswith("ready:")
    return env


def test_the_emulator_bootstrap_creates_the_queue_its_dead_letter_queue_and_the_bucket(
    kind_manifests: Manifests, aws: MotoEndpoint
) -> None:
    env = bootstrap(kind_manifests, aws)
    sqs, s3 = clients(aws, env)
    url = sqs.get_queue_url(QueueName="audio-processing")["QueueUrl"]
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"][
            "RedrivePolicy"
        ]
    )
    assert policy["deadLetterTargetArn"].endswith(":audio-processing-dlq")
    assert env["BUCKET"] in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    bootstrap(kind_manifests, aws)  # post-upgrade: runs again without failing


def test_the_sample_sender_uploads_a_tone_and_sends_the_backends_two_messages(
    kind_manifests: Manifests, aws: MotoEndpoint
) -> None:
    env = bootstrap(kind_manifests, aws)
    sqs, s3 = clients(aws, env)
    queue_url = sqs.get_queue_url(QueueName="audio-processing")["QueueUrl"]
    run_python(
        ["-"],
        {**env, "QUEUE_URL": queue_url},
        stdin=(REPO / "charts" / "dev" / "send_sample.py").read_text(),
    )
    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    messages = sorted((parse_message(m["Body"]) for m in received), key=lambda m: m.task)
    assert [m.task for m in messages] == [Task.HASH, Task.ANALYSIS]
    key = messages[0].filepath
    body = s3.get_object(Bucket=env["BUCKET"], Key=key)["Body"].read()
    frames, rate = sf.read(io.BytesIO(body))
    assert rate == 44100 and len(frames) == 2 * 44100
    assert messages[1].audio_hash == hashlib.sha256(body).hexdigest()


def test_the_make_target_sends_to_the_queue_and_bucket_of_the_kind_values(
    kind_manifests: Manifests,
) -> None:
    spec = find(kind_manifests, "WaveflowQueue")["spec"]
    make = MAKEFILE.read_text().replace("$(KIND_RELEASE)", "waveflow")
    make = make.replace("$(KIND_NAMESPACE)", "waveflow")
    assert re.search(rf"--env=QUEUE_URL={re.escape(spec['queueUrl'])}\s", make)
    assert re.search(rf"--env=BUCKET={re.escape(spec['bucket'])}\s", make)
    assert re.search(rf"--env=AWS_ENDPOINT_URL={re.escape(spec['endpointUrl'])}\s", make)


def test_the_kind_cluster_has_a_worker_for_the_jobs() -> None:
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [node["role"] for node in config["nodes"]] == ["control-plane", "worker"]
