"""A Job's pod for one message, built by the real ``build_job()`` and turned into run flags.

Shared by the image test (tests/images) and the start-up benchmark (tests/bench): the WaveflowQueue
spec is the chart's (its per-task resources), pointed at moto and a webhook recorder on loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from chart.helm import CHART
from support.aws import REGION, MotoEndpoint
from support.containers import PodRun, run_flags
from support.jobrun import KWARGS, json_message
from waveflow_job.contract import Task, parse_message
from waveflow_operator.k8s.crd import parse_spec
from waveflow_operator.k8s.jobs import build_job
from waveflow_operator.runner.protocol import Delivery, JobRequest, job_name_for

OWNER = {"name": "audio", "namespace": "media", "uid": "0b7a1c4e-1111-4222-8333-944455556666"}
SECRET_REF = {"name": "waveflow-webhook", "key": "WEBHOOK_SECRET"}
SECRET = "image-test-secret"
SQS_ID = "5fea7756-0ea4-451a-a703-a558b933e274"
TASK_NAMES = {Task.HASH: "generate_hash_and_webhook", Task.DUPLICATE: "process_duplicate_file",
              Task.ANALYSIS: "process_audio_analysis"}


def queue_spec(aws: MotoEndpoint, bucket: str, webhook_url: str, image: str) -> dict[str, Any]:
    """A WaveflowQueue spec as the chart makes it, pointed at moto and the recorder; the
    credentials IRSA would provide come through ``job.env``."""
    resources = yaml.safe_load((CHART / "values.yaml").read_text())["queue"]["job"]["resources"]
    credentials = {k: v for k, v in aws.env().items() if k.startswith("AWS_") and
                   k not in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")}
    return {
        "queueUrl": f"{aws.url}/123456789012/audio", "region": REGION, "endpointUrl": aws.url,
        "bucket": bucket, "uploadPrefixes": ["audio/"], "webhookUrl": webhook_url,
        "webhookSecretRef": SECRET_REF,
        "job": {"image": image, "resources": resources,
                "env": [{"name": k, "value": v} for k, v in {
                    **credentials, "WAVEFLOW_WEBHOOK_BACKOFF_SECONDS": "0.05",
                    "WAVEFLOW_S3_MAX_ATTEMPTS": "2"}.items()]},
    }


def request_for(task: Task, **kwargs: Any) -> JobRequest:
    body = json_message(TASK_NAMES[task], **KWARGS, **kwargs)
    return JobRequest(job_name_for(task, SQS_ID), parse_message(body),
                      Delivery(SQS_ID, "receipt", body, 1_732_600_000_000, 1))


def job_pod(spec: dict[str, Any], task: Task, workdir: Path, **kwargs: Any) -> tuple[str, PodRun]:
    """The image the Job names and the flags for its pod; ``workdir`` holds its volumes."""
    queue, template = parse_spec(str(OWNER["name"]), spec)
    job = build_job(request_for(task, **kwargs), queue, template, OWNER)
    pod = job["spec"]["template"]["spec"]
    workdir.mkdir(parents=True)
    run = run_flags(pod, spec["job"]["image"], workdir,
                    secrets={(SECRET_REF["name"], SECRET_REF["key"]): SECRET})
    return str(pod["containers"][0]["image"]), run
