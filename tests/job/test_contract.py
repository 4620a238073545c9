"""The contract module: every accepted envelope, every refusal, and the exported schemas."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from waveflow_job.contract import (
    DEFAULT_NUM_PEAKS,
    MAX_MESSAGE_BYTES,
    Envelope,
    ErrorCode,
    InvalidMessage,
    JobSummary,
    Outcome,
    Task,
    WebhookEvent,
    analysis_success_body,
    delivery_id,
    dumps_strict,
    failure_body,
    failure_completion,
    flat_envelope,
    hash_check_body,
    json_envelope,
    json_schemas,
    kombu_envelope,
    message_document,
    message_id_for,
    parse_message,
    utc_now_iso,
    waveform_key,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"
HASH = "ab" * 32
KWARGS = {"userId": "user123", "trackId": "track456", "stemId": "stem-789",
          "filepath": "audio/sample.wav", "timestamp": "2024-01-01T10:00:00Z",
          "original_filename": "sample.wav"}


def backend_body(task: str, **kwargs: Any) -> str:
    return json.dumps({"task": f"app.tasks.{task}", "id": f"x-{task}", "args": [],
                       "kwargs": {**KWARGS, **kwargs}})


def kombu_body(task: str, kwargs: dict[str, Any]) -> str:
    inner = base64.b64encode(json.dumps([[], kwargs, {"callbacks": None}]).encode()).decode()
    envelope = {"body": inner, "content-encoding": "utf-8", "content-type": "application/json",
                "headers": {"lang": "py", "task": f"app.tasks.{task}", "id": "celery-id-1"},
                "properties": {"body_encoding": "base64", "delivery_tag": "t"}}
    return base64.b64encode(json.dumps(envelope).encode()).decode()


def test_backend_json_envelope_is_parsed_with_extras_kept() -> None:
    message = parse_message(backend_body("generate_hash_and_webhook", stageId="s1"))
    assert message.task is Task.HASH
    assert message.envelope is Envelope.JSON
    assert (message.user_id, message.track_id, message.stem_id) == ("user123", "track456",
                                                                    "stem-789")
    assert message.message_id == "x-generate_hash_and_webhook"
    assert message.extra == {"stageId": "s1"}


def test_flat_body_with_short_task_name_is_accepted() -> None:
    body = json.dumps({"task": "process_audio_analysis", **KWARGS, "audio_hash": HASH,
                       "num_peaks": 256})
    message = parse_message(body)
    assert (message.task, message.envelope, message.num_peaks) == (Task.ANALYSIS, Envelope.FLAT,
                                                                   256)
    assert message.message_id is None


def test_kombu_protocol_two_envelope_is_unwrapped() -> None:
    message = parse_message(kombu_body("process_duplicate_file", {**KWARGS, "audio_hash": HASH}))
    assert (message.task, message.envelope, message.message_id) == (
        Task.DUPLICATE, Envelope.KOMBU, "celery-id-1")
    assert message.audio_hash == HASH


def test_uppercase_hash_is_normalised_and_num_peaks_defaults() -> None:
    message = parse_message(backend_body("process_audio_analysis", audio_hash=HASH.upper()))
    assert message.audio_hash == HASH
    assert message.num_peaks == DEFAULT_NUM_PEAKS


def test_korean_keys_with_spaces_and_symbols_are_kept_exactly() -> None:
    key = "audio/사용자 1/드럼 #2 + bass & keys.wav"
    assert parse_message(backend_body("generate_hash_and_webhook", filepath=key)).filepath == key


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ("not json at all", "body", ErrorCode.MESSAGE_INVALID),
        ("[1, 2]", "body", ErrorCode.MESSAGE_INVALID),
        ('{"kwargs": {}}', "task", ErrorCode.UNKNOWN_TASK),
        (backend_body("make_coffee"), "task", ErrorCode.UNKNOWN_TASK),
        (json.dumps({"task": "process_duplicate_file", **KWARGS}), "audio_hash",
         ErrorCode.MESSAGE_INVALID),
        (backend_body("process_duplicate_file", audio_hash="xyz"), "audio_hash",
         ErrorCode.MESSAGE_INVALID),
        (backend_body("generate_hash_and_webhook", stemId=""), "stemId", ErrorCode.MESSAGE_INVALID),
        (backend_body("generate_hash_and_webhook", userId=["u"]), "userId",
         ErrorCode.MESSAGE_INVALID),
        (backend_body("generate_hash_and_webhook", filepath="../etc/passwd"), "filepath",
         ErrorCode.KEY_INVALID),
        (backend_body("generate_hash_and_webhook", filepath="/abs/file.wav"), "filepath",
         ErrorCode.KEY_INVALID),
        (backend_body("generate_hash_and_webhook", filepath="a/\x00.wav"), "filepath",
         ErrorCode.KEY_INVALID),
        (backend_body("process_audio_analysis", audio_hash=HASH, num_peaks=0), "num_peaks",
         ErrorCode.NUM_PEAKS_INVALID),
        (backend_body("process_audio_analysis", audio_hash=HASH, num_peaks=-5), "num_peaks",
         ErrorCode.NUM_PEAKS_INVALID),
        (backend_body("process_audio_analysis", audio_hash=HASH, num_peaks=10**9), "num_peaks",
         ErrorCode.NUM_PEAKS_INVALID),
        (backend_body("process_audio_analysis", audio_hash=HASH, num_peaks="lots"), "num_peaks",
         ErrorCode.NUM_PEAKS_INVALID),
        (json.dumps({"task": "generate_hash_and_webhook", "kwargs": "nope"}), "kwargs",
         ErrorCode.MESSAGE_INVALID),
        ('{"task": "generate_hash_and_webhook", "userId": NaN}', "body",
         ErrorCode.MESSAGE_INVALID),
    ],
)
def test_malformed_messages_name_the_field_and_the_problem(body: str, field: str,
                                                          code: ErrorCode) -> None:
    with pytest.raises(InvalidMessage) as raised:
        parse_message(body)
    assert raised.value.field == field
    assert raised.value.code is code
    assert raised.value.problem


def test_invalid_message_keeps_what_could_be_read_for_the_failure_report() -> None:
    with pytest.raises(InvalidMessage) as raised:
        parse_message(backend_body("process_audio_analysis", audio_hash=HASH, num_peaks=0))
    assert raised.value.stem_id == "stem-789"
    assert raised.value.message_id == "x-process_audio_analysis"


def test_a_body_larger_than_any_job_can_be_handed_is_refused_as_final_naming_its_stem() -> None:
    def body_of(size: int) -> str:
        short = backend_body("generate_hash_and_webhook", stageNotes="")
        return backend_body("generate_hash_and_webhook",
                            stageNotes="n" * (size - len(short.encode())))

    assert len(body_of(MAX_MESSAGE_BYTES).encode()) == MAX_MESSAGE_BYTES
    assert parse_message(body_of(MAX_MESSAGE_BYTES)).extra["stageNotes"]  # carried through
    with pytest.raises(InvalidMessage) as raised:
        parse_message(body_of(MAX_MESSAGE_BYTES + 1).encode())
    assert raised.value.code is ErrorCode.MESSAGE_TOO_LARGE
    assert raised.value.field == "body" and str(MAX_MESSAGE_BYTES) in raised.value.problem
    assert raised.value.stem_id == "stem-789"  # so the backend hears it failed for good


def test_hash_check_body_has_exactly_the_backend_fields() -> None:
    message = parse_message(backend_body("generate_hash_and_webhook"))
    body = hash_check_body(message, HASH)
    assert body == {"stemId": "stem-789", "userId": "user123", "trackId": "track456",
                    "filepath": "audio/sample.wav", "audio_hash": HASH,
                    "timestamp": "2024-01-01T10:00:00Z", "original_filename": "sample.wav",
                    "status": "hash_generated"}
    jsonschema.validate(body, json_schemas()["webhook.hash-check.json"])


def test_completion_bodies_validate_against_their_schema() -> None:
    message = parse_message(backend_body("process_audio_analysis", audio_hash=HASH))
    schema = json_schemas()["webhook.completion.json"]
    success = analysis_success_body(message, {
        "audio_data_hash": HASH, "waveform_data_path": waveform_key("stem-789", HASH),
        "file_size": 10, "duration": 1.5, "sample_rate": 44100, "num_peaks": 1024})
    jsonschema.validate(success, schema)
    failure = failure_body("stem-789", "process_audio_analysis", ErrorCode.AUDIO_CORRUPT, "bad",
                           retryable=False)
    jsonschema.validate(failure, schema)
    assert failure["result"] == {"error_code": "AUDIO_CORRUPT", "error_message": "bad",
                                 "task": "process_audio_analysis", "retryable": False}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**failure, "status": "SUCCESS"}, schema)


def test_delivery_id_is_stable_per_message_and_event() -> None:
    first = delivery_id(WebhookEvent.COMPLETION, "analysis-stem-1", "body")
    assert first == delivery_id(WebhookEvent.COMPLETION, "analysis-stem-1", "other body")
    assert first != delivery_id(WebhookEvent.HASH_CHECK, "analysis-stem-1", "body")
    assert delivery_id(WebhookEvent.COMPLETION, None, "a") == delivery_id(
        WebhookEvent.COMPLETION, None, b"a")
    assert delivery_id(WebhookEvent.COMPLETION, None, "a") != delivery_id(
        WebhookEvent.COMPLETION, None, "b")


def test_strict_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        dumps_strict({"duration": float("nan")})
    assert dumps_strict({"k": "드럼"}) == '{"k":"드럼"}'.encode()


def test_timestamps_are_utc_with_milliseconds_and_z() -> None:
    stamp = utc_now_iso()
    assert stamp.endswith("Z") and len(stamp) == len("2026-11-26T08:36:48.817Z")


def test_waveform_key_is_deterministic_and_safe() -> None:
    assert waveform_key("stem-789", HASH) == waveform_key("stem-789", HASH)
    assert waveform_key("stem-789", HASH).startswith("waveforms/stem-789_waveform_")
    assert "/" not in waveform_key("a/../b", HASH).removeprefix("waveforms/")


def test_job_summary_round_trips_and_ignores_foreign_text() -> None:
    summary = JobSummary(task="process_audio_analysis", outcome=Outcome.SUCCEEDED,
                         stem_id="s", bytes=12, audio_seconds=1.5, timings={"decode": 0.1})
    assert JobSummary.from_json(summary.to_json()) == summary
    assert JobSummary.from_json("OOMKilled") is None


def test_exported_schemas_are_current() -> None:
    for name, schema in json_schemas().items():
        committed = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
        assert committed == schema, f"docs/schemas/{name} is stale: run make schemas"


@pytest.mark.parametrize("task", list(Task))
def test_every_builder_writes_what_the_parser_reads_and_the_schema_allows(task: Task) -> None:
    kwargs: dict[str, Any] = {"userId": "u", "trackId": "t", "stemId": "스템-1",
                              "filepath": "audio/노래 #1.wav", "stageId": "s1"}
    if task is not Task.HASH:
        kwargs["audio_hash"] = HASH
    document = message_document(task, kwargs)
    assert document["task"] == f"app.tasks.{task.value}" and document["args"] == []
    assert document["id"].startswith(message_id_for(task, "스템-1", 0).removesuffix("0"))
    jsonschema.validate(document, json_schemas()[f"message.{task.value}.json"])
    built = {
        Envelope.JSON: json_envelope(task, kwargs, message_id="m-1"),
        Envelope.FLAT: flat_envelope(task, kwargs),
        Envelope.KOMBU: kombu_envelope(task, kwargs, message_id="m-1"),
    }
    for envelope, body in built.items():
        message = parse_message(body)
        assert (message.task, message.envelope, message.stem_id) == (task, envelope, "스템-1")
        assert message.message_id == (None if envelope is Envelope.FLAT else "m-1")
        assert message.extra == {"stageId": "s1"}
    # The builder's kombu body is the hand-written one above in all but the embed's defaults.
    assert parse_message(kombu_body(task.value, kwargs)).extra == {"stageId": "s1"}


def test_the_message_id_is_the_backends_prefix_stem_and_milliseconds() -> None:
    assert message_id_for(Task.HASH, "stem789", 1732600000000) == "hash-stem789-1732600000000"
    assert message_id_for(Task.DUPLICATE, "s", 1).startswith("duplicate-s-")
    assert message_id_for(Task.ANALYSIS, "s", 1) == "analysis-s-1"


def test_one_failure_builder_gives_the_body_and_the_delivery_id() -> None:
    webhook = failure_completion(stem_id="stem-789", task="app.tasks.process_audio_analysis",
                                 code=ErrorCode.JOB_BACKOFF_LIMIT, message="gave up",
                                 retryable=True, message_id="analysis-stem-789-1",
                                 raw_body="ignored: the id decides")
    assert webhook.event is WebhookEvent.COMPLETION
    assert webhook.delivery == delivery_id(WebhookEvent.COMPLETION, "analysis-stem-789-1", "")
    assert webhook.body["result"] == {"error_code": "JOB_BACKOFF_LIMIT",
                                      "error_message": "gave up",
                                      "task": "process_audio_analysis", "retryable": True}
    jsonschema.validate(webhook.body, json_schemas()["webhook.completion.json"])
