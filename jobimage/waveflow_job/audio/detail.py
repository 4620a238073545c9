"""The detail waveform: audiowaveform binary data format v2 (``.dat``), written as it is computed.

Pure apart from the file it is handed. A point covers ``samples_per_pixel`` frames (the last one
the remainder) and holds, for every channel, the minimum and maximum sample converted the way
audiowaveform stores them: the sample scaled to 16 bits (``trunc(x * 32768)``), and for 8-bit
data that value divided by 256, truncated toward zero (``trunc(x * 128)``); float samples beyond
full scale are clipped to the integer range, never rescaled.

Why a sink and not a result: at 256 frames per point a 4-hour 8-channel 96 kHz file has 5.4
million points; they go to disk as soon as they are complete, so memory holds one block's worth
whatever the length. The points come from the same C pass over each channel that gives the
overview's segments (:class:`~waveflow_job.audio.peaks.WaveformAccumulator` hands its blocks
here), already as the stored integers (the kernel does :func:`to_stored`'s arithmetic), so the
detail costs a few operations per point and a write per block, not another pass over the
samples.
At 256 frames per point the points are the true peak's blocks, and the same pass also measures
what the true peak's own first pass would (each block's extremes and largest second difference,
:attr:`DetailSink.peak_stats`), so the loudness meter reads the samples only where it
interpolates.

The file's size is bounded (``AudioLimits.max_detail_bytes``): :func:`fit_resolution` picks the
asked resolution when its file fits, else the asked one doubled as often as needed (a player's
zoom levels are powers of two of 256, so every coarser level is still served exactly), and none
at all when only a resolution no finer than the overview would fit. The detail is optional; the
stem is never rejected for it.

File layout (little-endian): int32 version (2), uint32 flags (bit 0 set: 8-bit), int32 sample
rate, int32 samples per pixel, uint32 length (points per channel), int32 channels; then per point,
per channel, min and max as int8 or int16. The header is written last, when the length is known
(a length estimate may be off until the stream has ended).
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass

import numpy as np

import waveflow_job.audio._kernel as kernel

__all__ = ["DEFAULT_SAMPLES_PER_PIXEL", "HEADER", "DetailFit", "DetailSink", "DetailWaveform",
           "detail_size", "fit_resolution", "to_stored"]

#: audiowaveform's own default resolution (and what peaks.js' default zoom levels need).
DEFAULT_SAMPLES_PER_PIXEL = 256
#: version, flags, sample rate, samples per pixel, length, channels.
HEADER = struct.Struct("<iIiiIi")
_FLAG_8_BIT = 1
#: Whether the detail pass also gives the true peak its per-block stats (kernel.detail_minmax's
#: ``stats``: the AVX-512 kernels, at 256 frames per point, a point being a true-peak block).
FUSED_PEAK_STATS = kernel.peak_stats_available()
#: Frames of the true peak's blocks (kernel/true_peak.c's BLOCK).
PEAK_STAT_FRAMES = 256
#: The coarsest resolution a queue may ask for (``WAVEFLOW_DETAIL_SAMPLES_PER_PIXEL``): never
#: coarsened past it (the header's int32 holds it with room).
_COARSEST = 1 << 20


@dataclass(frozen=True)
class DetailWaveform:
    """What was written: enough to describe the file without reading it."""

    samples_per_pixel: int
    bits: int
    length: int
    channels: int
    sample_rate: int

    @property
    def size(self) -> int:
        """Bytes of the whole file."""
        return HEADER.size + self.length * self.channels * 2 * (self.bits // 8)


def detail_size(frames: int, channels: int, bits: int, samples_per_pixel: int) -> int:
    """Bytes of the ``.dat`` for ``frames`` frames: header, then a min/max pair per point and
    channel."""
    return HEADER.size + -(-frames // samples_per_pixel) * channels * 2 * (bits // 8)


@dataclass(frozen=True)
class DetailFit:
    """The resolution a detail waveform gets under the size bound, and why when not the asked."""

    #: Frames per point to write; None: no detail (it would not fit finer than the overview).
    samples_per_pixel: int | None
    #: Set when the resolution is not the one asked for: what happened and the numbers.
    note: str | None = None


def fit_resolution(frames: int, channels: int, bits: int, samples_per_pixel: int,
                   max_bytes: int, overview_samples_per_pixel: int) -> DetailFit:
    """The finest resolution (the asked one, doubled) whose file is at most ``max_bytes``."""
    size = detail_size(frames, channels, bits, samples_per_pixel)
    if size <= max_bytes:
        return DetailFit(samples_per_pixel)
    asked = (f"at {samples_per_pixel} frames per point the detail waveform would take {size} "
             f"bytes, over the {max_bytes}-byte limit")
    spp = samples_per_pixel
    while detail_size(frames, channels, bits, spp) > max_bytes:
        spp *= 2
        if spp >= overview_samples_per_pixel or spp > _COARSEST:
            return DetailFit(None, f"detail waveform left out: {asked}, and no resolution finer "
                                   f"than the overview's {overview_samples_per_pixel} fits")
    return DetailFit(spp, f"detail waveform coarsened to {spp} frames per point: {asked}")


def to_stored(normalised: np.ndarray, bits: int) -> np.ndarray:
    """audiowaveform's integer for samples scaled to full scale 1.0 (trunc, then clip)."""
    top = 1 << (bits - 1)
    dtype = np.int8 if bits == 8 else np.int16
    return np.clip(np.trunc(normalised * top), -top, top - 1).astype(dtype)


class DetailSink:
    """Computes the points of consecutive blocks and writes the finished ones to ``fd``.

    Several sinks may share one file descriptor, each fed its own range of frames (the
    parallel decoder): writes are positional (``os.pwrite``), and a range starting on a point
    boundary never shares a point with another range.
    """

    def __init__(self, fd: int, *, channels: int, sample_rate: int, samples_per_pixel: int,
                 bits: int, full_scale: float, start: int = 0) -> None:
        if samples_per_pixel < 1:
            raise ValueError("samples_per_pixel must be at least 1")
        if bits not in (8, 16):
            raise ValueError("bits must be 8 or 16")
        self.fd = fd
        self.channels = channels
        self.sample_rate = sample_rate
        self.samples_per_pixel = samples_per_pixel
        self.bits = bits
        self.full_scale = full_scale
        self.position = start
        self._point_bytes = channels * 2 * (bits // 8)
        self._dtype = np.dtype(np.int8 if bits == 8 else np.int16)
        self._scale = 1.0 / full_scale
        #: The .dat is little-endian: only a big-endian host converts its 16-bit points.
        self._swap = self._dtype.itemsize > 1 and sys.byteorder == "big"
        #: Stored points of the block :meth:`reduce` saw, from its first (maybe partial) one,
        #: and the same memory as bytes to write; between blocks, row 0 holds the point the
        #: last block left open (``_open``), which the next block's first point continues.
        self._points = np.empty((0, channels, 2), dtype=self._dtype)
        self._bytes = memoryview(b"")
        self._open = False
        #: Per channel and point, the true peak's block stats (``kernel.detail_minmax``'s
        #: ``stats``), and those of the block :meth:`reduce` saw last (None: not computed).
        self._with_stats = FUSED_PEAK_STATS and samples_per_pixel == PEAK_STAT_FRAMES
        self._stats = np.empty((channels, 0, 3), dtype=np.int32)
        self.peak_stats: np.ndarray | None = None
        #: Points and frames of the block :meth:`reduce` saw, until :meth:`commit`.
        self._pending: tuple[int, int] | None = None

    def reduce(self, columns: list[np.ndarray], starts: np.ndarray, rows_max: np.ndarray,
               rows_min: np.ndarray) -> None:
        """Compute the next block's points (kept until :meth:`commit`) and, in the same pass,
        the accumulator's per-segment max and min (``starts`` relative to the block, first 0)
        into ``rows_max``/``rows_min`` ``(channels, len(starts))``.

        One C pass per channel (``kernel.detail_minmax``): the points come out already as the
        stored integers, a point the last block left open folded with its first one, into one
        reused buffer, so a block costs a few calls and a write, no array operation. When the
        points are the true peak's blocks (256 frames from the block's first frame), the same
        pass gives their stats too (:attr:`peak_stats`, for ``LoudnessMeter.add``).
        """
        spp, n = self.samples_per_pixel, len(columns[0])
        first = -self.position % spp  # the block's first point edge
        count = 1 if first >= n else (first > 0) + -(-(n - first) // spp)
        if len(self._points) < count:
            self._grow(count)
        stats = None
        if self._with_stats and first == 0 and all(
                column.strides[0] == column.itemsize and column.dtype.isnative
                for column in columns):
            if self._stats.shape[1] < count:
                self._stats = np.empty((self.channels, count, 3), dtype=np.int32)
            stats = self._stats[:, :count]
        points, merge, channels = self._points, self._open, self.channels
        for c, column in enumerate(columns):
            if not column.dtype.isnative:  # the kernel reads native int16, int32, float32
                column = column.astype(column.dtype.newbyteorder("="))
            kernel.detail_minmax(column, starts, rows_max[c], rows_min[c], first, spp,
                                 self._scale, self.bits, points, c, channels, merge,
                                 None if stats is None else stats[c])
        self.peak_stats = stats
        self._pending = (count, n)

    def _grow(self, count: int) -> None:
        points = np.empty((count, self.channels, 2), dtype=self._dtype)
        if self._open:
            points[0] = self._points[0]
        self._points, self._bytes = points, points.data.cast("B")

    def commit(self) -> None:
        """Write the points :meth:`reduce` computed (the caller found the block valid); the
        last one stays open when the block ends inside it.

        Refused blocks are never committed: the analysis fails with them, so the open point
        :meth:`reduce` may already have folded into is never written either.
        """
        if self._pending is None:
            raise RuntimeError("commit() without reduce()")
        count, n = self._pending
        self._pending = None
        start, end = self.position, self.position + n
        whole = count - 1 if end % self.samples_per_pixel else count
        if whole:
            self._write(start // self.samples_per_pixel, whole)
        self._open = whole < count
        if self._open and whole:  # the open point moves to row 0 for the next block
            size = self._point_bytes
            self._bytes[:size] = self._bytes[whole * size:count * size]
        self.position = end

    def flush(self) -> None:
        """Write the last, partial point (the stream or this sink's range has ended)."""
        if self._open:
            self._write(self.position // self.samples_per_pixel, 1)
            self._open = False

    def _write(self, first: int, count: int) -> None:
        """The buffer's first ``count`` points, as point ``first`` on."""
        view = self._bytes[:count * self._point_bytes]
        if self._swap:
            view = self._points[:count].astype("<i2").data.cast("B")
        offset = HEADER.size + first * self._point_bytes
        while view:
            written = os.pwrite(self.fd, view, offset)
            view, offset = view[written:], offset + written

    def finish(self, frames: int) -> DetailWaveform:
        """Flush, write the header for ``frames`` frames and truncate anything beyond."""
        self.flush()
        spp = self.samples_per_pixel
        length = -(-frames // spp)
        header = HEADER.pack(2, _FLAG_8_BIT if self.bits == 8 else 0, self.sample_rate, spp,
                             length, self.channels)
        os.pwrite(self.fd, header, 0)
        os.ftruncate(self.fd, HEADER.size + length * self._point_bytes)
        return DetailWaveform(samples_per_pixel=spp, bits=self.bits, length=length,
                              channels=self.channels, sample_rate=self.sample_rate)
