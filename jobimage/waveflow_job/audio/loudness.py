"""Loudness (ITU-R BS.1770-4 / EBU R128) fed block by block: integrated, range, true peak.

The per-sample work is C (``kernel/kweight.c``, ``kernel/true_peak.c``), shown equal to
libebur128, the implementation most R128 tools use (tests/job/test_loudness_kernel.py): libebur128's
K-weighting (its coefficients derived per sample rate as it derives them, double state) gives
the energy of every 100 ms step, and the gating is done here on those steps (400 ms blocks with
75 % overlap, absolute gate -70 LUFS, relative gate -10 LU: integrated; 3 s blocks every second,
gates -70 LUFS and -20 LU, 10th to 95th percentile by nearest rank: range, EBU Tech 3342) — the
same blocks and rules as libebur128's own functions (tested), but poolable across the ranges
the parallel decoder splits a file into. Channel weights follow BS.1770 as libebur128 maps
them: L, R, C 1.0, surrounds 1.41, LFE excluded (WAV/FFmpeg order L R C LFE Ls Rs [Lb Rb];
four channels are L R Ls Rs, five L R C Ls Rs; mono counts once; from the ninth on unused).

True peak follows libebur128's definition (its 49-tap Hann-windowed sinc interpolator, 4x below
96 kHz, 2x below 192 kHz, the sample peak above; the result is the larger of the interpolated
and the sample peak), but skips what cannot matter: an interpolated value is bounded by its
window (12 samples at 4x, 24 at 2x), ``|y| <= |S|·|max+min|/2 + G·(max-min)/2`` with ``S`` and
``G`` the sum and absolute sum of the phase's taps, and by a curvature bound, ``|y| <= P·max|x| +
E·max|second difference|`` (the sinc nearly reproduces straight lines: ``P`` ~1.0005, ``E``
~0.3), so a 256-frame block or 16-frame chunk whose bound does not beat the peak found so far
(the sample peak of the block first) is not interpolated: on music and tones alike, nearly all
of them (``kernel/true_peak.c`` proves both bounds).

Why not libebur128 itself: it spends ~10 ns per sample on the filter and ~75 ns on the true
peak, several times the whole waveform analysis; the kernel needs ~1-2 ns (``make bench``).

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

import waveflow_job.audio._kernel as kernel

__all__ = ["Loudness", "LoudnessMeter", "TruePeakMeter", "channel_weights",
           "integrated_loudness", "interpolator_taps", "kweighting", "loudness_range", "measure"]


@dataclass(frozen=True)
class Loudness:
    """Finite numbers or None (digital silence, too short or too quiet to gate)."""

    integrated_lufs: float | None
    loudness_range_lu: float | None
    true_peak_dbtp: float | None


def kweighting(sample_rate: int) -> np.ndarray:
    """BS.1770's K-weighting at ``sample_rate`` as one 4th-order filter: ``b0..b4, a1..a4``.

    libebur128's derivation: a high shelf (1681.97 Hz, +4 dB) and a high-pass (38.14 Hz), each
    from its analogue prototype by the bilinear transform, multiplied out.
    """
    k = math.tan(math.pi * 1681.974450955533 / sample_rate)
    q = 0.7071752369554196
    vh = 10.0 ** (3.999843853973347 / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    pb = ((vh + vb * k / q + k * k) / a0, 2.0 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0)
    pa = (1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0)
    k = math.tan(math.pi * 38.13547087602444 / sample_rate)
    q = 0.5003270373238773
    rb = (1.0, -2.0, 1.0)
    ra = (1.0, 2.0 * (k * k - 1.0) / (1.0 + k / q + k * k),
          (1.0 - k / q + k * k) / (1.0 + k / q + k * k))
    b = (pb[0] * rb[0], pb[0] * rb[1] + pb[1] * rb[0],
         pb[0] * rb[2] + pb[1] * rb[1] + pb[2] * rb[0], pb[1] * rb[2] + pb[2] * rb[1],
         pb[2] * rb[2])
    a = (pa[0] * ra[1] + pa[1] * ra[0], pa[0] * ra[2] + pa[1] * ra[1] + pa[2] * ra[0],
         pa[1] * ra[2] + pa[2] * ra[1], pa[2] * ra[2])
    return np.array(b + a, dtype=np.float64)


def channel_weights(channels: int) -> np.ndarray:
    """BS.1770 weight of each channel in libebur128's default map (0: not measured), with
    6.1/7.1's back or side pair counted as surrounds too."""
    if channels == 4:
        return np.array([1.0, 1.0, 1.41, 1.41])
    if channels == 5:
        return np.array([1.0, 1.0, 1.0, 1.41, 1.41])
    weights = np.zeros(channels)
    weights[:3] = 1.0
    weights[4:6] = 1.41
    if channels in (7, 8):
        weights[6:] = 1.41
    return weights


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
    return np.ascontiguousarray(bank[:, 1:])


class TruePeakMeter:
    """The largest interpolated |sample| per channel, evaluated only where it can matter."""

    def __init__(self, channels: int, sample_rate: int, full_scale: float) -> None:
        self.channels = channels
        #: Full scale is a power of two, so multiplying by this is exact (as libebur128's
        #: division).
        self.inv_scale = 1.0 / full_scale
        self.bank = interpolator_taps(sample_rate)
        self.delay = len(self.bank)
        #: Newest ``delay - 1`` samples of each channel as float32, oldest first (zeros before
        #: the start).
        self.history = np.zeros((channels, max(0, self.delay - 1)), dtype=np.float32)
        self.peak = np.zeros(channels)
        #: Each channel's history row, made once (the kernel updates them in place).
        self._rows = list(self.history)

    def prime(self, before: np.ndarray) -> None:
        """Start from the samples that precede this meter's range (``(n, channels)``)."""
        for c in range(self.channels):
            # A peak no value can beat: only the history moves.
            kernel.true_peak(before[:, c], self.inv_scale, self.bank, self._rows[c], math.inf)

    def add(self, columns: Sequence[np.ndarray], stats: np.ndarray | None = None) -> None:
        """The next block, one array per channel in the source's type; ``stats``: their block
        stats from the detail pass (``(channels, blocks, 3)``, see ``kernel.detail_minmax``),
        which spare the kernel its own first pass over the samples (the same result)."""
        peak, inv_scale, bank, rows = self.peak, self.inv_scale, self.bank, self._rows
        for c, column in enumerate(columns):
            peak[c] = kernel.true_peak(column, inv_scale, bank, rows[c], peak.item(c),
                                       None if stats is None else stats[c])


class LoudnessMeter:
    """Integrated loudness and range (libebur128's K-weighting and blocks) plus true peak, for
    the frames from ``start`` on.

    The kernel reports the energy of each 100 ms step; the 400 ms and 3 s blocks libebur128's
    own measurements would gate are the means of 4 and 30 consecutive steps (:func:`measure`),
    so meters of consecutive ranges pool exactly. A meter that starts inside the file is first
    fed the 200 ms before its range (``prime``), so its filter holds what a single pass would
    have.
    """

    #: 100 ms steps of history a meter needs: the K-weighting's memory (its 38 Hz high-pass
    #: decays in well under 100 ms) and the interpolator's 12 samples.
    PRIMING_STEPS = 2

    def __init__(self, channels: int, sample_rate: int, full_scale: float,
                 start: int = 0) -> None:
        self.channels = channels
        self.sample_rate = sample_rate
        self.full_scale = full_scale
        self.step = (sample_rate + 5) // 10
        #: libebur128 turns a window in ms into ``rate * ms // 1000`` frames: 100 ms is one
        #: step exactly when the rate is a multiple of 10 Hz (every common rate), else a frame
        #: less (the step's last ``window`` frames are measured, as libebur128 does).
        self.window = sample_rate * 100 // 1000
        if start % self.step:
            raise ValueError("a meter must start on the 100 ms grid")
        #: Index of the 100 ms step the next frame belongs to, and frames already in it.
        self._first_step = start // self.step
        self._next_step = self._first_step
        self._filled = 0
        self._primed = False
        self.frames = 0
        self._coeffs = kweighting(sample_rate)
        self._weights = channel_weights(channels)
        #: Per channel: the filter's four delays and the open step's sum of squares.
        self._state = np.zeros((channels, 5))
        self._inv_scale = 1.0 / full_scale
        self._energies = np.empty(0)
        #: The same memory as bytes, for :attr:`steps` to append without a copy in between.
        self._energy_bytes = memoryview(b"")
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

    def add(self, block: np.ndarray, columns: Sequence[np.ndarray],
            peak_stats: np.ndarray | None = None) -> None:
        """The next ``(n, channels)`` block, its channels as arrays and, when the detail pass
        computed them, their true-peak block stats (``WaveformAccumulator.peak_stats``)."""
        if block.shape[0] == 0:
            return
        self.frames += block.shape[0]
        self._feed(block)
        self.true_peak.add(columns, peak_stats)

    def _feed(self, block: np.ndarray) -> None:
        most = (self._filled + block.shape[0]) // self.step
        if len(self._energies) < most:
            self._energies = np.empty(most)
            self._energy_bytes = self._energies.data.cast("B")
        done, self._filled = kernel.kweight(
            block, self._inv_scale, self._coeffs, self._weights, self._state, self.step,
            self.window, self._filled, self._energies)
        skip = min(done, max(0, self._first_step - self._next_step))  # priming steps
        if done > skip:
            self.steps.frombytes(self._energy_bytes[8 * skip:8 * done])
        self._next_step += done


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
