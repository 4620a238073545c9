"""The streaming reduction (pure) against a straightforward whole-array reference."""

from __future__ import annotations

import numpy as np
import pytest

from job.audio_helpers import assert_peaks_close, reference_pairs, reference_peaks
from waveflow_job.audio.peaks import (
    FrameCountExceeded,
    NonFiniteSamples,
    SampleScale,
    WaveformAccumulator,
    bucket_edges,
    pixel_geometry,
)

INT16 = SampleScale.for_integer_bits(16, 16)


def reduce_blocks(samples: np.ndarray, num_peaks: int, scale: SampleScale,
                  block_sizes: list[int] | None = None):
    acc = WaveformAccumulator(frames=len(samples), channels=samples.shape[1],
                              num_peaks=num_peaks, scale=scale)
    pos, sizes = 0, iter(block_sizes or [])
    while pos < len(samples):
        step = next(sizes, 4096)
        acc.add(samples[pos:pos + step])
        pos += step
    return acc.finish()


def int16_signal(frames: int, channels: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((frames, channels)) * 6000).clip(-32768, 32767).astype(np.int16)


@pytest.mark.parametrize(("frames", "num_peaks"), [(10_007, 100), (1000, 1000), (4097, 64),
                                                   (99_991, 1024), (12, 5)])
def test_bucket_edges_follow_the_contract_formula_exactly(frames: int, num_peaks: int) -> None:
    # A spike on the first and on the last frame of every bucket, each a different height:
    # a bucket edge off by one frame moves a spike into the neighbour and changes the peaks.
    x = np.full((frames, 2), 10, dtype=np.int16)
    edges = bucket_edges(frames, num_peaks)
    heights = np.linspace(1000, 30000, 2 * num_peaks).astype(np.int16)
    for i in range(num_peaks):
        x[edges[i], :] = heights[2 * i]
        x[edges[i + 1] - 1, :] = -heights[2 * i + 1]
    result = reduce_blocks(x, num_peaks, INT16, block_sizes=[777, 1, 4096, 3])
    assert_peaks_close(result.peaks, reference_peaks(x / 32768.0, num_peaks), tol=0)


@pytest.mark.parametrize("channels", [1, 2, 6, 8])
def test_block_size_does_not_change_any_value(channels: int) -> None:
    x = int16_signal(50_001, channels)
    whole = reduce_blocks(x, 333, INT16, block_sizes=[len(x)])
    rng = np.random.default_rng(3)
    pieces = reduce_blocks(x, 333, INT16, block_sizes=list(rng.integers(1, 5000, 200)))
    assert pieces == whole


@pytest.mark.parametrize(("frames", "num_peaks"), [(10_007, 100), (48_000, 1024), (5, 3),
                                                   (1025, 1024)])
def test_audiowaveform_pairs_match_the_reference_per_channel(frames: int, num_peaks: int) -> None:
    x = int16_signal(frames, 3)
    result = reduce_blocks(x, num_peaks, INT16)
    spp, length, data = reference_pairs(x / 32768.0, num_peaks)
    assert (result.samples_per_pixel, result.length) == (spp, length)
    assert result.data == data
    assert len(result.data) == length * 3 * 2


def test_last_audiowaveform_point_covers_only_the_remainder() -> None:
    # N = 1000, P = 300: spp = 4, length = 250; N = 1001: length 251, last point = 1 frame.
    assert pixel_geometry(1000, 300) == (4, 250)
    assert pixel_geometry(1001, 300) == (4, 251)
    x = np.zeros((1001, 1), dtype=np.int16)
    x[-1] = -32768
    result = reduce_blocks(x, 300, INT16)
    assert result.data[-2:] == [-128, -128]  # one frame: min and max are the same sample
    assert result.data[:-2] == [0] * (2 * 250)


def test_fewer_frames_than_peaks_gives_one_value_per_frame_then_zeros() -> None:
    x = np.array([[1000], [-2000], [500], [4000], [0]], dtype=np.int16)
    result = reduce_blocks(x, 8, INT16)
    assert result.peaks == [0.25, 0.5, 0.125, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert (result.samples_per_pixel, result.length) == (1, 5)


def test_digital_silence_is_all_zeros_with_no_level() -> None:
    result = reduce_blocks(np.zeros((44_100, 2), dtype=np.int16), 64, INT16)
    assert result.peaks == [0.0] * 64
    assert set(result.data) == {0}
    assert result.peak_dbfs is None and result.rms_dbfs is None
    assert result.clipped_samples == 0


def test_near_silence_is_normalised_by_minus_60_dbfs_not_drawn_full_height() -> None:
    x = np.zeros((1000, 1), dtype=np.float32)
    x[100] = 0.0005  # -66 dBFS
    x[900] = -0.00025
    result = reduce_blocks(x, 10, SampleScale.floating())
    assert result.peaks[1] == 0.5 and result.peaks[9] == 0.25
    assert max(result.peaks) < 1.0
    assert result.peak_dbfs == pytest.approx(-66.02, abs=0.01)


def test_loud_file_is_normalised_by_its_largest_bucket() -> None:
    x = np.zeros((1000, 2), dtype=np.int16)
    x[50] = [16384, 16384]
    x[550] = [8192, -8192]  # the channels cancel: the mono mix is silent here
    x[750] = [8192, 0]  # mean of the channels: 4096
    result = reduce_blocks(x, 4, INT16)
    assert result.peaks == [1.0, 0.0, 0.0, 0.25]


def test_clipped_samples_are_counted_at_the_integer_extremes() -> None:
    x = int16_signal(20_000, 2) // 4
    x[10, 0] = 32767
    x[11, 1] = -32768
    x[12:15, :] = 32767
    result = reduce_blocks(x, 50, INT16)
    assert result.clipped_samples == 8
    assert result.peak_dbfs == pytest.approx(0.0, abs=0.01)


def test_24_bit_samples_clip_at_their_own_extreme_not_the_32_bit_one() -> None:
    scale = SampleScale.for_integer_bits(24, 32)
    x = np.zeros((100, 1), dtype=np.int32)
    x[5] = (2**23 - 1) << 8
    x[6] = -(2**31)
    x[7] = (2**23 - 2) << 8
    assert reduce_blocks(x, 10, scale).clipped_samples == 2


def test_float_samples_above_full_scale_are_clipping_not_rescaled() -> None:
    x = np.zeros((1000, 1), dtype=np.float32)
    x[10] = 1.5
    x[20] = -1.0
    x[30] = 0.75
    result = reduce_blocks(x, 100, SampleScale.floating())
    assert result.clipped_samples == 2
    assert result.peak_dbfs == pytest.approx(3.52, abs=0.01)
    assert result.peaks[1] == 1.0 and result.peaks[3] == 0.5  # relative to the 1.5 bucket
    assert result.data[2:4] == [0, 127] and result.data[4:6] == [-128, 0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_samples_are_refused(bad: float) -> None:
    x = np.zeros((10_000, 2), dtype=np.float32)
    x[5000, 1] = bad
    with pytest.raises(NonFiniteSamples):
        reduce_blocks(x, 10, SampleScale.floating())


def test_rms_is_over_every_sample_of_every_channel() -> None:
    x = np.zeros((4000, 2), dtype=np.float32)
    x[:, 0] = 0.5
    result = reduce_blocks(x, 10, SampleScale.floating())
    assert result.rms_dbfs == pytest.approx(20 * np.log10(np.sqrt(0.125)), abs=0.01)


def test_more_frames_than_announced_is_an_error_not_a_silent_overflow() -> None:
    acc = WaveformAccumulator(frames=100, channels=1, num_peaks=10, scale=INT16)
    acc.add(np.zeros((60, 1), dtype=np.int16))
    with pytest.raises(FrameCountExceeded):
        acc.add(np.zeros((60, 1), dtype=np.int16))
