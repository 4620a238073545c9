"""The operator's end-to-end harness: the Cluster under test and kopf started in a thread."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kopf.testing import KopfRunner

from support.aws import BUCKET, REGION, MotoEndpoint
from support.kube import JOBS, QUEUES, SECRETS, RunningKube
from support.queues import Queues
from waveflow_dev.backend import DevBackend

NAMESPACE = "audio"
SECRET = "operator-test-secret"
#: What kopf is started with: cluster-wide (kmock serves no namespace list), one replica.
KOPF_ARGS = ["run", "-A", "--standalone", "-m", "support.kopf_login",
             "-m", "waveflow_operator.k8s.handlers"]
#: Every API call the operator made in any end-to-end test (the permissions test reads it).
OBSERVED_CALLS: set[tuple[str, str, str]] = set()


@dataclass
class Cluster:
    """Everything the operator talks to, and helpers to drive it."""

    kube: RunningKube
    aws: MotoEndpoint
    queues: Queues
    backend: DevBackend
    tmp_path: Path
    extra_queues: list[Queues] = field(default_factory=list)

    def spec(self, queues: Queues | None = None, **overrides: Any) -> dict[str, Any]:
        """A WaveflowQueue spec on these emulators; short polls so tests do not wait."""
        queues = queues or self.queues
        job: dict[str, Any] = {
            "image": "ghcr.io/waveflow/job:test",
            "backoffLimit": 0,
            "activeDeadlineSeconds": {"hash": 60, "duplicate": 60, "analysis": 120},
            "resources": {"analysis": {"requests": {"cpu": "500m", "memory": "512Mi"}}},
            "env": [{"name": "WAVEFLOW_WEBHOOK_BUDGET_SECONDS", "value": "5"},
                    {"name": "WAVEFLOW_WEBHOOK_BACKOFF_SECONDS", "value": "0.05"},
                    {"name": "WAVEFLOW_S3_MAX_ATTEMPTS", "value": "2"}],
            **overrides.pop("job", {}),
        }
        spec: dict[str, Any] = {
            "queueUrl": queues.url, "region": REGION, "endpointUrl": self.aws.url,
            "bucket": BUCKET, "uploadPrefixes": ["audio/"],
            "webhookUrl": self.backend.webhook_url,
            "webhookSecretRef": {"name": "waveflow-webhook", "key": "WEBHOOK_SECRET"},
            "maxInFlight": 10, "receiveBatchSize": 10, "waitTimeSeconds": 1,
            "visibilityTimeoutSeconds": 30, "job": job,
        }
        spec.update(overrides)
        return spec

    async def create_queue(self, name: str = "audio", **overrides: Any) -> dict[str, Any]:
        return await self.kube.create(QUEUES, {
            "apiVersion": "waveflow.io/v1alpha1", "kind": "WaveflowQueue",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": self.spec(**overrides)})

    async def create_secret(self) -> None:
        await self.kube.create(SECRETS, {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "waveflow-webhook", "namespace": NAMESPACE},
            "data": {"WEBHOOK_SECRET": base64.b64encode(SECRET.encode()).decode()}})

    def jobs(self) -> list[dict[str, Any]]:
        return self.kube.emulator.stored_all(JOBS, NAMESPACE)

    def queue_status(self, name: str = "audio") -> dict[str, Any]:
        stored = self.kube.emulator.stored(QUEUES, NAMESPACE, name) or {}
        return dict(stored.get("status") or {})

    def condition(self, kind: str, name: str = "audio") -> dict[str, Any]:
        conditions = self.queue_status(name).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), {})

    def counts(self, name: str = "audio") -> dict[str, int]:
        return dict(self.queue_status(name).get("counts") or {})


@asynccontextmanager
async def running_operator() -> AsyncIterator[KopfRunner]:
    """kopf in a thread of its own; entered and exited off this loop (its exit blocks)."""
    runner = KopfRunner(KOPF_ARGS)
    await asyncio.to_thread(runner.__enter__)
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
