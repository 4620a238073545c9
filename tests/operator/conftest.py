"""Fixtures of the operator's end-to-end tests: kopf (KopfRunner) against the kmock emulator,
moto's SQS and S3, the reference backend, and the test kubelet running the real ``waveflow-job``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from support.aws import REGION, MotoEndpoint
from support.kube import running_kube
from support.kubelet import Kubelet
from support.operator_e2e import OBSERVED_CALLS, SECRET, Cluster
from support.queues import Queues, make_queues
from waveflow_dev.backend import DevBackend
from waveflow_operator.k8s.permissions import PERMISSIONS

ALLOWED_CALLS = {(group, resource, verb) for group, resource, verbs in PERMISSIONS
                 for verb in verbs}


@pytest.fixture
def backend(aws: MotoEndpoint, bucket: str) -> Iterator[tuple[Queues, DevBackend]]:
    queues = make_queues(aws)
    service = DevBackend(queues.url, secret=SECRET, region=REGION, endpoint_url=aws.url).start()
    try:
        yield queues, service
    finally:
        service.stop()


@pytest.fixture
async def cluster(aws: MotoEndpoint, backend: tuple[Queues, DevBackend], tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Cluster]:
    """The emulated cluster (with the webhook Secret) and the emulators it points at."""
    queues, service = backend
    async with running_kube(tmp_path) as kube:
        monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        state = Cluster(kube, aws, queues, service, tmp_path)
        await state.create_secret()
        yield state
        calls = kube.emulator.api_calls()
        OBSERVED_CALLS.update(calls)
        # Every call the operator made is one its Role allows (k8s.permissions.PERMISSIONS).
        assert calls <= ALLOWED_CALLS, f"calls missing from PERMISSIONS: {calls - ALLOWED_CALLS}"


@pytest.fixture
async def kubelet(cluster: Cluster) -> AsyncIterator[Kubelet]:
    """Runs the real ``waveflow-job`` for every Job the operator creates."""
    async with Kubelet(cluster.kube, base_env=dict(os.environ)) as running:
        yield running
