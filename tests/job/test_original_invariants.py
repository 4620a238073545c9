"""The invariants of CONTRACT.md §8, whatever the order of messages (issue 8, items 1 and 2).

- an object that any stem's waveform was drawn from is never deleted, even after a PUT of the
  same key wiped its tags;
- a key WaveFlow deleted as a duplicate is recognisable afterwards: a later message about it gets
  the same answer as the first time, never a FAILURE;
- a completed stem whose upload was deleted outside WaveFlow is recognisable too (its source
  record and waveform): a later message gets the first answer again, or none, never a FAILURE.

Every sequence runs the real job against moto and the recording backend; the states a kill
would leave behind (a tombstone written, the delete not done yet) are made by running the
job's own record-keeping, not by writing objects by hand.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from support.jobrun import KWARGS, TIMESTAMP, JobWorld, json_message, wav_bytes
from waveflow_job.contract import WebhookEvent, delivery_id, waveform_key

KEY = "audio/공유 업로드 #1.wav"


def message(task: str, stem_id: str, key: str = KEY, **extra: Any) -> str:
    return json_message(task, **{**KWARGS, "stemId": stem_id}, filepath=key, **extra)


def hash_message(stem_id: str, key: str = KEY) -> str:
    return message("generate_hash_and_webhook", stem_id, key, timestamp=TIMESTAMP,
                   original_filename="곡.wav")


def duplicate_message(stem_id: str, sha: str, key: str = KEY) -> str:
    return message("process_duplicate_file", stem_id, key, audio_hash=sha)


def analysis_message(stem_id: str, sha: str, key: str = KEY) -> str:
    return message("process_audio_analysis", stem_id, key, audio_hash=sha, num_peaks=16)


def uploads(world: JobWorld) -> list[str]:
    return [k for k in world.object_keys() if not k.startswith("waveforms/")]


def failures(world: JobWorld) -> list[Any]:
    return [b for b in world.webhooks.bodies("/completion") if b["status"] == "FAILURE"]


# --------------------------------------------------------------------------- item 1


def test_original_of_a_stem_reuploaded_by_another_stem_is_never_deleted(
        world: JobWorld) -> None:
    """The issue's sequence: stem A is analysed; stem B PUTs the same bytes to the same key
    (the tags are gone); the backend calls B a duplicate of A. The only copy must stay."""
    data = wav_bytes(seconds=0.25)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    assert world.run(analysis_message("stem-A", sha)) == 0
    world.put(KEY, data)  # stem B's upload: same key, same bytes, no tags
    assert world.tags(KEY) == {}
    world.webhooks.clear()

    assert world.run(duplicate_message("stem-B", sha)) == 3

    assert uploads(world) == [KEY]
    assert world.read(KEY) == data
    [body] = world.webhooks.bodies("/completion")
    assert body["stemId"] == "stem-B"
    assert body["result"]["error_code"] == "ANALYSED_ORIGINAL"
    assert body["result"]["error_message"] == f"{KEY} is the analysed original of stem stem-A"
    assert world.summary()["error_code"] == "ANALYSED_ORIGINAL"


def test_original_stays_protected_when_tags_and_the_waveform_are_both_gone(
        world: JobWorld) -> None:
    """Neither tags nor the waveform's metadata are needed: the source index alone refuses."""
    data = wav_bytes(seconds=0.25)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    assert world.run(analysis_message("stem-A", sha)) == 0
    world.s3.delete_object(Bucket=world.bucket, Key=waveform_key("stem-A", sha))
    world.put(KEY, data)
    world.webhooks.clear()

    assert world.run(duplicate_message("stem-A", sha)) == 3

    assert uploads(world) == [KEY]
    assert world.webhooks.received() == []  # stem A completed: no FAILURE for it
    assert world.summary()["error_code"] == "ORIGINAL_PROTECTED"
    assert world.tags(KEY)["waveflow-stem-id"] == "stem-A"  # tags restored


def test_a_copy_under_another_key_is_still_deleted(world: JobWorld) -> None:
    """The index is per key: the same bytes under a new key are a true duplicate."""
    data = wav_bytes(seconds=0.25)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    assert world.run(analysis_message("stem-A", sha)) == 0
    world.put("audio/copy.wav", data)

    assert world.run(duplicate_message("stem-B", sha, "audio/copy.wav")) == 0

    assert uploads(world) == [KEY]


def test_two_stems_analysing_the_same_key_are_both_recorded(world: JobWorld) -> None:
    """Two identical uploads racing are both analysed (CONTRACT.md §7); each has its record,
    so neither analysis can overwrite the other's protection."""
    data = wav_bytes(seconds=0.25)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    assert world.run(analysis_message("stem-A", sha)) == 0
    world.put(KEY, data)
    assert world.run(analysis_message("stem-B", sha)) == 0
    assert len([r for r in world.records() if r.startswith("waveforms/sources/")]) == 2
    world.put(KEY, data)
    world.webhooks.clear()

    assert world.run(duplicate_message("stem-A", sha)) == 3
    assert world.run(duplicate_message("stem-B", sha)) == 3
    assert world.run(duplicate_message("stem-C", sha)) == 3

    assert uploads(world) == [KEY]
    [body] = world.webhooks.bodies("/completion")
    assert body["stemId"] == "stem-C"
    assert body["result"]["error_code"] == "ANALYSED_ORIGINAL"


# --------------------------------------------------------------------------- item 2


def test_redelivered_hash_message_after_the_duplicate_was_deleted_gets_the_same_answer(
        world: JobWorld) -> None:
    """hash → duplicate (deleted) → the hash message again: the same hash-check, no FAILURE."""
    data = b"the bytes another stem already has"
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    hashing = hash_message("stem-D")
    assert world.run(hashing) == 0
    assert world.run(duplicate_message("stem-D", sha)) == 0
    assert uploads(world) == []
    first = world.webhooks.received("/hash-check")[0]
    world.webhooks.clear()

    assert world.run(hashing) == 0

    [again] = world.webhooks.received()
    assert again.path == "/webhook/hash-check"
    assert again.json() == first.json()
    assert again.header("X-WaveFlow-Delivery") == first.header("X-WaveFlow-Delivery") == \
        delivery_id(WebhookEvent.HASH_CHECK, "hash-stem-D-1732600000000", hashing)
    assert world.summary()["outcome"] == "succeeded"


def test_every_later_message_about_a_deleted_duplicate_ends_without_a_failure(
        world: JobWorld) -> None:
    """After the deletion: the duplicate message twice more, the hash message, and even an
    analysis message for that stem all end in exit 0 and the first answer."""
    data = b"duplicate bytes"
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    assert world.run(duplicate_message("stem-D", sha)) == 0
    [deleted] = world.webhooks.bodies("/completion")
    world.webhooks.clear()

    assert world.run(duplicate_message("stem-D", sha)) == 0
    assert world.run(duplicate_message("stem-D", sha)) == 0
    assert world.run(hash_message("stem-D")) == 0
    assert world.run(analysis_message("stem-D", sha)) == 0

    assert failures(world) == []
    completions = world.webhooks.bodies("/completion")
    assert [c["result"] for c in completions] == [deleted["result"]] * 3
    [hash_check] = world.webhooks.bodies("/hash-check")
    assert hash_check["audio_hash"] == sha


def test_killed_between_the_tombstone_and_the_delete(world: JobWorld) -> None:
    """The tombstone is written, the object not yet deleted: a redelivery finishes the job."""
    from waveflow_job import originals
    from waveflow_job.config import JobConfig
    from waveflow_job.s3 import Storage

    data = b"duplicate bytes"
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    storage = Storage(JobConfig.from_env())
    originals.record_deletion(storage, KEY, "stem-D", sha, "duplicate-stem-D-1732600000000")
    assert uploads(world) == [KEY]

    assert world.run(hash_message("stem-D")) == 0  # the object is there: hashed as usual
    assert world.run(duplicate_message("stem-D", sha)) == 0

    assert uploads(world) == []
    assert failures(world) == []
    assert world.webhooks.bodies("/hash-check")[0]["audio_hash"] == sha


def test_killed_between_the_delete_and_the_webhook(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend is down when the duplicate is deleted; every later message still answers."""
    monkeypatch.setenv("WAVEFLOW_WEBHOOK_BUDGET_SECONDS", "0.2")
    data = b"duplicate bytes"
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    world.webhooks.fail_next(1000, 503)
    assert world.run(duplicate_message("stem-D", sha)) == 1
    assert uploads(world) == []
    world.webhooks.clear()

    assert world.run(hash_message("stem-D")) == 0
    assert world.run(duplicate_message("stem-D", sha)) == 0

    assert failures(world) == []
    [body] = world.webhooks.bodies("/completion")
    assert body["result"] == {"status": "duplicate_file_deleted", "filepath": KEY,
                              "audio_hash": sha}


def test_a_deleted_key_of_another_stem_still_fails_a_stem_that_never_had_it(
        world: JobWorld) -> None:
    """Tombstones are per stem: a stem whose upload WaveFlow never saw gets the truth,
    OBJECT_NOT_FOUND, not another stem's answer."""
    data = b"duplicate bytes"
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    assert world.run(duplicate_message("stem-D", sha)) == 0
    world.webhooks.clear()

    assert world.run(hash_message("stem-E")) == 3

    [body] = failures(world)
    assert (body["stemId"], body["result"]["error_code"]) == ("stem-E", "OBJECT_NOT_FOUND")


# --------------------------------------------------------------------------- deleted outside


def delete_outside_waveflow(world: JobWorld, key: str = KEY) -> None:
    """What a user, a lifecycle rule or a clean-up script does: the object is simply gone."""
    world.s3.delete_object(Bucket=world.bucket, Key=key)
    assert key not in uploads(world)


def completed_stem(world: JobWorld, stem_id: str = "stem-A") -> tuple[str, str]:
    """hash, then analysis of a fresh upload: (the hash message, the analysis message)."""
    data = wav_bytes(seconds=0.25)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    hashing, analysis = hash_message(stem_id), analysis_message(stem_id, sha)
    assert world.run(hashing) == 0
    assert world.run(analysis) == 0
    return hashing, analysis


def test_a_completed_stems_hash_message_after_its_upload_was_deleted_gets_the_same_hash_check(
        world: JobWorld) -> None:
    """The message is redelivered (or re-sent) after someone deleted the analysed upload: the
    hash-check of the first run again (same body, same delivery id), not OBJECT_NOT_FOUND."""
    hashing, _ = completed_stem(world)
    first = world.webhooks.received("/hash-check")[0]
    delete_outside_waveflow(world)
    world.webhooks.clear()

    assert world.run(hashing) == 0

    [again] = world.webhooks.received()
    assert again.path == "/webhook/hash-check"
    assert again.json() == first.json()
    assert again.header("X-WaveFlow-Delivery") == first.header("X-WaveFlow-Delivery")
    summary = world.summary()
    assert summary["outcome"] == "succeeded"
    assert "source record" in summary["note"] and "deleted outside WaveFlow" in summary["note"]


def test_a_completed_stems_analysis_message_after_its_upload_was_deleted_resends_its_success(
        world: JobWorld) -> None:
    """The analysis message again with the waveform stored and the source gone: the SUCCESS of
    the first run, byte for byte in its result, under the same delivery id."""
    _, analysis = completed_stem(world)
    [first] = world.webhooks.received("/completion")
    delete_outside_waveflow(world)
    world.webhooks.clear()

    assert world.run(analysis) == 0

    [again] = world.webhooks.received()
    assert again.path == "/webhook/completion"
    assert again.json()["status"] == "SUCCESS"
    assert again.json()["result"] == first.json()["result"]
    assert again.header("X-WaveFlow-Delivery") == first.header("X-WaveFlow-Delivery")
    assert world.summary()["outcome"] == "succeeded"


def test_the_duplicate_message_that_follows_for_a_completed_stems_gone_upload_sends_nothing(
        world: JobWorld) -> None:
    """The backend answers the re-sent hash-check with the stem's own duplicate message (its
    rule counts the stem's own hash): "duplicate deleted" would be untrue and a FAILURE would
    mark a finished stem failed, so the job ends (exit 3) without any webhook and says why."""
    hashing, _ = completed_stem(world)
    sha = world.webhooks.bodies("/hash-check")[0]["audio_hash"]
    delete_outside_waveflow(world)
    assert world.run(hashing) == 0
    world.webhooks.clear()

    assert world.run(duplicate_message("stem-A", sha)) == 3

    assert world.webhooks.received() == []
    summary = world.summary()
    assert (summary["outcome"], summary["error_code"]) == ("rejected", "SOURCE_GONE")
    assert summary["note"].startswith("no webhook sent: ")
    assert not [r for r in world.records() if r.startswith("waveforms/deleted/")]


def test_a_record_without_its_waveform_is_an_analysis_that_never_completed(
        world: JobWorld) -> None:
    """Killed between the source record and the waveform, the stem never completed: with the
    upload gone, OBJECT_NOT_FOUND is the truth and the FAILURE is right."""
    from waveflow_job import originals
    from waveflow_job.config import JobConfig
    from waveflow_job.s3 import Storage

    data = wav_bytes(seconds=0.25)
    sha = hashlib.sha256(data).hexdigest()
    storage = Storage(JobConfig.from_env())
    originals.record_source(storage, KEY, "stem-A", sha, waveform_key("stem-A", sha))
    world.webhooks.clear()

    assert world.run(analysis_message("stem-A", sha)) == 3
    assert world.run(hash_message("stem-A")) == 3

    assert [b["result"]["error_code"] for b in failures(world)] == ["OBJECT_NOT_FOUND"] * 2


def test_a_completed_stem_recorded_by_an_earlier_release_ends_without_any_webhook(
        world: JobWorld) -> None:
    """Records written before results were kept have no SUCCESS to re-send: no guess, no
    FAILURE; exit 3 and SOURCE_GONE in the summary."""
    from waveflow_job import originals
    from waveflow_job.config import JobConfig
    from waveflow_job.s3 import Storage

    _, analysis = completed_stem(world)
    sha = world.webhooks.bodies("/completion")[0]["result"]["audio_data_hash"]
    storage = Storage(JobConfig.from_env())
    originals.record_source(storage, KEY, "stem-A", sha, waveform_key("stem-A", sha))
    delete_outside_waveflow(world)
    world.webhooks.clear()

    assert world.run(analysis) == 3

    assert world.webhooks.received() == []
    assert world.summary()["error_code"] == "SOURCE_GONE"


def test_another_stem_asking_about_a_completed_stems_gone_upload_still_gets_the_truth(
        world: JobWorld) -> None:
    """Records are per stem: a stem that never had the key gets OBJECT_NOT_FOUND."""
    completed_stem(world)
    delete_outside_waveflow(world)
    world.webhooks.clear()

    assert world.run(hash_message("stem-E")) == 3

    [body] = failures(world)
    assert (body["stemId"], body["result"]["error_code"]) == ("stem-E", "OBJECT_NOT_FOUND")
