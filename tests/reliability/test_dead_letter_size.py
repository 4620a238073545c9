"""A failed message near the dead-letter queue's size limit is dead-lettered once, whole.

SQS counts message attributes toward MaximumMessageSize; moto counts only the body, so the
fault proxy in front of it refuses a DLQ SendMessage over the limit as SQS words it (a real
HTTP peer, as SQS would answer). The runner must shorten or drop what is ours, never the body,
or the copy would be refused forever and settling would never end.
"""

from __future__ import annotations

import json

import pytest

from reliability.audio import wav
from reliability.checks import assert_holds, hook
from support.faultproxy import Request, Rule, body_id
from support.queues import backend_message
from support.rig import BUCKET, Rig
from waveflow_operator.runner.deadletter import message_size

pytestmark = pytest.mark.slow

LIMIT = 262_144


def too_large_for_the_dlq(rig: Rig):  # type: ignore[no-untyped-def]
    """A DLQ SendMessage whose body and attributes together pass LIMIT (SQS's counting)."""
    def match(request: Request) -> bool:
        if request.service != "sqs" or request.operation != "SendMessage" \
                or request.target != rig.queues.dlq_url:
            return False
        sent = request.json()
        return message_size(sent.get("MessageBody", ""), sent.get("MessageAttributes", {})) \
            > LIMIT
    return match


def near_the_limit(key: str, stem: str, *, room: int) -> str:
    """A valid hash message of exactly ``LIMIT - room`` bytes (an unknown kwarg pads it)."""
    document = backend_message("generate_hash_and_webhook", stem, filepath=key, stageNotes="")
    pad = LIMIT - room - len(json.dumps(document).encode())
    document["kwargs"]["stageNotes"] = "n" * pad
    body = json.dumps(document)
    assert len(body.encode()) == LIMIT - room
    return body


def fail_near_the_limit(rig: Rig, *, room: int) -> tuple[str, Rule]:
    refused = rig.aws_proxy.add(Rule(
        too_large_for_the_dlq(rig), "answer", status=400, code="InvalidParameterValue",
        message=f"One or more parameters are invalid. Reason: Message must be shorter than "
                f"{LIMIT} bytes.", times=None))
    rig.aws.client("s3").put_object(Bucket=BUCKET, Key="audio/big.wav", Body=wav(81))
    rig.hooks.add(Rule(hook("hash-check", "stem-big"), "answer", status=503, times=None))
    body = near_the_limit("audio/big.wav", "stem-big", room=room)
    rig.start_runner()
    rig.send(body)
    rig.wait_settled(timeout=60)
    return body, refused


def the_dead_letter(rig: Rig, body: str) -> dict[str, str]:
    [letter] = rig.drain_dead_letters()
    assert letter["Body"] == body, "the dead letter's body is not the original, whole"
    return {name: a["StringValue"] for name, a in letter.get("MessageAttributes", {}).items()}


def test_a_dlq_that_states_its_limit_gets_a_copy_that_fits_at_the_first_try(rig: Rig) -> None:
    rig.aws.client("sqs").set_queue_attributes(
        QueueUrl=rig.queues.dlq_url, Attributes={"MaximumMessageSize": str(LIMIT)})
    body, refused = fail_near_the_limit(rig, room=150)
    attributes = the_dead_letter(rig, body)
    figures = assert_holds(rig, {"audio/big.wav": "stem-big"})
    assert figures["outcomes"] == {"dead-lettered": 1}
    assert refused.fired == 0
    assert attributes["WaveflowReason"] == "JOB_BACKOFF_LIMIT"
    assert attributes["WaveflowSourceMessageId"]
    assert "WaveflowReasonDetail" not in attributes  # it gave way, the body did not
    assert body_id(body) in rig.sent_ids()


def test_a_refusal_as_too_long_teaches_the_runner_the_limit_and_the_next_copy_fits(
        rig: Rig) -> None:
    """moto's DLQ says 1 MiB (as a queue changed since the runner looked might): SQS's own
    refusal names the limit, and the copy is made to fit it, once."""
    body, refused = fail_near_the_limit(rig, room=150)
    attributes = the_dead_letter(rig, body)
    figures = assert_holds(rig, {"audio/big.wav": "stem-big"})
    assert figures["outcomes"] == {"dead-lettered": 1}
    assert refused.fired == 1
    assert attributes["WaveflowReason"] == "JOB_BACKOFF_LIMIT"
    assert attributes["WaveflowSourceMessageId"]
