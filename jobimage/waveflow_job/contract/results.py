"""How a job ends: exit codes, outcomes, error codes and the one-line summary (CONTRACT.md §4)."""

import json
from dataclasses import asdict, dataclass, field
from enum import IntEnum, StrEnum
from typing import Annotated

__all__ = ["ErrorCode", "ExitCode", "JobSummary", "Outcome"]


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
    #: The header declares a sample rate outside the configured range (default 4..768 kHz).
    AUDIO_SAMPLE_RATE_UNSUPPORTED = "AUDIO_SAMPLE_RATE_UNSUPPORTED"
    #: The header declares more channels than the configured maximum (default 64).
    AUDIO_TOO_MANY_CHANNELS = "AUDIO_TOO_MANY_CHANNELS"
    #: num_peaks x channels would make a waveform document above the configured size.
    WAVEFORM_TOO_LARGE = "WAVEFORM_TOO_LARGE"
    #: Duplicate stage: the key is outside the upload prefixes (or under waveforms/).
    KEY_OUTSIDE_PREFIXES = "KEY_OUTSIDE_PREFIXES"
    #: Duplicate stage: the object's SHA-256 is not the message's ``audio_hash``.
    HASH_MISMATCH = "HASH_MISMATCH"
    #: Duplicate stage: the object is another stem's analysed original.
    ANALYSED_ORIGINAL = "ANALYSED_ORIGINAL"
    #: Duplicate stage: the object is this very stem's analysed original (no FAILURE sent).
    ORIGINAL_PROTECTED = "ORIGINAL_PROTECTED"
    #: The upload of a stem that completed is gone (deleted outside WaveFlow) and nothing can
    #: be answered truthfully again (no FAILURE sent: the stem completed).
    SOURCE_GONE = "SOURCE_GONE"
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
    #: The body is larger than any job can be handed (MAX_MESSAGE_BYTES); final.
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"


@dataclass
class JobSummary:
    """The job's one-line JSON summary, read back by the runner (termination message)."""

    task: str | None
    outcome: Outcome
    stem_id: str | None = None
    message_id: str | None = None
    error_code: str | None = None
    bytes: Annotated[int, {"minimum": 0}] = 0
    audio_seconds: Annotated[float, {"minimum": 0}] = 0.0
    #: Seconds per phase (download, decode, upload, webhook…), rounded to milliseconds.
    timings: dict[str, float] = field(default_factory=dict)
    #: Why the job answered as it did, when that is not the plain path (e.g. "answered from
    #: the source record: the upload is gone").
    note: str | None = None

    def to_json(self) -> str:
        document = asdict(self)
        document["outcome"] = self.outcome.value
        return json.dumps(document, allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "JobSummary | None":
        """Parse a summary; None for anything that is not one (a kubelet's own message…)."""
        try:
            document = json.loads(text.strip().splitlines()[-1])
            return cls(
                task=document.get("task"), outcome=Outcome(document["outcome"]),
                stem_id=document.get("stem_id"), message_id=document.get("message_id"),
                error_code=document.get("error_code"), bytes=int(document.get("bytes", 0)),
                audio_seconds=float(document.get("audio_seconds", 0.0)),
                timings={str(k): float(v) for k, v in (document.get("timings") or {}).items()},
                note=note if isinstance(note := document.get("note"), str) else None,
            )
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None
