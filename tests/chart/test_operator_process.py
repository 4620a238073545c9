"""The operator started exactly as the chart's Deployment starts it, and the `helm test` hook.

A real `waveflow operator` process runs with the Deployment's arguments and environment against
the Kubernetes API emulator (tests/support/kube.py) on loopback; ports are moved to free ones
and the liveness host to 127.0.0.1. Then the helm-test hook's own script checks the liveness
endpoint, `/metrics` is scraped, and every API call the process made must be one the chart's
Role grants.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from chart.helm import find, operator_grants
from support.kube import running_kube
from support.loopback import listening_address
from support.waiting import eventually

Manifests = list[dict[str, Any]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def waveflow_script() -> str:
    found = shutil.which("waveflow") or str(Path(sysconfig.get_path("scripts")) / "waveflow")
    assert Path(found).exists(), "the waveflow console script is not installed"
    return found


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


async def wait_until_answering(url: str, process: asyncio.subprocess.Process) -> None:
    """Until `url` answers; fails when the process exits first."""

    def answers() -> bool:
        with contextlib.suppress(OSError):
            fetch(url)
            return True
        return False

    await eventually(lambda: process.returncode is not None or answers(), 60, f"{url} to answer",
                     interval=0.25)
    if process.returncode is not None:
        output = await process.stdout.read() if process.stdout else b""
        pytest.fail(f"the operator exited with {process.returncode}:\n{output.decode()}")


@pytest.mark.slow
async def test_the_operator_runs_with_the_deployments_arguments_and_passes_the_helm_test(
    default_manifests: Manifests, tmp_path: Path
) -> None:
    (container,) = find(default_manifests, "Deployment", "-operator")["spec"]["template"]["spec"][
        "containers"
    ]
    health, metrics = free_port(), free_port()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = [
        arg.replace(f"http://0.0.0.0:{ports['health']}/", f"http://127.0.0.1:{health}/")
        .replace(f"--metrics-port={ports['metrics']}", f"--metrics-port={metrics}")
        .replace("--listen-address=0.0.0.0", "--listen-address=127.0.0.1")
        for arg in container["args"]
    ]
    assert f"--metrics-port={metrics}" in args and f"127.0.0.1:{health}" in " ".join(args)
    assert "--listen-address=127.0.0.1" in args  # the chart passes operator.listenAddress
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env |= {"TMPDIR": str(tmp_path), "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    async with running_kube(tmp_path) as kube:
        env["KUBECONFIG"] = str(kube.kubeconfig)
        process = await asyncio.create_subprocess_exec(
            waveflow_script(), "operator", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            liveness = f"http://127.0.0.1:{health}/healthz"
            await wait_until_answering(liveness, process)
            (hook,) = find(default_manifests, "Job", "-test-operator-alive")["spec"]["template"][
                "spec"
            ]["containers"]
            assert hook["command"][0] == "python"
            command = [sys.executable, *hook["command"][1:-1], liveness]
            result = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, timeout=30
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == f"{liveness} 200"
            scraped = await asyncio.to_thread(fetch, f"http://127.0.0.1:{metrics}/metrics")
            assert "waveflow_build_info{" in scraped
            assert listening_address(metrics) == "127.0.0.1"  # --listen-address is obeyed
        finally:
            if process.returncode is None:
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        calls = kube.emulator.api_calls()
    assert calls, "the operator made no API call"
    assert calls <= operator_grants(default_manifests), calls - operator_grants(default_manifests)
