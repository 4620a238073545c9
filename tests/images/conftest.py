"""Both images, built once per session from the real Dockerfiles with images/build.py.

podman runs them (``make test`` installs it, see images/Makefile.mk): the run flags of
tests/support/containers.py are podman's. Rebuilds are cheap: the dependency layers are cached
by the engine and only change with pyproject.toml, and the base image is made once per machine.
"""

from __future__ import annotations

import shutil
from types import ModuleType
from typing import Any

import pytest

from support.containers import image_build

JOB_TAG = "localhost/waveflow/job:test"
OPERATOR_TAG = "localhost/waveflow/operator:test"


@pytest.fixture(scope="session")
def images() -> ModuleType:
    return image_build()


@pytest.fixture(scope="session")
def engine(images: ModuleType) -> Any:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `make tools-podman` (make test installs it)")
    return images.detect_engine("podman")


@pytest.fixture(scope="session")
def base_image(images: ModuleType, engine: Any) -> str:
    base: str = images.ensure_base(engine)
    return base


@pytest.fixture(scope="session")
def job_image(images: ModuleType, engine: Any, base_image: str) -> str:
    images.build(engine, "job", JOB_TAG, base_image)
    return JOB_TAG


@pytest.fixture(scope="session")
def operator_image(images: ModuleType, engine: Any, base_image: str) -> str:
    images.build(engine, "operator", OPERATOR_TAG, base_image)
    return OPERATOR_TAG
