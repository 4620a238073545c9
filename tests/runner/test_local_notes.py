"""Settling notes of the local launcher: written atomically, read back, swept when stale."""

from __future__ import annotations

import os
from pathlib import Path

from waveflow_job.contract import Outcome
from waveflow_operator.local.notes import (
    NOTE_SECONDS,
    read_notes,
    remove_note,
    sweep_notes,
    write_note,
)
from waveflow_operator.runner.protocol import JobResult


def test_a_note_comes_back_as_the_result_it_was_written_from(tmp_path: Path) -> None:
    result = JobResult("wf-hash-abc", Outcome.FAILED, "JOB_BACKOFF_LIMIT", "failed 3 times",
                       None, 2.5, dead_lettered=True)
    write_note(tmp_path, result)
    assert read_notes(tmp_path) == {"wf-hash-abc": result}
    remove_note(tmp_path, "wf-hash-abc")
    remove_note(tmp_path, "wf-hash-abc")  # twice: harmless
    assert read_notes(tmp_path) == {} and list(tmp_path.iterdir()) == []


def test_unreadable_or_misnamed_notes_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "wfsettle-wf-hash-1.json").write_text("{not json")
    write_note(tmp_path, JobResult("wf-hash-2", Outcome.FAILED, "JOB_OOM_KILLED"))
    (tmp_path / "wfsettle-wf-hash-2.json").rename(tmp_path / "wfsettle-wf-hash-3.json")
    assert read_notes(tmp_path) == {}


def test_the_sweep_removes_only_notes_no_queued_message_can_need(tmp_path: Path) -> None:
    for name in ("old", "new"):
        write_note(tmp_path, JobResult(f"wf-hash-{name}", Outcome.FAILED, "JOB_BACKOFF_LIMIT"))
    partial = tmp_path / ".wfsettle-wf-hash-cut.json.partial"
    partial.write_text("{")
    (tmp_path / "wfjob-other").mkdir()
    old = tmp_path / "wfsettle-wf-hash-old.json"
    stamp = old.stat().st_mtime - NOTE_SECONDS - 1
    os.utime(old, (stamp, stamp))
    os.utime(partial, (stamp, stamp))
    assert sorted(p.name for p in sweep_notes(tmp_path)) == [partial.name, old.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wfjob-other",
                                                          "wfsettle-wf-hash-new.json"]
