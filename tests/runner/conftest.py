"""Fixtures for the runner's tests: queues, the reference backend and a scratch root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.aws import REGION, MotoEndpoint
from support.chromium import Page, chromium_path, headless_chromium
from support.queues import make_queues
from support.runner import SECRET, Stack
from waveflow_dev.backend import DevBackend


@pytest.fixture
def stack(aws: MotoEndpoint, bucket: str, tmp_path: Path) -> Iterator[Stack]:
    """Queues with a dead-letter queue, the bucket and a signed reference backend."""
    queues = make_queues(aws)
    backend = DevBackend(queues.url, secret=SECRET, region=REGION, endpoint_url=aws.url).start()
    try:
        yield Stack(aws, queues, bucket, backend, tmp_path / "scratch")
    finally:
        backend.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """A real headless Chromium's page (Debian's chromium; `make test` installs it)."""
    executable = chromium_path()
    if executable is None:
        pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
    with headless_chromium(tmp_path_factory.mktemp("chromium") / "profile", executable) as page:
        yield page
