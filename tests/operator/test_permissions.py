"""PERMISSIONS lists exactly the calls the operator makes: every end-to-end test checks that each
call it saw is listed (tests/operator/conftest.py); this one, collected after them, checks that
each listed verb was used by at least one of them."""

from __future__ import annotations

import pytest

from support.operator_e2e import OBSERVED_CALLS
from waveflow_operator.k8s.permissions import PERMISSIONS


def test_every_listed_permission_was_used_by_the_end_to_end_tests() -> None:
    if not OBSERVED_CALLS:
        pytest.skip("run together with tests/operator/test_operator_e2e.py")
    listed = {(group, resource, verb) for group, resource, verbs in PERMISSIONS
              for verb in verbs}
    assert listed - OBSERVED_CALLS == set()
    assert OBSERVED_CALLS - listed == set()


def test_the_operator_needs_nothing_cluster_wide_and_never_deletes() -> None:
    resources = {resource for _, resource, _ in PERMISSIONS}
    assert not resources & {"namespaces", "customresourcedefinitions", "clusterkopfpeerings"}
    assert all("delete" not in verbs for _, _, verbs in PERMISSIONS)
