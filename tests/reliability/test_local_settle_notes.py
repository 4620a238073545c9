"""The runner's settling notes (operator/waveflow_operator/local/notes.py) through a real
``waveflow local`` killed mid-settlement: a failed job is never run again once its FAILURE went
out (a rerun that succeeded would contradict it), and its dead letter is still sent once."""

from __future__ import annotations

import pytest

from reliability.audio import wav
from reliability.checks import assert_holds, failure_of, hook, reasons
from support.faultproxy import Rule
from support.rig import Rig

pytestmark = pytest.mark.slow


def test_a_failure_told_before_a_sigkill_is_not_followed_by_a_rerun_of_its_job(
        rig: Rig) -> None:
    rig.hooks.add(Rule(hook("hash-check", "stem-m"), "answer", status=503, times=None))
    parked = rig.aws_proxy.add(Rule(
        lambda r: r.service == "sqs" and r.operation == "SendMessage"
        and r.target == rig.queues.dlq_url, "hold"))
    rig.start_runner()
    rig.upload("audio/m.wav", wav(77), "stem-m")
    rig.aws_proxy.wait_held(60)
    rig.kill_runner()
    rig.aws_proxy.release(forward=False)
    assert failure_of(rig, "stem-m")["retryable"] is True
    assert rig.monitor is not None
    runs = len(rig.monitor.history)
    rig.hooks.clear()  # a rerun would now succeed: the backend would hear SUCCESS after FAILURE
    rig.start_runner()
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/m.wav": "stem-m"})
    assert figures["outcomes"] == {"dead-lettered": 1}
    assert parked.fired == 1
    assert reasons(rig) == ["JOB_BACKOFF_LIMIT"]
    assert len(rig.monitor.history) == runs, "the job ran again after its FAILURE"
