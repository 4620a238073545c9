"""``waveflow health`` says what is wrong; metrics and liveness are served over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from support.aws import MotoEndpoint
from support.runner import Stack
from waveflow_operator.health import serve_liveness
from waveflow_operator.metrics import Metrics, serve

WAVEFLOW = Path(sys.executable).parent / "waveflow"


def health(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WAVEFLOW), "health"], env={**os.environ, **env}, text=True,
                          capture_output=True, timeout=60, check=False)


def test_health_passes_when_everything_answers(stack: Stack) -> None:
    result = health({"SQS_QUEUE_URL": stack.queues.url, "S3_BUCKET_NAME": stack.bucket,
                     "WEBHOOK_URL": stack.backend.webhook_url, "KUBECONFIG": "/nonexistent"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["OK", "sqs"], ["OK", "dlq"], ["OK", "s3"], ["OK", "webhook"]]


def test_health_names_each_broken_dependency(aws: MotoEndpoint) -> None:
    result = health({"SQS_QUEUE_URL": f"{aws.url}/123456789012/missing",
                     "S3_BUCKET_NAME": "no-such-bucket", "WEBHOOK_URL": "http://127.0.0.1:9/hook",
                     "KUBECONFIG": "/nonexistent"})
    assert result.returncode == 1
    lines = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert lines["sqs"].startswith("FAIL") and "no such queue" in lines["sqs"]
    assert lines["s3"].startswith("FAIL") and "no-such-bucket" in lines["s3"]
    assert lines["webhook"].startswith("FAIL") and "cannot connect" in lines["webhook"]
    assert "check(s) failed: sqs, dlq, s3, webhook" in result.stderr


def test_metrics_and_liveness_are_served() -> None:
    metrics = Metrics()
    metrics.messages_received.labels(queue="q").inc(3)
    state = {"alive": True}
    metrics_server = serve(metrics, 0, host="127.0.0.1")
    live_server = serve_liveness(0, lambda: (state["alive"], "running"), host="127.0.0.1")
    try:
        text = requests.get(f"http://127.0.0.1:{metrics_server.server_address[1]}/metrics",
                            timeout=10).text
        assert 'waveflow_messages_received_total{queue="q"} 3.0' in text
        assert "waveflow_build_info{" in text
        live = f"http://127.0.0.1:{live_server.server_address[1]}/healthz"
        assert requests.get(live, timeout=10).status_code == 200
        state["alive"] = False
        answer = requests.get(live, timeout=10)
        assert (answer.status_code, answer.text) == (503, "unhealthy: running\n")
    finally:
        for server in (metrics_server, live_server):
            server.shutdown()
            server.server_close()


def test_every_documented_metric_exists_with_its_labels() -> None:
    documented = {
        "waveflow_messages_received_total": {"queue"},
        "waveflow_messages_dead_lettered_total": {"queue", "reason"},
        "waveflow_jobs_created_total": {"queue", "task"},
        "waveflow_jobs_finished_total": {"queue", "task", "outcome"},
        "waveflow_jobs_in_flight": {"queue"},
        "waveflow_dispatch_latency_seconds": {"queue"},
        "waveflow_job_duration_seconds": {"queue", "task"},
        "waveflow_queue_messages": {"queue", "state"},
        "waveflow_dead_letter_queue_messages": {"queue"},
        "waveflow_audio_seconds_processed_total": {"queue"},
        "waveflow_bytes_processed_total": {"queue", "task"},
        "waveflow_sqs_errors_total": {"queue", "operation"},
        "waveflow_kubernetes_api_errors_total": {"operation"},
        "waveflow_heartbeat_errors_total": {"queue"},
        "waveflow_last_poll_timestamp_seconds": {"queue"},
        "waveflow_build_info": {"version"},
    }
    metrics = Metrics()
    found = {}
    for collector in list(metrics.registry._collector_to_names):
        described = collector.describe()[0]
        name = described.name + ("_total" if described.type == "counter" else "")
        found[name] = set(getattr(collector, "_labelnames", ()))
    assert found == documented


def test_health_checks_the_kubernetes_api_when_a_kubeconfig_exists(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n")
    environment = {k: v for k, v in os.environ.items() if k != "SQS_QUEUE_URL"}
    result = subprocess.run([str(WAVEFLOW), "health"], text=True, capture_output=True,
                            timeout=60, check=False,
                            env={**environment, "KUBECONFIG": str(kubeconfig)})
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("SKIP  queues") and "SQS_QUEUE_URL" in lines[0]
    assert lines[1].startswith("FAIL  kubernetes") and "not reachable" in lines[1]
