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

from chart.helm import find
from support.kube import running_kube
from support.loopback import listening_address

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


async def wait_for(url: str, process: asyncio.subprocess.Process) -> None:
    """Until `url` answers; fails when the process exits first or after 120 tries."""
    for _ in range(120):
        if process.returncode is not None:
            output = await process.stdout.read() if process.stdout else b""
            pytest.fail(f"the operator exited with {process.returncode}:\n{output.decode()}")
        with contextlib.suppress(OSError):
            await asyncio.to_thread(fetch, url)
            return
        await asyncio.sleep(0.25)
    pytest.fail(f"{url} never answered")


def granted(manifests: Manifests) -> set[tuple[str, str, str]]:
    role = find(manifests, "Role", "-operator")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


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
            await wait_for(liveness, process)
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
    assert calls <= granted(default_manifests), calls - granted(default_manifests)
