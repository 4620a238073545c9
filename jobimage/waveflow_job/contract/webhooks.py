"""Webhook bodies to the backend, their delivery id and strict JSON (CONTRACT.md §2).

Every body WaveFlow posts is built here; :class:`Webhook` bundles a body with its event and
``X-WaveFlow-Delivery`` id, so the job's FAILURE and the runner's FAILURE are one builder
(:func:`failure_completion`) and cannot drift apart.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from waveflow_job.contract.fields import LowerSha256, Text, Timestamp, utc_now_iso
from waveflow_job.contract.messages import TASK_MODULE, StemMessage
from waveflow_job.contract.results import ErrorCode

__all__ = ["AnalysisResult", "CompletionBody", "DuplicateDeletedResult", "FailureResult",
           "HashCheckBody", "Webhook", "WebhookEvent", "analysis_success_body",
           "delivery_id", "dumps_strict", "duplicate_deleted_body", "failure_body",
           "failure_completion", "hash_check_body"]


class WebhookEvent(StrEnum):
    """The ``X-WaveFlow-Event`` header; also the webhook's path under WEBHOOK_URL."""

    HASH_CHECK = "hash-check"
    COMPLETION = "completion"


class HashCheckBody(TypedDict):
    """``POST {WEBHOOK_URL}/hash-check`` (fixed by the backend)."""

    stemId: Text
    userId: Text
    trackId: Text
    filepath: Text
    audio_hash: LowerSha256
    timestamp: Text
    original_filename: Text
    status: Literal["hash_generated"]


class CompletionBody(TypedDict):
    """``POST {WEBHOOK_URL}/completion`` (fixed by the backend); ``result`` is one of the three
    result types below, chosen by ``status`` (the schema says which)."""

    stemId: Text
    status: Literal["SUCCESS", "FAILURE"]
    result: dict[str, Any]
    timestamp: Annotated[Timestamp, {"minLength": 1}]


class AnalysisResult(TypedDict):
    """SUCCESS of an analysis; extra keys (channels, format, peak level…) are allowed."""

    #: The file's SHA-256: the backend stores it as the stem's hash.
    audio_data_hash: LowerSha256
    waveform_data_path: str
    file_size: Annotated[int, {"minimum": 0}]
    duration: float
    sample_rate: Annotated[int, {"minimum": 1}]
    num_peaks: Annotated[int, {"minimum": 1}]
    #: Ours (CONTRACT.md §8), kept by the backend as unknown keys: the detail waveform's key
    #: and the loudness, each absent when not measured (see WaveformDocument).
    waveform_detail_path: NotRequired[str]
    waveform_detail_samples_per_pixel: NotRequired[Annotated[int, {"minimum": 1}]]
    #: Why the detail is coarser than asked, or absent: its file would be over the size bound.
    waveform_detail_note: NotRequired[str]
    integrated_lufs: NotRequired[float]
    loudness_range_lu: NotRequired[Annotated[float, {"minimum": 0}]]
    true_peak_dbtp: NotRequired[float]


class DuplicateDeletedResult(TypedDict):
    """SUCCESS of the duplicate stage: the upload was deleted."""

    status: Literal["duplicate_file_deleted"]
    filepath: str
    audio_hash: LowerSha256


class FailureResult(TypedDict):
    """FAILURE: ``error_code`` and ``error_message`` (the backend stores both), ``task`` and
    ``retryable`` (ours)."""

    error_code: Annotated[str, {"enum": [code.value for code in ErrorCode]}]
    error_message: Text
    task: str | None
    retryable: bool


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
    """SUCCESS for an analysed stem; ``result`` has the keys of :class:`AnalysisResult`."""
    return {"stemId": message.stem_id, "status": "SUCCESS", "result": dict(result),
            "timestamp": utc_now_iso()}


def duplicate_deleted_body(message: StemMessage) -> CompletionBody:
    """SUCCESS for a deleted duplicate upload."""
    return {"stemId": message.stem_id, "status": "SUCCESS",
            "result": {"status": "duplicate_file_deleted", "filepath": message.filepath,
                       "audio_hash": message.audio_hash},
            "timestamp": utc_now_iso()}


def failure_body(stem_id: str, task: str | None, code: ErrorCode | str, message: str, *,
                 retryable: bool) -> CompletionBody:
    """FAILURE: sent once, for a final outcome only (CONTRACT.md §2).

    ``task`` is the short name whether or not it came with the ``app.tasks.`` prefix.
    """
    result: FailureResult = {"error_code": str(code), "error_message": message,
                             "task": task.removeprefix(TASK_MODULE) if task else task,
                             "retryable": retryable}
    return {"stemId": stem_id, "status": "FAILURE", "result": dict(result),
            "timestamp": utc_now_iso()}


def delivery_id(event: WebhookEvent, message_id: str | None, raw_body: str | bytes) -> str:
    """``X-WaveFlow-Delivery``: the same for one message and event, so repeats can be dropped."""
    # Imported here: hashlib loads OpenSSL's libcrypto (3.4 MiB resident), and every job
    # imports this module while only the webhook sender calls this function.
    import hashlib

    if message_id:
        basis = f"id:{message_id}"
    else:
        raw = raw_body.encode("utf-8") if isinstance(raw_body, str) else raw_body
        basis = "body:" + hashlib.sha256(raw).hexdigest()
    digest = hashlib.sha256(f"{basis}\n{event.value}".encode()).hexdigest()[:32]
    return f"{event.value}-{digest}"


@dataclass(frozen=True)
class Webhook:
    """One webhook request: the event (path and header), the body and its delivery id."""

    event: WebhookEvent
    body: HashCheckBody | CompletionBody
    #: ``X-WaveFlow-Delivery``.
    delivery: str


def failure_completion(*, stem_id: str, task: str | None, code: ErrorCode | str,
                       message: str, retryable: bool, message_id: str | None,
                       raw_body: str | bytes) -> Webhook:
    """The FAILURE completion for one message, as both the job (a rejection, not retryable)
    and the runner (retries exhausted, retryable) send it; the delivery id comes from the
    message's id, or its raw body when it has none."""
    return Webhook(WebhookEvent.COMPLETION,
                   failure_body(stem_id, task, code, message, retryable=retryable),
                   delivery_id(WebhookEvent.COMPLETION, message_id, raw_body))


def dumps_strict(document: Any) -> bytes:
    """Strict JSON (no NaN/Infinity: the backend rejects them), UTF-8, compact."""
    return json.dumps(document, allow_nan=False, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")
