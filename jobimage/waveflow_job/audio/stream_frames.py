"""The frame and page structure of compressed streams (MP3 frames, Ogg pages): pure parsing.

Decoders stop quietly at the last complete MP3 frame or Ogg page, so a file cut short decodes to
a plausible, shorter signal. Walking the structure ourselves tells the caller how many frames
the stream holds and whether its end is intact (the uncompressed containers are read in
:mod:`waveflow_job.audio.headers`).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

__all__ = ["Mp3Frame", "Mp3Scan", "find_mp3_start", "mp3_frame", "ogg_ends_cleanly",
           "scan_mp3"]

# ----------------------------------------------------------------------------- MP3


_MP3_BITRATES = {
    (1, 3): [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    (2, 3): [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    (1, 2): [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
    (2, 2): [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    (1, 1): [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
    (2, 1): [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True)
class Mp3Frame:
    length: int  # bytes, header included
    samples: int  # PCM frames it decodes to
    sample_rate: int
    channels: int


@functools.lru_cache(maxsize=4096)
def mp3_frame(h: bytes) -> Mp3Frame | None:
    """Decode a 4-byte MPEG audio frame header; None when it is not one.

    Cached: a file repeats a handful of distinct headers, and a 10-minute MP3 has 23,000.
    """
    if len(h) < 4 or h[0] != 0xFF or (h[1] & 0xE0) != 0xE0:
        return None
    version_bits = (h[1] >> 3) & 3  # 3: MPEG1, 2: MPEG2, 0: MPEG2.5
    layer_bits = (h[1] >> 1) & 3  # 3: layer I, 2: layer II, 1: layer III
    bitrate_index = h[2] >> 4
    rate_index = (h[2] >> 2) & 3
    if version_bits == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    layer = 4 - layer_bits
    mpeg1 = version_bits == 3
    bitrate = _MP3_BITRATES[(1 if mpeg1 else 2, layer)][bitrate_index] * 1000
    rate = _MP3_RATES[version_bits][rate_index]
    padding = (h[2] >> 1) & 1
    channels = 1 if (h[3] >> 6) == 3 else 2
    if layer == 1:
        return Mp3Frame((12 * bitrate // rate + padding) * 4, 384, rate, channels)
    samples = 1152 if (layer == 2 or mpeg1) else 576
    return Mp3Frame(samples // 8 * bitrate // rate + padding, samples, rate, channels)


@dataclass(frozen=True)
class Mp3Scan:
    frames: int  # MPEG frames, the info frame excluded
    samples: int  # PCM frames those decode to, before any gapless trimming
    has_length_header: bool  # Xing/Info/VBRI: decoders know the exact length
    truncated: bool  # the last frame runs past the end of the audio data
    junk_bytes: int  # bytes between frames that are not frames (random data is all junk)
    audio_bytes: int  # from the first byte scanned to the end of the audio data


def scan_mp3(data: bytes | memoryview, start: int) -> Mp3Scan:
    """Walk the frames from ``start`` to the end (trailing ID3v1/APE tags excluded)."""
    end = len(data)
    if end >= 128 and bytes(data[end - 128 : end - 125]) == b"TAG":
        end -= 128
    if end >= 32 and bytes(data[end - 32 : end - 24]) == b"APETAGEX":
        end -= 32 + struct.unpack("<I", bytes(data[end - 20 : end - 16]))[0]
    pos, frames, samples, has_header, truncated, junk = start, 0, 0, False, False, 0
    first = True
    while pos + 4 <= end:
        frame = mp3_frame(bytes(data[pos : pos + 4]))
        if frame is None or frame.length < 4:
            nxt = _resync(data, pos + 1, end)
            if nxt is None:
                junk += end - pos
                break
            junk += nxt - pos
            pos = nxt
            continue
        if pos + frame.length > end:
            truncated = True
            break
        if first:
            first = False
            body = bytes(data[pos + 4 : pos + min(frame.length, 64)])
            if b"Xing" in body or b"Info" in body or b"VBRI" in body:
                has_header = True
                pos += frame.length
                continue
        frames += 1
        samples += frame.samples
        pos += frame.length
    return Mp3Scan(frames, samples, has_header, truncated, junk, max(0, end - start))


def find_mp3_start(data: bytes, chain: int = 3) -> int | None:
    """Offset of the first of ``chain`` back-to-back MPEG frames: MP3s with leading padding
    or junk (decoders skip it). Three in a row almost never happen in random bytes."""
    pos = 0
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 4 > len(data):
            return None
        at, ok = pos, 0
        while ok < chain:
            frame = mp3_frame(data[at : at + 4])
            if frame is None or frame.length < 4:
                break
            ok += 1
            at += frame.length
        if ok == chain:
            return pos
        pos += 1


def _resync(data: bytes | memoryview, pos: int, end: int) -> int | None:
    """Next offset holding a header that is followed by another valid header."""
    window = 1 << 16
    while pos + 4 <= end:
        i = bytes(data[pos : min(end, pos + window)]).find(b"\xff")
        if i < 0:
            pos += window
            continue
        pos += i
        frame = mp3_frame(bytes(data[pos : pos + 4]))
        if frame is not None and frame.length >= 4:
            after = pos + frame.length
            if after >= end or mp3_frame(bytes(data[after : after + 4])) is not None:
                return pos
        pos += 1
    return None


# ----------------------------------------------------------------------------- Ogg


def ogg_ends_cleanly(tail: bytes, file_size: int) -> bool:
    """True when the file ends with a complete Ogg page flagged end-of-stream.

    ``tail`` is the end of the file (64 KiB covers the largest possible page). A capture
    pattern inside packet data is skipped: only a page that ends exactly at the end counts.
    """
    base = file_size - len(tail)
    i = tail.rfind(b"OggS")
    while i >= 0:
        if len(tail) - i >= 27 and tail[i + 4] == 0:
            nseg = tail[i + 26]
            table = tail[i + 27 : i + 27 + nseg]
            if len(table) == nseg and base + i + 27 + nseg + sum(table) == file_size:
                return bool(tail[i + 5] & 0x04)
        i = tail.rfind(b"OggS", 0, i)
    return False
