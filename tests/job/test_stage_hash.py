"""generate_hash_and_webhook on moto S3 and a recording backend."""

from __future__ import annotations

import hashlib
import socket

import pytest

from support.jobrun import (
    KWARGS,
    TIMESTAMP,
    JobWorld,
    flat_message,
    json_message,
    kombu_message,
    wav_bytes,
)
from waveflow_job.contract import WebhookEvent, delivery_id

TASK = "generate_hash_and_webhook"
KEY = "audio/사용자 업로드/첫 번째 곡 #1 + 믹스 & 마스터.wav"


def hash_kwargs(key: str = KEY) -> dict[str, str]:
    return {**KWARGS, "filepath": key, "timestamp": TIMESTAMP, "original_filename": "곡 1.wav"}


def test_hash_of_a_korean_key_with_spaces_is_posted_to_hash_check(world: JobWorld) -> None:
    data = wav_bytes()
    world.put(KEY, data)
    message = json_message(TASK, **hash_kwargs())

    assert world.run(message) == 0

    [request] = world.webhooks.received()
    assert request.path == "/webhook/hash-check"
    assert request.json() == {
        "stemId": "stem-789", "userId": "user123", "trackId": "track-456", "filepath": KEY,
        "audio_hash": hashlib.sha256(data).hexdigest(), "timestamp": TIMESTAMP,
        "original_filename": "곡 1.wav", "status": "hash_generated",
    }
    assert request.header("Content-Type") == "application/json"
    assert request.header("User-Agent", ).startswith("waveflow/")
    assert request.header("X-WaveFlow-Event") == "hash-check"
    assert request.header("X-WaveFlow-Delivery") == delivery_id(
        WebhookEvent.HASH_CHECK, "hash-stem-789-1732600000000", message)
    assert request.header("X-WaveFlow-Signature") is None
    assert world.object_keys() == [KEY]
    assert world.read(KEY) == data
    assert world.scratch_entries() == []
    summary = world.summary()
    assert summary["outcome"] == "succeeded"
    assert summary["task"] == TASK
    assert summary["bytes"] == len(data)
    assert summary["error_code"] is None


@pytest.mark.parametrize("envelope", [flat_message, kombu_message])
def test_flat_and_kombu_envelopes_produce_the_same_hash_check(world: JobWorld,
                                                              envelope: object) -> None:
    data = b"RIFF not really audio, the hash stage does not care"
    world.put("audio/x.wav", data)
    message = envelope(TASK, **hash_kwargs("audio/x.wav"))  # type: ignore[operator]

    assert world.run(message) == 0

    [body] = world.webhooks.bodies("/hash-check")
    assert body["audio_hash"] == hashlib.sha256(data).hexdigest()
    assert body["filepath"] == "audio/x.wav"
    assert body["stemId"] == "stem-789"


def test_missing_optional_fields_fall_back_to_the_file_name_and_now(world: JobWorld) -> None:
    world.put("audio/take 2.wav", b"abc")
    assert world.run(json_message(TASK, **KWARGS, filepath="audio/take 2.wav")) == 0

    [body] = world.webhooks.bodies("/hash-check")
    assert body["original_filename"] == "take 2.wav"
    assert body["timestamp"].endswith("Z")
    assert body["audio_hash"] == hashlib.sha256(b"abc").hexdigest()


def test_missing_object_is_rejected_with_a_failure_completion(world: JobWorld) -> None:
    message = json_message(TASK, **hash_kwargs("audio/nowhere.wav"))

    assert world.run(message) == 3

    [request] = world.webhooks.received()
    assert request.path == "/webhook/completion"
    body = request.json()
    assert body == {
        "stemId": "stem-789", "status": "FAILURE", "timestamp": body["timestamp"],
        "result": {"error_code": "OBJECT_NOT_FOUND",
                   "error_message": "s3://waveflow-test/audio/nowhere.wav does not exist",
                   "task": TASK, "retryable": False},
    }
    assert request.header("X-WaveFlow-Event") == "completion"
    assert request.header("X-WaveFlow-Delivery") == delivery_id(
        WebhookEvent.COMPLETION, "hash-stem-789-1732600000000", message)
    assert world.summary()["outcome"] == "rejected"
    assert world.summary()["error_code"] == "OBJECT_NOT_FOUND"
    assert world.scratch_entries() == []


def test_object_over_the_size_limit_is_rejected_as_too_large(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAVEFLOW_MAX_FILE_BYTES", "10")
    world.put("audio/big.wav", b"x" * 11)

    assert world.run(json_message(TASK, **hash_kwargs("audio/big.wav"))) == 3

    [body] = world.webhooks.bodies("/completion")
    assert body["result"]["error_code"] == "FILE_TOO_LARGE"
    assert body["result"]["error_message"] == (
        "audio/big.wav is 11 bytes; the limit is 10 bytes")
    assert world.webhooks.received("/hash-check") == []
    assert world.object_keys() == ["audio/big.wav"]


def test_unreachable_s3_exits_for_a_retry_without_any_webhook(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")

    assert world.run(json_message(TASK, **hash_kwargs())) == 1

    assert world.webhooks.received() == []
    summary = world.summary()
    assert (summary["outcome"], summary["error_code"]) == ("failed", "STORAGE_UNAVAILABLE")
    assert world.scratch_entries() == []


def test_hash_check_answered_with_503_then_201_is_delivered_once_per_delivery_id(
        world: JobWorld) -> None:
    world.put(KEY, b"payload")
    world.webhooks.fail_next(2, 503)

    assert world.run(json_message(TASK, **hash_kwargs())) == 0

    attempts = world.webhooks.received("/hash-check")
    assert len(attempts) == 3
    assert len({r.header("X-WaveFlow-Delivery") for r in attempts}) == 1
    assert len({r.body for r in attempts}) == 1
    assert world.webhooks.received("/completion") == []


def test_backend_down_past_the_budget_exits_for_a_retry_and_sends_no_failure(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAVEFLOW_WEBHOOK_BUDGET_SECONDS", "0.3")
    world.put(KEY, b"payload")
    world.webhooks.fail_next(1000, 502)

    assert world.run(json_message(TASK, **hash_kwargs())) == 1

    assert world.webhooks.received("/completion") == []
    assert len(world.webhooks.received("/hash-check")) >= 1
    assert world.summary()["error_code"] == "WEBHOOK_UNDELIVERED"
    assert world.object_keys() == [KEY]


def test_missing_bucket_is_not_mistaken_for_a_missing_object(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_BUCKET_NAME", "no-such-bucket")

    assert world.run(json_message(TASK, **hash_kwargs())) == 1

    assert world.webhooks.received() == []
    assert world.summary()["error_code"] == "STORAGE_UNAVAILABLE"
