"""S3 and SQS on this machine: moto in server mode on loopback, and queues shaped like production.

Used by ``waveflow demo`` and by the tests (``tests/support/aws.py``). boto3 reaches the
emulator through ``AWS_ENDPOINT_URL`` — in this process and in child processes (jobs) alike —
so the code under test is the production code, unpatched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import requests
from moto.server import ThreadedMotoServer

from waveflow_job.contract import env as names

__all__ = ["REGION", "Emulator", "QueuePair", "create_queues", "pointed_at", "running_emulator"]

REGION = "us-east-1"
#: moto accepts any credentials; these only keep boto3 from looking for real ones.
_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class Emulator:
    """Where the emulator listens and the environment a process needs to use it."""

    url: str
    #: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN (moto takes
    #: any; the tests use sentinels they can look for in logs).
    credentials: Mapping[str, str] = field(default_factory=lambda: dict(_CREDENTIALS))

    def env(self) -> dict[str, str]:
        """AWS variables for boto3: region, the credentials and the endpoint."""
        return {names.ENDPOINT_URL: self.url, names.REGION: REGION,
                names.REGION_FALLBACK: REGION, **self.credentials,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self, service: str) -> Any:
        """A boto3 client bound to the emulator (independent of os.environ)."""
        factory: Any = boto3.client  # any service name, not only the stubs' literals
        return factory(service, endpoint_url=self.url, region_name=REGION,
                       aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"],
                       aws_session_token=self.credentials.get("AWS_SESSION_TOKEN"))

    def reset(self) -> None:
        """Forget every bucket, object and queue: each test starts from nothing."""
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()


@contextmanager
def running_emulator(credentials: Mapping[str, str] | None = None) -> Iterator[Emulator]:
    """moto's threaded server on a free loopback port for the duration of the block."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Emulator(f"http://{host}:{port}", dict(credentials or _CREDENTIALS))
    finally:
        server.stop()


@contextmanager
def pointed_at(emulator: Emulator) -> Iterator[None]:
    """This process's AWS settings pointed at ``emulator`` for the block, then restored."""
    overrides = emulator.env()
    previous = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass(frozen=True)
class QueuePair:
    """A main queue whose RedrivePolicy names ``dlq_url``, as in production."""

    url: str
    dlq_url: str


def create_queues(sqs: Any, name: str, *, visibility_timeout: int | None = None,
                  max_receive_count: int = 5) -> QueuePair:
    """Create ``name`` and ``name-dlq`` with a RedrivePolicy between them."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq_url,
                                   AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn,
                                               "maxReceiveCount": str(max_receive_count)})}
    if visibility_timeout is not None:
        attributes["VisibilityTimeout"] = str(visibility_timeout)
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return QueuePair(url, dlq_url)
