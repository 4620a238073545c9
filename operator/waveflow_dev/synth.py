"""Deterministic audio files in every supported format, for tests, the demo and the benchmark.

No binaries live in git: every fixture is made here from numpy with soundfile (libsndfile:
WAV family, AIFF, FLAC, Ogg Vorbis/Opus, MP3 through LAME) or PyAV (M4A with AAC or ALAC).
``write_audio`` writes given samples; ``write_tone`` streams a long file in bounded memory.
The damage helpers make the broken files the analysis must refuse.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from waveflow_job.audio import headers, stream_frames

Samples = np.ndarray  # float, shape (frames, channels), nominally within [-1, 1]


@dataclass(frozen=True)
class Format:
    """One way of writing a file, and what the codec allows."""

    name: str
    suffix: str
    #: Sample rates the codec accepts (None: any).
    rates: tuple[int, ...] | None = None
    max_channels: int = 255
    lossy: bool = False


_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)

FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("wav-u8", ".wav"),
    Format("wav-16", ".wav"),
    Format("wav-24", ".wav"),
    Format("wav-32", ".wav"),
    Format("wav-float", ".wav"),
    Format("wav-double", ".wav"),
    Format("rf64-24", ".wav"),
    Format("w64-16", ".w64"),
    Format("aiff-16", ".aiff"),
    Format("aiff-24", ".aif"),
    Format("flac-16", ".flac"),
    Format("flac-24", ".flac"),
    Format("ogg-vorbis", ".ogg", lossy=True),
    Format("opus", ".opus", rates=_OPUS_RATES, max_channels=8, lossy=True),
    Format("mp3-cbr", ".mp3", rates=_MP3_RATES, max_channels=2, lossy=True),
    Format("mp3-vbr", ".mp3", rates=_MP3_RATES, max_channels=2, lossy=True),
    Format("mp3-cbr-noheader", ".mp3", rates=_MP3_RATES, max_channels=2, lossy=True),
    Format("mp3-vbr-noheader", ".mp3", rates=_MP3_RATES, max_channels=2, lossy=True),
    Format("mp3-id3", ".mp3", rates=_MP3_RATES, max_channels=2, lossy=True),
    Format("m4a-aac", ".m4a", rates=(8000, 16000, 22050, 44100, 48000, 96000), max_channels=8,
           lossy=True),
    # FFmpeg's ALAC encoder refuses 7.1.
    Format("m4a-alac-16", ".m4a", max_channels=6),
    Format("m4a-alac-24", ".m4a", max_channels=6),
    # What browsers' MediaRecorder uploads.
    Format("webm-opus", ".webm", rates=(48000,), max_channels=2, lossy=True),
]}

_SNDFILE = {
    "wav-u8": ("WAV", "PCM_U8"), "wav-16": ("WAV", "PCM_16"), "wav-24": ("WAV", "PCM_24"),
    "wav-32": ("WAV", "PCM_32"), "wav-float": ("WAV", "FLOAT"), "wav-double": ("WAV", "DOUBLE"),
    "rf64-24": ("RF64", "PCM_24"), "w64-16": ("W64", "PCM_16"),
    "aiff-16": ("AIFF", "PCM_16"), "aiff-24": ("AIFF", "PCM_24"),
    "flac-16": ("FLAC", "PCM_16"), "flac-24": ("FLAC", "PCM_24"),
    "ogg-vorbis": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS"),
}
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def tone(frames: int, rate: int, channels: int, *, amplitude: float = 0.5, seed: int = 0,
         start: int = 0) -> Samples:
    """A deterministic test signal: a different sine per channel plus a little noise.

    ``start`` continues the same signal from that frame (for writing long files in pieces).
    """
    t = (np.arange(start, start + frames, dtype=np.float64) / rate)[:, None]
    freqs = 220.0 * (1.0 + np.arange(channels, dtype=np.float64)[None, :] * 0.5)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 0.05 * t)
    noise = np.random.default_rng(seed + start).standard_normal((frames, channels)) * 0.02
    return amplitude * envelope * np.sin(2 * np.pi * freqs * t) + amplitude * noise


def write_audio(path: str | os.PathLike[str], fmt: str, samples: Samples, rate: int) -> Path:
    """Write ``samples`` (float, ``(frames, channels)``) to ``path`` in format ``fmt``."""
    samples = np.asarray(samples)
    if samples.ndim == 1:
        samples = samples[:, None]
    return write_stream(path, fmt, iter([samples]), rate, samples.shape[1])


def write_tone(path: str | os.PathLike[str], fmt: str, seconds: float, rate: int,
               channels: int, *, amplitude: float = 0.5, block_seconds: float = 5.0) -> Path:
    """Stream ``seconds`` of :func:`tone` to ``path`` without holding it in memory."""
    total = round(seconds * rate)
    step = max(1, round(block_seconds * rate))

    def pieces() -> Iterator[Samples]:
        for start in range(0, total, step):
            yield tone(min(step, total - start), rate, channels, amplitude=amplitude, start=start)

    return write_stream(path, fmt, pieces(), rate, channels)


def write_stream(path: str | os.PathLike[str], fmt: str, pieces: Iterator[Samples], rate: int,
                 channels: int) -> Path:
    """Write successive blocks of samples as one file."""
    spec = FORMATS[fmt]
    if spec.rates is not None and rate not in spec.rates:
        raise ValueError(f"{fmt} cannot be written at {rate} Hz")
    if channels > spec.max_channels:
        raise ValueError(f"{fmt} takes at most {spec.max_channels} channels")
    path = Path(path)
    if fmt in _SNDFILE:
        container, subtype = _SNDFILE[fmt]
        _write_sndfile(path, pieces, rate, channels, container, subtype, {})
    elif fmt.startswith("mp3"):
        mode = "VARIABLE" if "vbr" in fmt or fmt == "mp3-id3" else "CONSTANT"
        _write_sndfile(path, pieces, rate, channels, "MP3", "MPEG_LAYER_III",
                       {"bitrate_mode": mode, "compression_level": 0.5})
        if fmt.endswith("noheader"):
            strip_mp3_length_header(path)
        if fmt == "mp3-id3":
            add_id3_tags(path)
    else:
        container, codec, sample_fmt = {
            "m4a-aac": ("ipod", "aac", "fltp"), "m4a-alac-16": ("ipod", "alac", "s16p"),
            "m4a-alac-24": ("ipod", "alac", "s32p"), "webm-opus": ("webm", "libopus", "flt"),
        }[fmt]
        _write_pyav(path, pieces, rate, channels, container, codec, sample_fmt)
    return path


def _write_sndfile(path: Path, pieces: Iterator[Samples], rate: int, channels: int,
                   container: str, subtype: str, options: dict[str, object]) -> None:
    import soundfile as sf

    with sf.SoundFile(path, "w", rate, channels, subtype, format=container,
                      **options) as f:  # type: ignore[arg-type]
        for piece in pieces:
            f.write(piece)


def _write_pyav(path: Path, pieces: Iterator[Samples], rate: int, channels: int,
                container: str, codec: str, sample_fmt: str) -> None:
    import av

    layout = _LAYOUTS[channels]
    with av.open(str(path), "w", format=container) as out:
        stream: Any = out.add_stream(codec, rate=rate, layout=layout)
        stream.format = sample_fmt
        for piece in pieces:
            for start in range(0, len(piece), 4096):
                planes = _to_sample_format(piece[start : start + 4096], sample_fmt)
                # Plane by plane, not from_ndarray(): PyAV counts 9 planes for 7.1 and fails.
                frame = av.AudioFrame(format=sample_fmt, layout=layout,
                                      samples=len(piece[start : start + 4096]))
                for i, plane in enumerate(planes):
                    frame.planes[i].update(np.ascontiguousarray(plane).tobytes())
                frame.sample_rate = rate
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _to_sample_format(x: Samples, sample_fmt: str) -> np.ndarray:
    """Planar samples for the encoder; integer input (int16, or int32 holding 24-bit samples
    left-aligned) is passed through untouched, as soundfile does for integer arrays."""
    if x.dtype.kind == "i":
        return np.ascontiguousarray(x.T).astype(np.int16 if sample_fmt == "s16p" else np.int32)
    if sample_fmt == "flt":  # packed: one plane, channels interleaved
        return np.clip(x, -1.0, 1.0).astype(np.float32).reshape(1, -1)
    planar = np.ascontiguousarray(np.clip(x, -1.0, 1.0).T)
    if sample_fmt == "s16p":
        return np.round(planar * 32767).astype(np.int16)
    if sample_fmt == "s32p":
        return (np.round(planar * 8388607).astype(np.int32) << 8)
    return planar.astype(np.float32)


# ----------------------------------------------------------------------------- damage


def truncate(path: str | os.PathLike[str], fraction: float = 0.5) -> Path:
    """Cut the file to ``fraction`` of its bytes, as an interrupted upload would."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(max(1, int(size * fraction)))
    return path


def strip_mp3_length_header(path: str | os.PathLike[str]) -> Path:
    """Remove the Xing/Info frame, leaving an MP3 whose length a decoder can only estimate."""
    path = Path(path)
    data = path.read_bytes()
    start = headers.id3v2_size(data[:10])
    frame = stream_frames.mp3_frame(data[start : start + 4])
    if frame is None:
        raise ValueError("no MPEG frame at the start of the audio")
    body = data[start + 4 : start + min(frame.length, 64)]
    if b"Xing" in body or b"Info" in body:
        data = data[:start] + data[start + frame.length :]
        path.write_bytes(data)
    return path


def add_id3_tags(path: str | os.PathLike[str], cover_bytes: int = 150_000) -> Path:
    """Prepend an ID3v2.3 tag (title + a cover picture) and append an ID3v1 tag."""
    path = Path(path)
    cover = b"\x89PNG\r\n\x1a\n" + bytes(np.random.default_rng(7).integers(0, 256, cover_bytes,
                                                                           dtype=np.uint8))
    title = _id3_frame(b"TIT2", b"\x00WaveFlow fixture")
    apic = _id3_frame(b"APIC", b"\x00image/png\x00\x03cover\x00" + cover)
    body = title + apic + b"\x00" * 256  # padding, as taggers leave
    size = len(body)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    v1 = b"TAG" + b"WaveFlow fixture".ljust(30, b"\x00") + b"\x00" * 94 + b"\xff"
    path.write_bytes(b"ID3\x03\x00\x00" + syncsafe + body + path.read_bytes() + v1)
    return path


def _id3_frame(frame_id: bytes, payload: bytes) -> bytes:
    return frame_id + struct.pack(">I", len(payload)) + b"\x00\x00" + payload


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write raw bytes (text named .wav, random noise, an empty file)."""
    path = Path(path)
    path.write_bytes(data)
    return path


def writer_for(fmt: str) -> Callable[[str | os.PathLike[str], Samples, int], Path]:
    """A ``(path, samples, rate)`` writer bound to one format."""
    return lambda path, samples, rate: write_audio(path, fmt, samples, rate)
