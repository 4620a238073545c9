"""The backend's three task messages (CONTRACT.md §1): their kwargs, and a builder for each
envelope the backend or kombu sends.

One definition per task's kwargs (a ``TypedDict``) drives every use: the builders write them,
:mod:`~waveflow_job.contract.parsing` checks the required and optional fields they list, and
:mod:`~waveflow_job.contract.schemas` exports them as JSON Schema.
"""

import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NotRequired, TypedDict, get_type_hints

from waveflow_job.contract.fields import (
    DEFAULT_NUM_PEAKS,
    Id,
    Key,
    NumPeaks,
    Sha256,
    Timestamp,
)

__all__ = ["KNOWN_FIELDS", "OPTIONAL_FIELDS", "REQUIRED_FIELDS", "TASK_MODULE", "AnalysisKwargs",
           "DuplicateKwargs", "Envelope", "HashKwargs", "StemMessage", "Task", "flat_envelope",
           "json_envelope", "kombu_envelope", "message_document", "message_id_for",
           "task_kwargs", "task_name"]

#: The backend names its tasks ``app.tasks.<name>``; the short name is accepted too.
TASK_MODULE = "app.tasks."


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


class HashKwargs(TypedDict):
    """``generate_hash_and_webhook``: hash the upload, ask the backend about duplicates."""

    userId: Id
    trackId: Id
    stemId: Id
    filepath: Key
    timestamp: NotRequired[Timestamp]
    original_filename: NotRequired[str]


class DuplicateKwargs(TypedDict):
    """``process_duplicate_file``: delete this duplicate upload."""

    userId: Id
    trackId: Id
    stemId: Id
    filepath: Key
    audio_hash: Sha256


class AnalysisKwargs(TypedDict):
    """``process_audio_analysis``: decode, store waveform JSON, report completion."""

    userId: Id
    trackId: Id
    stemId: Id
    filepath: Key
    audio_hash: Sha256
    timestamp: NotRequired[Timestamp]
    original_filename: NotRequired[str]
    num_peaks: NotRequired[NumPeaks]


#: A TypedDict class per task (typed ``Any``: mypy has no type for "some TypedDict class").
_KWARGS: dict[Task, Any] = {Task.HASH: HashKwargs, Task.DUPLICATE: DuplicateKwargs,
                            Task.ANALYSIS: AnalysisKwargs}


def task_kwargs(task: Task) -> Any:
    """The ``TypedDict`` of ``task``'s kwargs (for the schema export)."""
    return _KWARGS[task]


def _fields(task: Task, required: bool) -> tuple[str, ...]:
    kwargs = _KWARGS[task]
    wanted = kwargs.__required_keys__ if required else kwargs.__optional_keys__
    return tuple(name for name in get_type_hints(kwargs) if name in wanted)


REQUIRED_FIELDS = {task: _fields(task, required=True) for task in Task}
OPTIONAL_FIELDS = {task: _fields(task, required=False) for task in Task}
#: Every kwarg some task names; the rest are carried through as ``StemMessage.extra``.
KNOWN_FIELDS = frozenset(name for task in Task
                         for name in (*REQUIRED_FIELDS[task], *OPTIONAL_FIELDS[task]))


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


# --------------------------------------------------------------------------- building

_ID_PREFIX = {Task.HASH: "hash", Task.DUPLICATE: "duplicate", Task.ANALYSIS: "analysis"}
#: Celery protocol 2's third body element: no callbacks, no chain.
_KOMBU_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_name(task: Task) -> str:
    """The task's full name as the backend writes it: ``app.tasks.<name>``."""
    return TASK_MODULE + task.value


def message_id_for(task: Task, stem_id: str, millis: int | None = None) -> str:
    """The backend's message id: ``hash-|duplicate-|analysis-`` + stemId + epoch milliseconds."""
    stamp = int(time.time() * 1000) if millis is None else millis
    return f"{_ID_PREFIX[task]}-{stem_id}-{stamp}"


def message_document(task: Task, kwargs: Mapping[str, Any], *,
                     message_id: str | None = None) -> dict[str, Any]:
    """The envelope the backend sends today, as a document: ``{"task", "id", "args", "kwargs"}``.

    Without ``message_id`` the id is made as the backend makes it (:func:`message_id_for`).
    """
    return {"task": task_name(task),
            "id": message_id or message_id_for(task, str(kwargs["stemId"])),
            "args": [], "kwargs": dict(kwargs)}


def json_envelope(task: Task, kwargs: Mapping[str, Any], *,
                  message_id: str | None = None) -> str:
    """:func:`message_document` as the SQS body text (UTF-8 JSON, as NestJS writes it)."""
    return _dumps(message_document(task, kwargs, message_id=message_id))


def flat_envelope(task: Task, kwargs: Mapping[str, Any], *, message_id: str | None = None
                  ) -> str:
    """The kwargs at top level beside the short task name (and ``id`` when given)."""
    document: dict[str, Any] = {"task": task.value, **kwargs}
    if message_id is not None:
        document["id"] = message_id
    return _dumps(document)


def kombu_envelope(task: Task, kwargs: Mapping[str, Any], *, message_id: str) -> str:
    """Celery protocol 2 as kombu's SQS transport writes it: base64 JSON, base64 body."""
    body = _dumps([[], dict(kwargs), _KOMBU_EMBED])
    envelope = {
        "body": base64.b64encode(body.encode("utf-8")).decode("ascii"),
        "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": task_name(task), "id": message_id},
        "properties": {"body_encoding": "base64", "delivery_tag": message_id},
    }
    return base64.b64encode(_dumps(envelope).encode("utf-8")).decode("ascii")


def _dumps(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))
