"""Rendered chart fixtures: defaults, everything on, and the kind development values."""

from __future__ import annotations

from typing import Any

import pytest

from chart.helm import CI_VALUES, render

Manifests = list[dict[str, Any]]


@pytest.fixture(scope="session")
def default_manifests() -> Manifests:
    return render()


@pytest.fixture(scope="session")
def all_on_manifests() -> Manifests:
    return render((CI_VALUES / "all-on-values.yaml",))


@pytest.fixture(scope="session")
def kind_manifests() -> Manifests:
    return render((CI_VALUES / "kind-values.yaml",))
