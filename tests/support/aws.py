"""moto in server mode on loopback (waveflow_dev.emulator), or in a process of its own."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from support import secrets
from waveflow_dev.emulator import REGION, Emulator, running_emulator

__all__ = ["BUCKET", "REGION", "MotoEndpoint", "moto_process", "running_moto"]

BUCKET = "waveflow-test"
#: The tests' name for the emulator the demo uses too (waveflow_dev.emulator).
MotoEndpoint = Emulator


@contextmanager
def running_moto() -> Iterator[MotoEndpoint]:
    """The emulator, with the suite's sentinel credentials: the secret scan
    (support/secretscan.py) looks for them in everything the suite logs."""
    with running_emulator(credentials=secrets.aws_env()) as emulator:
        yield emulator


@contextmanager
def moto_process() -> Iterator[MotoEndpoint]:
    """moto in a process of its own, for benchmarks: in ours it would compete for the GIL with
    the code being measured, and the benchmark would measure moto."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                               "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    endpoint = MotoEndpoint(f"http://127.0.0.1:{port}", secrets.aws_env())
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{endpoint.url}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)
