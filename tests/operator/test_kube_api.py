"""The operator's own API client against the emulator: answers, absences, errors and their count."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from support.kube import running_kube
from waveflow_operator.k8s.api import KubeApi, KubeApiError
from waveflow_operator.k8s.runtime import QueueStatus
from waveflow_operator.metrics import Metrics

LABELS = {"app.kubernetes.io/managed-by": "waveflow-operator", "waveflow.io/queue": "q"}
JOB = {"apiVersion": "batch/v1", "kind": "Job",
       "metadata": {"name": "wf-hash-1", "labels": LABELS},
       "spec": {"template": {"spec": {"containers": [{"name": "job", "image": "x"}],
                                      "restartPolicy": "Never"}}}}


def errors(metrics: Metrics, operation: str) -> float:
    return metrics.value("waveflow_kubernetes_api_errors_total", operation=operation)


async def test_create_get_list_and_annotate_a_job(tmp_path: Path) -> None:
    async with running_kube(tmp_path) as kube:
        api = KubeApi(kube.url, metrics=(metrics := Metrics()))
        try:
            created = await api.create_job("ns", JOB)
            assert created is not None and created["metadata"]["uid"]
            assert await api.create_job("ns", JOB) is None  # 409: it exists, adopt it
            assert (await api.get_job("ns", "wf-hash-1") or {})["metadata"]["name"] == "wf-hash-1"
            assert await api.get_job("ns", "absent") is None
            other = {**JOB, "metadata": {"name": "other", "labels": {"waveflow.io/queue": "z"}}}
            await api.create_job("ns", other)
            selector = "app.kubernetes.io/managed-by=waveflow-operator,waveflow.io/queue=q"
            assert [j["metadata"]["name"] for j in await api.list_jobs("ns", selector)] == [
                "wf-hash-1"]
            await api.annotate_job("ns", "wf-hash-1", {"waveflow.io/reported": "succeeded"})
            stored = await api.get_job("ns", "wf-hash-1") or {}
            assert stored["metadata"]["annotations"] == {"waveflow.io/reported": "succeeded"}
            assert await api.read_secret_key("ns", "missing", "KEY") is None
        finally:
            await api.close()
        assert errors(metrics, "create_job") == 0  # a 409 is an answer, not an error


async def test_a_refused_call_raises_a_final_error_and_is_counted(tmp_path: Path) -> None:
    async with running_kube(tmp_path) as kube:
        api = KubeApi(kube.url, metrics=(metrics := Metrics()))
        try:
            with pytest.raises(KubeApiError) as refused:
                await api.create_job("ns", {"apiVersion": "batch/v1", "kind": "Job",
                                            "metadata": {}})  # no name: 422
        finally:
            await api.close()
    assert refused.value.status == 422 and refused.value.retryable is False
    assert errors(metrics, "create_job") == 1


async def test_an_unreachable_api_is_a_retryable_error_and_is_counted() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = KubeApi(f"http://127.0.0.1:{port}", metrics=(metrics := Metrics()), timeout=2)
    try:
        with pytest.raises(KubeApiError) as unreachable:
            await api.list_pods("ns", "job-name=x")
    finally:
        await api.close()
    assert unreachable.value.status == 0 and unreachable.value.retryable is True
    assert errors(metrics, "list_pods") == 1


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    status = QueueStatus()
    status.condition("Ready", True, "Polling", "ok")
    first = status.conditions["Ready"]["lastTransitionTime"]
    status.conditions["Ready"]["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    status.condition("Ready", True, "Polling", "still ok")
    assert status.conditions["Ready"]["lastTransitionTime"] == "2000-01-01T00:00:00Z"
    status.condition("Ready", False, "QueueUnavailable", "gone")
    assert status.conditions["Ready"]["lastTransitionTime"] >= first
    assert status.render(error="boom")["lastError"] == "boom"
