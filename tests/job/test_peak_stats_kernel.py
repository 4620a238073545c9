"""The true peak's block stats from the detail pass (kernel.detail_minmax's ``stats``).

With 256 frames per point from a block's first frame, the detail's points are the true peak's
256-frame blocks, and the detail pass computes what true_peak's own first pass would find in
each: the largest and smallest key (the sample; a float's bits ordered as integers) and the
largest |second difference| in float32. These tests check the stats against an independent
numpy computation of that definition, true_peak with them against true_peak without them (bit
for bit, history too), that true_peak does read them, and that the whole analysis writes the
same JSON, loudness and ``.dat`` with and without the fused path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import waveflow_job.audio._kernel as kernel
from job.test_true_peak_kernel import FULL_SCALE, music
from waveflow_dev import synth
from waveflow_job import waveform
from waveflow_job.audio import detail
from waveflow_job.audio.loudness import interpolator_taps
from waveflow_job.waveform import DetailRequest, analyse_file

pytestmark = pytest.mark.skipif(not kernel.peak_stats_available(),
                                reason="the block stats need the AVX-512 kernels")

BLOCK = 256


def keys(x: np.ndarray) -> np.ndarray:
    """true_peak.c's keys: integers as they are, a float's bits with negative magnitudes
    flipped (so they order as the floats do)."""
    if x.dtype != np.float32:
        return x.astype(np.int64)
    bits = x.view(np.int32).astype(np.int64)
    return np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def expected_stats(x: np.ndarray) -> np.ndarray:
    """Per 256-frame block: largest key, smallest key, and the largest |x[q-1] + x[q+1] -
    2 x[q]| in float32 over centres q from the block's start - 1 (the first block: from 1) to
    its end - 2."""
    n = len(x)
    f = x.astype(np.float32)
    second = np.abs((f[:-2] + f[2:]) - np.float32(2.0) * f[1:-1])  # second[i]: centre i + 1
    k = keys(x)
    blocks = -(-n // BLOCK)
    out = np.zeros((blocks, 3), dtype=np.int32)
    for b in range(blocks):
        a, e = b * BLOCK, min(n, (b + 1) * BLOCK)
        out[b, 0], out[b, 1] = k[a:e].max(), k[a:e].min()
        centres = second[(1 if b == 0 else a - 1) - 1:e - 2]
        out[b, 2:].view(np.float32)[0] = centres.max() if len(centres) else np.float32(0.0)
    return out


def signal(kind: str, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / rate
    if kind == "tone":  # the bench's: nearly every block beats its range bound
        return 0.5 * (0.6 + 0.4 * np.sin(2 * np.pi * 0.05 * t)) * np.sin(
            2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)
    if kind == "music":  # decaying bursts over chords with harmonics
        return music(n, rate, rng)
    # bursts: quiet noise and short fs/4 bursts at 45 degrees (true peak 3 dB over samples)
    out = 0.01 * rng.standard_normal(n)
    for at in rng.integers(0, max(1, n - 64), 1 + n // 20000):
        m = np.arange(min(64, n - at))
        out[at:at + len(m)] = 0.7 * np.sin(np.pi / 2 * m + np.pi / 4)
    return out


def raw(x: np.ndarray, dtype: Any) -> np.ndarray:
    """Samples in the source's type: 24-bit left-aligned in int32, int16, or float32 (floats
    beyond full scale and signed zeros included)."""
    if dtype == np.int32:
        return np.round(np.clip(x, -1.0, 1.0 - 2 ** -23) * 2 ** 23).astype(np.int32) << 8
    if dtype == np.int16:
        return np.round(np.clip(x, -1.0, 1.0 - 2 ** -15) * 32767).astype(np.int16)
    f = (x * 1.2).astype(np.float32)
    f[::97] = -0.0
    return f


def detail_call(x: np.ndarray, starts: np.ndarray, stats: np.ndarray | None) -> tuple[Any, ...]:
    points = np.zeros((-(-len(x) // BLOCK), 1, 2), dtype=np.int8)
    out_max, out_min = np.empty(len(starts), x.dtype), np.empty(len(starts), x.dtype)
    count = kernel.detail_minmax(x, starts, out_max, out_min, 0, BLOCK,
                                 1.0 / FULL_SCALE[x.dtype.type], 8, points, 0, 1, False, stats)
    return count, points, out_max, out_min


LENGTHS = [262144, 2 * 262144 + 77, 262144 - 1, 1000, 256, 255, 17, 3, 1]


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
@pytest.mark.parametrize("kind", ["tone", "music", "bursts"])
@pytest.mark.parametrize("rate", [44100, 96000])
def test_the_stats_equal_the_definition_and_leave_points_and_segments_as_they_were(
        dtype: Any, kind: str, rate: int) -> None:
    rng = np.random.default_rng(7)
    for n in LENGTHS:
        x = raw(signal(kind, n, rate, rng), dtype)
        # one segment (every whole point in a run), and segments cut anywhere (points done
        # one by one around each cut, runs shorter than the block, a cut inside point 0)
        cuts = np.unique(rng.integers(1, n, 12)) if n > 1 else np.zeros(0, np.int64)
        for starts in (np.array([0], np.int64), np.concatenate([[0], cuts]).astype(np.int64)):
            stats = np.full((-(-n // BLOCK), 3), -1, dtype=np.int32)
            fused = detail_call(x, starts, stats)
            plain = detail_call(x, starts, None)
            assert np.array_equal(stats, expected_stats(x)), (n, len(starts))
            assert fused[0] == plain[0]
            for a, b in zip(fused[1:], plain[1:], strict=True):
                assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
def test_a_spike_counts_in_the_blocks_whose_centres_it_neighbours(dtype: Any) -> None:
    """One loud sample in silence, at the call's first frames, at point edges and at its end:
    its second differences are the largest, so any centre counted or left out wrongly (before
    the call, past its end, at a point edge) shows."""
    n = 262144 - 256 + 100
    for at in (0, 1, 2, 255, 256, 257, 511, 512, 4095, 4096, n - 101, n - 100, n - 2, n - 1):
        for sign in (1, -1):
            x = np.zeros(n, dtype)
            x[at] = sign * (0.75 * FULL_SCALE[dtype] if dtype != np.float32 else 0.75)
            for starts in (np.array([0], np.int64), np.array([0, 1000, 5000], np.int64)):
                stats = np.empty((-(-n // BLOCK), 3), dtype=np.int32)
                detail_call(x, starts, stats)
                assert np.array_equal(stats, expected_stats(x)), (at, sign)


def test_nan_and_infinite_floats_leave_points_and_segments_as_they_were() -> None:
    """The fused float pass finds NaN through the keys: a NaN anywhere still makes its point
    stored(NaN) and its segment NaN (the accumulator refuses the block on that), and infinities
    are extremes like any other sample."""
    rng = np.random.default_rng(2)
    n = 262144 - 333
    cuts = np.concatenate([[0], np.unique(rng.integers(1, n, 9))]).astype(np.int64)
    for bad in (np.nan, -np.nan, np.inf, -np.inf):
        for at in (0, 1, 255, 256, 2047, 2048 + 100, n // 2, n - 1):
            x = raw(signal("music", n, 48000, rng), np.float32)
            x[at] = bad
            x[(at * 7 + 13) % n] = -0.0
            for starts in (np.array([0], np.int64), cuts):
                stats = np.empty((-(-n // BLOCK), 3), dtype=np.int32)
                fused, plain = detail_call(x, starts, stats), detail_call(x, starts, None)
                for a, b in zip(fused[1:], plain[1:], strict=True):
                    assert np.array_equal(a, b, equal_nan=True), (bad, at)
                if not np.isnan(bad):
                    assert np.array_equal(stats, expected_stats(x))


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
@pytest.mark.parametrize("kind", ["tone", "music", "bursts"])
@pytest.mark.parametrize("rate", [44100, 96000, 192000])
def test_true_peak_with_the_stats_equals_true_peak_without_them(dtype: Any, kind: str,
                                                               rate: int) -> None:
    """Consecutive calls of a stream (the history carried), of every length above, with the
    stats the detail pass gives: the same peak and the same history after each call."""
    rng = np.random.default_rng(11)
    bank = interpolator_taps(rate)
    history = [np.zeros(max(0, len(bank) - 1), np.float32) for _ in range(2)]
    peaks = [0.0, 0.0]
    inv = 1.0 / FULL_SCALE[dtype]
    for n in LENGTHS:
        x = raw(signal(kind, n, rate, rng), dtype)
        stats = np.empty((-(-n // BLOCK), 3), dtype=np.int32)
        detail_call(x, np.array([0], np.int64), stats)
        without = kernel.true_peak(x, inv, bank, history[0], peaks[0])
        fused = kernel.true_peak(x, inv, bank, history[1], peaks[1], stats)
        assert fused == without, n
        assert np.array_equal(history[0], history[1])
        peaks = [without, fused]
    assert peaks[0] > 0.0


@pytest.mark.parametrize("rate", [44100, 96000])
def test_true_peak_reads_the_stats_it_is_given(rate: int) -> None:
    """Stats that claim a silent, flat block rule every block out: true_peak does not read the
    samples for what they tell (so the equality above is no accident of ignored stats)."""
    rng = np.random.default_rng(3)
    x = raw(signal("bursts", 262144, rate, rng), np.int32)
    bank = interpolator_taps(rate)
    stats = np.empty((len(x) // BLOCK, 3), dtype=np.int32)
    detail_call(x, np.array([0], np.int64), stats)
    truth = kernel.true_peak(x, 2.0 ** -31, bank, np.zeros(len(bank) - 1, np.float32), 0.0,
                             stats)
    assert truth > 0.69
    lying = np.zeros_like(stats)
    assert kernel.true_peak(x, 2.0 ** -31, bank, np.zeros(len(bank) - 1, np.float32), 0.0,
                            lying) == 0.0


def test_the_stats_are_refused_where_points_are_not_the_true_peak_blocks() -> None:
    x = np.zeros(1000, np.int32)
    starts = np.array([0], np.int64)
    points = np.zeros((8, 1, 2), np.int8)
    out = np.empty(1, np.int32)
    stats = np.empty((8, 3), np.int32)
    with pytest.raises(ValueError, match="spp 256"):  # another resolution
        kernel.detail_minmax(x, starts, out, out.copy(), 0, 128, 1.0, 8, points, 0, 1, False,
                             stats)
    with pytest.raises(ValueError, match="first 0"):  # points not from the block's start
        kernel.detail_minmax(x, starts, out, out.copy(), 5, 256, 1.0, 8, points, 0, 1, False,
                             stats)
    with pytest.raises(ValueError, match="unit-stride"):
        kernel.detail_minmax(np.zeros(2000, np.int32)[::2], starts, out, out.copy(), 0, 256,
                             1.0, 8, points, 0, 1, False, stats)
    with pytest.raises(ValueError, match="stats"):  # too small for the block's points
        kernel.detail_minmax(x, starts, out, out.copy(), 0, 256, 1.0, 8, points, 0, 1, False,
                             stats[:3])
    with pytest.raises(ValueError, match="stats"):
        kernel.true_peak(x, 1.0, interpolator_taps(44100), np.zeros(12, np.float32), 0.0,
                         stats[:3])


def test_the_sink_offers_stats_only_for_points_that_are_the_true_peak_blocks(
        tmp_path: Path) -> None:
    block = np.arange(2 * 1000, dtype=np.int32).reshape(1000, 2) * 1000
    columns = [np.ascontiguousarray(block[:, c]) for c in range(2)]
    with open(tmp_path / "x.dat", "wb") as f:
        for spp, start, offered in ((256, 0, True), (256, 512, True), (256, 100, False),
                                    (512, 0, False)):
            sink = detail.DetailSink(f.fileno(), channels=2, sample_rate=48000,
                                     samples_per_pixel=spp, bits=8, full_scale=2.0 ** 31,
                                     start=start)
            starts = np.array([0], np.int64)
            rows = np.empty((2, 1), np.int32)
            sink.reduce(columns, starts, rows, rows.copy())
            assert (sink.peak_stats is not None) == offered, (spp, start)
            if sink.peak_stats is not None:
                for c in range(2):
                    assert np.array_equal(sink.peak_stats[c], expected_stats(columns[c]))


FILES = [("wav-24", 96000, 2), ("wav-16", 44100, 2), ("wav-float", 48000, 2),
         ("wav-16", 44100, 1), ("wav-24", 48000, 6), ("flac-16", 44100, 2)]


@pytest.mark.parametrize(("fmt", "rate", "channels"), FILES)
@pytest.mark.parametrize("workers", [1, 2])
def test_the_analysis_is_the_same_with_and_without_the_fused_stats(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, rate: int, channels: int,
        workers: int) -> None:
    """Several blocks and a partial last one, one range or two (the second primed), bursts
    with inter-sample peaks: the same JSON document, loudness and .dat bytes."""
    monkeypatch.setattr(waveform, "PARALLEL_MIN_FRAMES", 0)
    frames = int(rate * 7.3) + 101
    rng = np.random.default_rng(5)
    samples = np.stack([signal("bursts" if c % 2 else "music", frames, rate, rng) * 0.9
                        for c in range(channels)], axis=1)
    path = synth.write_audio(tmp_path / f"x{synth.FORMATS[fmt].suffix}", fmt, samples, rate)
    given = []
    true_peak = kernel.true_peak

    def counting(*args: Any) -> float:
        if args[4] != math.inf:  # not a priming call (those only move the history)
            given.append(len(args) > 5 and args[5] is not None)
        return true_peak(*args)

    monkeypatch.setattr(kernel, "true_peak", counting)
    results = {}
    for fused in (True, False):
        monkeypatch.setattr(detail, "FUSED_PEAK_STATS", fused)
        given.clear()
        out = tmp_path / f"{fused}.dat"
        analysis = analyse_file(path, 500, workers=workers, detail=DetailRequest(out))
        results[fused] = (analysis, out.read_bytes())
        # stereo and mono blocks start on points: every call is given its stats (6 channels:
        # a block is 524,288 / 6 frames, so only the first block's points are its blocks)
        if not fused:
            assert given and not any(given)
        elif channels <= 2:
            assert all(given)
        else:
            assert any(given) and not all(given)
    assert results[True] == results[False]
    assert results[True][0].loudness is not None
    assert results[True][0].loudness.true_peak_dbtp is not None
    assert math.isfinite(results[True][0].loudness.true_peak_dbtp)
