"""Load: a seeded mix of exactly 150 messages (``make soak``: 1,000) through ``waveflow local``
with faults injected at seeded-random points on S3, SQS and the webhooks, and the runner
SIGKILLed (once here, ``WAVEFLOW_LOAD_KILLS``; three times in ``make soak``) and restarted.

Invariants (``Rig.verdict``): sent = completed + rejected + dead-lettered; nothing lost, nothing
settled twice; no contradictory completion per stem; no original deleted; scratch empty; never
more jobs at once than the limit (across the restarts too), never two for one MessageId. The
figures are printed (``-s``) and written to ``load-report.json`` in the test's directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reliability.load import LoadRun, LoadSettings
from support.aws import MotoEndpoint
from support.rig import running_rig

pytestmark = pytest.mark.slow
#: The size ``make soak`` asks for; the time allowed grows with it.
SIZE = int(os.environ.get("WAVEFLOW_LOAD_MESSAGES", "150"))


@pytest.mark.timeout(600 + 3 * SIZE)
def test_a_seeded_mix_under_random_faults_loses_and_duplicates_nothing(
        aws: MotoEndpoint, tmp_path: Path) -> None:
    settings = LoadSettings.from_env(messages=SIZE, kills=1)
    with running_rig(aws, tmp_path, max_in_flight=4) as rig:
        load = LoadRun(rig, settings)
        verdict = load.run()
        report = load.report(verdict)
    (tmp_path / "load-report.json").write_text(report)
    print(f"\nload report:\n{report}")
    assert load.errors == []
    assert verdict.problems == [], "\n".join(verdict.problems)
    assert verdict.lost == [] and verdict.duplicated == []
    assert sum(verdict.outcomes.values()) == verdict.sent == settings.messages
    assert verdict.peak_jobs <= rig.max_in_flight
    assert sum(load.faults.injected.values()) > 0  # the faults really happened
    assert load.faults.injected["runner SIGKILL"] == settings.kills
