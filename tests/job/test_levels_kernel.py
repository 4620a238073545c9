"""kernel.levels (the waveform's RMS and mono peaks) equals numpy's float32 definition.

The mono mix is the float32 sum of the channels in their order, as the numpy code computed it:
its per-segment maximum of ``|mono|`` must be equal, not close. The sum of squares is of the
float32 values, accumulated in double (numpy's float32 dot was less exact): within 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest

import waveflow_job.audio._kernel as kernel
from waveflow_job.audio.peaks import SampleScale, WaveformAccumulator


def samples(rng: np.random.Generator, dtype: type, n: int, channels: int,
            stride: int) -> list[np.ndarray]:
    if dtype is np.float32:
        whole = (rng.standard_normal((channels, n * stride)) * 0.7).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        whole = rng.integers(info.min, info.max, (channels, n * stride), endpoint=True,
                             dtype=dtype)
    return [whole[c, ::stride] for c in range(channels)]


def numpy_levels(columns: list[np.ndarray], starts: np.ndarray) -> tuple[float, np.ndarray]:
    values = [c.astype(np.float32) for c in columns]
    mono = values[0].copy()
    for v in values[1:]:
        mono += v
    squares = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in values)
    return squares, np.maximum.reduceat(np.abs(mono), starts)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
@pytest.mark.parametrize("channels", [1, 2, 3, 8])
@pytest.mark.parametrize("stride", [1, 2])
def test_levels_equal_the_numpy_float32_definition(dtype: type, channels: int,
                                                   stride: int) -> None:
    rng = np.random.default_rng(channels + stride)
    for n in (1, 7, 1_023, 1_024, 1_025, 5_000):
        columns = samples(rng, dtype, n, channels, stride)
        cuts = np.unique(rng.integers(1, n, size=3)) if n > 1 else []
        starts = np.concatenate([[0], cuts]).astype(np.int64)
        mono = np.full(len(starts), -1.0, np.float32)
        squares = kernel.levels(columns, starts, mono)
        want_squares, want_mono = numpy_levels(columns, starts)
        assert squares == pytest.approx(want_squares, rel=1e-12)
        assert np.array_equal(mono, want_mono), (n, starts)


def test_the_mono_mix_rounds_in_float32_as_numpy_does() -> None:
    # 2**24 + 1 is not a float32: each channel rounds before the sum, and the sum rounds again.
    columns = [np.array([2**24 + 1, -(2**31), 3], np.int32),
               np.array([1, -(2**31), -3], np.int32)]
    mono = np.empty(3, np.float32)
    kernel.levels(columns, np.arange(3, dtype=np.int64), mono)
    assert mono.tolist() == [2.0**24, 2.0**32, 0.0]


def test_levels_refuse_what_they_cannot_read() -> None:
    one = np.zeros(10, np.int16)
    mono = np.empty(1, np.float32)
    starts = np.zeros(1, np.int64)
    with pytest.raises(ValueError):
        kernel.levels([one, np.zeros(9, np.int16)], starts, mono)
    with pytest.raises(ValueError):
        kernel.levels([one, np.zeros(10, np.int32)], starts, mono)
    with pytest.raises(ValueError):
        kernel.levels([], starts, mono)
    with pytest.raises(ValueError):
        kernel.levels([one] * 65, starts, mono)
    with pytest.raises(ValueError):
        kernel.levels([one], np.array([0, 10], np.int64), mono)
    with pytest.raises(ValueError):
        kernel.levels([one], np.array([0, 5], np.int64), mono)  # room for one segment only
    with pytest.raises(TypeError):
        kernel.levels([np.zeros(10)], starts, mono)


def test_rms_and_peaks_of_the_accumulator_equal_numpy_whatever_the_blocks() -> None:
    rng = np.random.default_rng(4)
    block = rng.integers(-32768, 32767, (30_011, 3), endpoint=True, dtype=np.int16)
    scale = SampleScale.for_integer_bits(16, 16)
    results = []
    for size in (30_011, 1_000, 333):
        acc = WaveformAccumulator(frames=len(block), channels=3, num_peaks=100, scale=scale)
        for at in range(0, len(block), size):
            acc.add(block[at:at + size])
        results.append(acc.finish())
    values = block.astype(np.float64) / 32768.0
    rms_dbfs = 20 * np.log10(float(np.sqrt(np.mean(values**2))))
    assert results[0].rms_dbfs is not None
    assert abs(results[0].rms_dbfs - rms_dbfs) <= 0.005 + 1e-9
    floats = block.astype(np.float32)
    mono = np.abs(floats[:, 0] + floats[:, 1] + floats[:, 2]).astype(np.float64) / (3 * 32768.0)
    edges = (np.arange(101) * len(block)) // 100
    buckets = np.maximum.reduceat(mono, edges[:-1])
    assert results[0].peaks == [round(float(v), 4) for v in buckets / buckets.max()]
    assert all(r == results[0] for r in results[1:])


def test_big_endian_blocks_take_the_numpy_path_to_the_same_result() -> None:
    rng = np.random.default_rng(9)
    block = rng.integers(-32768, 32767, (5_001, 2), endpoint=True, dtype=np.int16)
    scale = SampleScale.for_integer_bits(16, 16)
    results = []
    for b in (block, block.astype(">i2")):
        acc = WaveformAccumulator(frames=len(b), channels=2, num_peaks=50, scale=scale)
        acc.add(b)
        results.append(acc.finish())
    assert results[1].peaks == results[0].peaks and results[1].data == results[0].data
    assert results[1].rms_dbfs == results[0].rms_dbfs
