"""Fixtures for the reliability suite: the rig (``waveflow local`` between fault proxies)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.aws import MotoEndpoint
from support.rig import Rig, running_rig


@pytest.fixture
def rig(aws: MotoEndpoint, tmp_path: Path) -> Iterator[Rig]:
    """A fresh world; the runner is started by the test (it may be killed and restarted)."""
    with running_rig(aws, tmp_path) as world:
        yield world
