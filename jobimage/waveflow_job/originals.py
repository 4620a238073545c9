"""What WaveFlow remembers about uploads, in its own bucket, so no guard rests on tags alone.

Tags vanish when the same key is PUT again, and a deleted object leaves nothing behind, so the
job keeps two small records under ``waveforms/`` (which the duplicate stage never deletes):

- **sources**: ``waveforms/sources/<sha256(key)>/<sha256(stemId)>.json``, written by the
  analysis stage before it stores the waveform and reports SUCCESS: "stem S's waveform was drawn
  from this key", with the SUCCESS ``result`` it is about to send. One object per (key, stem),
  so two stems analysing the same key at once never overwrite each other's record and no
  conditional write is needed. The duplicate stage reads a key's records with one ListObjectsV2
  and never deletes a key that has any. When the key is gone later (deleted outside WaveFlow),
  the record and the waveform it names still show the stem completed, and what it answered.
- **deletions** (tombstones): ``waveforms/deleted/<sha256(key)>/<sha256(stemId)>.json``,
  written by the duplicate stage *before* it deletes: the bytes (SHA-256) it deleted for which
  stem. A later message about the gone key — the hash message or the duplicate message
  delivered again — finds it and gets the same answer as the first time, not OBJECT_NOT_FOUND.

Keys and stemIds are hashed into the record names: any Unicode, any length, one fixed shape.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from waveflow_job.contract import WAVEFORM_PREFIX, dumps_strict, utc_now_iso

if TYPE_CHECKING:
    from waveflow_job.s3 import Storage

__all__ = ["DELETED_PREFIX", "SOURCES_PREFIX", "Completion", "Deletion", "Sources",
           "find_completion", "find_deletion", "read_sources", "record_deletion",
           "record_source"]

log = logging.getLogger(__name__)

SOURCES_PREFIX = f"{WAVEFORM_PREFIX}sources/"
DELETED_PREFIX = f"{WAVEFORM_PREFIX}deleted/"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _source_dir(key: str) -> str:
    return f"{SOURCES_PREFIX}{_digest(key)}/"


def source_record_key(key: str, stem_id: str) -> str:
    """Where the record "``stem_id``'s waveform was drawn from ``key``" lives."""
    return f"{_source_dir(key)}{_digest(stem_id)}.json"


def deletion_record_key(key: str, stem_id: str) -> str:
    """Where the tombstone of ``key``, deleted as ``stem_id``'s duplicate, lives."""
    return f"{DELETED_PREFIX}{_digest(key)}/{_digest(stem_id)}.json"


# --------------------------------------------------------------------------- sources


def record_source(storage: Storage, key: str, stem_id: str, audio_hash: str,
                  waveform_key: str, result: Mapping[str, Any] | None = None) -> None:
    """Remember that ``stem_id``'s waveform is drawn from ``key`` (idempotent overwrite), and
    the SUCCESS ``result`` the analysis reports, so it can be given again without the key."""
    record: dict[str, Any] = {
        "source_key": key, "stemId": stem_id, "audio_hash": audio_hash,
        "waveform_data_path": waveform_key, "recorded_at": utc_now_iso()}
    if result is not None:
        record["result"] = dict(result)
    storage.put_json(source_record_key(key, stem_id), dumps_strict(record))


@dataclass(frozen=True)
class Completion:
    """A stem whose waveform was drawn from a key and is still stored: the stem completed."""

    key: str
    stem_id: str
    #: Lowercase hex SHA-256 of the bytes the waveform was drawn from.
    audio_hash: str
    waveform_key: str
    #: The SUCCESS ``result`` recorded with it; None in records of earlier releases.
    result: Mapping[str, Any] | None


def find_completion(storage: Storage, key: str, stem_id: str) -> Completion | None:
    """The stem's completion from ``key``, when its source record and its waveform both exist.

    The record alone is not enough: it is written just before the waveform, so a job killed
    between the two leaves a record of an analysis that never completed.
    """
    record = source_record_key(key, stem_id)
    document = _read_json(storage, record)
    if document is None:
        return None
    audio_hash, waveform = document.get("audio_hash"), document.get("waveform_data_path")
    result = document.get("result")
    if document.get("source_key") != key or document.get("stemId") != stem_id \
            or not isinstance(audio_hash, str) or not _SHA256_HEX.match(audio_hash) \
            or not isinstance(waveform, str) or not waveform.startswith(WAVEFORM_PREFIX) \
            or not (result is None or _matches(result, audio_hash, waveform)):
        log.warning("ignoring a malformed source record", extra={"record": record})
        return None
    if storage.metadata(waveform) is None:
        return None
    return Completion(key, stem_id, audio_hash, waveform, result)


def _matches(result: Any, audio_hash: str, waveform: str) -> bool:
    """A recorded result is only re-sent when it is the one this record is about."""
    return isinstance(result, dict) and result.get("audio_data_hash") == audio_hash \
        and result.get("waveform_data_path") == waveform


@dataclass(frozen=True)
class Sources:
    """Which stems' waveforms were drawn from one key."""

    key: str
    #: The record keys found (one per stem).
    records: tuple[str, ...]
    #: Whether the stem that asks is among them.
    includes_asking_stem: bool

    def __bool__(self) -> bool:
        return bool(self.records)


def read_sources(storage: Storage, key: str, asking_stem: str) -> Sources:
    """One ListObjectsV2 of the key's records; a second request only past a full page."""
    records, truncated = storage.list_keys(_source_dir(key))
    own = source_record_key(key, asking_stem)
    includes = own in records or (truncated and storage.get_small(own) is not None)
    return Sources(key, tuple(records), includes)


def another_stem(storage: Storage, sources: Sources, asking_stem: str) -> str | None:
    """The stemId of some other stem in ``sources`` (for the refusal's message)."""
    own = source_record_key(sources.key, asking_stem)
    for record in sources.records:
        if record == own:
            continue
        document = _read_json(storage, record)
        stem = document.get("stemId") if document else None
        return stem if isinstance(stem, str) else None
    return None


# --------------------------------------------------------------------------- deletions


@dataclass(frozen=True)
class Deletion:
    """A key the duplicate stage deleted (or was about to delete) for a stem."""

    key: str
    stem_id: str
    #: Lowercase hex SHA-256 of the bytes that were deleted.
    audio_hash: str


def record_deletion(storage: Storage, key: str, stem_id: str, audio_hash: str,
                    message_id: str | None) -> None:
    """Write the tombstone; the duplicate stage calls this before it deletes."""
    storage.put_json(deletion_record_key(key, stem_id), dumps_strict({
        "deleted_key": key, "stemId": stem_id, "audio_hash": audio_hash,
        "message_id": message_id, "recorded_at": utc_now_iso()}))


def find_deletion(storage: Storage, key: str, stem_id: str) -> Deletion | None:
    """The tombstone of ``key`` deleted as ``stem_id``'s duplicate, if WaveFlow wrote one."""
    record = deletion_record_key(key, stem_id)
    document = _read_json(storage, record)
    if document is None:
        return None
    audio_hash = document.get("audio_hash")
    if document.get("deleted_key") != key or document.get("stemId") != stem_id \
            or not isinstance(audio_hash, str) or not _SHA256_HEX.match(audio_hash):
        log.warning("ignoring a malformed tombstone", extra={"record": record})
        return None
    return Deletion(key, stem_id, audio_hash)


def _read_json(storage: Storage, key: str) -> dict[str, Any] | None:
    body = storage.get_small(key)
    if body is None:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None
