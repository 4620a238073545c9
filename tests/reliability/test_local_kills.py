"""SIGKILL of ``waveflow local`` at every step of settling, then a restart: each message must
still be settled exactly once, with one truthful answer to the backend per stem.

Each step is reached deterministically, never by timing: a job waits on a gate file (started),
a finished job stays alive until released (ended, not yet seen by the runner), or the fault
proxy parks the runner's next SQS call (after the FAILURE webhook: the dead letter; after
the dead letter: the delete; after a success: the delete). The runner is killed while it waits,
the parked call is dropped, and a new runner takes over.
"""

from __future__ import annotations

import pytest

from reliability.audio import wav
from reliability.checks import assert_holds, failure_of, hook, reasons, status
from support.faultproxy import Request, Rule
from support.rig import Rig
from support.waiting import wait_for

pytestmark = pytest.mark.slow


def deleting(rig: Rig, body_id: str):  # type: ignore[no-untyped-def]
    """A delete of the message whose body id is ``body_id``."""
    ledger = rig.aws_proxy.ledger

    def match(request: Request) -> bool:
        if request.service != "sqs" or not request.operation.startswith("DeleteMessage"):
            return False
        sent = request.json()
        handles = [e.get("ReceiptHandle") for e in sent.get("Entries", [])] or \
            [sent.get("ReceiptHandle")]
        with ledger.lock:
            return any(ledger.bodies.get(ledger.receipts.get(h or "", "")) == body_id
                       for h in handles)

    return match


def dead_lettering(rig: Rig):  # type: ignore[no-untyped-def]
    return lambda r: r.service == "sqs" and r.operation == "SendMessage" and \
        r.target == rig.queues.dlq_url


def kill_while_held(rig: Rig) -> None:
    """The runner is parked on a call the proxy holds: kill it there, drop the call."""
    rig.aws_proxy.wait_held(60)
    rig.kill_runner()
    rig.aws_proxy.release(forward=False)


def message_id(rig: Rig, prefix: str, stem: str) -> str:
    return str(wait_for(lambda: rig.next_id(prefix, stem), 30, message=f"{prefix} of {stem}"))


def test_sigkill_after_the_failure_webhook_before_the_dead_letter(rig: Rig) -> None:
    rig.hooks.add(Rule(hook("hash-check", "stem-f"), "answer", status=503, times=None))
    parked = rig.aws_proxy.add(Rule(dead_lettering(rig), "hold"))
    rig.start_runner()
    rig.upload("audio/f.wav", wav(72), "stem-f")
    kill_while_held(rig)
    assert failure_of(rig, "stem-f")["retryable"] is True  # told before it died
    assert parked.fired == 1
    rig.start_runner()
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/f.wav": "stem-f"})
    assert figures["outcomes"] == {"dead-lettered": 1}
    assert reasons(rig) == ["JOB_BACKOFF_LIMIT"]


def test_sigkill_after_a_success_before_the_delete(rig: Rig) -> None:
    rig.start_runner()
    rig.upload("audio/k.wav", wav(74), "stem-k")
    analysis_id = message_id(rig, "analysis", "stem-k")
    rig.aws_proxy.add(Rule(deleting(rig, analysis_id), "hold"))
    kill_while_held(rig)
    rig.start_runner()
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/k.wav": "stem-k"})
    assert figures["outcomes"] == {"completed": 2}
    assert status(rig, "stem-k") == "completed"


def test_sigkill_while_a_job_runs_leaves_no_second_job_beside_it(rig: Rig) -> None:
    """The killed runner's job must not outlive it (or must be adopted): never two jobs for
    one message, never more than the limit, across the restart."""
    rig.start_runner()
    rig.upload("audio/r.wav", wav(70), "stem-r")
    hash_id = message_id(rig, "hash", "stem-r")
    go = rig.hold_job(hash_id)
    wait_for(lambda: any(j.body_id == hash_id for j in rig.monitor.live()), 30,  # type: ignore
             message="the job running")
    rig.kill_runner()
    rig.start_runner()
    wait_for(lambda: rig.aws_proxy.ledger.receives.most_common(1)[0][1] >= 2, 30,
             message="the message redelivered")
    go.touch()
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/r.wav": "stem-r"})
    assert figures["outcomes"] == {"completed": 2}


def test_sigkill_after_a_job_ended_before_the_runner_saw_it(rig: Rig) -> None:
    rig.start_runner()
    rig.upload("audio/n.wav", wav(71), "stem-n")
    analysis_id = message_id(rig, "analysis", "stem-n")
    hold = rig.hold_after_job(analysis_id)
    wait_for(lambda: any(r["event"] == "holding" and r["body_id"] == analysis_id
                         for r in rig.monitor.records()), 60,  # type: ignore[union-attr]
             message="the analysis done, its exit not yet seen")
    rig.kill_runner()
    hold.unlink()
    rig.start_runner()
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/n.wav": "stem-n"})
    assert figures["outcomes"] == {"completed": 2}
    assert status(rig, "stem-n") == "completed"


def test_sigkill_before_deleting_a_duplicates_hash_message_sends_no_failure(rig: Rig) -> None:
    """The duplicate is deleted, then its hash message comes back: the answer must stay the
    truthful one (the stem's duplicate was deleted), never a FAILURE."""
    data = wav(75)
    rig.start_runner()
    rig.upload("audio/first.wav", data, "stem-first")
    wait_for(lambda: status(rig, "stem-first") == "completed", 60, message="the analysis")
    rig.upload("audio/copy.wav", data, "stem-copy")
    hash_id = message_id(rig, "hash", "stem-copy")
    rig.aws_proxy.add(Rule(deleting(rig, hash_id), "hold"))
    kill_while_held(rig)
    rig.start_runner()
    rig.wait_settled()
    assert_holds(rig, {"audio/first.wav": "stem-first", "audio/copy.wav": "stem-copy"})
    assert status(rig, "stem-copy") == "duplicate_deleted"


def test_sigkill_after_the_dead_letter_before_the_delete(rig: Rig) -> None:
    """The copy is in the dead-letter queue, the delete never happened: the redelivery is only
    deleted (the runner's note survives it), never run again nor dead-lettered a second time."""
    rig.hooks.add(Rule(hook("hash-check", "stem-d"), "answer", status=503, times=None))
    rig.start_runner()
    rig.upload("audio/d.wav", wav(76), "stem-d")
    hash_id = message_id(rig, "hash", "stem-d")
    rig.aws_proxy.add(Rule(deleting(rig, hash_id), "hold"))
    kill_while_held(rig)
    assert failure_of(rig, "stem-d")["retryable"] is True
    assert rig.monitor is not None
    runs = len(rig.monitor.history)
    rig.start_runner()
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/d.wav": "stem-d"})
    assert figures["outcomes"] == {"dead-lettered": 1}
    assert reasons(rig) == ["JOB_BACKOFF_LIMIT"]
    assert len(rig.monitor.history) == runs, "the redelivered message ran its job again"
