"""The detail waveform's C pass (kernel.detail_minmax, DetailSink) equals numpy's definition.

Each test compares with an independent numpy computation: per point max/min of the raw samples
(``reduceat`` at the point edges), stored as :func:`detail.to_stored` says, and per overview
segment ``reduceat`` as before. Covered: the three sample types, strided and planar columns,
blocks that start and end inside a point, points longer than a block (the coarsened
resolutions of ``fit_resolution``), ranges written side by side into one file, 8- and 16-bit
data, non-finite floats.
"""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import waveflow_job.audio._kernel as kernel
from waveflow_job.audio.detail import HEADER, DetailSink, detail_size, fit_resolution, to_stored
from waveflow_job.audio.peaks import NonFiniteSamples, SampleScale, WaveformAccumulator

SCALES = {np.int16: SampleScale.for_integer_bits(16, 16),
          np.int32: SampleScale.for_integer_bits(24, 32),
          np.float32: SampleScale.floating()}


def random_samples(rng: np.random.Generator, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """Full-range integers; floats up to 4x full scale (clipped in the .dat, never rescaled)."""
    if dtype is np.float32:
        return (rng.standard_normal(shape) * 1.5).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)


def reference_points(samples: np.ndarray, offset: int, spp: int, full_scale: float,
                     bits: int) -> np.ndarray:
    """``(points, channels, 2)`` stored min/max of ``samples`` (frames from ``offset``) per
    point of the grid ``k * spp``, the first and last points cut to the samples given."""
    n = samples.shape[0]
    edges = np.arange((offset // spp + 1) * spp, offset + n, spp) - offset
    starts = np.concatenate([[0], edges]).astype(np.int64)
    low = np.minimum.reduceat(samples, starts, axis=0).astype(np.float64)
    high = np.maximum.reduceat(samples, starts, axis=0).astype(np.float64)
    scale = 1.0 / full_scale
    return np.stack([to_stored(low * scale, bits), to_stored(high * scale, bits)], axis=-1)


def run_kernel(column: np.ndarray, starts: np.ndarray, offset: int, spp: int, full_scale: float,
               bits: int, channel: int = 0, channels: int = 1,
               points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(column)
    first = -offset % spp
    count = 1 if first >= n else (first > 0) + -(-(n - first) // spp)
    if points is None:
        points = np.full((count, channels, 2), 99, np.int8 if bits == 8 else np.int16)
    out_max, out_min = np.empty(len(starts), column.dtype), np.empty(len(starts), column.dtype)
    got = kernel.detail_minmax(column, starts, out_max, out_min, first, spp, 1.0 / full_scale,
                               bits, points, channel, channels)
    assert got == count == len(points)
    return out_max, out_min, points


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
@pytest.mark.parametrize("stride", [1, 3])
@pytest.mark.parametrize("bits", [8, 16])
def test_points_and_segments_equal_numpy_for_every_type_and_stride(dtype: type, stride: int,
                                                                   bits: int) -> None:
    rng = np.random.default_rng(11)
    full_scale = SCALES[dtype].full_scale
    for n, spp, offset in [(1, 256, 0), (1, 256, 255), (255, 256, 1), (256, 256, 0),
                           (257, 256, 0), (70_001, 256, 100), (70_001, 7, 3), (5_000, 1, 0),
                           (3_000, 4096, 1_000), (10_000, 3, 2)]:
        whole = random_samples(rng, dtype, (n * stride,))
        column = whole[::stride]
        cuts = np.unique(rng.integers(1, n, size=n // 500)) if n > 500 else []
        starts = np.concatenate([[0], cuts]).astype(np.int64)
        out_max, out_min, points = run_kernel(column, starts, offset, spp, full_scale, bits)
        assert np.array_equal(out_max, np.maximum.reduceat(column, starts))
        assert np.array_equal(out_min, np.minimum.reduceat(column, starts))
        expected = reference_points(column[:, None], offset, spp, full_scale, bits)
        assert np.array_equal(points, expected), (n, spp, offset)


def spiked_samples(rng: np.random.Generator, dtype: type, n: int, spp: int,
                   offset: int) -> np.ndarray:
    """Quiet noise with, in every point, its own maximum and minimum at a random frame (so
    each point's extremes lie in a different vector lane), the type's extremes in a few."""
    if dtype is np.float32:
        samples = (rng.standard_normal(n) * 0.01).astype(np.float32)
        top, bottom = 3.5, -3.5
    else:
        info = np.iinfo(dtype)
        samples = rng.integers(-50, 50, n, endpoint=True).astype(dtype)
        top, bottom = info.max, info.min
    for start in range(-(offset % spp), n, spp):
        lo, hi = max(0, start), min(n, start + spp)
        where = rng.integers(lo, hi, 2)
        samples[where[0]] = rng.uniform(0.01, 1.0) * top
        samples[where[1]] = rng.uniform(0.01, 1.0) * bottom
    for extreme in (top, bottom):
        samples[rng.integers(0, n, 3)] = extreme
    return samples


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
@pytest.mark.parametrize("bits", [8, 16])
def test_runs_of_whole_points_give_every_point_its_own_extremes(dtype: type, bits: int) -> None:
    """Whole points inside a segment are reduced eight at a time (AVX2): every point's max and
    min, wherever they lie, runs cut by segments anywhere, ending on a segment, on the block's
    end or inside a point; resolutions that are and are not multiples of the vector lanes."""
    rng = np.random.default_rng(bits + 3)
    full_scale = SCALES[dtype].full_scale
    for spp, offset, points, extra in [(256, 0, 40, 0), (256, 100, 57, 3), (16, 0, 200, 5),
                                       (8, 3, 300, 0), (24, 0, 99, 11), (48, 47, 80, 1),
                                       (1_024, 0, 24, 0), (4_096, 4_000, 17, 100)]:
        n = points * spp + extra
        column = spiked_samples(rng, dtype, n, spp, offset)
        cuts = [rng.integers(1, n), 8 * spp, 8 * spp + 1, 20 * spp - (offset % spp)]
        for starts in (np.array([0], np.int64),
                       np.unique(np.array([0, *[c for c in cuts if 0 < c < n]], np.int64))):
            out_max, out_min, got = run_kernel(column, starts, offset, spp, full_scale, bits)
            assert np.array_equal(out_max, np.maximum.reduceat(column, starts))
            assert np.array_equal(out_min, np.minimum.reduceat(column, starts))
            expected = reference_points(column[:, None], offset, spp, full_scale, bits)
            assert np.array_equal(got, expected), (spp, offset, points, extra, len(starts))


def test_a_nan_point_inside_a_run_is_stored_as_a_nan_point_is_elsewhere() -> None:
    """A NaN point reads -top twice wherever it falls (in a run or the piece loop), and the
    segment holding it is NaN; the points beside it keep their own values."""
    samples = np.full(256 * 20 + 100, 0.5, np.float32)
    samples[::7] = -0.25
    samples[256 * 3 + 200] = np.nan  # in the first run of eight points
    samples[256 * 20 + 50] = np.nan  # in the last, partial point
    starts = np.array([0, 256 * 16], np.int64)
    out_max, out_min, points = run_kernel(samples, starts, 0, 256, 1.0, 8)
    assert np.isnan(out_max).all() and np.isnan(out_min).all()
    assert points[3].tolist() == points[20].tolist() == [[-128, -128]]
    others = np.delete(points, [3, 20], axis=0)
    assert (others == [[-32, 64]]).all()


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
@pytest.mark.parametrize("bits", [8, 16])
def test_merge_continues_the_open_point_the_last_block_left_in_row_0(dtype: type,
                                                                     bits: int) -> None:
    """A block cut inside a point: with ``merge``, the second call's first point folds with the
    stored half already in points[0], and equals one call over both; a block starting on a
    point edge (first 0) overwrites row 0 whatever ``merge`` says."""
    rng = np.random.default_rng(bits * 3 + 1)
    full_scale = SCALES[dtype].full_scale
    for spp, n, cut in [(256, 3_000, 1_100), (256, 3_000, 1), (16, 500, 255), (4_096, 3_000, 70),
                        (4_096, 9_000, 4_000)]:
        column = spiked_samples(rng, dtype, n, spp, 0)
        starts = np.array([0], np.int64)
        _, _, whole = run_kernel(column, starts, 0, spp, full_scale, bits)
        _, _, head = run_kernel(column[:cut], starts, 0, spp, full_scale, bits)
        tail_first = -cut % spp
        tail_count = 1 if tail_first >= n - cut else (
            (tail_first > 0) + -(-(n - cut - tail_first) // spp))
        points = np.full((tail_count, 1, 2), 99, whole.dtype)
        points[0] = head[-1]  # the open point, as DetailSink keeps it
        out = np.empty(1, dtype), np.empty(1, dtype)
        kernel.detail_minmax(column[cut:], starts, *out, tail_first, spp, 1.0 / full_scale,
                             bits, points, 0, 1, True)
        assert np.array_equal(np.concatenate([head[:-1], points]), whole), (spp, n, cut)
    edge = random_samples(rng, dtype, (512,))
    for merge in (False, True):
        points = np.full((2, 1, 2), -1, np.int8)
        kernel.detail_minmax(edge, np.array([0], np.int64), np.empty(1, dtype),
                             np.empty(1, dtype), 0, 256, 1.0 / full_scale, 8, points, 0, 1, merge)
        assert np.array_equal(points, reference_points(edge[:, None], 0, 256, full_scale, 8))


def test_each_channel_fills_its_own_pair_of_the_interleaved_points() -> None:
    rng = np.random.default_rng(5)
    block = random_samples(rng, np.int16, (2_000, 3))
    planar = np.ascontiguousarray(block.T)  # what a planar decoder hands over
    starts = np.array([0, 700, 1_500], np.int64)
    first = -50 % 256
    count = (first > 0) + -(-(2_000 - first) // 256)
    points = np.zeros((count, 3, 2), np.int16)
    for c in range(3):
        run_kernel(planar[c], starts, 50, 256, 32768.0, 16, c, 3, points)
    assert np.array_equal(points, reference_points(block, 50, 256, 32768.0, 16))


def test_floats_beyond_full_scale_and_infinities_are_clipped_nan_propagates() -> None:
    samples = np.array([0.5, 3.0, -7.0, np.inf, 0.0, -np.inf, 0.25, np.nan, 0.1], np.float32)
    starts = np.array([0, 3, 6], np.int64)
    out_max, out_min, points = run_kernel(samples, starts, 0, 3, 1.0, 8)
    assert (out_max[0], out_min[0]) == (3.0, -7.0)
    assert (out_max[1], out_min[1]) == (np.inf, -np.inf)
    assert np.isnan(out_max[2]) and np.isnan(out_min[2])  # the caller refuses the block
    assert points[:2].tolist() == [[[-128, 127]], [[-128, 127]]]
    _, _, wide = run_kernel(samples[:6], starts[:2], 0, 3, 1.0, 16)
    assert wide.tolist() == [[[-32768, 32767]], [[-32768, 32767]]]


def test_the_kernel_refuses_what_it_cannot_do() -> None:
    samples = np.zeros(10, np.int16)
    out = np.empty(1, np.int16)
    starts = np.zeros(1, np.int64)
    points = np.zeros((1, 1, 2), np.int8)
    for first, spp, bits, channel in [(3, 3, 8, 0), (-1, 3, 8, 0), (0, 0, 8, 0), (0, 16, 12, 0),
                                      (0, 16, 8, 1)]:
        with pytest.raises(ValueError):
            kernel.detail_minmax(samples, starts, out, out.copy(), first, spp, 1.0, bits,
                                 points, channel, 1)
    with pytest.raises(ValueError):  # 10 frames at 4 per point need 3 points
        kernel.detail_minmax(samples, starts, out, out.copy(), 0, 4, 1.0, 8, points, 0, 1)
    with pytest.raises(ValueError):  # int8 points for 16-bit data
        kernel.detail_minmax(samples, starts, out, out.copy(), 0, 16, 1.0, 16, points, 0, 1)
    with pytest.raises(ValueError):
        kernel.detail_minmax(samples, np.array([0, 10], np.int64), out, out.copy(), 0, 16,
                             1.0, 8, points, 0, 1)
    with pytest.raises(TypeError):
        kernel.detail_minmax(samples.astype(np.float64), starts, out, out.copy(), 0, 16, 1.0, 8,
                             points, 0, 1)


def write_detail(path: Path, samples: np.ndarray, scale: SampleScale, spp: int, bits: int,
                 bounds: list[int], block_sizes: list[int]) -> bytes:
    """Reduce ``samples`` through accumulators (one per range in ``bounds``), blocks cycling
    through ``block_sizes``, into one .dat; return its bytes."""
    frames, channels = samples.shape
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        accs = []
        for lo, hi in itertools.pairwise(bounds):
            sink = DetailSink(fd, channels=channels, sample_rate=48_000, samples_per_pixel=spp,
                              bits=bits, full_scale=scale.full_scale, start=lo)
            acc = WaveformAccumulator(frames=frames, channels=channels, num_peaks=100,
                                      scale=scale, start=lo, detail=sink)
            pos, i = lo, 0
            while pos < hi:
                step = min(block_sizes[i % len(block_sizes)], hi - pos)
                acc.add(samples[pos:pos + step])
                pos, i = pos + step, i + 1
            sink.flush()
            accs.append(acc)
        for acc in accs[1:]:
            accs[0].merge(acc)
        accs[0].finish()
        assert accs[0].detail is not None
        written = accs[0].detail.finish(frames)
    finally:
        os.close(fd)
    data = path.read_bytes()
    assert len(data) == written.size == detail_size(frames, channels, bits, spp)
    return data


def dat_points(data: bytes, bits: int, channels: int) -> np.ndarray:
    header = HEADER.unpack(data[:HEADER.size])
    assert header[0] == 2 and header[5] == channels and (header[1] & 1) == (bits == 8)
    return np.frombuffer(data[HEADER.size:], "<i1" if bits == 8 else "<i2").reshape(
        header[4], channels, 2)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
@pytest.mark.parametrize("channels", [1, 2, 5])
@pytest.mark.parametrize("bits", [8, 16])
def test_blocks_ending_inside_points_and_ranges_give_the_definition(tmp_path: Path, dtype: type,
                                                                    channels: int,
                                                                    bits: int) -> None:
    rng = np.random.default_rng(channels * 7 + bits)
    frames, spp = 30_011, 256
    samples = random_samples(rng, dtype, (frames, channels))
    scale = SCALES[dtype]
    expected = reference_points(samples, 0, spp, scale.full_scale, bits)
    one = write_detail(tmp_path / "one.dat", samples, scale, spp, bits, [0, frames], [1_000, 77])
    assert np.array_equal(dat_points(one, bits, channels), expected)
    # Ranges start on point boundaries (Plan.alignment); blocks still end anywhere.
    split = write_detail(tmp_path / "split.dat", samples, scale, spp, bits,
                         [0, 40 * spp, 81 * spp, frames], [333, 4_096, 1])
    assert split == one


def test_points_longer_than_blocks_as_the_size_bound_coarsens_them(tmp_path: Path) -> None:
    frames, channels = 200_000, 2
    fit = fit_resolution(frames, channels, 8, 256, detail_size(frames, channels, 8, 2_048),
                         overview_samples_per_pixel=100_000)
    assert fit.samples_per_pixel == 2_048 and fit.note is not None
    rng = np.random.default_rng(2)
    samples = random_samples(rng, np.int16, (frames, channels))
    samples[5_000:5_002] = [[32767, -32768], [-32768, 32767]]  # the extremes, in one point
    scale = SCALES[np.int16]
    data = write_detail(tmp_path / "coarse.dat", samples, scale, fit.samples_per_pixel, 8,
                        [0, 20 * 2_048, frames], [300, 1_111])
    points = dat_points(data, 8, channels)
    assert np.array_equal(points, reference_points(samples, 0, 2_048, scale.full_scale, 8))
    assert points[5_000 // 2_048].tolist() == [[-128, 127], [-128, 127]]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_block_is_refused_before_any_of_its_points_is_written(
        tmp_path: Path, bad: float) -> None:
    samples = np.full((2_048, 2), 0.5, np.float32)
    samples[1_500, 1] = bad
    fd = os.open(tmp_path / "bad.dat", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        sink = DetailSink(fd, channels=2, sample_rate=48_000, samples_per_pixel=256, bits=8,
                          full_scale=1.0)
        acc = WaveformAccumulator(frames=2_048, channels=2, num_peaks=10,
                                  scale=SampleScale.floating(), detail=sink)
        acc.add(samples[:1_024])
        with pytest.raises(NonFiniteSamples):
            acc.add(samples[1_024:])
    finally:
        os.close(fd)
    data = (tmp_path / "bad.dat").read_bytes()
    assert len(data) == HEADER.size + 4 * 2 * 2  # the first block's four points, no more
    assert struct.unpack("<16b", data[HEADER.size:]) == (64, 64) * 8
