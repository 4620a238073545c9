"""process_duplicate_file: deletes duplicate uploads and nothing else (CONTRACT.md §6)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from support.jobrun import KWARGS, JobWorld, json_message, wav_bytes
from waveflow_job.contract import WebhookEvent, delivery_id, waveform_key
from waveflow_job.s3 import decode_tag_value

TASK = "process_duplicate_file"
KEY = "audio/중복 업로드 #2.wav"
DATA = b"the same bytes the backend already has"
SHA = hashlib.sha256(DATA).hexdigest()


def duplicate(key: str = KEY, audio_hash: str = SHA, stem_id: str = "stem-789") -> str:
    return json_message(TASK, **{**KWARGS, "stemId": stem_id}, filepath=key,
                        audio_hash=audio_hash)


def assert_refused(world: JobWorld, code: str, message: str, key: str = KEY) -> dict[str, Any]:
    """Exit 3, one FAILURE completion with ``code``, the object still there, scratch empty."""
    [request] = world.webhooks.received()
    assert request.path == "/webhook/completion"
    body = request.json()
    assert body == {"stemId": "stem-789", "status": "FAILURE", "timestamp": body["timestamp"],
                    "result": {"error_code": code, "error_message": message, "task": TASK,
                               "retryable": False}}
    assert key in world.object_keys()
    assert world.scratch_entries() == []
    assert (world.summary()["outcome"], world.summary()["error_code"]) == ("rejected", code)
    return body


def test_duplicate_upload_is_deleted_and_reported(world: JobWorld) -> None:
    world.put(KEY, DATA)
    world.put("audio/other.wav", b"another upload")
    message = duplicate()

    assert world.run(message) == 0

    assert world.object_keys() == ["audio/other.wav"]
    [request] = world.webhooks.received()
    assert request.path == "/webhook/completion"
    body = request.json()
    assert body == {"stemId": "stem-789", "status": "SUCCESS", "timestamp": body["timestamp"],
                    "result": {"status": "duplicate_file_deleted", "filepath": KEY,
                               "audio_hash": SHA}}
    assert request.header("X-WaveFlow-Delivery") == delivery_id(
        WebhookEvent.COMPLETION, "duplicate-stem-789-1732600000000", message)
    assert world.scratch_entries() == []
    assert world.summary()["bytes"] == len(DATA)


def test_redelivered_duplicate_message_reports_the_same_completion_again(
        world: JobWorld) -> None:
    world.put(KEY, DATA)
    message = duplicate()

    assert world.run(message) == 0
    assert world.run(message) == 0

    first, second = world.webhooks.received("/completion")
    assert first.header("X-WaveFlow-Delivery") == second.header("X-WaveFlow-Delivery")
    assert first.json()["result"] == second.json()["result"]
    assert world.object_keys() == []


def test_failed_completion_leaves_the_deletion_done_and_a_retry_reports_it(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAVEFLOW_WEBHOOK_BUDGET_SECONDS", "0.2")
    world.put(KEY, DATA)
    world.webhooks.fail_next(1000, 503)

    assert world.run(duplicate()) == 1
    assert world.object_keys() == []

    world.webhooks.clear()
    assert world.run(duplicate()) == 0
    [body] = world.webhooks.bodies("/completion")
    assert body["result"]["status"] == "duplicate_file_deleted"


def test_key_outside_upload_prefixes_is_never_deleted(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPLOAD_PREFIXES", "uploads/, audio/incoming/")
    world.put(KEY, DATA)

    assert world.run(duplicate()) == 3

    assert_refused(world, "KEY_OUTSIDE_PREFIXES",
                   f"{KEY} is not under the upload prefixes (uploads/, audio/incoming/)")


def test_waveform_json_is_never_deleted_even_without_prefixes(world: JobWorld) -> None:
    key = "waveforms/stem-789_waveform_0123456789abcdef.json"
    world.put(key, DATA)

    assert world.run(duplicate(key)) == 3

    assert_refused(world, "KEY_OUTSIDE_PREFIXES",
                   f"{key} is not under the upload prefixes (any key outside waveforms/)", key)


def test_object_whose_hash_differs_from_the_message_is_kept(world: JobWorld) -> None:
    world.put(KEY, b"a different upload under the same key")
    actual = hashlib.sha256(b"a different upload under the same key").hexdigest()

    assert world.run(duplicate()) == 3

    assert_refused(world, "HASH_MISMATCH",
                   f"{KEY} has SHA-256 {actual}, not the message's {SHA}")


def test_uppercase_audio_hash_in_the_message_still_matches(world: JobWorld) -> None:
    world.put(KEY, DATA)

    assert world.run(duplicate(audio_hash=SHA.upper())) == 0

    assert world.object_keys() == []


def test_analysed_original_of_another_stem_is_kept_and_reported(world: JobWorld) -> None:
    world.put(KEY, DATA, tags={"waveflow-analysed": "true", "waveflow-stem-id": "stem-001"})

    assert world.run(duplicate()) == 3

    assert_refused(world, "ANALYSED_ORIGINAL", f"{KEY} is the analysed original of stem stem-001")


def test_own_analysed_original_is_kept_silently(world: JobWorld) -> None:
    world.put(KEY, DATA, tags={"waveflow-analysed": "true", "waveflow-stem-id": "stem-789"})

    assert world.run(duplicate()) == 3

    assert world.webhooks.received() == []
    assert world.object_keys() == [KEY]
    summary = world.summary()
    assert (summary["outcome"], summary["error_code"]) == ("rejected", "ORIGINAL_PROTECTED")


def test_upload_resent_after_analysis_keeps_its_original_without_a_failure(
        world: JobWorld) -> None:
    """The backend's real behaviour (CONTRACT.md §7), end to end through real tags."""
    stem_id = "스템 #7/ü"  # needs encoding to be an S3 tag value
    data = wav_bytes(seconds=0.25)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data, tags={"owner": "user123"})
    analysis = json_message("process_audio_analysis", **{**KWARGS, "stemId": stem_id},
                            filepath=KEY, audio_hash=sha, num_peaks=32)
    assert world.run(analysis) == 0
    world.webhooks.clear()

    assert world.run(duplicate(audio_hash=sha, stem_id=stem_id)) == 3

    assert world.webhooks.received() == []
    assert KEY in world.object_keys()
    assert world.tags(KEY)["owner"] == "user123"
    assert world.summary()["error_code"] == "ORIGINAL_PROTECTED"
    # ... and the same original is refused, loudly, to any other stem.
    assert world.run(duplicate(audio_hash=sha)) == 3
    [body] = world.webhooks.bodies("/completion")
    assert body["result"]["error_code"] == "ANALYSED_ORIGINAL"
    assert body["result"]["error_message"] == f"{KEY} is the analysed original of stem {stem_id}"


def test_original_uploaded_again_after_analysis_is_recognised_by_its_waveform(
        world: JobWorld) -> None:
    """A re-PUT drops the object's tags; the stem's waveform still names this key."""
    data = wav_bytes(seconds=0.25)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    analysis = json_message("process_audio_analysis", **KWARGS, filepath=KEY, audio_hash=sha,
                            num_peaks=16)
    assert world.run(analysis) == 0
    waveform = world.s3.head_object(Bucket=world.bucket, Key=waveform_key("stem-789", sha))
    assert decode_tag_value(waveform["Metadata"]["waveflow-source-key"]) == KEY
    world.put(KEY, data)  # the same bytes uploaded again: S3 forgets the tags
    assert "waveflow-analysed" not in world.tags(KEY)
    world.webhooks.clear()

    assert world.run(duplicate(audio_hash=sha)) == 3

    assert world.webhooks.received() == []
    assert KEY in world.object_keys()
    assert world.tags(KEY)["waveflow-stem-id"] == "stem-789"
    assert world.summary()["error_code"] == "ORIGINAL_PROTECTED"


def test_same_stem_uploading_the_same_bytes_under_a_new_key_gets_the_copy_deleted(
        world: JobWorld) -> None:
    """The stem's waveform was drawn from another key: this one is a true duplicate."""
    data = wav_bytes(seconds=0.25)
    sha = hashlib.sha256(data).hexdigest()
    world.put("audio/first.wav", data)
    analysis = json_message("process_audio_analysis", **KWARGS, filepath="audio/first.wav",
                            audio_hash=sha, num_peaks=16)
    assert world.run(analysis) == 0
    world.put(KEY, data)
    world.webhooks.clear()

    assert world.run(duplicate(audio_hash=sha)) == 0

    assert KEY not in world.object_keys()
    assert "audio/first.wav" in world.object_keys()
    [body] = world.webhooks.bodies("/completion")
    assert body["result"]["status"] == "duplicate_file_deleted"
