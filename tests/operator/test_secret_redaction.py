"""A value the operator reads from a Kubernetes Secret never appears in its logs afterwards."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import aiohttp
import pytest

from support.jobrun import restore_logging_after_test
from support.kube import running_kube
from waveflow_job import logs, redact
from waveflow_operator.k8s.api import KubeApi
from waveflow_operator.metrics import Metrics

VALUE = "signing-key-from-a-kubernetes-secret-7f3a"


async def test_a_secret_value_read_from_kubernetes_is_masked_in_every_later_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    restore_logging_after_test(monkeypatch)
    monkeypatch.setattr(redact, "_values", frozenset())
    out = io.StringIO()
    logs.configure("DEBUG", out)
    async with running_kube(tmp_path) as kube:
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hooks"},
                  "data": {"WEBHOOK_SECRET": base64.b64encode(VALUE.encode()).decode()}}
        async with aiohttp.ClientSession() as session:
            created = await session.post(f"{kube.url}/api/v1/namespaces/ns/secrets",
                                         json=secret)
            assert created.status == 201
        api = KubeApi(kube.url, metrics=Metrics())
        try:
            assert await api.read_secret_key("ns", "hooks", "WEBHOOK_SECRET") == VALUE
        finally:
            await api.close()

    logging.getLogger("waveflow_operator.test").debug("the queue's secret is %s", VALUE)
    assert VALUE not in out.getvalue()
    assert redact.MASK in out.getvalue()
