"""The runner's settling notes (operator/waveflow_operator/local/notes.py) through a real
``waveflow local`` killed mid-settlement: a failed job is never run again once its FAILURE went
out (a rerun that succeeded would contradict it), and its dead letter is still sent once; an
invalid message (never a job) is dead-lettered once too, whatever step the runner died at."""

from __future__ import annotations

import pytest

from reliability.audio import wav
from reliability.checks import assert_holds, failure_of, hook, reasons
from reliability.test_local_kills import dead_lettering, deleting, kill_while_held
from support.faultproxy import Rule, body_id
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


#: Valid JSON, a known task, no stemId: no job, no FAILURE to send; dead-lettered as invalid.
INVALID = ('{"task": "app.tasks.generate_hash_and_webhook", "id": "poison-1", "args": [], '
           '"kwargs": {"userId": "u", "filepath": "audio/p.wav"}}')


def _dead_letters_of(rig: Rig, body: str) -> list[str]:
    return [d["MessageAttributes"]["WaveflowReason"]["StringValue"]
            for d in rig.drain_dead_letters() if d["Body"] == body]


def test_an_invalid_message_killed_between_its_dead_letter_and_its_delete_is_copied_once(
        rig: Rig) -> None:
    held = rig.aws_proxy.add(Rule(deleting(rig, body_id(INVALID)), "hold"))
    rig.start_runner()
    rig.send(INVALID)
    kill_while_held(rig)  # the copy is in the dead-letter queue, the delete never happened
    assert held.fired == 1
    rig.start_runner()
    rig.wait_settled()
    figures = assert_holds(rig, {})  # one dead letter per message, nothing lost
    assert figures["outcomes"] == {"dead-lettered": 1}
    assert _dead_letters_of(rig, INVALID) == ["MESSAGE_INVALID"]
    assert not list(rig.scratch.glob("wfsettle-*")), "the note outlived the delete"


def test_an_invalid_message_killed_before_its_dead_letter_is_copied_once(rig: Rig) -> None:
    held = rig.aws_proxy.add(Rule(dead_lettering(rig), "hold"))
    rig.start_runner()
    rig.send(INVALID)
    kill_while_held(rig)  # the copy was dropped with the runner: the redelivery sends it
    assert held.fired == 1
    rig.start_runner()
    rig.wait_settled()
    figures = assert_holds(rig, {})
    assert figures["outcomes"] == {"dead-lettered": 1}
    assert _dead_letters_of(rig, INVALID) == ["MESSAGE_INVALID"]
