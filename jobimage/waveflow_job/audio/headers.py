"""What a file's own headers declare, read without decoding: pure parsing of bytes.

The decoders are generous (libsndfile quietly shortens a truncated WAV to the bytes present;
mpg123 and Ogg readers stop at the last complete frame or page), so a file cut short would
otherwise become a plausible-looking waveform. These parsers recover what the container
promised so the caller can compare it with what was decoded.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

#: WAVE format tags we read ourselves (fast path) or hand to libsndfile.
WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

_W64_RIFF = bytes.fromhex("726966662e91cf11a5d628db04c10000")
_W64_WAVE = bytes.fromhex("77617665f3acd3118cd100c04f8edb8a")


class HeaderError(ValueError):
    """The header is malformed or promises more than the file holds."""


class ImpossibleField(HeaderError):
    """A header field holds a value no real file has (no channels, an infinite rate…).

    Unlike other header errors it is never handed to another decoder for a second opinion:
    libsndfile would turn such a field into a plausible one (a rate of 0 into 1 Hz).
    """


@dataclass(frozen=True)
class PcmLayout:
    """Where the samples of an uncompressed file are and what they look like."""

    container: str  # "WAV", "RF64", "W64", "AIFF"
    format_tag: int  # WAVE format tag (after EXTENSIBLE); 1 for AIFF, 3 for AIFF-C fl32
    channels: int
    sample_rate: int
    bits: int
    block_align: int
    data_offset: int
    declared_bytes: int | None  # None: the writer left the size open (streamed WAV)
    available_bytes: int
    big_endian: bool = False
    #: Significant bits per sample (WAVE_FORMAT_EXTENSIBLE may say 24 of a 32-bit container).
    valid_bits: int = 0

    @property
    def declared_frames(self) -> int:
        size = self.available_bytes if self.declared_bytes is None else self.declared_bytes
        return size // self.block_align if self.block_align else 0

    @property
    def truncated(self) -> bool:
        """The data chunk promises more whole frames than the file holds."""
        if self.declared_bytes is None or not self.block_align:
            return False
        return self.declared_bytes // self.block_align > self.available_bytes // self.block_align


def sniff(head: bytes) -> str | None:
    """Container family from the first bytes, or None when nothing audio-like is there."""
    riff = (b"RIFF", b"RIFX", b"RF64", b"BW64")
    if len(head) >= 12 and head[:4] in riff and head[8:12] == b"WAVE":
        return "WAV"
    if head[:16] == _W64_RIFF:
        return "W64"
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "MP4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "MATROSKA"
    if head[:3] == b"ID3":
        return "ID3"
    if len(head) >= 4 and mp3_frame(head[:4]) is not None:
        return "MP3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "ADTS"
    return None


def id3v2_size(head: bytes) -> int:
    """Bytes taken by a leading ID3v2 tag (0 when there is none)."""
    if len(head) < 10 or head[:3] != b"ID3":
        return 0
    size = 0
    for b in head[6:10]:
        size = (size << 7) | (b & 0x7F)
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


# ----------------------------------------------------------------------------- PCM containers


def read_pcm_layout(f: BinaryIO, family: str) -> PcmLayout:
    """Parse WAV/RF64/BW64, Sony Wave64 or AIFF/AIFF-C headers up to the sample data."""
    file_size = os.fstat(f.fileno()).st_size
    f.seek(0)
    try:
        if family == "W64":
            return _read_w64(f, file_size)
        if family == "AIFF":
            return _read_aiff(f, file_size)
        return _read_riff(f, file_size)
    except struct.error as exc:  # a chunk shorter than its fields: the file ends inside it
        raise HeaderError(f"a header chunk is cut short ({exc})") from exc


def _read_riff(f: BinaryIO, file_size: int) -> PcmLayout:
    head = f.read(12)
    if head[:4] == b"RIFX":
        raise HeaderError("big-endian RIFX is not supported by the fast path")
    container = "WAV" if head[:4] == b"RIFF" else "RF64"
    ds64_data: int | None = None
    fmt: _Fmt | None = None
    for cid, size, pos in _iff_chunks(f, file_size, "<"):
        if cid == b"ds64":
            ds64_data = struct.unpack("<Q", f.read(16)[8:16])[0]
        elif cid == b"fmt ":
            fmt = _parse_wave_fmt(f.read(min(size, 40)))
        elif cid == b"data":
            if fmt is None:
                raise HeaderError("data chunk before fmt chunk")
            declared: int | None = size
            if container == "RF64" and size == 0xFFFFFFFF:
                declared = ds64_data
            elif size in (0, 0xFFFFFFFF):
                declared = None  # a streamed WAV whose writer never came back to fix the size
            return _layout(container, fmt, pos + 8, declared, file_size - pos - 8)
    raise HeaderError("no data chunk")


def _iff_chunks(f: BinaryIO, file_size: int, endian: str) -> Iterator[tuple[bytes, int, int]]:
    """(id, size, offset) of each chunk after the 12-byte RIFF/AIFF header, padded to even.

    The file is positioned just past the chunk's 8-byte header when a chunk is yielded.
    """
    pos = 12
    while pos + 8 <= file_size:
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            return
        size = struct.unpack(endian + "I", chunk[4:])[0]
        yield chunk[:4], size, pos
        pos += 8 + size + (size & 1)


#: (format tag, channels, sample rate, container bits, block align, valid bits)
_Fmt = tuple[int, int, int, int, int, int]


def _parse_wave_fmt(body: bytes) -> _Fmt:
    if len(body) < 16:
        raise HeaderError("fmt chunk too short")
    tag, channels, rate, _byte_rate, align, bits = struct.unpack("<HHIIHH", body[:16])
    valid = bits
    if tag == WAVE_FORMAT_EXTENSIBLE and len(body) >= 40:
        # e.g. 24-bit samples in 32-bit containers: valid bits are the high ones.
        valid = struct.unpack("<H", body[18:20])[0] or bits
        tag = struct.unpack("<H", body[24:26])[0]
    return tag, channels, rate, bits, align, min(valid, bits)


def _read_w64(f: BinaryIO, file_size: int) -> PcmLayout:
    head = f.read(40)
    if head[24:40] != _W64_WAVE:
        raise HeaderError("not a Wave64 file")
    fmt: _Fmt | None = None
    pos = 40
    while pos + 24 <= file_size:
        f.seek(pos)
        chunk = f.read(24)
        guid, size = chunk[:16], struct.unpack("<Q", chunk[16:24])[0]
        if size < 24:
            raise HeaderError("bad Wave64 chunk size")
        if guid[:4] == b"fmt ":
            fmt = _parse_wave_fmt(f.read(min(size - 24, 40)))
        elif guid[:4] == b"data":
            if fmt is None:
                raise HeaderError("data chunk before fmt chunk")
            return _layout("W64", fmt, pos + 24, size - 24, file_size - pos - 24)
        pos += (size + 7) & ~7
    raise HeaderError("no data chunk")


def _layout(container: str, fmt: _Fmt, offset: int, declared: int | None,
            available: int) -> PcmLayout:
    tag, channels, rate, bits, align, valid = fmt
    if channels < 1:
        raise ImpossibleField(f"the header declares {channels} channels")
    if rate < 1:
        raise ImpossibleField(f"the header declares a sample rate of {rate} Hz")
    if align < 1:
        raise ImpossibleField(f"the header declares {align}-byte frames")
    if tag in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT) and not 1 <= bits <= 64:
        raise ImpossibleField(f"the header declares {bits}-bit samples")
    return PcmLayout(container, tag, channels, rate, bits, align, offset, declared,
                     max(0, available), valid_bits=valid)


def _read_aiff(f: BinaryIO, file_size: int) -> PcmLayout:
    head = f.read(12)
    is_aifc = head[8:12] == b"AIFC"
    comm: _Fmt | None = None
    comm_frames = 0
    for cid, size, pos in _iff_chunks(f, file_size, ">"):
        if cid == b"COMM":
            body = f.read(min(size, 22))
            if len(body) < 18:
                raise HeaderError("COMM chunk too short")
            channels, comm_frames, bits = struct.unpack(">hIh", body[:8])
            rate = extended_to_rate(body[8:18])
            tag = 3 if is_aifc and body[18:22] in (b"fl32", b"FL32", b"fl64", b"FL64") else 1
            comm = (tag, channels, rate, bits, channels * ((bits + 7) // 8), bits)
        elif cid == b"SSND":
            if comm is None:
                raise HeaderError("SSND chunk before COMM chunk")
            data_off = struct.unpack(">I", f.read(4))[0]
            start = pos + 16 + data_off
            layout = _layout("AIFF", comm, start, comm_frames * comm[4], file_size - start)
            return PcmLayout(**{**layout.__dict__, "big_endian": True})
    if comm is not None and comm_frames == 0:
        return _layout("AIFF", comm, file_size, 0, 0)
    raise HeaderError("no SSND chunk")


def extended_to_rate(b: bytes) -> int:
    """The 80-bit IEEE extended sample rate of an AIFF COMM chunk, in whole Hz.

    Exact integer arithmetic: an exponent of 2^1000 is a huge integer (rejected by the range
    check), not an OverflowError; infinity, NaN and negative rates raise ImpossibleField.
    Fractions of a hertz (22,254.54 Hz, the old Macintosh rate) are dropped, as libsndfile
    does; 0 stays 0.
    """
    if len(b) < 10:
        raise HeaderError("COMM chunk too short")
    exp = ((b[0] & 0x7F) << 8) | b[1]
    mant = int.from_bytes(b[2:10], "big")
    if exp == 0x7FFF:
        raise ImpossibleField("the header declares an infinite or NaN sample rate")
    if b[0] & 0x80 and mant:
        raise ImpossibleField("the header declares a negative sample rate")
    shift = exp - 16383 - 63
    return mant << shift if shift >= 0 else mant >> -shift


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
