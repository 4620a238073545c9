"""What a file's own headers declare, read without decoding: pure parsing of bytes.

The decoders are generous (libsndfile quietly shortens a truncated WAV to the bytes present;
mpg123 and Ogg readers stop at the last complete frame or page), so a file cut short would
otherwise become a plausible-looking waveform. These parsers recover what the container
promised so the caller can compare it with what was decoded.

This module: the format sniffer, ID3v2 tags and the uncompressed containers (WAV, RF64, W64,
AIFF); the frame and page structure of compressed streams (MP3, Ogg) is in
:mod:`waveflow_job.audio.stream_frames`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from waveflow_job.audio.stream_frames import mp3_frame

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
