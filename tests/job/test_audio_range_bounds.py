"""Where the parallel decoder splits a file: ranges as equal as the alignment allows, and the
result of the ranges the same bytes as one pass when a bound is rounded up."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from waveflow_dev import synth
from waveflow_job.audio import passes
from waveflow_job.audio.passes import range_bounds
from waveflow_job.waveform import DetailRequest, analyse_file, build_waveform_document

#: At 44.1 kHz: a 256-frame detail point and the 4410-frame loudness step.
UNIT_44K = 564_480


@pytest.mark.parametrize("workers", [2, 3, 4])
@pytest.mark.parametrize("unit", [1, 256, 38_400, UNIT_44K])
def test_ranges_are_within_half_a_unit_of_equal(workers: int, unit: int) -> None:
    for frames in range(2 * workers * unit, 2 * workers * unit + 40 * unit, unit // 7 + 1):
        bounds = range_bounds(frames, workers, unit)
        assert len(bounds) == workers + 1 and bounds[0] == 0 and bounds[-1] == frames
        assert all(b % unit == 0 for b in bounds[1:-1])
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            assert lo < hi
            if i < workers - 1:
                assert abs(hi - frames * (i + 1) / workers) <= unit / 2


def test_a_five_minute_file_at_44k_is_split_nearly_in_half() -> None:
    frames = 300 * 44100
    start, mid, end = range_bounds(frames, 2, UNIT_44K)
    assert (start, end) == (0, frames)
    # Rounding down gave 6,209,280 + 7,020,720 frames (13 % apart).
    assert abs((end - mid) - mid) <= UNIT_44K
    assert mid == 12 * UNIT_44K


@pytest.mark.parametrize("fmt", ["wav-16", "flac-16", "mp3-vbr"])
def test_ranges_split_past_the_middle_give_the_same_bytes(tmp_path: Path, fmt: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # 70 s at 44.1 kHz: the middle is 2.73 units in, so the bound is rounded up to 3.
    path = synth.write_tone(tmp_path / f"x{synth.FORMATS[fmt].suffix}", fmt, 70.0, 44100, 2)
    split: list[int] = []
    reduce_ranges = passes.reduce_ranges

    def recorded(plan: passes.Plan, frames: int, workers: int) -> passes.Passed | int:
        split.append(workers)
        return reduce_ranges(plan, frames, workers)

    monkeypatch.setattr(passes, "reduce_ranges", recorded)
    outcomes = []
    for workers in (1, 2):
        dat = tmp_path / f"{workers}.dat"
        analysis = analyse_file(path, 1024, workers=workers, detail=DetailRequest(dat))
        assert workers == 1 or range_bounds(analysis.waveform.frames, 2, UNIT_44K)[1] == (
            3 * UNIT_44K)
        document = build_waveform_document(analysis, created_at="t", detail_path="d")
        outcomes.append((json.dumps(document, sort_keys=True), dat.read_bytes()))
    assert outcomes[0] == outcomes[1]
    assert split == [2]  # the second analysis took the ranges
