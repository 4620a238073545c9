"""Every wire format WaveFlow speaks, in one module the job and the operator both import.

- SQS messages from the backend, in the three accepted envelopes (CONTRACT.md §1);
- webhook bodies and delivery ids (§2);
- the waveform JSON document and its S3 key (§3);
- exit codes and the job's one-line summary (§4);
- JSON Schemas of all of the above, exported to ``docs/schemas``
  by ``python -m waveflow_job.contract``.

Pure: no I/O, no third-party imports, so the job starts fast and the operator can validate a
message without pulling in audio libraries.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, Literal, TypedDict

__all__ = [
    "DEFAULT_NUM_PEAKS",
    "MAX_NUM_PEAKS",
    "WAVEFORM_PREFIX",
    "CompletionBody",
    "Envelope",
    "ErrorCode",
    "ExitCode",
    "HashCheckBody",
    "InvalidMessage",
    "JobSummary",
    "Outcome",
    "StemMessage",
    "Task",
    "WaveformDocument",
    "WebhookEvent",
    "analysis_success_body",
    "delivery_id",
    "dumps_strict",
    "duplicate_deleted_body",
    "failure_body",
    "hash_check_body",
    "json_schemas",
    "parse_message",
    "utc_now_iso",
    "waveform_key",
]

DEFAULT_NUM_PEAKS = 1024
MAX_NUM_PEAKS = 65536
#: Where waveform JSON lives; never an upload, never deleted by the duplicate stage.
WAVEFORM_PREFIX = "waveforms/"
#: S3's own limit on key length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
_TASK_MODULE = "app.tasks."
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class Task(StrEnum):
    """The three steps of the pipeline, named as the backend names them."""

    #: SHA-256 the upload and ask the backend whether it is a duplicate.
    HASH = "generate_hash_and_webhook"
    #: Delete a duplicate upload (never an original).
    DUPLICATE = "process_duplicate_file"
    #: Decode the audio, store waveform JSON, report completion.
    ANALYSIS = "process_audio_analysis"


class Envelope(StrEnum):
    """How a message reached us; all three are accepted, as the old worker accepted them."""

    #: ``{"task", "id", "args", "kwargs"}`` — what the backend sends today.
    JSON = "json"
    #: kwargs at top level beside ``"task"``.
    FLAT = "flat"
    #: Celery protocol 2 as kombu's SQS transport writes it (base64 JSON, base64 body).
    KOMBU = "kombu"


class ExitCode(IntEnum):
    """What ``waveflow-job`` tells its runner (CONTRACT.md §4)."""

    #: Done: delete the message.
    DONE = 0
    #: Failed, may succeed later: retry up to the limit.
    FAILED = 1
    #: Rejected for good; the job already told the backend where it could.
    REJECTED = 3


class Outcome(StrEnum):
    """A job's final outcome, as the job summary and the runner name it."""

    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    FAILED = "failed"


class ErrorCode(StrEnum):
    """Machine-readable reasons, sent to the backend as ``error_code``."""

    #: The message is not valid JSON / base64 / an object, or a field is wrong.
    MESSAGE_INVALID = "MESSAGE_INVALID"
    #: The task name is none of the three.
    UNKNOWN_TASK = "UNKNOWN_TASK"
    #: The S3 key is absolute, has ``..`` segments or control characters.
    KEY_INVALID = "KEY_INVALID"
    #: ``num_peaks`` is not an integer in 1..MAX_NUM_PEAKS.
    NUM_PEAKS_INVALID = "NUM_PEAKS_INVALID"
    #: The object does not exist in the bucket.
    OBJECT_NOT_FOUND = "OBJECT_NOT_FOUND"
    #: The object is larger than the configured maximum.
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    #: The file cannot be decoded, or has fewer samples than it declares.
    AUDIO_CORRUPT = "AUDIO_CORRUPT"
    #: The file decodes to zero frames.
    AUDIO_EMPTY = "AUDIO_EMPTY"
    #: The audio is longer than the configured maximum duration.
    AUDIO_TOO_LONG = "AUDIO_TOO_LONG"
    #: The container or codec is not one we decode.
    AUDIO_UNSUPPORTED = "AUDIO_UNSUPPORTED"
    #: Duplicate stage: the key is outside the upload prefixes (or under waveforms/).
    KEY_OUTSIDE_PREFIXES = "KEY_OUTSIDE_PREFIXES"
    #: Duplicate stage: the object's SHA-256 is not the message's ``audio_hash``.
    HASH_MISMATCH = "HASH_MISMATCH"
    #: Duplicate stage: the object is another stem's analysed original.
    ANALYSED_ORIGINAL = "ANALYSED_ORIGINAL"
    #: Duplicate stage: the object is this very stem's analysed original (no FAILURE sent).
    ORIGINAL_PROTECTED = "ORIGINAL_PROTECTED"
    #: S3 could not be reached or kept failing.
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    #: The backend did not accept a webhook within the retry budget.
    WEBHOOK_UNDELIVERED = "WEBHOOK_UNDELIVERED"
    #: Anything the job did not expect (a bug): retried, then dead-lettered.
    INTERNAL_ERROR = "INTERNAL_ERROR"
    #: Runner: the job ran past its deadline.
    JOB_DEADLINE_EXCEEDED = "JOB_DEADLINE_EXCEEDED"
    #: Runner: the job failed on every attempt up to the backoff limit.
    JOB_BACKOFF_LIMIT = "JOB_BACKOFF_LIMIT"
    #: Runner: the job was killed for using too much memory.
    JOB_OOM_KILLED = "JOB_OOM_KILLED"
    #: Runner: the job's image could not be pulled.
    JOB_IMAGE_PULL = "JOB_IMAGE_PULL"
    #: Runner: the Job could not be created at all (e.g. refused by the API server).
    JOB_NOT_CREATED = "JOB_NOT_CREATED"


class WebhookEvent(StrEnum):
    """The ``X-WaveFlow-Event`` header; also the webhook's path under WEBHOOK_URL."""

    HASH_CHECK = "hash-check"
    COMPLETION = "completion"


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class StemMessage:
    """One validated SQS message, whatever envelope it came in."""

    task: Task
    user_id: str
    track_id: str
    stem_id: str
    filepath: str
    #: The backend's ``id`` (``hash-stem789-1732600000000``), or None when the body had none.
    message_id: str | None = None
    timestamp: str | None = None
    original_filename: str | None = None
    #: Lowercase hex SHA-256; required for the duplicate and analysis stages.
    audio_hash: str | None = None
    num_peaks: int = DEFAULT_NUM_PEAKS
    #: Unknown kwargs (``stageId``, ``upstreamId``…), carried through untouched.
    extra: Mapping[str, Any] = field(default_factory=dict)
    envelope: Envelope = Envelope.JSON

    def log_context(self) -> dict[str, str | None]:
        """The fields every log line about this message carries."""
        return {"stemId": self.stem_id, "task": self.task.value, "messageId": self.message_id}


_REQUIRED: dict[Task, tuple[str, ...]] = {
    Task.HASH: ("userId", "trackId", "stemId", "filepath"),
    Task.DUPLICATE: ("userId", "trackId", "stemId", "filepath", "audio_hash"),
    Task.ANALYSIS: ("userId", "trackId", "stemId", "filepath", "audio_hash"),
}
_OPTIONAL: dict[Task, tuple[str, ...]] = {
    Task.HASH: ("timestamp", "original_filename"),
    Task.DUPLICATE: (),
    Task.ANALYSIS: ("timestamp", "original_filename", "num_peaks"),
}
_KNOWN = {"userId", "trackId", "stemId", "filepath", "audio_hash", "timestamp",
          "original_filename", "num_peaks"}


class InvalidMessage(ValueError):
    """Raised by :func:`parse_message`; names the field, the problem and what could be read.

    ``waveflow_job.errors.MessageError`` wraps it for the job; the operator uses it directly to
    dead-letter the message with the reason (and, when ``stem_id`` is known, tell the backend).
    """

    def __init__(self, field_name: str, problem: str, code: ErrorCode = ErrorCode.MESSAGE_INVALID,
                 *, stem_id: str | None = None, task: str | None = None,
                 message_id: str | None = None) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem
        self.code = code
        self.stem_id = stem_id
        self.task = task
        self.message_id = message_id


def parse_message(raw: str | bytes, *, max_num_peaks: int = MAX_NUM_PEAKS) -> StemMessage:
    """Parse and validate one SQS body in any accepted envelope.

    Raises :class:`InvalidMessage` naming the field and the problem.
    """
    task_name, message_id, kwargs, envelope = _unwrap(raw)
    stem_guess = kwargs.get("stemId") if isinstance(kwargs.get("stemId"), str) else None

    def invalid(field_name: str, problem: str,
                code: ErrorCode = ErrorCode.MESSAGE_INVALID) -> InvalidMessage:
        return InvalidMessage(field_name, problem, code, stem_id=stem_guess or None,
                              task=task_name, message_id=message_id)

    task = _task_from_name(task_name, invalid)
    values: dict[str, Any] = {}
    for name in _REQUIRED[task]:
        if name not in kwargs or kwargs[name] is None:
            raise invalid(name, f"is required for {task.value}")
        values[name] = _text(kwargs[name], name, invalid)
    for name in _OPTIONAL[task]:
        if kwargs.get(name) is not None and name != "num_peaks":
            values[name] = _text(kwargs[name], name, invalid, allow_empty=True)
    _check_key(values["filepath"], invalid)
    if "audio_hash" in values:
        if not _SHA256_HEX.match(values["audio_hash"]):
            raise invalid("audio_hash", "must be 64 hexadecimal characters (SHA-256)")
        values["audio_hash"] = values["audio_hash"].lower()
    num_peaks = DEFAULT_NUM_PEAKS
    if task is Task.ANALYSIS and kwargs.get("num_peaks") is not None:
        num_peaks = _num_peaks(kwargs["num_peaks"], max_num_peaks, invalid)
    extra = {k: v for k, v in kwargs.items() if k not in _KNOWN}
    return StemMessage(
        task=task, user_id=values["userId"], track_id=values["trackId"],
        stem_id=values["stemId"], filepath=values["filepath"], message_id=message_id,
        timestamp=values.get("timestamp"), original_filename=values.get("original_filename"),
        audio_hash=values.get("audio_hash"), num_peaks=num_peaks, extra=extra, envelope=envelope,
    )


def _unwrap(raw: str | bytes) -> tuple[str | None, str | None, dict[str, Any], Envelope]:
    """Find task name, message id and kwargs in whichever envelope the body uses."""
    text = _decode_text(raw)
    document = _json_or_none(text)
    if document is None:
        document = _kombu_outer(text)
    if not isinstance(document, dict):
        raise InvalidMessage("body", "must be a JSON object")
    if isinstance(document.get("headers"), dict) and "task" in document["headers"]:
        return _unwrap_kombu(document)
    if "task" not in document:
        raise InvalidMessage("task", "is missing", ErrorCode.UNKNOWN_TASK)
    task_name = document["task"]
    message_id = document.get("id") if isinstance(document.get("id"), str) else None
    if "kwargs" in document:
        kwargs = document["kwargs"]
        if not isinstance(kwargs, dict):
            raise InvalidMessage("kwargs", "must be a JSON object", message_id=message_id)
        args = document.get("args", [])
        if not isinstance(args, list):
            raise InvalidMessage("args", "must be a JSON array", message_id=message_id)
        return _name(task_name), message_id, kwargs, Envelope.JSON
    kwargs = {k: v for k, v in document.items() if k not in ("task", "id")}
    return _name(task_name), message_id, kwargs, Envelope.FLAT


def _unwrap_kombu(document: dict[str, Any]) -> tuple[str | None, str | None, dict[str, Any],
                                                       Envelope]:
    headers = document["headers"]
    message_id = headers.get("id") if isinstance(headers.get("id"), str) else None
    body = document.get("body")
    if not isinstance(body, str):
        raise InvalidMessage("body", "kombu envelope has no string body", message_id=message_id)
    encoding = (document.get("properties") or {}).get("body_encoding", "base64")
    inner_text = body
    if encoding == "base64":
        inner_text = _decode_text(_b64(body, "body"))
    inner = _json_or_none(inner_text)
    if not (isinstance(inner, list) and len(inner) >= 2 and isinstance(inner[1], dict)):
        raise InvalidMessage("body", "kombu body must be the JSON array [args, kwargs, embed]",
                             message_id=message_id)
    return _name(headers.get("task")), message_id, inner[1], Envelope.KOMBU


def _kombu_outer(text: str) -> Any:
    """kombu's SQS transport base64-encodes the whole envelope."""
    stripped = text.strip()
    try:
        decoded = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMessage("body", "is neither JSON nor a base64 kombu envelope") from None
    document = _json_or_none(_decode_text(decoded))
    if document is None:
        raise InvalidMessage("body", "base64 body does not decode to JSON")
    return document


def _b64(value: str, field_name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMessage(field_name, "is not valid base64") from None


def _decode_text(raw: str | bytes) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("body", "is not UTF-8 text") from None


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _name(task: Any) -> str | None:
    return task if isinstance(task, str) else None


def _task_from_name(name: str | None, invalid: Any) -> Task:
    if name is None:
        raise invalid("task", "must be a string", ErrorCode.UNKNOWN_TASK)
    short = name.removeprefix(_TASK_MODULE)
    try:
        return Task(short)
    except ValueError:
        known = ", ".join(t.value for t in Task)
        raise invalid("task", f"unknown task {name!r} (known: {known})",
                      ErrorCode.UNKNOWN_TASK) from None


def _text(value: Any, name: str, invalid: Any, *, allow_empty: bool = False) -> str:
    """Ids are strings; integers are accepted and kept exactly (JavaScript may send numbers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise invalid(name, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise invalid(name, "must not be empty")
    return value


def _check_key(key: str, invalid: Any) -> None:
    """Structural hostility only; which prefixes may be deleted is the duplicate stage's call."""
    if key.startswith("/"):
        raise invalid("filepath", "must be a key relative to the bucket, not an absolute path",
                      ErrorCode.KEY_INVALID)
    if any(part in ("..", ".") for part in key.split("/")):
        raise invalid("filepath", "must not contain '.' or '..' segments", ErrorCode.KEY_INVALID)
    if _CONTROL_CHARS.search(key):
        raise invalid("filepath", "must not contain control characters", ErrorCode.KEY_INVALID)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise invalid("filepath", f"is longer than S3's {MAX_KEY_BYTES}-byte limit",
                      ErrorCode.KEY_INVALID)


def _num_peaks(value: Any, maximum: int, invalid: Any) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None:
        raise invalid("num_peaks", f"must be an integer, got {value!r}",
                      ErrorCode.NUM_PEAKS_INVALID)
    if not 1 <= number <= maximum:
        raise invalid("num_peaks", f"must be between 1 and {maximum}, got {number}",
                      ErrorCode.NUM_PEAKS_INVALID)
    return number


# --------------------------------------------------------------------------- webhooks


class HashCheckBody(TypedDict):
    """``POST {WEBHOOK_URL}/hash-check`` (fixed by the backend)."""

    stemId: str
    userId: str
    trackId: str
    filepath: str
    audio_hash: str
    timestamp: str
    original_filename: str
    status: Literal["hash_generated"]


class CompletionBody(TypedDict):
    """``POST {WEBHOOK_URL}/completion`` (fixed by the backend)."""

    stemId: str
    status: Literal["SUCCESS", "FAILURE"]
    result: dict[str, Any]
    timestamp: str


def utc_now_iso(now: datetime | None = None) -> str:
    """UTC with milliseconds and ``Z``, as the backend writes its own timestamps."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def hash_check_body(message: StemMessage, audio_hash: str) -> HashCheckBody:
    """The duplicate-check request; optional fields fall back to what the old worker sent."""
    return {
        "stemId": message.stem_id,
        "userId": message.user_id,
        "trackId": message.track_id,
        "filepath": message.filepath,
        "audio_hash": audio_hash,
        "timestamp": message.timestamp or utc_now_iso(),
        "original_filename": message.original_filename or message.filepath.rsplit("/", 1)[-1],
        "status": "hash_generated",
    }


def analysis_success_body(message: StemMessage, result: Mapping[str, Any]) -> CompletionBody:
    """SUCCESS for an analysed stem; ``result`` has the keys of CONTRACT.md §2 (and extras)."""
    return {"stemId": message.stem_id, "status": "SUCCESS", "result": dict(result),
            "timestamp": utc_now_iso()}


def duplicate_deleted_body(message: StemMessage) -> CompletionBody:
    """SUCCESS for a deleted duplicate upload."""
    return {
        "stemId": message.stem_id,
        "status": "SUCCESS",
        "result": {"status": "duplicate_file_deleted", "filepath": message.filepath,
                   "audio_hash": message.audio_hash},
        "timestamp": utc_now_iso(),
    }


def failure_body(stem_id: str, task: str | None, code: ErrorCode | str, message: str, *,
                 retryable: bool) -> CompletionBody:
    """FAILURE: sent once, for a final outcome only (CONTRACT.md §2)."""
    return {
        "stemId": stem_id,
        "status": "FAILURE",
        "result": {"error_code": str(code), "error_message": message, "task": task,
                   "retryable": retryable},
        "timestamp": utc_now_iso(),
    }


def delivery_id(event: WebhookEvent, message_id: str | None, raw_body: str | bytes) -> str:
    """``X-WaveFlow-Delivery``: the same for one message and event, so repeats can be dropped."""
    if message_id:
        basis = f"id:{message_id}"
    else:
        raw = raw_body.encode("utf-8") if isinstance(raw_body, str) else raw_body
        basis = "body:" + hashlib.sha256(raw).hexdigest()
    digest = hashlib.sha256(f"{basis}\n{event.value}".encode()).hexdigest()[:32]
    return f"{event.value}-{digest}"


def dumps_strict(document: Any) -> bytes:
    """Strict JSON (no NaN/Infinity: the backend rejects them), UTF-8, compact."""
    return json.dumps(document, allow_nan=False, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------- waveform JSON


class WaveformDocument(TypedDict):
    """The waveform JSON in S3: the old fields plus audiowaveform data format v2."""

    peaks: list[float]
    duration: float
    sample_rate: int
    num_peaks: int
    created_at: str
    version: int
    channels: int
    samples_per_pixel: int
    bits: int
    length: int
    data: list[int]


_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def waveform_key(stem_id: str, audio_sha256: str) -> str:
    """Deterministic for the same stem and bytes: re-running overwrites, never piles up."""
    safe_stem = _UNSAFE_KEY_CHARS.sub("_", stem_id)[:200]
    return f"{WAVEFORM_PREFIX}{safe_stem}_waveform_{audio_sha256[:16]}.json"


# --------------------------------------------------------------------------- job summary


@dataclass
class JobSummary:
    """The job's one-line JSON summary, read back by the runner (termination message)."""

    task: str | None
    outcome: Outcome
    stem_id: str | None = None
    message_id: str | None = None
    error_code: str | None = None
    bytes: int = 0
    audio_seconds: float = 0.0
    #: Seconds per phase (download, decode, upload, webhook…), rounded to milliseconds.
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        document = asdict(self)
        document["outcome"] = self.outcome.value
        return json.dumps(document, allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> JobSummary | None:
        """Parse a summary; None for anything that is not one (a kubelet's own message…)."""
        try:
            document = json.loads(text.strip().splitlines()[-1])
            return cls(
                task=document.get("task"), outcome=Outcome(document["outcome"]),
                stem_id=document.get("stem_id"), message_id=document.get("message_id"),
                error_code=document.get("error_code"), bytes=int(document.get("bytes", 0)),
                audio_seconds=float(document.get("audio_seconds", 0.0)),
                timings={str(k): float(v) for k, v in (document.get("timings") or {}).items()},
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None


# --------------------------------------------------------------------------- JSON Schemas

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_ID_STRING = {"type": ["string", "integer"], "minLength": 1}
_KEY = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_BYTES,
        "description": "S3 key in the configured bucket; no leading '/', no '..' segments"}
_HASH = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$", "description": "SHA-256, hex"}
_TIMESTAMP = {"type": "string", "description": "ISO 8601, UTC, e.g. 2026-11-26T08:36:48.817Z"}


def _kwargs_schema(task: Task) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "userId": _ID_STRING, "trackId": _ID_STRING, "stemId": _ID_STRING, "filepath": _KEY,
        "audio_hash": _HASH, "timestamp": _TIMESTAMP, "original_filename": {"type": "string"},
        "num_peaks": {"type": ["integer", "string"], "minimum": 1, "maximum": MAX_NUM_PEAKS,
                      "default": DEFAULT_NUM_PEAKS},
    }
    allowed = _REQUIRED[task] + _OPTIONAL[task]
    return {
        "type": "object",
        "required": list(_REQUIRED[task]),
        "properties": {k: v for k, v in properties.items() if k in allowed},
        "additionalProperties": True,
    }


def _message_schema(task: Task) -> dict[str, Any]:
    task_names = [task.value, _TASK_MODULE + task.value]
    return {
        "$schema": _SCHEMA,
        "title": f"SQS message: {task.value}",
        "description": "The JSON envelope the backend sends. Also accepted: the kwargs flat "
                       "beside 'task', and a kombu protocol-2 envelope (CONTRACT.md §1).",
        "type": "object",
        "required": ["task", "kwargs"],
        "properties": {
            "task": {"enum": task_names},
            "id": {"type": "string", "description": "hash-|duplicate-|analysis- + stemId + ms"},
            "args": {"type": "array"},
            "kwargs": _kwargs_schema(task),
        },
    }


def _completion_schema() -> dict[str, Any]:
    success_analysis = {
        "type": "object",
        "required": ["audio_data_hash", "waveform_data_path", "file_size", "duration",
                     "sample_rate", "num_peaks"],
        "properties": {
            "audio_data_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "waveform_data_path": {"type": "string"},
            "file_size": {"type": "integer", "minimum": 0},
            "duration": {"type": "number"},
            "sample_rate": {"type": "integer", "minimum": 1},
            "num_peaks": {"type": "integer", "minimum": 1},
        },
    }
    duplicate_deleted = {
        "type": "object",
        "required": ["status", "filepath", "audio_hash"],
        "properties": {"status": {"const": "duplicate_file_deleted"},
                       "filepath": {"type": "string"},
                       "audio_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
    }
    failure = {
        "type": "object",
        "required": ["error_code", "error_message", "task", "retryable"],
        "properties": {"error_code": {"enum": [c.value for c in ErrorCode]},
                       "error_message": {"type": "string"},
                       "task": {"type": ["string", "null"]},
                       "retryable": {"type": "boolean"}},
    }
    return {
        "$schema": _SCHEMA,
        "title": "POST {WEBHOOK_URL}/completion",
        "type": "object",
        "required": ["stemId", "status", "result", "timestamp"],
        "properties": {"stemId": {"type": "string"}, "status": {"enum": ["SUCCESS", "FAILURE"]},
                       "result": {"type": "object"}, "timestamp": _TIMESTAMP},
        "if": {"properties": {"status": {"const": "FAILURE"}}},
        "then": {"properties": {"result": failure}},
        "else": {"properties": {"result": {"oneOf": [success_analysis, duplicate_deleted]}}},
    }


def _hash_check_schema() -> dict[str, Any]:
    fields = ["stemId", "userId", "trackId", "filepath", "audio_hash", "timestamp",
              "original_filename", "status"]
    properties: dict[str, Any] = {name: {"type": "string"} for name in fields}
    properties["audio_hash"] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    properties["status"] = {"const": "hash_generated"}
    return {"$schema": _SCHEMA, "title": "POST {WEBHOOK_URL}/hash-check", "type": "object",
            "required": fields, "properties": properties}


def _waveform_schema() -> dict[str, Any]:
    integer = {"type": "integer", "minimum": 0}
    return {
        "$schema": _SCHEMA,
        "title": "Waveform JSON (waveforms/{stemId}_waveform_{suffix}.json)",
        "type": "object",
        "required": list(WaveformDocument.__annotations__),
        "properties": {
            "peaks": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
            "duration": {"type": "number", "minimum": 0},
            "sample_rate": {"type": "integer", "minimum": 1},
            "num_peaks": {"type": "integer", "minimum": 1, "maximum": MAX_NUM_PEAKS},
            "created_at": _TIMESTAMP,
            "version": {"const": 2},
            "channels": {"type": "integer", "minimum": 1},
            "samples_per_pixel": {"type": "integer", "minimum": 1},
            "bits": {"const": 8},
            "length": integer,
            "data": {"type": "array",
                     "items": {"type": "integer", "minimum": -128, "maximum": 127}},
        },
    }


def _summary_schema() -> dict[str, Any]:
    return {
        "$schema": _SCHEMA,
        "title": "waveflow-job one-line summary (WAVEFLOW_SUMMARY_FILE)",
        "type": "object",
        "required": ["task", "outcome"],
        "properties": {
            "task": {"type": ["string", "null"]},
            "outcome": {"enum": [o.value for o in Outcome]},
            "stem_id": {"type": ["string", "null"]},
            "message_id": {"type": ["string", "null"]},
            "error_code": {"type": ["string", "null"]},
            "bytes": {"type": "integer", "minimum": 0},
            "audio_seconds": {"type": "number", "minimum": 0},
            "timings": {"type": "object", "additionalProperties": {"type": "number"}},
        },
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """Every wire format as a JSON Schema, keyed by the file name it is exported to."""
    schemas = {f"message.{task.value}.json": _message_schema(task) for task in Task}
    schemas["webhook.hash-check.json"] = _hash_check_schema()
    schemas["webhook.completion.json"] = _completion_schema()
    schemas["waveform.json"] = _waveform_schema()
    schemas["job-summary.json"] = _summary_schema()
    return schemas


def write_schemas(directory: Path) -> list[Path]:
    """Export :func:`json_schemas` as pretty, stable files (a test checks they are current)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")
    for written_path in write_schemas(target):
        print(written_path)
