"""Faults between ``waveflow local``, its jobs, S3, SQS and the backend — and what must still
hold afterwards (``Rig.verdict``): every message settled exactly once, no two jobs at once for
one MessageId, no duplicate or contradictory completion per stem, no original deleted, scratch
empty, the in-flight limit kept.

The runner is the real CLI in its own process and every job the real ``waveflow-job`` (through
``tests/support/recordingjob.py``); the faults come from the proxies in front of moto and the
reference backend (``tests/support/faultproxy.py``), never from patched libraries.
"""

from __future__ import annotations

import time

import pytest

from reliability.audio import corrupt, wav
from reliability.checks import assert_holds, failure_of, hook, reasons, s3_object, sqs, status
from support.faultproxy import Rule
from support.rig import Rig
from support.waiting import wait_for

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- S3


def test_s3_5xx_bursts_resets_mid_download_and_slow_bodies_are_ridden_out(rig: Rig) -> None:
    uploaded = {f"audio/s{i}.wav": f"stem-s{i}" for i in range(3)}
    # A burst of 503s longer than one call's retries, a body cut in half, a body dripped.
    rig.aws_proxy.add(Rule(s3_object("audio/s0.wav", "GET"), "answer", status=503,
                           code="SlowDown", times=4))
    rig.aws_proxy.add(Rule(s3_object("audio/s1.wav", "GET"), "cut", times=1))
    rig.aws_proxy.add(Rule(s3_object("audio/s2.wav", "GET"), "slow", seconds=0.02, times=2))
    rig.start_runner()
    for n, (key, stem) in enumerate(uploaded.items()):
        rig.upload(key, wav(n, seconds=0.5), stem)
    rig.wait_settled()
    figures = assert_holds(rig, uploaded)
    assert figures["outcomes"] == {"completed": 6}
    assert {status(rig, s) for s in uploaded.values()} == {"completed"}
    assert rig.aws_proxy.fired == {"s3:answer": 4, "s3:cut": 1, "s3:slow": 2}


def test_s3_access_denied_and_a_missing_object_end_truthfully(rig: Rig) -> None:
    """Access denied is not the file's fault: retried, then dead-lettered as retryable; a
    missing object is final: rejected, the backend told once, no dead letter."""
    rig.aws_proxy.add(Rule(s3_object("audio/denied.wav"), "answer", status=403,
                           code="AccessDenied", times=None))
    rig.start_runner()
    rig.upload("audio/denied.wav", wav(1), "stem-denied")
    rig.upload("audio/gone.wav", None, "stem-gone")  # announced, never PUT
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/denied.wav": "stem-denied"})
    assert figures["outcomes"] == {"dead-lettered": 1, "rejected": 1}
    denied = failure_of(rig, "stem-denied")
    assert (denied["error_code"], denied["retryable"]) == ("JOB_BACKOFF_LIMIT", True)
    gone = failure_of(rig, "stem-gone")
    assert (gone["error_code"], gone["retryable"]) == ("OBJECT_NOT_FOUND", False)
    assert reasons(rig) == ["JOB_BACKOFF_LIMIT"]


def test_a_missing_bucket_is_dead_lettered_as_retryable_never_reported_as_a_missing_file(
        rig: Rig) -> None:
    rig.start_runner(S3_BUCKET_NAME="no-such-bucket")
    rig.upload("audio/b.wav", wav(2), "stem-b")
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/b.wav": "stem-b"})
    assert figures["outcomes"] == {"dead-lettered": 1}
    failure = failure_of(rig, "stem-b")
    assert failure["retryable"] is True and failure["error_code"] == "JOB_BACKOFF_LIMIT"


# --------------------------------------------------------------------------- webhooks


def test_webhook_hangs_429s_and_a_400_are_retried_and_acted_on_once(rig: Rig) -> None:
    uploaded = {f"audio/{s}.wav": f"stem-{s}" for s in ("hang", "busy", "invalid")}
    # Hangs past the job's 1 s timeout, then reaches the backend anyway: the retry must be a
    # repeat the backend drops, never a second analysis.
    rig.hooks.add(Rule(hook("hash-check", "stem-hang"), "hang", seconds=1.5, times=2))
    rig.hooks.add(Rule(hook("completion", "stem-busy"), "answer", status=429,
                       code="Too Many Requests", headers={"Retry-After": "1"}, times=2))
    rig.hooks.add(Rule(hook("hash-check", "stem-invalid"), "answer", status=400,
                       code="Bad Request", times=1))
    rig.start_runner()
    for n, (key, stem) in enumerate(uploaded.items()):
        rig.upload(key, wav(10 + n), stem)
    rig.wait_settled()
    figures = assert_holds(rig, uploaded)
    assert figures["outcomes"] == {"completed": 6}
    assert {status(rig, s) for s in uploaded.values()} == {"completed"}
    analyses = [m for m in rig.backend.sent if m["task"].endswith("process_audio_analysis")]
    assert sorted(m["kwargs"]["stemId"] for m in analyses) == sorted(uploaded.values())
    assert rig.hooks.fired == {"webhook:hang": 2, "webhook:answer": 3}


def test_a_5xx_storm_longer_than_the_retry_budget_is_dead_lettered_with_one_failure(
        rig: Rig) -> None:
    rig.hooks.add(Rule(hook("hash-check", "stem-storm"), "answer", status=503,
                       code="Service Unavailable", times=None))
    rig.start_runner()
    rig.upload("audio/storm.wav", wav(20), "stem-storm")
    rig.upload("audio/calm.wav", wav(21), "stem-calm")
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/storm.wav": "stem-storm", "audio/calm.wav": "stem-calm"})
    assert figures["outcomes"] == {"dead-lettered": 1, "completed": 2}
    failure = failure_of(rig, "stem-storm")
    assert (failure["error_code"], failure["retryable"]) == ("JOB_BACKOFF_LIMIT", True)
    assert status(rig, "stem-calm") == "completed"
    assert reasons(rig) == ["JOB_BACKOFF_LIMIT"]


# --------------------------------------------------------------------------- SQS


def test_sqs_throttling_on_every_call_is_backed_off_and_nothing_is_lost(rig: Rig) -> None:
    for operation in ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch",
                      "SendMessage", "GetQueueAttributes"):
        rig.aws_proxy.add(Rule(sqs(operation), "answer", status=400,
                               code="ThrottlingException", times=6))
    uploaded = {f"audio/t{i}.wav": f"stem-t{i}" for i in range(3)}
    rig.start_runner()
    for n, (key, stem) in enumerate(uploaded.items()):
        rig.upload(key, wav(30 + n), stem)
    rig.wait_settled()
    figures = assert_holds(rig, uploaded)
    assert figures["outcomes"] == {"completed": 6}
    assert rig.aws_proxy.fired["sqs:answer"] >= 18


def test_a_receipt_that_expires_while_its_job_runs_is_still_settled_once(rig: Rig) -> None:
    """Heartbeats fail for longer than the visibility timeout: the message reappears and is
    received again while its job runs. The runner must not start a second job, and the one
    job's outcome settles the message with the newest receipt."""
    uploaded = {"audio/e.wav": "stem-e"}
    rig.start_runner()
    rig.upload("audio/e.wav", wav(40), "stem-e")
    hash_id = wait_for(lambda: rig.next_id("hash", "stem-e"), 10, message="the hash message")
    go = rig.hold_job(hash_id)
    throttle = rig.aws_proxy.add(Rule(sqs("ChangeMessageVisibility",
                                          "ChangeMessageVisibilityBatch"), "answer",
                                      status=400, code="ThrottlingException", times=None))
    wait_for(lambda: rig.aws_proxy.ledger.receives.most_common(1)
             and rig.aws_proxy.ledger.receives.most_common(1)[0][1] >= 2, 30,
             message="the message received again")
    throttle.times = 0  # the heartbeat works again
    go.touch()
    rig.wait_settled()
    figures = assert_holds(rig, uploaded)
    assert figures["outcomes"] == {"completed": 2}
    assert sum(1 for j in rig.monitor.history if j.body_id == hash_id) == 1  # type: ignore


def test_a_missing_dead_letter_queue_keeps_the_message_until_it_can_be_dead_lettered(
        rig: Rig) -> None:
    rig.hooks.add(Rule(hook("hash-check", "stem-d"), "answer", status=503, times=None))
    sqs_client = rig.queues.client()
    sqs_client.delete_queue(QueueUrl=rig.queues.dlq_url)
    rig.start_runner()
    rig.upload("audio/d.wav", wav(50), "stem-d")
    wait_for(lambda: any(w["body"]["status"] == "FAILURE"
                         for w in rig.accepted_webhooks("completion")), 60,
             message="the runner's FAILURE")
    time.sleep(3)  # several settle attempts: the message must still be held, not deleted
    assert not any(rig.aws_proxy.ledger.deletes.values())
    sqs_client.create_queue(QueueName=rig.queues.dlq_url.rsplit("/", 1)[-1])
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/d.wav": "stem-d"})
    assert figures["outcomes"] == {"dead-lettered": 1}
    assert reasons(rig) == ["JOB_BACKOFF_LIMIT"]


# --------------------------------------------------------------------------- rejections


def test_corrupt_audio_is_rejected_once_and_the_backend_told_once(rig: Rig) -> None:
    rig.start_runner()
    rig.upload("audio/bad.wav", corrupt(60), "stem-bad")
    rig.wait_settled()
    figures = assert_holds(rig, {"audio/bad.wav": "stem-bad"})
    assert figures["outcomes"] == {"completed": 1, "rejected": 1}
    failure = failure_of(rig, "stem-bad")
    assert (failure["error_code"], failure["retryable"]) == ("AUDIO_CORRUPT", False)
