"""What each built image carries: production code and dependencies only, within its size target.

Sizes are bytes above the base (the engine's uncompressed image sizes); `make bench` prints them
with the gzip'd sizes a push sends.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

#: Bytes each image may add above its base (issue 11's targets).
TARGETS = {"job": 200_000_000, "operator": 120_000_000}
#: Importable in each image, and not.
PRESENT = {"job": ["waveflow_job.cli", "waveflow_job.waveform", "numpy", "soundfile", "av",
                   "boto3", "requests"],
           "operator": ["waveflow_operator.cli", "waveflow_operator.k8s.handlers", "kopf",
                        "aiohttp", "prometheus_client", "boto3", "waveflow_job.contract"]}
ABSENT = {"job": ["pip", "setuptools", "waveflow_operator", "waveflow_dev", "kopf", "moto"],
          "operator": ["pip", "setuptools", "waveflow_dev", "numpy", "soundfile", "av",
                       "kubernetes", "moto"]}
PROBE = """
import importlib.util, json, sys
print(json.dumps({name: importlib.util.find_spec(name) is not None for name in sys.argv[1:]}))
"""


def image_bytes(engine: Any, name: str) -> int:
    return int(json.loads(engine.run("image", "inspect", name).stdout)[0]["Size"])


def importable(engine: Any, image: str, names: list[str]) -> dict[str, bool]:
    done = engine.run("run", "--rm", "--network", "none", "--read-only",
                      "--entrypoint", "python", image, "-c", PROBE, *names)
    found: dict[str, bool] = json.loads(done.stdout)
    return found


@pytest.fixture(params=["job", "operator"])
def built(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param, request.getfixturevalue(f"{request.param}_image")


def test_each_image_carries_its_own_code_and_dependencies_only(
        engine: Any, built: tuple[str, str]) -> None:
    kind, image = built
    found = importable(engine, image, PRESENT[kind] + ABSENT[kind])
    assert [name for name in PRESENT[kind] if not found[name]] == []
    assert [name for name in ABSENT[kind] if found[name]] == []


def test_each_image_stays_within_its_size_target(
        engine: Any, base_image: str, built: tuple[str, str]) -> None:
    kind, image = built
    above = image_bytes(engine, image) - image_bytes(engine, base_image)
    assert 0 < above <= TARGETS[kind], f"{kind}: {above / 1e6:.1f} MB above the base"
