"""The job tests' one fixture: the surroundings a Job gives ``waveflow-job`` (support.jobrun)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.aws import MotoEndpoint
from support.jobrun import JobWorld, make_world
from support.webhooks import WebhookRecorder


@pytest.fixture
def world(aws: MotoEndpoint, bucket: str, webhooks: WebhookRecorder, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> JobWorld:
    """The moto bucket, the webhook recorder, a fresh scratch dir and summary file."""
    return make_world(aws, bucket, webhooks, tmp_path, monkeypatch)
