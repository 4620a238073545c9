"""``waveflow health`` (can every dependency be reached?) and the liveness endpoint.

``waveflow health`` checks, in order: the SQS queue (and its dead-letter queue), the S3 bucket,
the webhook URL and — when a kubeconfig or in-cluster configuration exists — the Kubernetes API's
``/version``. Each check prints one line saying what is wrong and what to look at; the exit code
is 1 when any check failed.

The liveness endpoint (``GET /healthz``) answers 200 while the runner's receive loop runs —
also while SQS is failing: a bad queue URL is a status to report, not a reason to restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from waveflow_operator.runner.spec import QueueSpec

__all__ = ["Check", "kubernetes_checks", "run_checks", "serve_liveness"]

log = logging.getLogger(__name__)
_TIMEOUT = 5.0


@dataclass(frozen=True)
class Check:
    """One dependency's verdict."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.name:<10} {self.detail}"


def run_checks(settings: QueueSpec, *, kubernetes: bool | None = None) -> list[Check]:
    """Every check; ``kubernetes=None`` means "only when a configuration exists"."""
    config = Config(connect_timeout=_TIMEOUT, read_timeout=_TIMEOUT,
                    retries={"mode": "standard", "max_attempts": 2})
    checks = [_check_sqs(settings, config), _check_dlq(settings, config),
              _check_s3(settings, config), _check_webhook(settings)]
    if kubernetes or (kubernetes is None and _kubernetes_configured()):
        checks.append(_check_kubernetes())
    return checks


def kubernetes_checks() -> list[Check]:
    """Only the Kubernetes API check, when a configuration exists (else nothing)."""
    return [_check_kubernetes()] if _kubernetes_configured() else []


def _aws_problem(error: Exception) -> str:
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        hints = {"AccessDenied": "the credentials lack permission",
                 "AccessDeniedException": "the credentials lack permission",
                 "InvalidClientTokenId": "the AWS credentials are not valid",
                 "NoSuchBucket": "no such bucket", "404": "no such bucket",
                 "403": "the credentials lack permission on the bucket",
                 "AWS.SimpleQueueService.NonExistentQueue": "no such queue",
                 "QueueDoesNotExist": "no such queue"}
        return f"{hints.get(code, code or 'error')} ({error})"
    return f"cannot reach the endpoint: {error}"


def _check_sqs(settings: QueueSpec, config: Config) -> Check:
    client = boto3.client("sqs", region_name=settings.region, endpoint_url=settings.endpoint_url,
                          config=config)
    try:
        attributes = client.get_queue_attributes(
            QueueUrl=settings.queue_url,
            AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    except (ClientError, BotoCoreError) as error:
        return Check("sqs", False, f"{settings.queue_url}: {_aws_problem(error)}")
    visible = attributes.get("ApproximateNumberOfMessages", "?")
    return Check("sqs", True, f"{settings.queue_url} ({visible} visible)")


def _check_dlq(settings: QueueSpec, config: Config) -> Check:
    client = boto3.client("sqs", region_name=settings.region, endpoint_url=settings.endpoint_url,
                          config=config)
    try:
        if settings.dlq_url:
            client.get_queue_attributes(QueueUrl=settings.dlq_url, AttributeNames=["QueueArn"])
            return Check("dlq", True, settings.dlq_url)
        policy = client.get_queue_attributes(
            QueueUrl=settings.queue_url,
            AttributeNames=["RedrivePolicy"])["Attributes"].get("RedrivePolicy")
    except (ClientError, BotoCoreError) as error:
        return Check("dlq", False, _aws_problem(error))
    if not policy:
        return Check("dlq", False, "no SQS_DLQ_URL and the queue has no RedrivePolicy: failed "
                                   "messages would have nowhere to go")
    return Check("dlq", True, "from the queue's RedrivePolicy")


def _check_s3(settings: QueueSpec, config: Config) -> Check:
    client = boto3.client("s3", region_name=settings.region, endpoint_url=settings.endpoint_url,
                          config=config)
    try:
        client.head_bucket(Bucket=settings.bucket)
    except (ClientError, BotoCoreError) as error:
        return Check("s3", False, f"bucket {settings.bucket}: {_aws_problem(error)}")
    return Check("s3", True, f"bucket {settings.bucket}")


def _check_webhook(settings: QueueSpec) -> Check:
    """Any HTTP answer below 500 means the backend is there (NestJS 404s a GET on the base)."""
    try:
        response = requests.get(settings.webhook_url, timeout=_TIMEOUT)
    except requests.RequestException as error:
        return Check("webhook", False, f"{settings.webhook_url}: cannot connect ({error})")
    if response.status_code >= 500:
        return Check("webhook", False, f"{settings.webhook_url}: the backend answers HTTP "
                                       f"{response.status_code}")
    return Check("webhook", True, f"{settings.webhook_url} answers (HTTP {response.status_code})")


def _kubernetes_configured() -> bool:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    paths = os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config"))
    return any(Path(p).is_file() for p in paths.split(os.pathsep) if p)


def _check_kubernetes() -> Check:
    """``/version`` through the operator's own API client, with the credentials it uses."""
    from waveflow_operator.k8s.api import KubeApi

    async def probe() -> dict[str, Any]:
        api = KubeApi.from_environment(timeout=_TIMEOUT)
        try:
            return await api.version()
        finally:
            await api.close()

    try:
        version = asyncio.run(probe())
    except Exception as error:  # any failure here is the answer
        return Check("kubernetes", False, f"the API server is not reachable: {error}")
    return Check("kubernetes", True, f"API server {version.get('gitVersion', '?')}")


def serve_liveness(port: int, probe: Callable[[], tuple[bool, str]],
                   host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """``GET /healthz``: 200 ``ok …`` while ``probe()`` says alive, else 503 with the reason."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0].rstrip("/") not in ("/healthz", "/livez", ""):
                self.send_error(404)
                return
            alive, detail = probe()
            payload = f"{'ok' if alive else 'unhealthy'}: {detail}\n".encode()
            self.send_response(200 if alive else 503)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes every few seconds would flood the log."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="liveness", daemon=True).start()
    log.info("liveness on http://%s:%d/healthz", host, server.server_address[1])
    return server
