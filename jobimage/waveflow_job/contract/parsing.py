"""Parsing and validating one SQS body in any of the three envelopes (CONTRACT.md §1).

Which fields each task requires comes from :mod:`~waveflow_job.contract.messages`; what is
checked here is what a type cannot say: envelopes, encodings, hostile keys, ``num_peaks``.
"""

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from waveflow_job.contract.fields import (
    DEFAULT_NUM_PEAKS,
    MAX_KEY_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_NUM_PEAKS,
)
from waveflow_job.contract.messages import (
    KNOWN_FIELDS,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    TASK_MODULE,
    Envelope,
    StemMessage,
    Task,
)
from waveflow_job.contract.results import ErrorCode

__all__ = ["InvalidMessage", "parse_message"]

_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
#: Refused in keys: C0 controls, DEL and C1 controls (U+0080-U+009F: U+0085 is a line break,
#: U+009B a terminal escape), the Unicode line and paragraph separators (U+2028/U+2029: line
#: breaks to Python and JavaScript log readers), and the noncharacters U+FFFE/U+FFFF and
#: U+FDD0-U+FDEF (XML, and so S3's listings, cannot carry U+FFFE/U+FFFF). Format characters
#: (BOM, zero-width joiners, bidi marks) are allowed: emoji sequences, Persian and RTL
#: filenames use them, and they break neither a line nor a path.
_UNSAFE_KEY_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufdd0-\ufdef\ufffe\uffff]")
#: Lone UTF-16 surrogates: JSON's ``\ud800`` escapes decode to them, and no UTF-8 can hold them.
_SURROGATES = re.compile(r"[\ud800-\udfff]")


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


_Invalid = Callable[..., InvalidMessage]


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
    for name in REQUIRED_FIELDS[task]:
        if name not in kwargs or kwargs[name] is None:
            raise invalid(name, f"is required for {task.value}")
        values[name] = _text(kwargs[name], name, invalid)
    for name in OPTIONAL_FIELDS[task]:
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
    extra = {k: v for k, v in kwargs.items() if k not in KNOWN_FIELDS}
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8"))
    if size > MAX_MESSAGE_BYTES:  # checked last, so the backend hears about the right stem
        raise invalid("body", f"is {size} bytes; a job can be handed at most "
                              f"{MAX_MESSAGE_BYTES} (SQS's limit)", ErrorCode.MESSAGE_TOO_LARGE)
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
    properties = document.get("properties")
    encoding = (properties if isinstance(properties, dict) else {}).get("body_encoding",
                                                                         "base64")
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
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if _SURROGATES.search(text) or ("\\u" in text and _has_surrogate(document)):
        raise InvalidMessage("body", "holds a lone UTF-16 surrogate (\\ud800-\\udfff): not "
                                     "Unicode text")
    return document


def _has_surrogate(document: Any) -> bool:
    """Whether any string in the document (keys included) holds a lone surrogate.

    Iterative: a document nested as deep as the JSON parser allows must not overflow here.
    """
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATES.search(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _name(task: Any) -> str | None:
    return task if isinstance(task, str) else None


def _task_from_name(name: str | None, invalid: _Invalid) -> Task:
    if name is None:
        raise invalid("task", "must be a string", ErrorCode.UNKNOWN_TASK)
    short = name.removeprefix(TASK_MODULE)
    try:
        return Task(short)
    except ValueError:
        known = ", ".join(t.value for t in Task)
        raise invalid("task", f"unknown task {name!r} (known: {known})",
                      ErrorCode.UNKNOWN_TASK) from None


def _text(value: Any, name: str, invalid: _Invalid, *, allow_empty: bool = False) -> str:
    """Ids are strings; integers are accepted and kept exactly (JavaScript may send numbers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise invalid(name, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise invalid(name, "must not be empty")
    return value


def _check_key(key: str, invalid: _Invalid) -> None:
    """Structural hostility only; which prefixes may be deleted is the duplicate stage's call."""
    if key.startswith("/"):
        raise invalid("filepath", "must be a key relative to the bucket, not an absolute path",
                      ErrorCode.KEY_INVALID)
    if any(part in ("..", ".") for part in key.split("/")):
        raise invalid("filepath", "must not contain '.' or '..' segments", ErrorCode.KEY_INVALID)
    unsafe = _UNSAFE_KEY_CHARS.search(key)
    if unsafe:
        raise invalid("filepath", "must not contain control characters, line separators or "
                                  f"noncharacters (found U+{ord(unsafe.group()):04X})",
                      ErrorCode.KEY_INVALID)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise invalid("filepath", f"is longer than S3's {MAX_KEY_BYTES}-byte limit",
                      ErrorCode.KEY_INVALID)


def _num_peaks(value: Any, maximum: int, invalid: _Invalid) -> int:
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
