"""The K-weighting kernel's lanes and segments: a block is cut into time segments per channel
(each later segment primed on the 200 ms before it) and filtered in 2, 4 or 8 lanes; every
vector width, every forced segment count and every sample layout must give the energies of
one sequential lane and of libebur128 (pyebur128), block boundaries, short blocks and rates
that are not multiples of 10 Hz included."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from job.test_loudness_kernel import (
    FULL_SCALE,
    as_type,
    random_blocks,
    reference_steps,
    signal,
)
from waveflow_job.audio import _kernel as kernel
from waveflow_job.audio.loudness import LoudnessMeter, channel_weights, kweighting


def widths() -> list[int]:
    """The vector widths this CPU runs (2, the portable C, always)."""
    usable = []
    for width in (2, 4, 8):
        try:
            kernel.kweight(np.zeros((4, 1), np.float32), 1.0, kweighting(48000), np.ones(1),
                           np.zeros((1, 5)), 4800, 4800, 0, np.zeros(0), width, 0)
        except ValueError:
            continue
        usable.append(width)
    return usable


WIDTHS = widths()


def layout(block: np.ndarray, how: str) -> np.ndarray:
    """The block as a decoder hands it over: interleaved, planar, or a strided view."""
    if how == "planar":
        return np.asfortranarray(block)
    if how == "strided":  # every other frame of a block twice as long: neither of the above
        doubled = np.repeat(block, 2, axis=0)
        return doubled[::2]
    return np.ascontiguousarray(block)


def energies(samples: np.ndarray, rate: int, blocks: list[int], width: int = 0,
             segments: int = 0, how: str = "interleaved",
             module: ModuleType = kernel) -> tuple[np.ndarray, np.ndarray]:
    """The kernel (``module``: the installed one, or a build the portable tests load) fed
    block by block as LoudnessMeter._feed feeds it: every 100 ms step's energy and the
    carried state at the end."""
    channels = samples.shape[1]
    step, window = (rate + 5) // 10, rate * 100 // 1000
    state = np.zeros((channels, 5))
    coeffs, weights = kweighting(rate), channel_weights(channels)
    out: list[float] = []
    filled, at = 0, 0
    for size in blocks:
        block = layout(samples[at:at + size], how)
        at += size
        room = np.full((filled + size) // step, np.nan)
        done, filled = module.kweight(block, 1.0 / FULL_SCALE[samples.dtype.type], coeffs,
                                      weights, state, step, window, filled, room, width,
                                      segments)
        assert done == len(room)
        out.extend(room[:done])
    assert at == len(samples)
    return np.array(out), state


def assert_same_energies(ours: np.ndarray, theirs: np.ndarray) -> None:
    """libebur128's bar: 1e-9 relative. A filter tail decaying in digital silence keeps the
    relative rounding of the state it decays from, so energies under 1e-18 of the loudest
    step (-180 dB, far below any gate) are compared absolutely."""
    assert len(ours) == len(theirs) > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-18 * np.max(theirs))


def uneven_blocks(frames: int, rate: int) -> list[int]:
    """Blocks that cut segments and steps anywhere: a long one, a frame, one a frame short of
    the priming, odd ones, the rest."""
    sizes = [frames // 2 + 17, 1, 2 * ((rate + 5) // 10) - 1, 3, frames // 5 + 1]
    return [*sizes, frames - sum(sizes)]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("segments", [2, 3, 5, 8, 16])
@pytest.mark.parametrize(("rate", "channels", "dtype", "how"), [
    (44100, 2, np.int16, "interleaved"),
    (96000, 2, np.int32, "planar"),
    (44100, 2, np.float32, "planar"),
    (48000, 1, np.int16, "interleaved"),
    (48000, 6, np.int16, "interleaved"),
    (32000, 3, np.float32, "strided"),
    (44105, 2, np.int16, "interleaved"),
    (12345, 5, np.int32, "planar"),
])
def test_segments_give_the_energies_of_one_sequential_lane(width: int, segments: int, rate: int,
                                                           channels: int, dtype: type,
                                                           how: str) -> None:
    samples = as_type(signal(round(7.3 * rate), rate, channels, segments), dtype)
    blocks = uneven_blocks(len(samples), rate)
    sequential, sequential_state = energies(samples, rate, blocks, width, 1, how)
    cut, cut_state = energies(samples, rate, blocks, width, segments, how)
    assert_same_energies(cut, sequential)
    # The carried state: the filter's delays and the open step's sum (the last segment's).
    np.testing.assert_allclose(cut_state, sequential_state, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 47999, 96000, 192000])
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
def test_every_width_and_segment_count_equals_libebur128(width: int, rate: int,
                                                         dtype: type) -> None:
    channels = 1 + rate % 4
    samples = as_type(signal(round(4.2 * rate), rate, channels, rate), dtype)
    reference, _ = reference_steps(samples, rate)
    blocks = random_blocks(len(samples), rate, largest=3 * rate)
    for segments in (0, 1, 4, 7):
        for how in ("interleaved", "planar"):
            ours, _ = energies(samples, rate, blocks, width, segments, how)
            assert_same_energies(ours, np.array(reference))


@pytest.mark.parametrize("width", WIDTHS)
def test_the_portable_path_equals_the_widest(width: int) -> None:
    """The plain C lanes (what aarch64 runs) and this CPU's widest, automatic segments."""
    rate = 44100
    for channels in range(1, 9):
        samples = as_type(signal(9 * rate, rate, channels, 40 + channels), np.float32)
        blocks = [262144, 5, 32768, 32768, len(samples) - 327685]
        portable, _ = energies(samples, rate, blocks, 2, 0)
        widest, _ = energies(samples, rate, blocks, width, 0)
        assert_same_energies(widest, portable)


@pytest.mark.parametrize("channels", [5, 6, 7, 8])
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
def test_interleaved_surround_frames_read_a_vector_each(channels: int, dtype: type) -> None:
    """5.1 and 7.1 frames: a frame per vector, the frames at a block's end through memory."""
    rate = 48000
    samples = as_type(signal(round(3.3 * rate), rate, channels, 70 + channels), dtype)
    reference, _ = reference_steps(samples, rate)
    blocks = [1, 2, 3, 4799, 4801, 2, 65536, 1]
    blocks.append(len(samples) - sum(blocks))
    for width in WIDTHS:
        ours, _ = energies(samples, rate, blocks, width, 0)
        assert_same_energies(ours, np.array(reference))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("channels", "dtype", "how"), [
    (2, np.int16, "interleaved"),
    (2, np.int32, "planar"),
    (1, np.int16, "interleaved"),
    (6, np.int32, "interleaved"),
    (3, np.int16, "strided"),
])
def test_the_full_scale_applied_by_the_kernel_is_exact(width: int, channels: int, dtype: type,
                                                       how: str) -> None:
    """The kernel filters integer samples unscaled and applies the full scale (a power of two)
    to the carried state and the squares: bit for bit what the samples already divided by it
    give (exact in float32: 16- and 24-bit values) with inv_scale 1, energies and state."""
    rate = 48000
    samples = as_type(signal(round(2.3 * rate), rate, channels, 90 + channels), dtype)
    if dtype is np.int32:
        samples &= ~0xFF  # 24-bit samples, as WAV-24 blocks hold them
    scaled = (samples / FULL_SCALE[dtype]).astype(np.float32)
    assert np.array_equal(scaled.astype(np.float64) * FULL_SCALE[dtype], samples)
    blocks = uneven_blocks(len(samples), rate)
    ours, our_state = energies(samples, rate, blocks, width, 0, how)
    theirs, their_state = energies(scaled, rate, blocks, width, 0, how)
    assert np.array_equal(ours, theirs)
    assert np.array_equal(our_state, their_state)


@pytest.mark.parametrize("rate", [8000, 44100, 96000, 192000])
def test_two_steps_of_priming_leave_less_than_a_rounding_of_the_state(rate: int) -> None:
    """Why a segment may start from zero 200 ms early: from any state, 200 ms of silence
    leave less than 2^-53 of it (the 38 Hz high-pass decays as (1 + t/tau) e^(-t/tau))."""
    step = (rate + 5) // 10
    loud = as_type(signal(rate, rate, 1, 3), np.float32)
    state = np.zeros((1, 5))
    coeffs, weights = kweighting(rate), np.ones(1)
    kernel.kweight(loud, 1.0, coeffs, weights, state, step, step, 0, np.zeros(10), 0, 1)
    before = np.abs(state[0, :4]).max()
    assert before > 1.0  # direct form II: the 38 Hz poles hold large delays
    kernel.kweight(np.zeros((LoudnessMeter.PRIMING_STEPS * step, 1), np.float32), 1.0, coeffs,
                   weights, state, step, step, 0, np.zeros(2), 0, 1)
    assert np.abs(state[0, :4]).max() < before * 2.0**-53


def test_short_blocks_and_empty_ones_keep_the_bookkeeping() -> None:
    rate = 44105  # a step of 4411 frames, a window of 4410
    samples = as_type(signal(round(1.3 * rate), rate, 2, 8), np.int16)
    reference, _ = reference_steps(samples, rate)
    for width in WIDTHS:
        ones, _ = energies(samples[:9000], rate, [1] * 9000, width, 8)
        assert_same_energies(ones, np.array(reference[:2]))
        blocks = [0, 4410, 1, 0, 4412, 17, 8818, 8823, 0]
        blocks.append(len(samples) - sum(blocks))
        ours, _ = energies(samples, rate, blocks, width, 3)
        assert_same_energies(ours, np.array(reference))


def test_an_empty_block_leaves_the_state_alone() -> None:
    state = np.arange(10, dtype=np.float64).reshape(2, 5) + 1.0
    done, filled = kernel.kweight(np.zeros((0, 2), np.int16), 1.0, kweighting(44100),
                                  np.ones(2), state, 4410, 4410, 7, np.zeros(0))
    assert (done, filled) == (0, 7)
    assert np.array_equal(state, np.arange(10).reshape(2, 5) + 1.0)


def test_an_unmeasured_channel_keeps_its_state_and_counts_nothing() -> None:
    """5.1's LFE (weight 0) and a stereo pair with one channel switched off."""
    rate = 48000
    samples = as_type(signal(3 * rate, rate, 2, 4), np.int16)
    step = (rate + 5) // 10
    state, room = np.zeros((2, 5)), np.zeros(30)
    weights = np.array([1.0, 0.0])
    kernel.kweight(samples, 1 / 32768, kweighting(rate), weights, state, step, step, 0, room)
    left, _ = energies(samples[:, :1], rate, [len(samples)])
    np.testing.assert_allclose(room, left, rtol=1e-9)
    assert not state[1].any()


def test_a_meter_primed_on_a_range_pools_to_one_pass() -> None:
    """LoudnessMeter.prime: a meter starting inside the file, primed on the 200 ms before."""
    rate = 44100
    samples = as_type(signal(9 * rate, rate, 2, 12), np.int16)
    whole = LoudnessMeter(2, rate, 32768.0)
    whole.add(samples, [samples[:, c] for c in range(2)])
    split = 40 * ((rate + 5) // 10)
    first, second = LoudnessMeter(2, rate, 32768.0), LoudnessMeter(2, rate, 32768.0, split)
    head, tail = samples[:split], samples[split:]
    first.add(head, [head[:, c] for c in range(2)])
    second.prime(samples[second.priming_start:split])
    for at in range(0, len(tail), 65536):
        block = tail[at:at + 65536]
        second.add(block, [block[:, c] for c in range(2)])
    pooled = np.concatenate([np.frombuffer(first.steps), np.frombuffer(second.steps)])
    assert_same_energies(pooled, np.frombuffer(whole.steps))


def test_the_kernel_refuses_a_width_it_cannot_run() -> None:
    args = (np.zeros((4, 1), np.float32), 1.0, kweighting(48000), np.ones(1), np.zeros((1, 5)),
            4800, 4800, 0, np.zeros(0))
    for width in (1, 3, 16):
        with pytest.raises(ValueError):
            kernel.kweight(*args, width, 0)
    with pytest.raises(ValueError):
        kernel.kweight(*args, 0, -1)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("rate", "freqs"), [(44100, (20.0, 40.0, 100.0)),
                                             (96000, (40.0, 100.0, 250.0))])
@pytest.mark.parametrize("how", ["interleaved", "planar"])
def test_low_tones_where_the_numerator_cancels_equal_libebur128(width: int, rate: int,
                                                                freqs: tuple[float, ...],
                                                                how: str) -> None:
    """The kernel's y / b0 = x + c1 v1 + ... + c4 v4 (kweight.c, filter_form): at low
    frequencies the delays are ~1e5 times the samples and y their small difference, so an
    error d in c_i moves y by d |v|. c_i rounded once from the exact b_i / b0 - a_i keeps that
    under the rounding noise of libebur128's own form; rounded twice (b_i / b0, then - a_i)
    it would be ~4e-9 at 100 Hz and 96 kHz, over the bar."""
    frames = 3 * rate
    t = np.arange(frames) / rate
    tones = np.stack([0.5 * np.sin(2 * np.pi * f * t) for f in freqs[:2]], axis=1)
    tones[:, 1] += 0.3 * np.sin(2 * np.pi * freqs[2] * t)
    for dtype in (np.float32, np.int32):
        samples = as_type(tones, dtype)
        reference, _ = reference_steps(samples, rate)
        ours, _ = energies(samples, rate, [len(samples)], width, 0, how)
        # the first steps hold the filter's start-up transient, not the steady tone
        assert_same_energies(ours[5:], np.array(reference[5:]))
