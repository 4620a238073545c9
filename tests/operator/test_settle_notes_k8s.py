"""An invalid message's settling note on Kubernetes (k8s/notes.py), alone: pure builders."""

from __future__ import annotations

from waveflow_job.contract import Outcome
from waveflow_operator.k8s.notes import (
    NOTE_SECONDS,
    entry_name,
    expired_entries,
    forget_patch,
    is_note_key,
    notes_config_map,
    notes_name,
    notes_patch,
    results_from_notes,
)
from waveflow_operator.runner.protocol import JobResult, invalid_key_for

OWNER = {"name": "audio", "namespace": "media", "uid": "queue-uid"}
NOW = 1_800_000_000.0


def merge_patch_dict(config_map: dict, patch: dict) -> dict:  # type: ignore[type-arg]
    """RFC 7386 on the ``data`` level, as the API server applies it (null removes a key)."""
    data = {**config_map.get("data", {}), **patch["data"]}
    return {**config_map, "data": {k: v for k, v in data.items() if v is not None}}


def result(message_id: str) -> JobResult:
    return JobResult(invalid_key_for(message_id), Outcome.FAILED, "MESSAGE_INVALID",
                     "no stemId" + "x" * 5000, dead_lettered=True)


def test_notes_patched_in_read_back_as_the_dead_lettered_results_and_patch_out() -> None:
    first, second = result("m-1"), result("weird id/with:chars")
    notes = notes_config_map("audio", OWNER, notes_patch(first, NOW))
    assert notes["metadata"]["name"] == notes_name("audio")
    assert notes["metadata"]["ownerReferences"][0]["uid"] == "queue-uid"
    notes = dict(merge_patch_dict(notes, notes_patch(second, NOW)))
    read = results_from_notes(notes, NOW + 60)
    assert set(read) == {first.job_name, second.job_name}
    back = read[second.job_name]
    assert back.dead_lettered and back.outcome is Outcome.FAILED
    assert back.error_code == "MESSAGE_INVALID" and len(back.error_message or "") <= 1024
    assert all(c.isalnum() or c in "-._" for c in entry_name(second.job_name))
    notes = dict(merge_patch_dict(notes, forget_patch(first.job_name)))
    assert set(results_from_notes(notes, NOW)) == {second.job_name}


def test_only_well_formed_entries_count_and_old_ones_expire() -> None:
    assert is_note_key(invalid_key_for("m")) and not is_note_key("wf-hash-0123")
    notes = notes_config_map("audio", OWNER, notes_patch(result("m-1"), NOW))
    notes["data"]["invalid-000000000000000000000000"] = notes["data"][
        entry_name(invalid_key_for("m-1"))]  # under another entry's name: ignored
    notes["data"]["garbage"] = "{not json"
    assert list(results_from_notes(notes, NOW)) == [invalid_key_for("m-1")]
    assert expired_entries(notes, NOW + NOTE_SECONDS - 1) == []
    assert results_from_notes(notes, NOW + NOTE_SECONDS + 1) == {}
    assert expired_entries(notes, NOW + NOTE_SECONDS + 1) == [invalid_key_for("m-1")]
    assert results_from_notes(None, NOW) == {}
