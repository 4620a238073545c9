"""Fixtures shared by every test: a moto server, a clean bucket, a webhook recorder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.aws import BUCKET, MotoEndpoint, running_moto
from support.webhooks import WebhookRecorder, running_webhook_recorder

#: No secret the suite sets may appear in anything it logs (see support/secretscan.py).
pytest_plugins = ["support.secretscan"]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoEndpoint]:
    """One moto server for the session; tests reset its state through ``aws``."""
    with running_moto() as endpoint:
        yield endpoint


@pytest.fixture
def aws(moto_server: MotoEndpoint, monkeypatch: pytest.MonkeyPatch) -> MotoEndpoint:
    """A moto server with no state, and this process's environment pointed at it."""
    moto_server.reset()
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    return moto_server


@pytest.fixture
def bucket(aws: MotoEndpoint) -> str:
    """An empty bucket named ``waveflow-test``."""
    aws.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def webhooks() -> Iterator[WebhookRecorder]:
    """A loopback backend that records every webhook and answers 201 unless scripted."""
    with running_webhook_recorder() as recorder:
        yield recorder
