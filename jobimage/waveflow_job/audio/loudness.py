"""Loudness (ITU-R BS.1770-4 / EBU R128) fed block by block: integrated, range, true peak.

The K-weighting filter and the channel weights come from libebur128 (through ``pyebur128``),
the implementation most R128 tools use, fed the decoder's blocks as they come: it reports the
energy of every 100 ms step, and the gating is done here on those steps (400 ms blocks with
75 % overlap, absolute gate -70 LUFS, relative gate -10 LU: integrated; 3 s blocks every second,
gates -70 LUFS and -20 LU, 10th to 95th percentile by nearest rank: range, EBU Tech 3342) — the
same blocks and rules as libebur128's own functions (tested), but poolable across the ranges
the parallel decoder splits a file into. Channel weights follow BS.1770: L, R, C 1.0,
surrounds 1.41, LFE excluded (WAV/FFmpeg order L R C LFE Ls Rs [Lb Rb]; four channels are
L R Ls Rs; mono counts once).

True peak is computed here, to libebur128's definition (its 49-tap Hann-windowed sinc
interpolator, 4x below 96 kHz, 2x below 192 kHz, the sample peak above; the result is the larger
of the interpolated and the sample peak), but not for every sample: libebur128 spends ~75 ns
per sample on it, several times our whole analysis. An interpolated value is bounded by its
window (13 samples at 4x, 25 at 2x): ``|y| <= |S|·|max+min|/2 + G·(max-min)/2`` with ``S``
and ``G`` the sum and absolute sum of the phase's taps. Only 16-frame chunks whose bound
beats the peak found so far are interpolated (the others provably cannot raise it), highest
bounds first. The result equals the full computation (tested against libebur128).

Digital silence has no loudness: every value is None. Integrated loudness is None when no
400 ms block reaches -70 LUFS (or the audio is shorter than 400 ms), the range when there is no
integrated loudness or the audio is shorter than 3 s.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Loudness", "LoudnessMeter", "TruePeakMeter", "integrated_loudness",
           "interpolator_taps", "loudness_range", "measure"]

#: Frames per chunk whose bound decides whether it is interpolated.
CHUNK = 16
#: Relative slack on the bound: the interpolated values are rounded to float32.
_BOUND_SLACK = 1.0 + 1e-6
#: Frames of one channel handled at a time: every temporary stays under a few hundred KiB.
_SLICE_FRAMES = 1 << 15
#: Chunks interpolated at a time (64 KiB of windows per 32 chunks).
_BATCH_CHUNKS = 256


@dataclass(frozen=True)
class Loudness:
    """Finite numbers or None (digital silence, too short or too quiet to gate)."""

    integrated_lufs: float | None
    loudness_range_lu: float | None
    true_peak_dbtp: float | None


def interpolator_taps(sample_rate: int) -> np.ndarray:
    """Polyphase taps ``(delay, phases)`` of the true-peak interpolator; empty at >= 192 kHz.

    A 49-tap Hann-windowed sinc at the input's Nyquist frequency; column ``f`` holds phase
    ``f``'s coefficient for the input ``index`` samples back (phase 0 is the sample itself, so
    it is left out).
    """
    factor = 4 if sample_rate < 96000 else 2 if sample_rate < 192000 else 1
    if factor == 1:
        return np.zeros((0, 0))
    taps = 49
    delay = (taps + factor - 1) // factor
    bank = np.zeros((delay, factor))
    for j in range(taps):
        m = j - (taps - 1) / 2
        c = 1.0 if abs(m) <= 1e-6 else math.sin(m * math.pi / factor) / (m * math.pi / factor)
        c *= 0.5 * (1 - math.cos(2 * math.pi * j / (taps - 1)))
        if abs(c) > 1e-6:
            bank[j // factor, j % factor] = c
    return bank[:, 1:]


class TruePeakMeter:
    """The largest interpolated |sample| per channel, evaluated only where it can matter."""

    def __init__(self, channels: int, sample_rate: int, full_scale: float) -> None:
        self.channels = channels
        self.full_scale = full_scale
        self.bank = interpolator_taps(sample_rate)
        self.delay = len(self.bank)
        #: Newest ``delay - 1`` samples of each channel, oldest first (zeros before the start).
        self.history = np.zeros((channels, max(0, self.delay - 1)), dtype=np.float32)
        self.peak = np.zeros(channels)
        self._buffer = np.empty(0, dtype=np.float32)
        if self.delay:
            self._sum = np.abs(self.bank.sum(axis=0))
            self._abs = np.abs(self.bank).sum(axis=0)
            # Row k of the window matrix is x[n - 12 + k]: reverse the delay index.
            self._matrix = self.bank[::-1].copy()
            self._offsets = np.arange(self.delay, dtype=np.int64)
            #: Earlier chunks a window can reach into.
            self._reach = -(-(self.delay - 1) // CHUNK)

    def prime(self, before: np.ndarray) -> None:
        """Start from the samples that precede this meter's range (``(n, channels)``)."""
        if self.delay and len(before):
            for c in range(self.channels):
                self._remember(c, self._normalised(before[:, c]))

    def add(self, columns: Sequence[np.ndarray]) -> None:
        """The next block, one contiguous array per channel in the source's type."""
        for c, column in enumerate(columns):
            for at in range(0, len(column), _SLICE_FRAMES):  # small temporaries
                x = self._normalised(column[at:at + _SLICE_FRAMES])
                sample_peak = float(max(x.max(), -x.min()))
                self.peak[c] = max(self.peak[c], sample_peak)
                if self.delay:
                    self._interpolate(c, x)
                    self._remember(c, x)

    def _normalised(self, column: np.ndarray) -> np.ndarray:
        """float32 at full scale 1.0, into a reused buffer (full scale is a power of two and
        integer samples have at most 24 significant bits: exact, as libebur128's)."""
        if column.dtype == np.float32 and self.full_scale == 1.0:
            return column
        if self._buffer.shape[0] < len(column):
            self._buffer = np.empty(len(column), dtype=np.float32)
        out = self._buffer[:len(column)]
        np.multiply(column, np.float32(1.0 / self.full_scale), out=out, dtype=np.float32)
        return out

    def _remember(self, c: int, x: np.ndarray) -> None:
        keep = self.history.shape[1]
        joined = np.concatenate([self.history[c], x[-keep:]])
        self.history[c] = joined[-keep:]

    def _interpolate(self, c: int, x: np.ndarray) -> None:
        n = len(x)
        starts = np.arange(0, n, CHUNK)
        cmax = np.maximum.reduceat(x, starts).astype(np.float64)
        cmin = np.minimum.reduceat(x, starts).astype(np.float64)
        hist = self.history[c]
        # A window reaches back delay - 1 samples (12 at 4x, 24 at 2x): into as many earlier
        # chunks, and for the first ones into the history.
        wmax, wmin = cmax.copy(), cmin.copy()
        for back in range(1, self._reach + 1):
            np.maximum(wmax[back:], cmax[:-back], out=wmax[back:])
            np.minimum(wmin[back:], cmin[:-back], out=wmin[back:])
        head = min(self._reach, len(wmax))
        np.maximum(wmax[:head], float(hist.max()), out=wmax[:head])
        np.minimum(wmin[:head], float(hist.min()), out=wmin[:head])
        mid, half = np.abs(wmax + wmin) / 2, (wmax - wmin) / 2
        bound = np.max(mid[:, None] * self._sum + half[:, None] * self._abs, axis=1)
        bound *= _BOUND_SLACK
        candidates = np.flatnonzero(bound > self.peak[c])
        if len(candidates) == 0:
            return
        padded = np.concatenate([hist, x])
        # Highest bounds first: they usually hold the peak, and then rule out the rest. In
        # batches, so the windows (13 samples per frame) stay small.
        order = candidates[np.argsort(bound[candidates])[::-1]]
        for at in range(0, len(order), _BATCH_CHUNKS):
            group = order[at:at + _BATCH_CHUNKS]
            group = group[bound[group] > self.peak[c]]
            if len(group) == 0:
                break  # sorted: no later chunk can do better either
            frames = (group[:, None] * CHUNK + np.arange(CHUNK)[None, :]).reshape(-1)
            frames = frames[frames < n]
            windows = padded[frames[:, None] + self._offsets[None, :]].astype(np.float64)
            values = (windows @ self._matrix).astype(np.float32)
            self.peak[c] = max(self.peak[c], float(np.abs(values).max()))


class LoudnessMeter:
    """Integrated loudness and range (libebur128's K-weighting and blocks) plus true peak, for
    the frames from ``start`` on.

    libebur128 filters and is asked for the energy of each 100 ms step; the 400 ms and 3 s
    blocks its own measurements would gate are the means of 4 and 30 consecutive steps
    (:func:`measure`), so meters of consecutive ranges pool exactly. A meter that starts inside
    the file is first fed the 200 ms before its range (``prime``), so its filter holds what a
    single pass would have.
    """

    #: 100 ms steps of history a meter needs: the K-weighting's memory (its 38 Hz high-pass
    #: decays in well under 100 ms) and the interpolator's 12 samples.
    PRIMING_STEPS = 2

    def __init__(self, channels: int, sample_rate: int, full_scale: float,
                 start: int = 0) -> None:
        import pyebur128

        self._eb = pyebur128
        self.channels = channels
        self.sample_rate = sample_rate
        self.full_scale = full_scale
        self.step = (sample_rate + 5) // 10
        #: libebur128 turns a window in ms into ``rate * ms // 1000`` frames: 100 ms is one
        #: step exactly when the rate is a multiple of 10 Hz (every common rate), else a frame
        #: less.
        self._window_ms = 100
        if start % self.step:
            raise ValueError("a meter must start on the 100 ms grid")
        #: Index of the 100 ms step the next frame belongs to, and frames already in it.
        self._first_step = start // self.step
        self._next_step = self._first_step
        self._filled = 0
        self._primed = False
        self.frames = 0
        # Momentary mode keeps only 400 ms of filtered audio; the 400 ms and 3 s blocks are
        # built here from the 100 ms energies (equal steps: their means).
        self.state = pyebur128.R128State(channels, sample_rate, pyebur128.MeasurementMode.MODE_M)
        if channels in (7, 8):  # 6.1 / 7.1: the back and side pairs are surrounds too
            for c in range(6, channels):
                self.state.set_channel(c, pyebur128.ChannelType.LEFT_SURROUND if c % 2 == 0
                                       else pyebur128.ChannelType.RIGHT_SURROUND)
        self.true_peak = TruePeakMeter(channels, sample_rate, full_scale)
        #: Mean-square energy (channel-weighted) of each 100 ms step of the range.
        self.steps = array("d")

    @property
    def priming_start(self) -> int:
        """The first frame :meth:`prime` wants (the range's start less up to 3 s)."""
        return max(0, self._first_step - self.PRIMING_STEPS) * self.step

    def prime(self, block: np.ndarray) -> None:
        """Frames from :attr:`priming_start` up to the range's start, in order: they fill the
        filter and the 3 s window; no block that ends before the range is recorded."""
        if not self._primed:
            self._primed = True
            self._next_step = self.priming_start // self.step
        self._feed(block)
        self.true_peak.prime(block)

    def add(self, block: np.ndarray, columns: Sequence[np.ndarray]) -> None:
        """The next ``(n, channels)`` block and its channels as contiguous arrays."""
        if block.shape[0] == 0:
            return
        self.frames += block.shape[0]
        self._feed(block)
        self.true_peak.add(columns)

    def _feed(self, block: np.ndarray) -> None:
        data = self._interleaved(block)
        ch, n, at = self.channels, block.shape[0], 0
        while at < n:
            take = min(n - at, self.step - self._filled)
            self.state.add_frames(data[at * ch:(at + take) * ch], take)
            at += take
            self._filled += take
            if self._filled == self.step:
                self._filled = 0
                if self._next_step >= self._first_step:
                    self._step_done(self._next_step)
                self._next_step += 1

    def _step_done(self, step: int) -> None:
        """Step ``step`` of the range is complete: record its energy."""
        self.steps.append(_energy(self._eb.get_loudness_window(self.state, self._window_ms)))

    def _interleaved(self, block: np.ndarray) -> np.ndarray:
        """A 1-D interleaved array of a type libebur128 scales itself (short, int, float)."""
        if block.dtype == np.int32 and self.full_scale != float(1 << 31):
            # Fewer significant bits than the container: libebur128 scales int by 2^31.
            block = (block.astype(np.float64) / self.full_scale).astype(np.float32)
        elif block.dtype == np.int16 and self.full_scale != 32768.0:
            block = (block.astype(np.float64) / self.full_scale).astype(np.float32)
        return np.ascontiguousarray(block).reshape(-1)


def _energy(lufs: float) -> float:
    """libebur128 reports ``10·log10(energy) - 0.691``; back to the energy (0 for -inf)."""
    return 0.0 if not math.isfinite(lufs) else 10.0 ** ((lufs + 0.691) / 10.0)


def _loudness(energy: float) -> float:
    return 10.0 * math.log10(energy) - 0.691


#: -70 LUFS as an energy: blocks below it are silence to both gates.
ABSOLUTE_GATE = 10.0 ** ((-70.0 + 0.691) / 10.0)


def integrated_loudness(blocks: np.ndarray) -> float | None:
    """BS.1770-4: mean of the blocks above -70 LUFS and above -10 LU under their mean."""
    loud = blocks[blocks >= ABSOLUTE_GATE]
    if len(loud) == 0:
        return None
    gated = loud[loud >= loud.mean() * 0.1]
    return _loudness(float(gated.mean())) if len(gated) else None


def loudness_range(short_term: np.ndarray) -> float | None:
    """EBU Tech 3342: 10th to 95th percentile of the 3 s blocks above -70 LUFS and above
    -20 LU under their mean (nearest rank, as libebur128)."""
    loud = np.sort(short_term[short_term >= ABSOLUTE_GATE])
    if len(loud) == 0:
        return None
    gated = loud[loud >= loud.mean() * 0.01]
    if len(gated) == 0:
        return None
    n = len(gated)
    high, low = gated[int((n - 1) * 0.95 + 0.5)], gated[int((n - 1) * 0.1 + 0.5)]
    return _loudness(float(high)) - _loudness(float(low))


def gating_blocks(steps: np.ndarray, size: int, hop: int) -> np.ndarray:
    """Mean energies of ``size`` consecutive steps, every ``hop`` steps, the first ending at
    step ``size - 1`` (400 ms blocks: 4, 1; short-term: 30, 10)."""
    if len(steps) < size:
        return np.zeros(0)
    return np.lib.stride_tricks.sliding_window_view(steps, size)[::hop].mean(axis=1)


def measure(meters: Sequence[LoudnessMeter]) -> Loudness:
    """Pool the meters of consecutive ranges of one file into its loudness."""
    peak = float(np.max([m.true_peak.peak.max() for m in meters]))
    if peak <= 0.0:
        return Loudness(None, None, None)
    steps = np.concatenate([np.frombuffer(m.steps, dtype=np.float64) for m in meters])
    integrated = integrated_loudness(gating_blocks(steps, 4, 1))
    lra = None
    if integrated is not None and len(steps) >= 30:
        lra = loudness_range(gating_blocks(steps, 30, 10))
    return Loudness(
        integrated_lufs=_rounded(integrated),
        loudness_range_lu=_rounded(lra),
        true_peak_dbtp=_rounded(20 * math.log10(peak)),
    )


def _rounded(value: float | None) -> float | None:
    return round(value, 2) if value is not None and math.isfinite(value) else None
