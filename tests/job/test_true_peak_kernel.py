"""The true-peak kernel skips only what cannot hold the peak: its result equals a full
interpolation of every sample (numpy, nothing skipped), on tones, noise, music-like bursts and
adversarial signals, in every sample type, at rates from 8 kHz to 192 kHz, whatever the block
lengths, and even when the running peak it is given sits just under the answer."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from waveflow_job.audio import _kernel as kernel
from waveflow_job.audio.loudness import interpolator_taps

FULL_SCALE = {np.int16: 32768.0, np.int32: 2.0**31, np.float32: 1.0}
#: 4x (two of them, one not a multiple of 10 Hz), 2x, and the sample peak only.
RATES = [8000, 44100, 47999, 96000, 176400, 192000]
DTYPES = [np.int16, np.int32, np.float32]


def unit(raw: np.ndarray) -> np.ndarray:
    """The samples as the interpolator reads them: float32 at full scale 1.0, as float64."""
    scaled = raw.astype(np.float64) / FULL_SCALE[raw.dtype.type]
    return scaled if raw.dtype == np.int16 else scaled.astype(np.float32).astype(np.float64)


def full_interpolation(raw: np.ndarray, rate: int) -> float:
    """The largest |sample| and float32-rounded |interpolated value| of every frame and phase,
    zeros before the start; NaN values are ignored."""
    x = unit(raw)
    bank = interpolator_taps(rate)
    values = [np.abs(x)]
    if bank.size:
        taps = bank[:-1]  # the last row is zero: it only reaches phase 0, the sample itself
        padded = np.concatenate([np.zeros(len(taps)), x])
        y = np.zeros((len(x), taps.shape[1]))
        with np.errstate(invalid="ignore"):  # inf - inf: NaN, ignored below
            for t in range(len(taps)):  # newest sample first, as the kernel sums
                y += taps[t] * padded[len(taps) - t: len(taps) - t + len(x), None]
        values.append(np.abs(y).astype(np.float32).astype(np.float64).reshape(-1))
    both = np.concatenate(values)
    both = both[~np.isnan(both)]
    return float(both.max()) if len(both) else 0.0


def kernel_peak(raw: np.ndarray, rate: int, blocks: list[int], peak: float = 0.0) -> float:
    """The kernel fed block by block, as TruePeakMeter feeds it."""
    bank = interpolator_taps(rate)
    history = np.zeros(max(0, len(bank) - 1), np.float32)
    at = 0
    for size in blocks:
        peak = kernel.true_peak(raw[at:at + size], 1.0 / FULL_SCALE[raw.dtype.type], bank,
                                history, peak)
        at += size
    assert at == len(raw)
    return peak


def blocks_of(frames: int, rng: np.random.Generator) -> list[int]:
    """Random lengths that cut 16-frame chunks and 256-frame blocks anywhere."""
    sizes: list[int] = []
    while sum(sizes) < frames:
        sizes.append(int(rng.choice([1, 7, 15, 17, 255, 257, 4097, rng.integers(1, 30000)])))
    sizes[-1] -= sum(sizes) - frames
    return [s for s in sizes if s]


def as_type(x: np.ndarray, dtype: type) -> np.ndarray:
    """Full scale 1.0 floats as `dtype` (integers clipped to their range)."""
    if dtype is np.float32:
        return x.astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(np.round(x * FULL_SCALE[dtype]), info.min, info.max).astype(dtype)


# Signals at full scale 1.0: (frames, rate, rng) -> samples.

def bench_tone(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """The bench's signal: a 220 Hz sine, a slow envelope, 2 % noise (most chunks near the peak)."""
    t = np.arange(n) / rate
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 2.0 * t)
    return 0.5 * envelope * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)


def music(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Decaying noise bursts over chords with harmonics and a bass line."""
    t = np.arange(n) / rate
    out = np.zeros(n)
    for f0 in rng.uniform(60, 500, 4):
        for h in range(1, 8):
            if f0 * h < rate / 2.2:
                out += 0.15 / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3))
    beat = max(1, rate // 8)
    for at in range(0, n, beat):
        k = min(n - at, beat)
        out[at:at + k] += rng.uniform(0.1, 0.6) * rng.standard_normal(k) * np.exp(
            -np.arange(k) / (0.02 * rate))
    return np.clip(out, -1.0, 1.0)


def noise(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, n) * rng.uniform(0.2, 1.0)


def inter_sample_bursts(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Quiet noise, one loud sample, and short fs/4 bursts at 45 degrees: their samples are at
    0.707 of the amplitude, the true peak ~3 dB above them (and above the loud sample)."""
    out = 0.01 * rng.standard_normal(n)
    out[rng.integers(0, n)] = 0.8
    for _ in range(3):
        at, k = int(rng.integers(0, max(1, n - 40))), int(rng.integers(2, 40))
        k = min(k, n - at)
        amplitude = rng.uniform(0.9, 1.0)
        out[at:at + k] = amplitude * np.sin(np.pi / 2 * np.arange(k) + np.pi / 4)
    return out


def alternating(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """+-full scale at the Nyquist frequency, in a few stretches."""
    out = np.zeros(n)
    for _ in range(4):
        at, k = int(rng.integers(0, n)), int(rng.integers(1, 600))
        out[at:at + k] = np.where(np.arange(min(k, n - at)) % 2, -1.0, 1.0)
    return out


def squares(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Full-scale square waves of random periods (2 to 64 samples), levels and lengths."""
    out = np.zeros(n)
    at = 0
    while at < n:
        k, period = int(rng.integers(16, 3000)), int(rng.integers(2, 65))
        phase = (np.arange(k) // max(1, period // 2)) % 2
        out[at:at + k] = np.where(phase, -1.0, 1.0)[:n - at] * rng.choice([1.0, 0.5, 0.999])
        at += k
    return out


def impulses(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Full-scale impulses (of both signs) in silence, at random frames and on chunk edges."""
    out = np.zeros(n)
    for at in [*rng.integers(0, n, 6), *(p for p in (15, 16, 255, 256, 257) if p < n)]:
        out[at] = rng.choice([-1.0, 1.0])
    return out


def chirp(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A sine swept from 20 Hz to the Nyquist frequency at 0.9 of full scale."""
    t = np.arange(n) / rate
    f = 20.0 * (rate / 2 / 20.0) ** (t / t[-1]) if n > 1 else np.full(n, 20.0)
    return 0.9 * np.sin(2 * np.pi * np.cumsum(f) / rate)


SIGNALS: list[Callable[[int, int, np.random.Generator], np.ndarray]] = [
    bench_tone, music, noise, inter_sample_bursts, alternating, squares, impulses, chirp]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", SIGNALS, ids=lambda f: f.__name__)
def test_the_kernel_equals_a_full_interpolation(make: Callable[..., np.ndarray], dtype: type,
                                                rate: int) -> None:
    rng = np.random.default_rng([rate, DTYPES.index(dtype), SIGNALS.index(make)])
    raw = as_type(make(int(rng.integers(rate // 3, rate // 2)), rate, rng), dtype)
    expected = full_interpolation(raw, rate)
    assert kernel_peak(raw, rate, blocks_of(len(raw), rng)) == expected
    assert kernel_peak(raw, rate, [len(raw)]) == expected
    # A running peak just under the answer: the value that holds it must still be evaluated.
    below = float(np.nextafter(expected, 0.0))
    assert kernel_peak(raw, rate, blocks_of(len(raw), rng), below) == expected
    # One above it is the answer.
    assert kernel_peak(raw, rate, [len(raw)], expected * 1.5) == expected * 1.5


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_true_peak_of_a_quarter_rate_sine_lies_between_its_samples(dtype: type) -> None:
    rate = 48000
    t = np.arange(rate // 10)
    raw = as_type(0.5 * np.sin(np.pi / 2 * t + np.pi / 4), dtype)
    sample_peak = float(np.abs(unit(raw)).max())
    peak = kernel_peak(raw, rate, [len(raw)])
    assert peak == full_interpolation(raw, rate)
    # ~3 dB (the windowed sinc overshoots a little this close to Nyquist)
    assert 20 * math.log10(peak / sample_peak) == pytest.approx(3.0, abs=0.2)


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_integer_extremes(dtype: type) -> None:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    raw = rng.choice(np.array([info.min, info.max, 0], dtype=dtype), 20000)
    raw[5000:6000] = info.min
    for rate in (44100, 96000, 192000):
        assert kernel_peak(raw, rate, blocks_of(len(raw), rng)) == full_interpolation(raw, rate)


def test_a_call_longer_than_a_region_ranks_its_blocks_across_regions() -> None:
    rate = 44100
    rng = np.random.default_rng(11)
    x = bench_tone(700_000, rate, rng)
    x[650_001:650_009] = 0.95 * np.sin(np.pi / 2 * np.arange(8) + np.pi / 4)  # the peak, late
    raw = as_type(x, np.int16)
    assert kernel_peak(raw, rate, [len(raw)]) == full_interpolation(raw, rate)


@pytest.mark.parametrize("stride", [2, 3])
def test_strided_samples_give_the_contiguous_result(stride: int) -> None:
    rate = 96000
    rng = np.random.default_rng(stride)
    for dtype in DTYPES:
        whole = as_type(music(150_000 * stride, rate, rng), dtype)
        column = whole[::stride]
        assert not column.flags.c_contiguous
        expected = full_interpolation(np.ascontiguousarray(column), rate)
        assert kernel_peak(column, rate, blocks_of(len(column), rng)) == expected
        assert kernel_peak(column, rate, [len(column)]) == expected  # copied piece by piece


def test_a_peak_across_a_block_boundary_is_found_from_the_history() -> None:
    rate = 44100
    x = np.zeros(5000)
    x[2045:2051] = 0.9 * np.sin(np.pi / 2 * np.arange(6) + np.pi / 4)
    raw = as_type(x, np.float32)
    expected = full_interpolation(raw, rate)
    assert expected > 0.9 * 0.75
    for cut in range(2040, 2056):
        assert kernel_peak(raw, rate, [cut, len(raw) - cut]) == expected


@pytest.mark.parametrize("rate", [44100, 96000])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_count_as_a_full_interpolation_counts_them(bad: float,
                                                                     rate: int) -> None:
    """NaN samples and NaN values are ignored; an infinity is the peak. The blocks after them
    (whose history holds them) are still exact."""
    rng = np.random.default_rng(5)
    x = music(60_000, rate, rng).astype(np.float32)
    x[[100, 20_000, 20_001, 33_333]] = bad
    expected = full_interpolation(x, rate)
    assert kernel_peak(x, rate, blocks_of(len(x), rng)) == expected
    assert kernel_peak(x, rate, [20_001, len(x) - 20_001]) == expected
    if bad is np.nan:
        assert math.isfinite(expected) and expected > 0.5


def test_priming_only_moves_the_history() -> None:
    rate = 44100
    bank = interpolator_taps(rate)
    raw = as_type(music(5000, rate, np.random.default_rng(1)), np.int16)
    history = np.zeros(len(bank) - 1, np.float32)
    assert kernel.true_peak(raw, 1 / 32768, bank, history, math.inf) == math.inf
    assert np.array_equal(history, unit(raw[-len(history):]).astype(np.float32))
    short = raw[:5]
    kernel.true_peak(short, 1 / 32768, bank, history, math.inf)
    assert np.array_equal(history[-5:], unit(short).astype(np.float32))
    assert np.array_equal(history[:-5], unit(raw[-len(history) + 5:]).astype(np.float32))


@pytest.mark.parametrize("special", [
    np.float32(np.finfo(np.float32).max), np.float32(-np.finfo(np.float32).max),
    np.float32(np.inf), np.float32(-np.inf),
    np.uint32(0x7FC00000).view(np.float32), np.uint32(0xFFC00000).view(np.float32),  # +-NaN
    np.uint32(0xFFFFFFFF).view(np.float32), np.uint32(0x7F800001).view(np.float32),  # NaN edges
    np.float32(-0.0), np.float32(np.finfo(np.float32).smallest_subnormal)])
def test_float_extremes_and_non_finite_keys_across_regions(special: np.float32) -> None:
    """The kernel tells a finite region from one holding a NaN or an infinity by the keys of
    its block extremes (the largest finite floats sit next to the infinities' keys): the
    special value, in blocks at either side of a 256 Ki-frame region boundary and in the last
    frames before it, gives what a full interpolation gives, and so do the regions after it."""
    rate = 44100
    rng = np.random.default_rng(9)
    x = bench_tone(600_000, rate, rng).astype(np.float32)
    region = 1024 * 256
    for at in (5, region - 1, region + 300, 2 * region - 20):
        x[at] = special
    with np.errstate(invalid="ignore"):  # a signalling NaN widened to float64
        expected = full_interpolation(x, rate)
    assert kernel_peak(x, rate, [len(x)]) == expected
    assert kernel_peak(x, rate, [region + 1, len(x) - region - 1]) == expected
    below = float(np.nextafter(expected, 0.0))
    if math.isfinite(below):
        assert kernel_peak(x, rate, [len(x)], below) == expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [bench_tone, music, noise], ids=lambda f: f.__name__)
def test_2x_calls_longer_than_a_region_whatever_the_cuts(make: Callable[..., np.ndarray],
                                                         dtype: type) -> None:
    """At 2x, where a region whose blocks mostly beat the range bound has every block's
    curvature measured in one pass: loud and quiet signals over three regions, the peak late or
    on a region boundary (whose first block reaches back into the region before), cut at the
    boundaries, with a partial last block, and the running peak one ulp under the answer."""
    rate, region = 96000, 1024 * 256
    rng = np.random.default_rng([DTYPES.index(dtype), 7])
    x = make(2 * region + 70_001, rate, rng) * 0.8
    x[2 * region - 3:2 * region + 5] = 0.97 * np.sin(np.pi / 2 * np.arange(8) + np.pi / 4)
    raw = as_type(x, dtype)
    expected = full_interpolation(raw, rate)
    below = float(np.nextafter(expected, 0.0))
    assert kernel_peak(raw, rate, [len(raw)]) == expected
    assert kernel_peak(raw, rate, [len(raw)], below) == expected
    assert kernel_peak(raw, rate, [region - 1, region + 2, len(raw) - 2 * region - 1]) == expected
    # Without the burst the peak is the signal's own, and the running peak still sits under it.
    raw[2 * region - 3:2 * region + 5] = raw[2 * region - 11:2 * region - 3]
    expected = full_interpolation(raw, rate)
    assert kernel_peak(raw, rate, [len(raw)], float(np.nextafter(expected, 0.0))) == expected


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_2x_a_smooth_tone_whose_true_peak_lies_just_above_its_samples(dtype: type) -> None:
    """A loud, smooth 96 kHz sine (tiny second differences: the curvature bound sits just above
    its samples) whose true peak beats its sample peak by a hair, in one block late in the
    call: only that block's interpolation finds it."""
    rate = 96000
    n = 600_000
    t = np.arange(n)
    envelope = 0.9 - 0.2 * np.abs(t - 500_000.3) / n
    raw = as_type(envelope * np.sin(2 * np.pi * 1003.7 * t / rate + 0.3), dtype)
    expected = full_interpolation(raw, rate)
    assert expected > float(np.abs(unit(raw)).max())
    assert kernel_peak(raw, rate, [len(raw)]) == expected
    assert kernel_peak(raw, rate, [len(raw)], float(np.nextafter(expected, 0.0))) == expected


@pytest.mark.parametrize("rate", [44100, 96000])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("boundary", [40 * 256, 1024 * 256], ids=["block", "region"])
def test_a_kink_just_before_a_block_is_seen_by_the_next_blocks_bound(boundary: int,
                                                                     dtype: type,
                                                                     rate: int) -> None:
    """Two equal loud samples on a smooth loud tone (every block beats the range bound, none the
    curvature bound but the kink's): the values between them, the true peak, are reached by
    windows up to 12 (2x) or 6 (4x) frames later, so with the pair just before a block (or a
    region) boundary the next block's windows hold the peak. That block's curvature bound must
    count the second differences reached back across the boundary, or the peak is missed."""
    t = np.arange(boundary + 3000)
    background = 0.5 * np.sin(2 * np.pi * 200 * t / rate)
    for back in range(1, 25):
        x = background.copy()
        x[boundary - back:boundary - back + 2] = 0.62
        raw = as_type(x, dtype)
        expected = full_interpolation(raw, rate)
        assert expected > 0.62 * 1.05
        assert kernel_peak(raw, rate, [len(raw)]) == expected, back
        assert kernel_peak(raw, rate, [len(raw)], float(np.nextafter(expected, 0.0))) == expected


@pytest.mark.parametrize("rate", [44100, 96000])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [bench_tone, music, inter_sample_bursts],
                         ids=lambda f: f.__name__)
def test_a_running_peak_a_few_float32_steps_under_the_answer(make: Callable[..., np.ndarray],
                                                             dtype: type, rate: int) -> None:
    """Where AVX-512 runs, a block whose bound beats the peak is interpolated in float32 first
    and only the chunks within that arithmetic's error of the peak in double: a running peak 1
    to 64 float32 steps under the answer (as close as the float32 values' own error) must still
    let the chunk holding the answer through, and one at or above the answer must hold."""
    rng = np.random.default_rng([rate, DTYPES.index(dtype), 13])
    raw = as_type(make(40_000, rate, rng) * 0.9, dtype)
    expected = full_interpolation(raw, rate)
    under = np.float32(expected)
    for steps in range(1, 65):
        under = np.nextafter(under, np.float32(0))
        if steps in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64):
            assert kernel_peak(raw, rate, [len(raw)], float(under)) == expected, steps
            assert kernel_peak(raw, rate, [256 * 7, len(raw) - 256 * 7], float(under)) == expected
    assert kernel_peak(raw, rate, [len(raw)], expected) == expected
    above = float(np.nextafter(np.float32(expected), np.float32(np.inf)))
    assert kernel_peak(raw, rate, [len(raw)], above) == above


#: 12 samples found by a linear program: followed by a flat stretch at full level, the 2x
#: interpolated value 18 frames after their end beats every other (1.0016 times the flat
#: level, which its own windows' last 18 frames hold with no curvature at all).
LEAD_IN = [0.6477, 0.4925, -1.0, 1.0, -0.0644, -1.0, 0.6117, 0.5997, -1.0, 0.0077, 1.0, 0.9781]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", [0, 1, 2, 7, 15])
def test_2x_a_chunks_bound_counts_the_curvature_two_chunks_back(chunk: int, dtype: type) -> None:
    """At 2x a window reaches 23 frames back: a chunk's bound must count the second differences
    of the two chunks before it, not only the one. Here the peak's window is flat over its
    newest 18 frames (so over the chunk and the one before it: a bound from them alone is
    1.0005 times the level) and wild before: the peak, 1.0016 times the level, is only found
    if the chunk two back counts, whether it lies in the block, the block before or the
    history (a call cut at the block)."""
    rate = 96000
    level = 0.9
    peak_at = 256 * 5 + 16 * chunk
    x = np.zeros(256 * 9)
    x[peak_at - 30:peak_at - 18] = level * np.array(LEAD_IN)
    x[peak_at - 18:peak_at + 100] = level
    ramp = peak_at + 100 + np.arange(400)
    x[ramp] = level * 0.5 * (1 + np.cos(np.pi * np.arange(400) / 400))
    raw = as_type(x, dtype)
    expected = full_interpolation(raw, rate)
    assert expected > 1.001 * float(np.abs(unit(raw)).max())
    below = float(np.nextafter(expected, 0.0))
    for cuts in ([len(raw)], [256 * 5, len(raw) - 256 * 5], [peak_at - 8, len(raw) - peak_at + 8]):
        assert kernel_peak(raw, rate, cuts) == expected
        assert kernel_peak(raw, rate, cuts, below) == expected


@pytest.mark.parametrize("rate", [44100, 96000])
def test_a_nan_just_before_a_finite_region_leaves_its_first_blocks_peak_found(rate: int) -> None:
    """The region before holds a NaN (it is interpolated in full) in the frames the next
    region's first block reaches back into: that block's windows that miss the NaN still count,
    and the peak there is found."""
    region = 1024 * 256
    x = (0.3 * np.sin(2 * np.pi * 200 * np.arange(2 * region + 5000) / rate)).astype(np.float32)
    x[region + 100:region + 108] = 0.97 * np.sin(np.pi / 2 * np.arange(8) + np.pi / 4)
    for back in (1, 11, 12, 23, 24, 33, 48):
        y = x.copy()
        y[region - back] = np.nan
        expected = full_interpolation(y, rate)
        assert expected > 0.97
        assert kernel_peak(y, rate, [len(y)]) == expected, back
        assert kernel_peak(y, rate, [region - 3, len(y) - region + 3]) == expected, back
