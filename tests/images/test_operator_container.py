"""The operator image, run the way the chart's Deployment says, against the Kubernetes emulator
and moto on loopback.

The Deployment's container (args, env, ports, securityContext, the /tmp emptyDir) comes from
`helm template` and becomes podman flags (tests/support/containers.py). What the cluster would
add is added here: the API server's address (a kubeconfig instead of the service-account mount)
and AWS credentials (IRSA's part); the two ports are moved to free ones, because the container
shares the host's network.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from chart.helm import NAMESPACE, find, render
from support.aws import BUCKET, REGION, MotoEndpoint
from support.containers import logs, run_flags, start, stop_and_remove
from support.kube import JOBS, QUEUES, running_kube
from support.queues import backend_message, make_queues
from support.webhooks import WebhookRecorder

KUBECONFIG = "/var/run/waveflow/kubeconfig"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), response.read().decode()


def deployment_pod() -> dict[str, Any]:
    pod: dict[str, Any] = find(render(), "Deployment", "-operator")["spec"]["template"]["spec"]
    return pod


def on_free_ports(pod: dict[str, Any], health: int, metrics: int) -> dict[str, Any]:
    """The pod with the liveness and metrics ports moved (the container shares our network)."""
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    moved = [arg.replace(f":{ports['health']}/", f":{health}/")
             .replace(f"--metrics-port={ports['metrics']}", f"--metrics-port={metrics}")
             for arg in container["args"]]
    assert moved != container["args"], container["args"]
    return {**pod, "containers": [{**container, "args": moved}]}


async def until(check: Any, what: str, name: str, engine: Any, timeout: float = 90) -> Any:
    """Poll ``check`` (sync, run in a thread) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with contextlib.suppress(OSError):
            result = await asyncio.to_thread(check)
            if result:
                return result
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what} never happened; operator logs:\n{logs(engine, name)[-4000:]}")
        await asyncio.sleep(0.25)


@pytest.mark.slow
async def test_the_operator_image_serves_probes_and_turns_a_message_into_a_job(
        engine: Any, operator_image: str, aws: MotoEndpoint, bucket: str,
        webhooks: WebhookRecorder, tmp_path: Path) -> None:
    health, metrics = free_port(), free_port()
    pod = on_free_ports(deployment_pod(), health, metrics)
    run = run_flags(pod, operator_image, tmp_path)
    credentials = {k: v for k, v in aws.env().items()
                   if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    for key, value in credentials.items():
        run.flags += ["--env", f"{key}={value}"]
    queues = make_queues(aws)
    async with running_kube(tmp_path) as kube:
        kube.kubeconfig.chmod(0o644)
        run.flags += ["--volume", f"{kube.kubeconfig}:{KUBECONFIG}:ro",
                      "--env", f"KUBECONFIG={KUBECONFIG}"]
        name = await asyncio.to_thread(start, engine, run, operator_image)
        try:
            status, _ = await until(lambda: fetch(f"http://127.0.0.1:{health}/healthz"),
                                    "/healthz answering", name, engine)
            assert status == 200
            status, scraped = await asyncio.to_thread(
                fetch, f"http://127.0.0.1:{metrics}/metrics")
            assert status == 200 and "waveflow_build_info{" in scraped

            await kube.create(QUEUES, {
                "apiVersion": "waveflow.io/v1alpha1", "kind": "WaveflowQueue",
                "metadata": {"name": "audio", "namespace": NAMESPACE},
                "spec": {"queueUrl": queues.url, "region": REGION, "endpointUrl": aws.url,
                         "bucket": BUCKET, "uploadPrefixes": ["audio/"],
                         "webhookUrl": webhooks.url, "waitTimeSeconds": 1,
                         "job": {"image": "ghcr.io/waveflow/job:0.1.0"}}})
            await asyncio.to_thread(queues.send, backend_message(
                "generate_hash_and_webhook", "stem-1", filepath="audio/stem-1.wav"))

            jobs = await until(lambda: kube.emulator.stored_all(JOBS, NAMESPACE),
                               "a Job for the message", name, engine)
            (job,) = jobs
            (container,) = job["spec"]["template"]["spec"]["containers"]
            assert container["image"] == "ghcr.io/waveflow/job:0.1.0"
            assert job["metadata"]["labels"]["waveflow.io/queue"] == "audio"
            assert job["metadata"]["labels"]["waveflow.io/stem-id"] == "stem-1"
            status = await until(
                lambda: (kube.emulator.stored(QUEUES, NAMESPACE, "audio") or {}).get("status"),
                "the queue's status written", name, engine, timeout=30)
            assert status.get("conditions"), status
        finally:
            exit_code = await asyncio.to_thread(stop_and_remove, engine, name)
    assert exit_code == 0, "the operator did not stop cleanly on SIGTERM"
