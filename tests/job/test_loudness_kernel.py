"""The loudness kernel equals libebur128 (pyebur128): the energy of every 100 ms step and the
true peak, across sample types, rates, channel counts and block boundaries; hostile floats
neither crash nor hang it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from waveflow_job.audio import _kernel as kernel
from waveflow_job.audio.loudness import LoudnessMeter, TruePeakMeter, interpolator_taps

FULL_SCALE = {np.int16: 32768.0, np.int32: 2.0**31, np.float32: 1.0}


def signal(frames: int, rate: int, channels: int, seed: int) -> np.ndarray:
    """Tones, noise, a loud click and a stretch of digital silence, at full scale 1.0."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / rate
    out = np.empty((frames, channels))
    for c in range(channels):
        freq = rng.uniform(30.0, min(12000.0, rate / 2.5))
        level = rng.uniform(0.05, 0.6) * (1 + np.sin(2 * np.pi * 0.7 * t + c))
        out[:, c] = level * np.sin(2 * np.pi * freq * t) + rng.standard_normal(frames) * 0.03
    out[frames // 3: frames // 3 + frames // 8] = 0.0  # the filter's tail decays into silence
    out[frames // 2] = rng.choice([-0.99, 0.99], channels)
    return np.clip(out, -0.999, 0.999)


def as_type(samples: np.ndarray, dtype: type) -> np.ndarray:
    if dtype is np.float32:
        return samples.astype(np.float32)
    return np.round(samples * FULL_SCALE[dtype]).astype(dtype)


def reference_steps(samples: np.ndarray, rate: int) -> tuple[list[float], list[float]]:
    """libebur128's energy of each 100 ms step (fed step by step) and true peak per channel."""
    import pyebur128

    frames, channels = samples.shape
    mode = pyebur128.MeasurementMode
    state = pyebur128.R128State(channels, rate, mode.MODE_M | mode.MODE_TRUE_PEAK)
    if channels in (7, 8):
        for c in range(6, channels):
            state.set_channel(c, pyebur128.ChannelType.LEFT_SURROUND if c % 2 == 0
                              else pyebur128.ChannelType.RIGHT_SURROUND)
    step = (rate + 5) // 10
    energies = []
    data = np.ascontiguousarray(samples)
    for at in range(0, frames - step + 1, step):
        state.add_frames(data[at:at + step].reshape(-1), step)
        lufs = pyebur128.get_loudness_window(state, 100)
        energies.append(0.0 if not math.isfinite(lufs) else 10 ** ((lufs + 0.691) / 10))
    rest = frames % step
    if rest:
        state.add_frames(data[frames - rest:].reshape(-1), rest)
    return energies, [pyebur128.get_true_peak(state, c) for c in range(channels)]


def ours(samples: np.ndarray, rate: int, blocks: list[int],
         planar: bool = False) -> tuple[list[float], list[float]]:
    frames, channels = samples.shape
    meter = LoudnessMeter(channels, rate, FULL_SCALE[samples.dtype.type])
    at = 0
    for size in blocks:
        block = samples[at:at + size]
        if planar:
            block = np.asfortranarray(block)
        meter.add(block, [block[:, c] for c in range(channels)])
        at += size
    assert at == frames
    return list(meter.steps), list(meter.true_peak.peak)


def random_blocks(frames: int, seed: int, largest: int = 40000) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < frames:
        sizes.append(int(rng.choice([1, 2, 7, 15, 17, 4097, rng.integers(1, largest)])))
    sizes[-1] -= sum(sizes) - frames
    return [s for s in sizes if s]


def assert_equal_to_libebur128(samples: np.ndarray, rate: int, blocks: list[int],
                               planar: bool = False) -> None:
    energies, peaks = ours(samples, rate, blocks, planar)
    ref_energies, ref_peaks = reference_steps(samples, rate)
    assert len(energies) == len(ref_energies) > 0
    # Relative 1e-9; energies under 1e-30 (-300 LUFS: a filter tail decaying in silence)
    # absolutely.
    np.testing.assert_allclose(energies, ref_energies, rtol=1e-9, atol=1e-30)
    # The interpolated values are rounded to float32 by both: equal to a float32 rounding.
    np.testing.assert_allclose(peaks, ref_peaks, rtol=2.0**-23, atol=0)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 32000, 44100, 48000, 88200, 96000,
                                  176400, 192000, 12345, 44105, 47999])
def test_step_energies_and_true_peak_equal_libebur128_at_every_rate(rate: int) -> None:
    samples = as_type(signal(round(2.1 * rate), rate, 2, rate), np.float32)
    assert_equal_to_libebur128(samples, rate, random_blocks(len(samples), rate))


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6, 7, 8])
def test_every_sample_type_and_channel_count(dtype: type, channels: int) -> None:
    rate = 44100 if channels % 2 else 48000
    samples = as_type(signal(round(1.5 * rate), rate, channels, channels), dtype)
    assert_equal_to_libebur128(samples, rate, random_blocks(len(samples), channels))


@pytest.mark.parametrize("rate", [44100, 96000])
def test_planar_blocks_read_through_their_strides(rate: int) -> None:
    samples = as_type(signal(rate, rate, 3, 5), np.int32)
    assert_equal_to_libebur128(samples, rate, random_blocks(len(samples), 9), planar=True)


def test_blocks_of_one_frame_and_of_odd_lengths() -> None:
    rate = 22050
    samples = as_type(signal(round(0.35 * rate), rate, 2, 3), np.int16)
    assert_equal_to_libebur128(samples, rate, [1] * len(samples))
    odd = [3, 1, 2204, 2205, 2206, 1, 1]
    assert_equal_to_libebur128(samples, rate, [*odd, len(samples) - sum(odd)])


def test_a_steady_tone_where_no_chunk_can_be_skipped() -> None:
    rate = 44100
    t = np.arange(rate * 2) / rate
    tone = 0.5 * np.sin(2 * np.pi * 997 * t + 0.3)
    samples = as_type(np.stack([tone, -tone], axis=1), np.int16)
    assert_equal_to_libebur128(samples, rate, [*[65536] * (len(samples) // 65536),
                                               len(samples) % 65536])


def test_true_peak_on_its_own_matches_the_sample_peak_above_192k() -> None:
    assert interpolator_taps(192000).shape == (0, 0)
    meter = TruePeakMeter(1, 192000, 1.0)
    column = np.array([0.1, -0.7, 0.3], dtype=np.float32)
    meter.add([column])
    assert meter.peak[0] == pytest.approx(0.7, rel=1e-7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_neither_crash_nor_hang(bad: float) -> None:
    rate = 48000
    samples = signal(rate, rate, 2, 1).astype(np.float32)
    samples[1000:1003, 0] = bad
    meter = LoudnessMeter(2, rate, 1.0)
    for at in range(0, rate, 9000):
        block = samples[at:at + 9000]
        meter.add(block, [np.ascontiguousarray(block[:, c]) for c in range(2)])
    assert len(meter.steps) == 10
    assert math.isfinite(meter.true_peak.peak[1])


def test_the_kernel_rejects_what_it_cannot_read() -> None:
    state, energies = np.zeros((2, 5)), np.zeros(4)
    coeffs, weights = np.zeros(9), np.ones(2)
    with pytest.raises(TypeError):
        kernel.kweight(np.zeros((10, 2)), 1.0, coeffs, weights, state, 4, 4, 0, energies)
    with pytest.raises(ValueError):
        kernel.kweight(np.zeros((10, 2), np.float32), 1.0, coeffs, weights, state, 4, 5, 0,
                       energies)
    with pytest.raises(ValueError):  # too little room for the steps' energies
        kernel.kweight(np.zeros((100, 2), np.float32), 1.0, coeffs, weights, state, 4, 4, 0,
                       energies)
    with pytest.raises(ValueError):
        kernel.true_peak(np.zeros(8, np.float32), 1.0, np.zeros((13, 2)),
                         np.zeros(12, np.float32), 0.0)


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
@pytest.mark.parametrize("stride", [1, 3])
def test_segment_minmax_equals_reduceat(dtype: type, stride: int) -> None:
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype) if dtype is not np.float32 else None
    for n in (1, 2, 255, 256, 257, 70_001):
        if info is not None:
            whole = rng.integers(info.min, info.max, n * stride, endpoint=True, dtype=dtype)
        else:
            whole = (rng.standard_normal(n * stride) * 4).astype(dtype)
        samples = whole[::stride]
        cuts = np.unique(rng.integers(1, n, size=max(0, n // 100), endpoint=False))
        starts = np.concatenate([[0], cuts]).astype(np.int64)
        out_max, out_min = np.empty(len(starts), dtype), np.empty(len(starts), dtype)
        kernel.segment_minmax(samples, starts, out_max, out_min)
        assert np.array_equal(out_max, np.maximum.reduceat(samples, starts))
        assert np.array_equal(out_min, np.minimum.reduceat(samples, starts))


def test_segment_minmax_propagates_nan_and_keeps_infinities() -> None:
    samples = np.array([0.5, np.nan, -1.0, np.inf, 2.0, -np.inf, 0.0], dtype=np.float32)
    starts = np.array([0, 3, 5], dtype=np.int64)
    out_max, out_min = np.empty(3, np.float32), np.empty(3, np.float32)
    kernel.segment_minmax(samples, starts, out_max, out_min)
    assert np.isnan(out_max[0]) and np.isnan(out_min[0])
    assert (out_max[1], out_min[1]) == (np.inf, 2.0)
    assert (out_max[2], out_min[2]) == (0.0, -np.inf)


def test_segment_minmax_refuses_starts_that_do_not_rise_inside_the_samples() -> None:
    samples = np.zeros(10, np.int16)
    out = np.empty(3, np.int16)
    for starts in ([1, 2, 3], [0, 5, 5], [0, 5, 10]):
        with pytest.raises(ValueError):
            kernel.segment_minmax(samples, np.array(starts, np.int64), out, out.copy())
