"""Settling notes of local jobs: how far settling a failed job's message got, kept on disk so a
runner killed before the delete does not repeat a step (docs/GUARANTEES.md, "settled once").

``<scratch root>/wfsettle-<job name>.json`` holds the job's result and whether its dead letter
was sent. The settler writes it before the FAILURE and again after the dead-letter copy, and
removes it once the message is deleted; the next runner's ``recover`` hands every note back as a
finished result, so a redelivered message is settled from where it stopped (the FAILURE again,
with the same delivery id, or only the delete), never run again nor dead-lettered twice. A note
whose message never comes back (the runner died after the delete) is swept once no SQS message
can still exist: after SQS's longest retention, 14 days.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from waveflow_job.contract import JobSummary, Outcome
from waveflow_operator.runner.protocol import JobResult

__all__ = ["NOTE_PREFIX", "NOTE_SECONDS", "read_notes", "remove_note", "sweep_notes",
           "write_note"]

#: Every note starts with this; nothing else in the scratch root is read as one.
NOTE_PREFIX = "wfsettle-"
#: SQS keeps a message 14 days at most: an older note cannot belong to a message still queued.
NOTE_SECONDS = 14 * 24 * 3600


def _path(root: Path, job_name: str) -> Path:
    return root / f"{NOTE_PREFIX}{job_name}.json"


def write_note(root: Path, result: JobResult) -> None:
    """Replace the note of ``result.job_name`` atomically (write, fsync, rename)."""
    document = {"job_name": result.job_name, "outcome": result.outcome.value,
                "error_code": result.error_code, "error_message": result.error_message,
                "summary": result.summary.to_json() if result.summary else None,
                "duration_seconds": result.duration_seconds,
                "dead_lettered": result.dead_lettered}
    target = _path(root, result.job_name)
    partial = target.with_name(f".{target.name}.partial")
    with partial.open("w", encoding="utf-8") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(target)


def remove_note(root: Path, job_name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _path(root, job_name).unlink()


def read_notes(root: Path) -> dict[str, JobResult]:
    """Every readable note: job name → its result (``dead_lettered`` as noted)."""
    results: dict[str, JobResult] = {}
    if not root.is_dir():
        return results
    for path in sorted(root.glob(f"{NOTE_PREFIX}*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            summary = JobSummary.from_json(document["summary"]) if document["summary"] else None
            result = JobResult(str(document["job_name"]), Outcome(document["outcome"]),
                               document["error_code"], document["error_message"], summary,
                               document["duration_seconds"], bool(document["dead_lettered"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: the job runs again, as it would have without a note
        if path.name == _path(root, result.job_name).name:
            results[result.job_name] = result
    return results


def sweep_notes(root: Path, *, now: float | None = None,
                older_than: float = NOTE_SECONDS) -> list[Path]:
    """Remove notes (and half-written ones) no queued message can still need."""
    moment = time.time() if now is None else now
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    aged = [(path, older_than) for path in root.glob(f"{NOTE_PREFIX}*.json")]
    # A half-written note is a runner killed while writing it: gone after a minute.
    aged += [(path, 60.0) for path in root.glob(f".{NOTE_PREFIX}*.partial")]
    for path, limit in aged:
        with contextlib.suppress(OSError):
            if moment - path.lstat().st_mtime > limit:
                path.unlink()
                removed.append(path)
    return removed
