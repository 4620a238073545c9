"""The ledger, alone: every held message's state machine, on a fake clock (milliseconds)."""

from __future__ import annotations

import json

import pytest

from waveflow_job.contract import Outcome, Task
from waveflow_operator.runner.ledger import (
    Duplicate,
    IllegalTransition,
    Launch,
    Ledger,
    Settle,
    State,
    Step,
)
from waveflow_operator.runner.protocol import Delivery, JobResult, job_name_for
from waveflow_operator.runner.spec import SQS_MAX_VISIBILITY_SECONDS

VISIBILITY = 300


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def body(stem: str = "stem-1", task: str = "generate_hash_and_webhook") -> str:
    kwargs = {"userId": "u", "trackId": "t", "stemId": stem, "filepath": "audio/a.wav"}
    if task != "generate_hash_and_webhook":
        kwargs["audio_hash"] = "a" * 64
    return json.dumps({"task": f"app.tasks.{task}", "id": f"x-{stem}", "args": [],
                       "kwargs": kwargs})


def receive(sqs_id: str = "m-1", handle: str = "rh-1", raw: str | None = None,
            count: int = 1) -> Delivery:
    return Delivery(sqs_id, handle, raw if raw is not None else body(), None, count)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(clock: Clock) -> Ledger:
    return Ledger(VISIBILITY, clock=clock)


def launch(ledger: Ledger, sqs_id: str = "m-1") -> str:
    decision = ledger.receive(receive(sqs_id, f"rh-{sqs_id}"))
    assert isinstance(decision, Launch)
    ledger.launched(decision.entry.key)
    return decision.entry.key


def settle_all(ledger: Ledger, key: str) -> list[Step]:
    """Perform every settle step as settle.py would (with the I/O succeeding)."""
    entry = ledger.claim(key)
    assert entry is not None
    steps = []
    while (step := entry.next_step()) is not None:
        steps.append(step)
        if step is Step.NOTIFY:
            ledger.notified(key, "yes")
        elif step is Step.DEAD_LETTER:
            ledger.dead_lettered(key)
        else:
            ledger.deleted(key)
            break
    return steps


def test_a_success_goes_received_launched_finished_deleted(ledger: Ledger) -> None:
    key = launch(ledger)
    assert key == job_name_for(Task.HASH, "m-1")
    entry = ledger.get(key)
    assert entry is not None and entry.state is State.LAUNCHED and ledger.in_flight == 1
    assert ledger.finished(JobResult(key, Outcome.SUCCEEDED)) is entry
    assert entry.state is State.FINISHED
    assert settle_all(ledger, key) == [Step.DELETE]
    assert ledger.get(key) is None and ledger.in_flight == 0
    assert ledger.settled(key) is Outcome.SUCCEEDED


def test_a_rejection_is_deleted_without_notifying(ledger: Ledger) -> None:
    key = launch(ledger)
    ledger.finished(JobResult(key, Outcome.REJECTED, "AUDIO_CORRUPT"))
    assert settle_all(ledger, key) == [Step.DELETE]


def test_a_failure_is_notified_then_dead_lettered_then_deleted(ledger: Ledger) -> None:
    key = launch(ledger)
    ledger.finished(JobResult(key, Outcome.FAILED, "JOB_BACKOFF_LIMIT"))
    assert settle_all(ledger, key) == [Step.NOTIFY, Step.DEAD_LETTER, Step.DELETE]
    assert ledger.settled(key) is Outcome.FAILED


def test_an_invalid_message_never_launches_and_settles_as_a_dead_letter(ledger: Ledger) -> None:
    decision = ledger.receive(receive(raw="not json {"))
    assert isinstance(decision, Settle) and decision.entry.key == "invalid-m-1"
    assert decision.entry.invalid is not None
    assert settle_all(ledger, "invalid-m-1") == [Step.NOTIFY, Step.DEAD_LETTER, Step.DELETE]
    assert ledger.in_flight == 0


def test_an_invalid_messages_dead_letter_leaves_a_note_and_a_redelivery_only_deletes(
        clock: Clock) -> None:
    """The note the settler keeps once the copy is in the dead-letter queue, handed to the next
    run's ledger, makes the redelivery a delete only: never a second dead letter."""
    first = Ledger(VISIBILITY, clock=clock)
    first.receive(receive(raw="not json {"))
    entry = first.claim("invalid-m-1")
    assert entry is not None
    first.notified("invalid-m-1", "no stemId")
    note = first.dead_lettered("invalid-m-1").result
    assert note is not None and note.dead_lettered and note.outcome is Outcome.FAILED
    assert note.job_name == "invalid-m-1" and note.error_code == "MESSAGE_INVALID"
    # The runner dies here, before the delete; the next one recovers the note.
    second = Ledger(VISIBILITY, clock=clock)
    second.recover([], {note.job_name: note})
    decision = second.receive(receive(handle="rh-2", raw="not json {", count=2))
    assert isinstance(decision, Settle) and decision.entry.invalid is not None
    assert settle_all(second, "invalid-m-1") == [Step.DELETE]


def test_an_invalid_message_delivered_again_after_its_delete_is_only_deleted(
        ledger: Ledger) -> None:
    ledger.receive(receive(raw="not json {"))
    settle_all(ledger, "invalid-m-1")
    again = ledger.receive(receive(handle="rh-2", raw="not json {", count=2))
    assert isinstance(again, Duplicate) and again.outcome is Outcome.FAILED


def test_illegal_transitions_raise(ledger: Ledger) -> None:
    key = launch(ledger)
    with pytest.raises(IllegalTransition):
        ledger.launched(key)  # twice
    with pytest.raises(IllegalTransition):
        ledger.deleted(key)  # before its result
    with pytest.raises(IllegalTransition):
        ledger.dead_lettered(key)  # before notifying
    ledger.finished(JobResult(key, Outcome.SUCCEEDED))
    with pytest.raises(IllegalTransition):
        ledger.notified(key, "yes")  # a success is never notified
    with pytest.raises(IllegalTransition):
        ledger.returned(key)  # a finished job's message is settled, not handed back
    with pytest.raises(IllegalTransition):
        ledger.launched("wf-hash-unknown")


def test_settling_happens_once_the_first_result_wins_and_a_duplicate_is_only_deleted(
        ledger: Ledger) -> None:
    key = launch(ledger)
    ledger.finished(JobResult(key, Outcome.FAILED, "JOB_OOM_KILLED"))
    assert ledger.finished(JobResult(key, Outcome.SUCCEEDED)) is None  # reported twice
    entry = ledger.claim(key)
    assert entry is not None and ledger.claim(key) is None  # one attempt at a time
    ledger.notified(key, "yes")
    ledger.dead_lettered(key)
    ledger.deleted(key)
    assert ledger.settled(key) is Outcome.FAILED
    # An at-least-once duplicate of the settled message: only its receipt is deleted.
    again = ledger.receive(receive("m-1", "rh-again"))
    assert isinstance(again, Duplicate) and again.delivery.receipt_handle == "rh-again"
    assert ledger.finished(JobResult(key, Outcome.SUCCEEDED)) is None
    assert ledger.in_flight == 0


def test_a_redelivery_while_held_keeps_one_entry_with_the_newest_receipt(
        ledger: Ledger, clock: Clock) -> None:
    key = launch(ledger)
    clock.now += 400  # a missed heartbeat: SQS handed the message out again
    assert ledger.receive(receive("m-1", "rh-2", count=2)) is None
    entry = ledger.get(key)
    assert entry is not None and entry.delivery is not None
    assert (entry.delivery.receipt_handle, entry.delivery.receive_count) == ("rh-2", 2)
    assert entry.state is State.LAUNCHED and ledger.in_flight == 1
    assert entry.visible_until == clock.now + VISIBILITY


def test_a_result_of_an_earlier_run_waits_for_its_message_then_settles_once(
        ledger: Ledger) -> None:
    key = job_name_for(Task.HASH, "m-1")
    ledger.recover([], {key: JobResult(key, Outcome.FAILED, "JOB_BACKOFF_LIMIT")})
    assert ledger.in_flight == 0  # a kept result takes no slot
    decision = ledger.receive(receive("m-1"))
    assert isinstance(decision, Settle)  # not launched again
    assert settle_all(ledger, key) == [Step.NOTIFY, Step.DEAD_LETTER, Step.DELETE]


def test_a_result_arriving_before_the_redelivery_is_kept_not_lost(ledger: Ledger) -> None:
    key = job_name_for(Task.ANALYSIS, "m-9")
    assert ledger.finished(JobResult(key, Outcome.SUCCEEDED)) is None  # not held: kept
    decision = ledger.receive(receive("m-9", raw=body("s-9", "process_audio_analysis")))
    assert isinstance(decision, Settle) and decision.entry.key == key
    assert settle_all(ledger, key) == [Step.DELETE]


def test_an_orphan_takes_a_slot_until_its_message_is_back_or_its_grace_ends(
        ledger: Ledger, clock: Clock) -> None:
    first, second = job_name_for(Task.HASH, "m-1"), job_name_for(Task.HASH, "m-2")
    ledger.recover([first, second], {})
    assert ledger.in_flight == 2
    decision = ledger.receive(receive("m-1"))
    assert isinstance(decision, Launch) and decision.entry.key == first  # the launcher adopts
    ledger.launched(first)
    assert ledger.in_flight == 2
    clock.now += VISIBILITY + 61  # m-2 never came back: it no longer counts
    assert ledger.in_flight == 1


def test_heartbeats_fall_due_halfway_and_stop_at_sqs_cap(ledger: Ledger, clock: Clock) -> None:
    key = launch(ledger)
    clock.now += VISIBILITY / 2 - 1
    assert ledger.heartbeats_due() == ({}, [])
    clock.now += 1
    due, capped = ledger.heartbeats_due()
    assert due == {key: ("rh-m-1", VISIBILITY)} and capped == []
    ledger.extended(key, VISIBILITY, clock.now)
    assert ledger.heartbeats_due() == ({}, [])  # renewed: due again halfway through
    clock.now += VISIBILITY / 2
    assert key in ledger.heartbeats_due()[0]
    # Near the 12-hour cap the extension shrinks, then stops (warned once).
    entry = ledger.get(key)
    assert entry is not None
    clock.now = entry.received_at + SQS_MAX_VISIBILITY_SECONDS - 100
    assert ledger.heartbeats_due()[0][key][1] == 95
    clock.now = entry.received_at + SQS_MAX_VISIBILITY_SECONDS
    assert ledger.heartbeats_due() == ({}, [key])
    assert ledger.heartbeats_due() == ({}, [])


def test_a_failed_settle_step_is_retried_later_from_where_it_stopped(
        ledger: Ledger, clock: Clock) -> None:
    key = launch(ledger)
    ledger.finished(JobResult(key, Outcome.FAILED, "JOB_BACKOFF_LIMIT"))
    assert ledger.claim(key) is not None
    ledger.notified(key, "yes")
    ledger.settle_failed(key, receipt_stale=False)  # the dead-letter send failed
    assert ledger.retries_due() == []
    clock.now += 2
    assert ledger.retries_due() == [key]
    assert settle_all(ledger, key) == [Step.DEAD_LETTER, Step.DELETE]  # no second FAILURE


def test_a_stale_receipt_lets_go_and_the_redelivery_finishes_the_settling(
        ledger: Ledger) -> None:
    key = launch(ledger)
    ledger.finished(JobResult(key, Outcome.FAILED, "JOB_BACKOFF_LIMIT"))
    assert ledger.claim(key) is not None
    ledger.notified(key, "no")
    ledger.dead_lettered(key)
    ledger.settle_failed(key, receipt_stale=True)  # the delete's receipt was no longer valid
    assert ledger.in_flight == 0
    decision = ledger.receive(receive("m-1", "rh-new", count=2))
    assert isinstance(decision, Settle)
    assert settle_all(ledger, key) == [Step.DELETE]  # neither notified nor dead-lettered again
    assert ledger.settled(key) is Outcome.FAILED


def test_on_stop_every_unsettled_message_is_handed_back(ledger: Ledger) -> None:
    running = launch(ledger, "m-1")
    waiting = ledger.receive(receive("m-2", "rh-m-2"))
    assert isinstance(waiting, Launch)
    finishing = launch(ledger, "m-3")
    ledger.finished(JobResult(finishing, Outcome.SUCCEEDED))
    assert ledger.claim(finishing) is not None  # being settled: left to finish
    back = sorted(e.key for e in ledger.unsettled())
    assert back == sorted([running, waiting.entry.key])
    for key in back:
        assert ledger.returned(key).state is State.RETURNED
    assert ledger.in_flight == 1
    # A returned message comes back as new work: launched (and adopted) again, not lost.
    assert isinstance(ledger.receive(receive("m-1", "rh-later")), Launch)
