"""Streaming waveform reduction: old peaks, audiowaveform v2 min/max and levels in one pass.

Pure: no I/O. The decoder feeds blocks of samples in the stream's native type (int16, int32 or
float32, shape ``(frames, channels)``) and this module reduces them as they come, so memory
stays bounded whatever the file's length.

Why segments: the old ``peaks`` buckets (``[floor(i·N/P), floor((i+1)·N/P))``) and the
audiowaveform points (``samples_per_pixel`` frames each) have different edges. Both sets of
edges are known once N is; their union cuts the file into at most ``P + length`` segments.
Each block is reduced per segment in one C pass per channel (no Python per sample; with a
detail waveform the same pass also gives its points: see detail.py), and a segment that
straddles two blocks is merged with ``maximum``/``minimum``. At the end the segments are folded
into each grid. Exact for any N, any block size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import waveflow_job.audio._kernel as kernel

if TYPE_CHECKING:
    from waveflow_job.audio.detail import DetailSink

#: Normalisation floor of the old peaks: a file quieter than -60 dBFS is not drawn at full height.
SILENCE_FLOOR = 0.001


class NonFiniteSamples(ValueError):
    """A float source holds NaN or infinite samples: no truthful waveform exists."""


class FrameCountExceeded(ValueError):
    """More frames arrived than the accumulator was sized for."""


@dataclass(frozen=True)
class SampleScale:
    """How a block's numbers map to digital full scale.

    ``full_scale`` is the value that means 1.0; a sample is clipped when it is ``>= clip_high``
    or ``<= clip_low`` (integer sources: the extreme codes; float sources: |x| >= 1.0).
    """

    full_scale: float
    clip_high: float
    clip_low: float

    @classmethod
    def for_integer_bits(cls, bits: int, container_bits: int) -> SampleScale:
        """Integer samples of ``bits`` significant bits left-aligned in ``container_bits``."""
        shift = container_bits - bits
        top = (1 << (bits - 1)) - 1
        full = float(1 << (container_bits - 1))
        return cls(full, float(top << shift), -full)

    @classmethod
    def floating(cls) -> SampleScale:
        return cls(1.0, 1.0, -1.0)


@dataclass(frozen=True)
class PeakResult:
    """Everything the waveform document needs, in plain Python types."""

    frames: int
    channels: int
    peaks: list[float]
    samples_per_pixel: int
    length: int
    data: list[int]
    peak_dbfs: float | None
    rms_dbfs: float | None
    clipped_samples: int


def bucket_edges(frames: int, num_peaks: int) -> np.ndarray:
    """Start frames of the old peaks buckets plus the final end: ``floor(i·N/P)``.

    When N < P there is one bucket per frame (the rest of ``peaks`` is zeros).
    """
    count = min(frames, num_peaks)
    i = np.arange(count + 1, dtype=np.int64)
    return (i * frames) // count


def pixel_geometry(frames: int, num_peaks: int) -> tuple[int, int]:
    """audiowaveform grid: ``samples_per_pixel = ceil(N/P)``, ``length = ceil(N/spp)``."""
    spp = max(1, -(-frames // num_peaks))
    return spp, -(-frames // spp)


def _segment_minmax(columns: list[np.ndarray], starts: np.ndarray, rows_max: np.ndarray,
                    rows_min: np.ndarray) -> None:
    """Per channel and segment max and min into ``rows_max``/``rows_min`` ``(channels,
    len(starts))``, in the samples' type.

    The C kernel reads each sample once for both (``reduceat`` twice, with a ufunc dispatch
    per segment, for any other type).
    """
    for c, column in enumerate(columns):
        if column.dtype in _KERNEL_TYPES:
            kernel.segment_minmax(column, starts, rows_max[c], rows_min[c])
        else:
            np.maximum.reduceat(column, starts, out=rows_max[c])
            np.minimum.reduceat(column, starts, out=rows_min[c])


_KERNEL_TYPES = (np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.float32))
#: kernel.levels reads at most this many channels (AudioLimits' bound).
_KERNEL_MAX_CHANNELS = 64


class WaveformAccumulator:
    """Reduces blocks of exactly ``frames`` frames into peaks, min/max pairs and levels.

    Blocks arrive in order from ``start`` (0 unless several accumulators share the work: each
    then takes its own range and :meth:`merge` combines them; max, min and sums commute).
    """

    def __init__(self, *, frames: int, channels: int, num_peaks: int, scale: SampleScale,
                 start: int = 0, detail: DetailSink | None = None) -> None:
        if frames <= 0 or channels <= 0 or num_peaks <= 0:
            raise ValueError("frames, channels and num_peaks must be positive")
        self.frames = frames
        self.channels = channels
        self.num_peaks = num_peaks
        self.scale = scale
        self.position = start
        #: Where the detail waveform's points go: it reduces this accumulator's segments too,
        #: both in one pass over each channel of a block.
        self.detail = detail
        #: Frames reduced so far, merged accumulators included.
        self.added = 0
        self._peak_edges = bucket_edges(frames, num_peaks)
        self.samples_per_pixel, self.length = pixel_geometry(frames, num_peaks)
        pixel_edges = np.arange(self.length + 1, dtype=np.int64) * self.samples_per_pixel
        pixel_edges[-1] = frames
        #: Union of both grids; segment j covers [edges[j], edges[j+1]).
        self._edges = np.union1d(self._peak_edges, pixel_edges)
        nseg = len(self._edges) - 1
        self._seg_mono = np.zeros(nseg, dtype=np.float64)
        self._seg_max = np.full((nseg, channels), -np.inf, dtype=np.float64)
        self._seg_min = np.full((nseg, channels), np.inf, dtype=np.float64)
        self._sum_squares = 0.0
        self._clipped = 0
        self._scratch: dict[str, np.ndarray] = {}

    def add(self, block: np.ndarray) -> list[np.ndarray]:
        """Reduce the next ``block`` (shape ``(n, channels)``) of the stream.

        Returns its channels as contiguous arrays (reused buffers: valid until the next call),
        for the loudness meter to read without splitting the block again.
        """
        n = block.shape[0]
        if n == 0:
            return []
        start, end = self.position, self.position + n
        if end > self.frames:
            raise FrameCountExceeded(f"frame {end} is past the expected {self.frames}")
        edges = self._edges
        lo = int(np.searchsorted(edges, start, side="right")) - 1
        hi = int(np.searchsorted(edges, end, side="left"))
        starts = edges[lo:hi] - start
        starts[0] = 0

        columns = self._columns(block)
        rows_max = np.empty((self.channels, len(starts)), dtype=block.dtype)
        rows_min = np.empty_like(rows_max)
        if self.detail is not None:  # the same pass also gives the detail's points
            self.detail.reduce(columns, starts, rows_max, rows_min)
        else:
            _segment_minmax(columns, starts, rows_max, rows_min)
        bmax, bmin = rows_max.T, rows_min.T
        if block.dtype.kind == "f" and not (np.isfinite(bmax).all() and np.isfinite(bmin).all()):
            raise NonFiniteSamples(f"NaN or infinite samples in frames {start}..{end}")
        if self.detail is not None:
            self.detail.commit()
        np.maximum(self._seg_max[lo:hi], bmax, out=self._seg_max[lo:hi])
        np.minimum(self._seg_min[lo:hi], bmin, out=self._seg_min[lo:hi])

        if bmax.max() >= self.scale.clip_high or bmin.min() <= self.scale.clip_low:
            self._clipped += int(np.count_nonzero(block >= self.scale.clip_high))
            self._clipped += int(np.count_nonzero(block <= self.scale.clip_low))

        # Levels and the mono mix in float32 (exact for 16- and 24-bit samples).
        mono_max = self._buffer("mono_max", len(starts), np.float32)
        if columns[0].dtype in _KERNEL_TYPES and len(columns) <= _KERNEL_MAX_CHANNELS:
            self._sum_squares += kernel.levels(columns, starts, mono_max)
        else:
            self._sum_squares += self._levels(columns, starts, mono_max)
        np.maximum(self._seg_mono[lo:hi], mono_max, out=self._seg_mono[lo:hi])
        self.position = end
        self.added += n
        return columns

    @property
    def peak_stats(self) -> np.ndarray | None:
        """The true peak's block stats of the block :meth:`add` reduced last, per channel, when
        the detail pass computed them (:attr:`DetailSink.peak_stats`), else None."""
        return self.detail.peak_stats if self.detail is not None else None

    def _levels(self, columns: list[np.ndarray], starts: np.ndarray,
                mono_max: np.ndarray) -> float:
        """kernel.levels in numpy, for the types the kernel does not read."""
        n = len(columns[0])
        mono = self._buffer("mono", n, np.float32)
        squares = 0.0
        for c, column in enumerate(columns):
            values = self._buffer("float", n, np.float32)
            np.copyto(values, column, casting="unsafe")
            squares += float(np.dot(values.astype(np.float64), values))
            if c == 0:
                np.copyto(mono, values)
            else:
                np.add(mono, values, out=mono)
        np.abs(mono, out=mono)
        np.maximum.reduceat(mono, starts, out=mono_max)
        return squares

    def _columns(self, block: np.ndarray) -> list[np.ndarray]:
        """One contiguous array per channel: every reduction then runs on unit-stride data.

        Planar blocks (PyAV, 24-bit PCM) already are; interleaved ones are split into reused
        buffers, a stereo block in C (each frame read as one pair: several times faster than
        copying strided columns).
        """
        n, ch = block.shape
        if ch == 1 or block.strides[0] == block.itemsize:  # each column already contiguous
            return [block[:, c] for c in range(ch)]
        if ch == 2 and block.dtype in _KERNEL_TYPES and block.flags.c_contiguous:
            left = self._buffer("left", n, block.dtype)
            right = self._buffer("right", n, block.dtype)
            kernel.split_stereo(block, left, right)
            return [left, right]
        planar = self._buffer("planar", n * ch, block.dtype).reshape(ch, n)
        for c in range(ch):
            np.copyto(planar[c], block[:, c])
        return list(planar)

    def _buffer(self, name: str, n: int, dtype: np.dtype[Any] | type) -> np.ndarray:
        """A reused scratch array of at least ``n`` elements."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape[0] < n or buf.dtype != dtype:
            buf = self._scratch[name] = np.empty(n, dtype=dtype)
        return buf[:n]

    def merge(self, other: WaveformAccumulator) -> None:
        """Fold in an accumulator of the same geometry that reduced another range."""
        if (other.frames, other.channels, other.num_peaks) != (
                self.frames, self.channels, self.num_peaks):
            raise ValueError("cannot merge accumulators of different geometry")
        np.maximum(self._seg_mono, other._seg_mono, out=self._seg_mono)
        np.maximum(self._seg_max, other._seg_max, out=self._seg_max)
        np.minimum(self._seg_min, other._seg_min, out=self._seg_min)
        self._sum_squares += other._sum_squares
        self._clipped += other._clipped
        self.added += other.added

    def finish(self) -> PeakResult:
        """Fold the segments into both grids; call once every frame has been added."""
        if self.added != self.frames:
            raise ValueError(f"{self.added} of {self.frames} frames were added")
        fs = self.scale.full_scale
        edges = self._edges

        peak_starts = np.searchsorted(edges, self._peak_edges[:-1])
        mono = np.maximum.reduceat(self._seg_mono, peak_starts) / (self.channels * fs)
        peaks = normalise_peaks(mono, self.num_peaks)

        pixel_starts = np.searchsorted(edges, np.arange(self.length) * self.samples_per_pixel)
        pmax = np.maximum.reduceat(self._seg_max, pixel_starts, axis=0)
        pmin = np.minimum.reduceat(self._seg_min, pixel_starts, axis=0)
        pairs = np.stack([to_int8(pmin / fs), to_int8(pmax / fs)], axis=-1)  # (length, C, 2)

        top = max(float(np.abs(pmax).max()), float(np.abs(pmin).max())) / fs
        mean_square = self._sum_squares / (self.frames * self.channels * fs * fs)
        return PeakResult(
            frames=self.frames,
            channels=self.channels,
            peaks=peaks,
            samples_per_pixel=self.samples_per_pixel,
            length=self.length,
            data=pairs.reshape(-1).tolist(),
            peak_dbfs=to_dbfs(top),
            rms_dbfs=to_dbfs(math.sqrt(mean_square)) if mean_square > 0 else None,
            clipped_samples=self._clipped,
        )


def normalise_peaks(mono_peaks: np.ndarray, num_peaks: int) -> list[float]:
    """Old-service normalisation: by the largest bucket, or by -60 dBFS for near-silence."""
    top = float(mono_peaks.max()) if len(mono_peaks) else 0.0
    out = np.zeros(num_peaks, dtype=np.float64)
    if top > 0.0:
        out[: len(mono_peaks)] = np.minimum(mono_peaks / max(top, SILENCE_FLOOR), 1.0)
    return [round(float(v), 4) for v in out]


def to_int8(normalised: np.ndarray) -> np.ndarray:
    """audiowaveform's 8-bit value: the 16-bit sample divided by 256, truncated toward zero."""
    return np.clip(np.trunc(normalised * 128.0), -128, 127).astype(np.int64)


def to_dbfs(level: float) -> float | None:
    """Level relative to full scale in dB, two decimals; None for digital silence."""
    if level <= 0.0 or not math.isfinite(level):
        return None
    return round(20.0 * math.log10(level), 2)
