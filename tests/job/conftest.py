"""The job tests' one fixture: the surroundings a Job gives ``waveflow-job`` (support.jobrun)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from job import portable_kernel
from support.aws import MotoEndpoint
from support.jobrun import JobWorld, make_world
from support.webhooks import WebhookRecorder


@pytest.fixture
def world(aws: MotoEndpoint, bucket: str, webhooks: WebhookRecorder, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> JobWorld:
    """The moto bucket, the webhook recorder, a fresh scratch dir and summary file."""
    return make_world(aws, bucket, webhooks, tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def portable_kernels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    """The kernel as aarch64 compiles it (job.portable_kernel.VARIANTS), built once a session."""
    return portable_kernel.build(portable_kernel.runnable_variants(),
                                 tmp_path_factory.mktemp("portable-kernel"))
