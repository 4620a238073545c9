"""Hostile SQS bodies: each is parsed or rejected clearly, never a traceback (issue 8,
"Hostile input").

Hypothesis builds bodies from the contract's shapes outward — valid messages of the three tasks
in the three envelopes, then every field swapped for hostile text (control characters of every
block, separators, surrogates, path tricks) or any JSON value, fields dropped, envelopes nested
wrongly, and the serialised bytes flipped, cut or re-encoded — plus arbitrary text, bytes and
JSON. They go

1. through the contract's parser (what the job and the operator both run): it returns a message
   that keeps every rule, or raises ``InvalidMessage`` with a known code — nothing else;
2. through ``waveflow-job run`` in this process against moto and the recording backend: exit 0
   or 3, never 1 (nothing here is transient), no traceback or INTERNAL_ERROR in the logs, every
   webhook valid against the published schemas, a FAILURE exactly when a stem could be named;
3. a fixed set of the nastiest inputs through the real console script.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reliability.fuzzing import fuzz_settings, report
from support.aws import MotoEndpoint
from support.jobrun import JobWorld, make_world, wav_bytes
from support.webhooks import WebhookRecorder
from waveflow_job.contract import (
    MAX_KEY_BYTES,
    MAX_NUM_PEAKS,
    ErrorCode,
    InvalidMessage,
    StemMessage,
    Task,
    dumps_strict,
    parse_message,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
EXISTING_KEY = "audio/fuzz/present.wav"
TASKS = [t.value for t in Task]
#: Characters and strings that have broken parsers, paths, logs and terminals somewhere.
NASTY = ["\x00", "\n", "\r", "\t", "\x1b[31m", "\x7f", "\x80", "\x85", "\x9b", "\x9f", "\u2028",
         "\u2029", "\ufeff", "\u200d", "\u202e", "\ufffe", "\uffff", "\ud800", "\udfff",
         "\U0001f3b5", "한국어", "..", ".", "/", "//", "%2e%2e", "\\", "#", "+", "&", "?", "'",
         '"', "{}", "null", "NaN", "-Infinity", "1e999", " ", "", "\u00a0", "x" * 300]

hostile_text = st.lists(st.one_of(st.text(max_size=6), st.sampled_from(NASTY)),
                        max_size=5).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner,
                                                                 max_size=4),
    max_leaves=6)
sha256s = st.text("0123456789abcdef", min_size=64, max_size=64)
bad_sha256s = st.one_of(st.text("0123456789ABCDEF", min_size=64, max_size=64),
                        st.text("0123456789abcdefg", min_size=60, max_size=70), hostile_text)
good_keys = st.sampled_from([EXISTING_KEY, "audio/fuzz/missing.wav",
                             "audio/사용자 업로드/곡 #1 + 믹스 & 마스터.wav"])
bad_keys = st.one_of(hostile_text.map(lambda t: f"audio/{t}.wav"), hostile_text,
                     st.sampled_from(["/etc/passwd", "audio/../secret", "./a.wav",
                                      "waveforms/x_waveform_0.json", "a" * (MAX_KEY_BYTES + 1),
                                      "audio/\x85.wav", "audio/a\u2028b.wav"]))
good_num_peaks = st.integers(1, MAX_NUM_PEAKS) | st.sampled_from(["64", 64.0])
bad_num_peaks = st.one_of(st.integers(-5, 0), st.integers(MAX_NUM_PEAKS + 1, 10**30),
                          st.sampled_from([" 6 4", "6.4e1", 64.5, True, "∞", [], {}]))
good_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=16) \
    | st.integers(0, 2**53)
bad_ids = st.one_of(hostile_text, st.just(""), st.just("   "), st.floats(), st.booleans())
#: name: (valid values, hostile values)
FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "userId": (good_ids, bad_ids), "trackId": (good_ids, bad_ids),
    "stemId": (good_ids, bad_ids), "filepath": (good_keys, bad_keys),
    "audio_hash": (sha256s, bad_sha256s),
    "timestamp": (st.just("2026-12-01T10:00:00.000Z"), hostile_text),
    "original_filename": (st.sampled_from(["곡.wav", "take 3.aiff"]), hostile_text),
    "num_peaks": (good_num_peaks, bad_num_peaks),
    "stageId": (good_ids, json_values), "upstreamId": (good_ids, json_values),
}


@st.composite
def kwargs_documents(draw: st.DrawFn) -> dict[str, Any]:
    """The kwargs of a message: all fields valid but a few, which are hostile, any JSON value
    or absent (most messages then reach the deeper checks: keys, hashes, peaks)."""
    names = sorted(FIELDS)
    spoiled = draw(st.sets(st.sampled_from(names), max_size=2))
    document = {}
    for name in names:
        valid, hostile = FIELDS[name]
        if name not in spoiled:
            document[name] = draw(valid)
            continue
        how = draw(st.sampled_from(["hostile", "hostile", "absent", "json"]))
        if how == "hostile":
            document[name] = draw(hostile)
        elif how == "json":
            document[name] = draw(json_values)
    return document


@st.composite
def bodies(draw: st.DrawFn) -> str | bytes:
    """One SQS body."""
    shape = draw(st.sampled_from(["json"] * 4 + ["flat", "kombu", "text", "bytes", "any json",
                                                 "wrong nesting"]))
    task = draw(st.sampled_from(TASKS + [f"app.tasks.{t}" for t in TASKS]) if draw(
        st.integers(0, 9)) else hostile_text | json_values)
    kwargs = draw(kwargs_documents())
    if shape == "text":
        return draw(st.text(max_size=200))
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    if shape == "any json":
        return json.dumps(draw(json_values))
    if shape == "flat":
        body: Any = {"task": task, **kwargs}
    elif shape == "kombu":
        inner = draw(st.sampled_from(["ok", "not base64", "not a list", "short list"]))
        payload = {"ok": json.dumps([[], kwargs, {}]), "not a list": json.dumps(kwargs),
                   "short list": json.dumps([kwargs])}.get(inner, "%%%")
        encoded = payload if inner == "not base64" else base64.b64encode(
            payload.encode("utf-8", "surrogatepass")).decode()
        body = {"body": encoded, "headers": {"task": task, "id": draw(good_ids | bad_ids)},
                "properties": draw(st.just({"body_encoding": "base64"}) | json_values)}
        text = json.dumps(body)
        return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode() \
            if draw(st.booleans()) else text
    elif shape == "wrong nesting":
        body = {"task": task, "id": draw(good_ids), "args": draw(json_values),
                "kwargs": draw(json_values | st.just(kwargs))}
    else:
        body = {"task": task, "id": draw(good_ids | bad_ids | st.none()), "args": [],
                "kwargs": kwargs}
    text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    damage = draw(st.sampled_from(["none"] * 6 + ["cut", "flip", "latin-1"]))
    if damage == "cut":
        return text[:draw(st.integers(0, len(text)))]
    if damage == "flip":
        raw = bytearray(text.encode("utf-8", "surrogatepass"))
        raw[draw(st.integers(0, len(raw) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(raw)
    if damage == "latin-1":
        return text.encode("latin-1", "replace")
    return text


# --------------------------------------------------------------------------- 1. the parser


_UNSAFE_IN_KEYS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufdd0-\ufdef\ufffe\uffff"
                             r"\ud800-\udfff]")


def assert_keeps_the_rules(message: StemMessage) -> None:
    """What an accepted message guarantees to every stage after the parser."""
    key = message.filepath
    assert key and not key.startswith("/") and not _UNSAFE_IN_KEYS.search(key)
    assert all(part not in (".", "..") for part in key.split("/"))
    assert len(key.encode("utf-8")) <= MAX_KEY_BYTES
    for text in (message.user_id, message.track_id, message.stem_id):
        assert isinstance(text, str) and text.strip()
    for text in (message.user_id, message.track_id, message.stem_id, message.timestamp or "",
                 message.original_filename or "", message.message_id or ""):
        text.encode("utf-8")  # no lone surrogate reaches a webhook or a log
    if message.task in (Task.DUPLICATE, Task.ANALYSIS):
        assert message.audio_hash is not None and re.fullmatch("[0-9a-f]{64}",
                                                               message.audio_hash)
    assert 1 <= message.num_peaks <= MAX_NUM_PEAKS


def test_the_parser_accepts_only_messages_that_keep_the_rules_and_names_every_rejection(
        ) -> None:
    outcomes: Counter[str] = Counter()

    @fuzz_settings(quick_examples=300)
    @given(bodies())
    def check(body: str | bytes) -> None:
        try:
            message = parse_message(body)
        except InvalidMessage as invalid:
            assert isinstance(invalid.code, ErrorCode)
            assert isinstance(invalid.field, str) and isinstance(invalid.problem, str)
            assert invalid.stem_id is None or isinstance(invalid.stem_id, str)
            str(invalid).encode("utf-8")
            outcomes[invalid.code.value] += 1
            return
        assert_keeps_the_rules(message)
        outcomes[f"accepted {message.task.value}"] += 1

    check()
    report("messages/parser", outcomes)
    assert outcomes["MESSAGE_INVALID"] and any(k.startswith("accepted") for k in outcomes)


# --------------------------------------------------------------------------- 2. the job


@pytest.fixture
def world(aws: MotoEndpoint, bucket: str, webhooks: WebhookRecorder, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> JobWorld:
    return make_world(aws, bucket, webhooks, tmp_path, monkeypatch)


def schema(event: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"webhook.{event}.json").read_text())
    return loaded


def test_waveflow_job_run_rejects_every_hostile_message_cleanly(world: JobWorld) -> None:
    from waveflow_job import cli

    outcomes: Counter[str] = Counter()
    validators = {event: jsonschema.Draft202012Validator(schema(event))
                  for event in ("hash-check", "completion")}
    audio = wav_bytes(seconds=0.1)

    @fuzz_settings(quick_examples=60)
    @given(bodies())
    def check(body: str | bytes) -> None:
        world.put(EXISTING_KEY, audio)
        world.webhooks.clear()
        world.summary_path.unlink(missing_ok=True)
        text = body if isinstance(body, str) else body.decode("utf-8", "surrogateescape")
        output = io.StringIO()
        with contextlib.redirect_stderr(output):
            code = cli.main(["run", "--message", text])
        lines = [json.loads(line) for line in output.getvalue().splitlines()]
        summary = world.summary()
        outcomes[f"exit {code} {summary['error_code'] or summary['outcome']}"] += 1

        assert code in (0, 3), (code, summary, lines[-3:])
        assert not [line for line in lines if "traceback" in line], lines
        assert summary["error_code"] != "INTERNAL_ERROR"
        for request in world.webhooks.received():
            event = request.header("X-WaveFlow-Event")
            assert event in validators
            document = json.loads(request.body)
            validators[event].validate(document)
            assert dumps_strict(document)  # strict JSON: no NaN, no lone surrogate
        failures = [b for b in world.webhooks.bodies("/completion") if b["status"] == "FAILURE"]
        if code == 3:
            assert summary["error_code"]
            assert all(f["result"]["error_code"] == summary["error_code"] for f in failures)
            assert all(f["result"]["retryable"] is False for f in failures)
            assert len(failures) <= 1
        else:
            assert failures == []

    check()
    report("messages/waveflow-job run", outcomes)
    assert any(k.startswith("exit 3") for k in outcomes)


# --------------------------------------------------------------------------- 3. the console


BAD = ("MESSAGE_INVALID", "UNKNOWN_TASK")
#: (name, body, the rejections it may end in)
NASTIEST: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("not UTF-8", b"\xff\xfe{\"task\": \"x\"}", BAD),
    ("NUL bytes", b"{\"task\"\x00: 1}", BAD),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, BAD),
    ("a 300 KiB body", json.dumps({"task": "generate_hash_and_webhook",
                                   "kwargs": {"stemId": "s", "pad": "x" * 300_000}}).encode(),
     BAD),
    ("a number past Python's digit limit", b'{"task": "generate_hash_and_webhook", "kwargs": '
                                           b'{"userId": ' + b"9" * 5000 + b"}}", BAD),
    # 4,001 digits parse (the limit is 4,300): a valid, if odd, id; the object is missing.
    ("a huge integer id", json.dumps({"task": "generate_hash_and_webhook", "userId": 10**4000,
                                      "trackId": "t", "stemId": "s",
                                      "filepath": "a.wav"}).encode(), ("OBJECT_NOT_FOUND",)),
    ("a lone surrogate", b'{"task": "generate_hash_and_webhook", "userId": "u", "trackId": "t",'
                         b' "stemId": "s\\udc00", "filepath": "a.wav"}', BAD),
    ("base64 of garbage", base64.b64encode(b"\x00\x01garbage" * 50), BAD),
    ("empty", b"", ()),
    ("whitespace", b"   \n\t ", BAD),
]


@pytest.mark.parametrize(("name", "body", "codes"), NASTIEST, ids=[n for n, _, _ in NASTIEST])
def test_the_console_script_never_shows_a_traceback(world: JobWorld, name: str, body: bytes,
                                                    codes: tuple[str, ...]) -> None:
    path = world.scratch.parent / "message.bin"
    path.write_bytes(body)

    done = world.run_process("run", "--message-file", str(path))

    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    if codes:
        assert done.returncode == 3, (done.returncode, lines[-2:])
        assert world.summary()["error_code"] in codes
    else:
        assert done.returncode in (2, 3)  # no message at all: a usage error or a rejection
    assert world.scratch_entries() == []
