"""Audio files whose headers lie, built byte by byte (no encoder would write them).

Each builder writes a structurally complete file — RIFF/AIFF chunks in order, the sizes it
declares — with one field set to whatever the test asks, so a test can aim at exactly one
header field: the sample rate (any 32-bit value for WAV, any 80-bit extended for AIFF,
infinity and NaN included), the channel count, bits, block alignment, the frame count.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: 80-bit IEEE extended exponent of infinity and NaN (all ones).
EXTENDED_INF_EXPONENT = 0x7FFF


@dataclass(frozen=True)
class WavFields:
    """The fmt chunk's fields, each free to lie."""

    channels: int = 1
    sample_rate: int = 8000
    bits: int = 16
    format_tag: int = 1
    block_align: int | None = None  # None: channels * bits / 8, as a truthful writer would
    byte_rate: int | None = None


def wav_file(fields: WavFields, data: bytes, *, data_size: int | None = None) -> bytes:
    """RIFF/WAVE with ``fields`` in its fmt chunk; ``data_size`` may lie about the data."""
    align = fields.block_align
    if align is None:
        align = fields.channels * ((fields.bits + 7) // 8)
    byte_rate = fields.byte_rate
    if byte_rate is None:
        byte_rate = (fields.sample_rate * align) & 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", fields.format_tag, fields.channels, fields.sample_rate,
                      byte_rate, align & 0xFFFF, fields.bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", size) + data + (b"\x00" if len(data) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


def extended(value: float | None = None, *, exponent: int | None = None,
             mantissa: int = 1 << 63, negative: bool = False) -> bytes:
    """An 80-bit IEEE extended number: ``value`` (a positive integer-valued float, or 0), or
    the raw ``exponent``/``mantissa`` (``exponent=EXTENDED_INF_EXPONENT``: infinity; with a
    mantissa other than 1 << 63: NaN)."""
    if exponent is None:
        assert value is not None
        if value == 0:
            exponent, mantissa = 0, 0
        else:
            whole = int(value)
            shift = whole.bit_length() - 1
            exponent = 16383 + shift
            mantissa = (whole << (63 - shift)) if shift <= 63 else whole >> (shift - 63)
    sign = 0x8000 if negative else 0
    return struct.pack(">H", sign | exponent) + mantissa.to_bytes(8, "big")


def aiff_file(rate: bytes, data: bytes, *, channels: int = 1, bits: int = 16,
              frames: int | None = None) -> bytes:
    """AIFF with the raw 10-byte ``rate`` in its COMM chunk; ``frames`` may lie."""
    width = (bits + 7) // 8
    if frames is None:
        frames = len(data) // max(1, channels * width)
    comm = struct.pack(">hIh", channels, frames & 0xFFFFFFFF, bits) + rate
    ssnd = struct.pack(">II", 0, 0) + data
    body = b"AIFF" + b"COMM" + struct.pack(">I", len(comm)) + comm
    body += b"SSND" + struct.pack(">I", len(ssnd)) + ssnd + (b"\x00" if len(ssnd) % 2 else b"")
    return b"FORM" + struct.pack(">I", len(body)) + body


def tone_pcm16(frames: int, channels: int = 1, *, big_endian: bool = False) -> bytes:
    """A deterministic 16-bit sawtooth, interleaved: real samples behind lying headers."""
    values = [((i * 613) % 65536) - 32768 for i in range(frames)]
    fmt = (">" if big_endian else "<") + "h" * frames
    mono = struct.pack(fmt, *values)
    if channels == 1:
        return mono
    return b"".join(mono[2 * i:2 * i + 2] * channels for i in range(frames))
