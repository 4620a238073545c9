"""The detail waveform: audiowaveform binary data format v2 (``.dat``), written as it is computed.

Pure apart from the file it is handed. A point covers ``samples_per_pixel`` frames (the last one
the remainder) and holds, for every channel, the minimum and maximum sample converted the way
audiowaveform stores them: the sample scaled to 16 bits (``trunc(x * 32768)``), and for 8-bit
data that value divided by 256, truncated toward zero (``trunc(x * 128)``); float samples beyond
full scale are clipped to the integer range, never rescaled.

Why a sink and not a result: at 256 frames per point a 4-hour 8-channel 96 kHz file has 5.4
million points; they go to disk as soon as they are complete, so memory holds one block's worth
whatever the length. The min/max per point comes from the same ``reduceat`` the overview uses
(:class:`~waveflow_job.audio.peaks.WaveformAccumulator` cuts its blocks at these edges too), so
the detail costs a few small folds per block, not another pass over the samples.

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
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_SAMPLES_PER_PIXEL", "HEADER", "DetailFit", "DetailSink", "DetailWaveform",
           "detail_size", "fit_resolution", "to_stored"]

#: audiowaveform's own default resolution (and what peaks.js' default zoom levels need).
DEFAULT_SAMPLES_PER_PIXEL = 256
#: version, flags, sample rate, samples per pixel, length, channels.
HEADER = struct.Struct("<iIiiIi")
_FLAG_8_BIT = 1
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
    """Receives per-segment min/max of consecutive blocks and writes finished points to ``fd``.

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
        #: The unfinished point at the end of the last block: (index, max, min) per channel.
        self._open: tuple[int, np.ndarray, np.ndarray] | None = None

    def starts_in(self, start: int, end: int) -> np.ndarray:
        """Point edges strictly inside ``(start, end)``, relative to ``start``."""
        spp = self.samples_per_pixel
        first = (start // spp + 1) * spp
        return np.arange(first, end, spp, dtype=np.int64) - start

    def add(self, starts: np.ndarray, seg_max: np.ndarray, seg_min: np.ndarray, n: int) -> None:
        """Fold the block's segments (``starts`` relative to the block, first 0) into points.

        ``seg_max``/``seg_min`` are ``(len(starts), channels)`` in the source's sample type.
        """
        spp, start = self.samples_per_pixel, self.position
        absolute = starts + start
        point_of = absolute // spp
        firsts = np.flatnonzero(np.diff(point_of, prepend=point_of[0] - 1))
        pmax = np.maximum.reduceat(seg_max, firsts, axis=0).astype(np.float64)
        pmin = np.minimum.reduceat(seg_min, firsts, axis=0).astype(np.float64)
        index = point_of[firsts]
        if self._open is not None:
            open_index, open_max, open_min = self._open
            if open_index == index[0]:
                np.maximum(pmax[0], open_max, out=pmax[0])
                np.minimum(pmin[0], open_min, out=pmin[0])
            else:
                self._write(open_index, open_max[None], open_min[None])
            self._open = None
        end = start + n
        if end % spp:  # the last point goes on in the next block (or ends the stream)
            self._open = (int(index[-1]), pmax[-1].copy(), pmin[-1].copy())
            pmax, pmin, index = pmax[:-1], pmin[:-1], index[:-1]
        if len(index):
            self._write(int(index[0]), pmax, pmin)
        self.position = end

    def flush(self) -> None:
        """Write the last, partial point (the stream or this sink's range has ended)."""
        if self._open is not None:
            index, pmax, pmin = self._open
            self._write(index, pmax[None], pmin[None])
            self._open = None

    def _write(self, first: int, pmax: np.ndarray, pmin: np.ndarray) -> None:
        scale = 1.0 / self.full_scale
        pairs = np.empty((len(pmax), self.channels, 2),
                         dtype=np.int8 if self.bits == 8 else np.int16)
        pairs[:, :, 0] = to_stored(pmin * scale, self.bits)
        pairs[:, :, 1] = to_stored(pmax * scale, self.bits)
        data = pairs.astype(pairs.dtype.newbyteorder("<"), copy=False).tobytes()
        offset = HEADER.size + first * self._point_bytes
        view = memoryview(data)
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
