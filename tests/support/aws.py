"""moto in server mode on loopback: boto3 in this process and in child processes reach it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import requests
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
BUCKET = "waveflow-test"


@dataclass(frozen=True)
class MotoEndpoint:
    """Where the emulator listens and the environment a process needs to use it."""

    url: str

    def env(self) -> dict[str, str]:
        """AWS variables for boto3: region, dummy credentials and the endpoint."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service: str):  # type: ignore[no-untyped-def]
        """A boto3 client bound to the emulator (independent of os.environ)."""
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def reset(self) -> None:
        """Forget every bucket, object and queue: each test starts from nothing."""
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()


@contextmanager
def running_moto() -> Iterator[MotoEndpoint]:
    """Start moto's threaded server on a free loopback port for the duration of the block."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoEndpoint(f"http://{host}:{port}")
    finally:
        server.stop()


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
    endpoint = MotoEndpoint(f"http://127.0.0.1:{port}")
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


def apply_env(endpoint: MotoEndpoint) -> dict[str, str | None]:
    """Point this process's boto3 at the emulator; returns the previous values to restore."""
    previous = {k: os.environ.get(k) for k in endpoint.env()}
    os.environ.update(endpoint.env())
    return previous
