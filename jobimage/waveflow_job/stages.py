"""The three tasks of the pipeline (CONTRACT.md §1-3, §6).

Each stage does its work, POSTs its webhook and returns a :class:`StageResult` for the job's
summary; anything that stops it is raised as an ``errors.Rejected`` (final) or
``errors.Transient`` (retry) and turned into an exit code and, for rejections, a FAILURE
completion by the CLI. Side effects are ordered so a retry after any failure is safe:
re-hashing, re-uploading the same waveform key, re-tagging and re-deleting all converge, and
every webhook repeat carries the same delivery id.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from waveflow_job import contract, originals
from waveflow_job.contract import ErrorCode, StemMessage, Task, WebhookEvent
from waveflow_job.errors import DeletionRefused, ObjectError, SourceGone

if TYPE_CHECKING:
    from waveflow_job.config import JobConfig
    from waveflow_job.s3 import ObjectInfo, Storage
    from waveflow_job.webhooks import WebhookClient

__all__ = ["ANALYSED_TAG", "STEM_TAG", "Job", "StageResult", "run_stage"]

log = logging.getLogger(__name__)

#: Tag on an original after a successful analysis: the duplicate stage never deletes it.
ANALYSED_TAG = "waveflow-analysed"
#: Tag naming the stem an analysed original belongs to (value encoded for S3 if needed).
STEM_TAG = "waveflow-stem-id"
#: Metadata on a waveform JSON naming the upload it was drawn from. Tags do not survive a
#: re-PUT of the upload; this does, so a re-uploaded original is still recognised.
SOURCE_KEY_METADATA = "waveflow-source-key"
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


@dataclass
class StageResult:
    """What the job's summary reports about a finished stage."""

    bytes: int = 0
    audio_seconds: float = 0.0
    #: Seconds per phase (head, hash, download, analyse, upload, tag, delete, webhook).
    timings: dict[str, float] = field(default_factory=dict)
    #: Why the stage answered as it did, when it did not take the plain path (job summary).
    note: str | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self.timings[name] = round(self.timings.get(name, 0.0) + spent, 3)


@dataclass
class Job:
    """One message and the clients it is processed with."""

    message: StemMessage
    #: The SQS body exactly as received: delivery ids fall back to a hash of it.
    raw: str | bytes
    config: JobConfig
    storage: Storage
    webhooks: WebhookClient

    def post(self, event: WebhookEvent, body: Any) -> None:
        """POST a webhook with this message's delivery id for ``event``."""
        delivery = contract.delivery_id(event, self.message.message_id, self.raw)
        self.webhooks.post(event, body, delivery=delivery)


def run_stage(job: Job) -> StageResult:
    """Run the task the message names."""
    stages: dict[Task, Callable[[Job], StageResult]] = {
        Task.HASH: generate_hash_and_webhook,
        Task.DUPLICATE: process_duplicate_file,
        Task.ANALYSIS: process_audio_analysis,
    }
    return stages[job.message.task](job)


# --------------------------------------------------------------------------- hash


def generate_hash_and_webhook(job: Job) -> StageResult:
    """SHA-256 the upload (streamed, never on disk) and ask the backend about duplicates."""
    message, result = job.message, StageResult()
    with result.phase("head"):
        found = _head_or_answer(job)
    if isinstance(found, originals.Deletion):
        log.info("this upload was deleted as a duplicate of this stem; reporting the hash it "
                 "had again", extra={"filepath": message.filepath,
                                     "audio_hash": found.audio_hash})
        sha256 = found.audio_hash
        result.note = "answered from the tombstone: WaveFlow deleted this upload as a duplicate"
    elif isinstance(found, originals.Completion):
        log.info("this stem completed but its upload is gone (deleted outside WaveFlow); "
                 "reporting the hash its waveform was drawn from again",
                 extra={"filepath": message.filepath, "audio_hash": found.audio_hash})
        sha256 = found.audio_hash
        result.note = _GONE_NOTE
    else:
        info = found
        with result.phase("hash"):
            digest = job.storage.sha256(info, max_bytes=job.config.max_file_bytes)
        result.bytes, sha256 = digest.size, digest.sha256
        log.info("hashed", extra={"bytes": digest.size, "audio_hash": sha256})
    with result.phase("webhook"):
        job.post(WebhookEvent.HASH_CHECK, contract.hash_check_body(message, sha256))
    return result


_GONE_NOTE = ("answered from the source record: the stem completed and its upload is gone "
              "(deleted outside WaveFlow)")


def _head_or_answer(job: Job) -> ObjectInfo | originals.Completion | originals.Deletion:
    """HEAD the upload; when it is gone, what WaveFlow remembers of it for this stem, so a late
    message is answered as the first was (CONTRACT.md §6), never with a FAILURE for a stem
    that completed.

    A completion (source record and waveform) wins over a tombstone: a key with a source record
    is never deleted by WaveFlow, so a tombstone can only be older than the completion.
    """
    message = job.message
    try:
        return job.storage.head(message.filepath, max_bytes=job.config.max_file_bytes)
    except ObjectError as error:
        if error.code is not ErrorCode.OBJECT_NOT_FOUND:
            raise
        found = originals.find_completion(job.storage, message.filepath, message.stem_id) \
            or originals.find_deletion(job.storage, message.filepath, message.stem_id)
        if found is None:
            raise
        return found


# --------------------------------------------------------------------------- duplicate


def process_duplicate_file(job: Job) -> StageResult:
    """Delete a duplicate upload, unless anything suggests it is not one (CONTRACT.md §6).

    An object that is already gone counts as deleted: a redelivered message, or a retry after
    the completion webhook failed, must reach the same SUCCESS (same delivery id, so the
    backend can drop the repeat). That is safe because nothing is deleted on that path: the
    state the backend asked for — no such upload in the bucket — already holds.
    """
    message, result, key = job.message, StageResult(), job.message.filepath
    if not job.config.may_delete(key):
        raise DeletionRefused(
            ErrorCode.KEY_OUTSIDE_PREFIXES,
            f"{key} is not under the upload prefixes "
            f"({', '.join(job.config.upload_prefixes) or 'any key outside waveforms/'})")
    try:
        with result.phase("head"):
            info = job.storage.head(key, max_bytes=job.config.max_file_bytes)
    except ObjectError as error:
        if error.code is not ErrorCode.OBJECT_NOT_FOUND:
            raise
        if originals.find_completion(job.storage, key, message.stem_id) is not None:
            raise SourceGone(
                f"{key} is gone (deleted outside WaveFlow), and it was the original this "
                "stem's waveform was drawn from, not a duplicate: nothing deleted, and no "
                "webhook sent (the stem already completed)") from None
        known = originals.find_deletion(job.storage, key, message.stem_id) is not None
        log.info("duplicate already deleted; reporting it again",
                 extra={"filepath": key, "tombstone": known})
    else:
        _refuse_analysed_sources(job, key)
        _refuse_originals(job, key)
        with result.phase("hash"):
            digest = job.storage.sha256(info, max_bytes=job.config.max_file_bytes)
        result.bytes = digest.size
        if digest.sha256 != message.audio_hash:
            raise DeletionRefused(
                ErrorCode.HASH_MISMATCH,
                f"{key} has SHA-256 {digest.sha256}, not the message's {message.audio_hash}")
        _refuse_reuploaded_original(job, key, digest.sha256)
        with result.phase("delete"):
            # The tombstone first: killed after it, a redelivery deletes and answers again;
            # killed after the delete, later messages about the key still find the answer.
            originals.record_deletion(job.storage, key, message.stem_id, digest.sha256,
                                      message.message_id)
            job.storage.delete(key)
        log.info("duplicate deleted", extra={"filepath": key, "bytes": digest.size})
    with result.phase("webhook"):
        job.post(WebhookEvent.COMPLETION, contract.duplicate_deleted_body(message))
    return result


def _refuse_originals(job: Job, key: str) -> None:
    """Never delete an analysed original; stay silent when it is this very stem's."""
    tags = job.storage.tags(key)
    if ANALYSED_TAG not in tags and STEM_TAG not in tags:
        return
    owner = tags.get(STEM_TAG)
    if owner == job.message.stem_id:
        raise DeletionRefused(
            ErrorCode.ORIGINAL_PROTECTED,
            f"{key} is the analysed original of this stem; not deleted, and no FAILURE sent "
            "(the stem already completed)", silent=True)
    raise DeletionRefused(ErrorCode.ANALYSED_ORIGINAL,
                          f"{key} is the analysed original of stem {owner or '(unknown)'}")


def _refuse_analysed_sources(job: Job, key: str) -> None:
    """Never delete a key any stem's waveform was drawn from, whatever its tags say now.

    A PUT of the same key (another stem uploading the same bytes, a user retry) wipes the
    tags; the source records (written before every SUCCESS) stay. Silent when one of them is
    this very stem's: it completed, and a FAILURE would mark it failed.
    """
    sources = originals.read_sources(job.storage, key, job.message.stem_id)
    if not sources:
        return
    if sources.includes_asking_stem:
        job.storage.merge_tags(key, {ANALYSED_TAG: "true", STEM_TAG: job.message.stem_id})
        raise DeletionRefused(
            ErrorCode.ORIGINAL_PROTECTED,
            f"{key} is the original this stem's waveform was drawn from; tags restored, not "
            "deleted, and no FAILURE sent (the stem already completed)", silent=True)
    owner = originals.another_stem(job.storage, sources, job.message.stem_id)
    raise DeletionRefused(ErrorCode.ANALYSED_ORIGINAL,
                          f"{key} is the analysed original of stem {owner or '(unknown)'}")


def _refuse_reuploaded_original(job: Job, key: str, sha256: str) -> None:
    """An original PUT again with the same bytes has lost its tags; its waveform still says.

    The stem's waveform for exactly these bytes exists and was drawn from this very key: the
    object is this stem's original, re-uploaded (the backend then asks to delete it as a
    duplicate of itself, CONTRACT.md §7). Keep it, restore its tags, stay silent. A waveform
    drawn from another key means this key is a true duplicate, and deleting it is right.
    """
    metadata = job.storage.metadata(contract.waveform_key(job.message.stem_id, sha256))
    if metadata is None:
        return
    source = metadata.get(SOURCE_KEY_METADATA)
    if source is not None and source != key:
        return
    job.storage.merge_tags(key, {ANALYSED_TAG: "true", STEM_TAG: job.message.stem_id})
    raise DeletionRefused(
        ErrorCode.ORIGINAL_PROTECTED,
        f"{key} was re-uploaded after this stem's analysis of the same bytes; it is the "
        "stem's original: tags restored, not deleted, no FAILURE sent", silent=True)


# --------------------------------------------------------------------------- analysis


def process_audio_analysis(job: Job) -> StageResult:
    """Download (hashing on the way), analyse, store the waveform JSON, tag, report SUCCESS."""
    from waveflow_job import waveform  # numpy and the decoders: only this stage needs them

    message, result, config = job.message, StageResult(), job.config
    with result.phase("head"):
        info = _head_or_answer(job)
    if isinstance(info, originals.Deletion):  # a late message for a deleted duplicate's stem
        return _report_deleted_again(job, info, result)
    if isinstance(info, originals.Completion):  # a late message for a completed stem
        return _report_completed_again(job, info, result)
    workdir = Path(tempfile.mkdtemp(prefix="waveflow-", dir=config.scratch_dir))
    try:
        local = workdir / ("input" + _suffix(message.filepath))
        with result.phase("download"), local.open("wb") as target:
            digest = job.storage.download(info, target, max_bytes=config.max_file_bytes)
        result.bytes = digest.size
        if digest.sha256 != message.audio_hash:
            log.warning("object changed since its hash-check; reporting the hash of what was "
                        "analysed", extra={"audio_hash": message.audio_hash,
                                           "analysed_hash": digest.sha256})
        key = contract.waveform_key(message.stem_id, digest.sha256)
        detail = None
        if config.detail_samples_per_pixel:
            detail = waveform.DetailRequest(workdir / "detail.dat",
                                            config.detail_samples_per_pixel, config.detail_bits)
        with result.phase("analyse"):
            analysis = waveform.analyse_file(local, message.num_peaks,
                                             max_duration_seconds=config.max_duration_seconds,
                                             limits=config.audio_limits, detail=detail,
                                             loudness=config.loudness)
            # None also when the detail did not fit its size bound (analysis.detail_note).
            detail_key = (contract.detail_waveform_key(message.stem_id, digest.sha256)
                          if analysis.detail is not None else None)
            document = waveform.build_waveform_document(
                analysis, created_at=contract.utc_now_iso(), detail_path=detail_key)
        if analysis.detail_note is not None:
            log.warning(analysis.detail_note, extra={"waveform": key})
        result.audio_seconds = float(analysis.duration)
        success = _success_result(analysis, audio_hash=digest.sha256, waveform_path=key,
                                  detail_path=detail_key, file_size=digest.size,
                                  num_peaks=message.num_peaks)
        local.unlink()  # the scratch volume holds the .dat now, not both
        with result.phase("upload"):
            # The .dat first: the JSON that names it is never stored without it.
            if detail is not None and detail_key is not None:
                job.storage.put_file(detail_key, detail.path)
            # The source record before the waveform: every waveform's original is protected.
            originals.record_source(job.storage, message.filepath, message.stem_id,
                                    digest.sha256, key, success)
            job.storage.put_json(key, contract.dumps_strict(document),
                                 metadata={SOURCE_KEY_METADATA: message.filepath})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with result.phase("tag"):
        job.storage.merge_tags(message.filepath, {ANALYSED_TAG: "true",
                                                  STEM_TAG: message.stem_id})
    body = contract.analysis_success_body(message, success)
    log.info("analysed", extra={"waveform": key, "duration": analysis.duration,
                                "bytes": digest.size})
    with result.phase("webhook"):
        job.post(WebhookEvent.COMPLETION, body)
    return result


def _report_deleted_again(job: Job, deletion: originals.Deletion,
                          result: StageResult) -> StageResult:
    """The stem's final answer was "duplicate deleted"; give it again, never a FAILURE."""
    log.info("this upload was deleted as a duplicate of this stem; reporting that again",
             extra={"filepath": deletion.key, "audio_hash": deletion.audio_hash})
    answered = replace(job.message, audio_hash=deletion.audio_hash)
    with result.phase("webhook"):
        job.post(WebhookEvent.COMPLETION, contract.duplicate_deleted_body(answered))
    return result


def _report_completed_again(job: Job, completion: originals.Completion,
                            result: StageResult) -> StageResult:
    """The stem completed and its upload is gone: the SUCCESS it was given, again.

    The recorded ``result`` is the one sent the first time (the same message gets the same
    delivery id, so the backend drops the repeat). A record written before results were kept
    has nothing to re-send: the job ends without any webhook rather than guess one.
    """
    if completion.result is None:
        raise SourceGone(
            f"{completion.key} is gone (deleted outside WaveFlow) after this stem completed, "
            "and its source record keeps no result to send again: no webhook sent")
    log.info("this stem completed but its upload is gone (deleted outside WaveFlow); "
             "reporting its SUCCESS again", extra={"filepath": completion.key,
                                                   "waveform": completion.waveform_key})
    result.note = _GONE_NOTE
    with result.phase("webhook"):
        job.post(WebhookEvent.COMPLETION,
                 contract.analysis_success_body(job.message, completion.result))
    return result


def _success_result(analysis: Any, *, audio_hash: str, waveform_path: str,
                    detail_path: str | None, file_size: int, num_peaks: int) -> dict[str, Any]:
    """The SUCCESS ``result``: the backend's six keys, then facts (finite numbers only)."""
    result: dict[str, Any] = {
        "audio_data_hash": audio_hash,
        "waveform_data_path": waveform_path,
        "file_size": int(file_size),
        "duration": _finite(analysis.duration, 6) or 0.0,
        "sample_rate": int(analysis.info.sample_rate),
        "num_peaks": int(num_peaks),
    }
    if detail_path is not None and analysis.detail is not None:
        result["waveform_detail_path"] = detail_path
        result["waveform_detail_samples_per_pixel"] = int(analysis.detail.samples_per_pixel)
    if analysis.detail_note is not None:
        result["waveform_detail_note"] = analysis.detail_note
    for name, value in analysis.facts().items():
        if isinstance(value, float):
            value = _finite(value, 2)
        if value is not None:
            result[name] = value
    return result


def _finite(value: Any, digits: int) -> float | None:
    """A JSON-safe float, or None (left out) for missing, NaN or ±inf (e.g. silence's dBFS)."""
    if value is None:
        return None
    number = float(value)
    return round(number, digits) if math.isfinite(number) else None


def _suffix(key: str) -> str:
    """Keep a plain extension (decoders may look at it); never anything path-like."""
    suffix = PurePosixPath(key).suffix
    return suffix.lower() if _SAFE_SUFFIX.match(suffix) else ""
