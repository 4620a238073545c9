"""Open any supported audio file and stream its samples in bounded memory.

Three readers, chosen by the file's signature (never its name):

- uncompressed little-endian WAV, RF64/BW64 and Wave64 with 16/24/32-bit integer or 32-bit
  float samples are read straight from disk with ``readinto`` into one reused buffer: no
  conversion to float, 24-bit samples widened to int32 in one numpy pass;
- everything else libsndfile can read (8-bit and 64-bit WAV, AIFF, FLAC, Ogg Vorbis/Opus/FLAC,
  MP3) goes through soundfile, again into one reused buffer;
- MP4/M4A/3GP (AAC, ALAC, AMR: phone recordings), Matroska/WebM and ADTS go through PyAV
  (:mod:`.pyav_source`). The types all three share are in :mod:`.source`.

Blocks are ``(frames, channels)`` arrays (interleaved, or planar views) in the stream's
native type (int16, int32 or float32) with :class:`~waveflow_job.audio.peaks.SampleScale`
saying what full scale is. A block is a view of a reused buffer: consume it before asking for
the next one.

Declared lengths are checked here, not trusted: a WAV/AIFF data chunk that promises more than
the file holds, an MP3 whose last frame is cut, an Ogg stream whose last page is incomplete are
rejected as ``AUDIO_CORRUPT`` before decoding.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from waveflow_job.audio import headers, stream_frames
from waveflow_job.audio.limits import AudioLimits
from waveflow_job.audio.peaks import SampleScale
from waveflow_job.audio.pyav_source import open_pyav
from waveflow_job.audio.source import (
    BLOCK_SAMPLES,
    PCM_SAMPLE_FORMATS,
    PYAV_BLOCK_SAMPLES,
    AudioSource,
    StreamInfo,
    block_frames,
)
from waveflow_job.contract import ErrorCode
from waveflow_job.errors import AudioError

__all__ = ["BLOCK_SAMPLES", "PYAV_BLOCK_SAMPLES", "AudioSource", "RawPcmSource", "SndfileSource",
           "StreamInfo", "block_frames", "open_audio"]

log = logging.getLogger(__name__)


def open_audio(path: str | os.PathLike[str], limits: AudioLimits | None = None) -> AudioSource:
    """Identify the file by its bytes and return a reader for it (raises AudioError).

    Whatever reader opens it, the stream's rate and channel count are checked against
    ``limits`` before a sample is read: a header is the file's claim, not a fact.
    """
    limits = limits or AudioLimits()
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
            family = headers.sniff(head)
            if family == "ID3":
                f.seek(headers.id3v2_size(head))
                family = headers.sniff(f.read(64))
                family = family if family in ("FLAC", "ADTS") else "MP3"
            elif family is None:
                f.seek(0)
                if stream_frames.find_mp3_start(f.read(1 << 16)) is not None:
                    family = "MP3"  # padding or junk before the first frame
    except OSError as exc:
        raise AudioError(ErrorCode.AUDIO_CORRUPT, f"cannot read the file: {exc}") from exc
    if size == 0:
        raise AudioError(ErrorCode.AUDIO_EMPTY, "the file is empty (0 bytes)")
    if family is None:
        raise AudioError(ErrorCode.AUDIO_CORRUPT,
                         "not an audio file: no known container signature in its first bytes")
    if family in ("WAV", "W64", "AIFF"):
        source = _open_pcm(path, family, limits)
    elif family in ("FLAC", "OGG", "MP3"):
        source = _open_sndfile(path, family)
    else:
        source = open_pyav(path, family)
    where = f"{source.info.container} stream"
    limits.check_sample_rate(source.info.sample_rate, where)
    limits.check_channels(source.info.channels, where)
    log.debug("opened %s with %s", path, type(source).__name__, extra={"audio": source.info})
    return source


# ----------------------------------------------------------------------------- raw PCM




def _open_pcm(path: str, family: str, limits: AudioLimits) -> AudioSource:
    try:
        with open(path, "rb") as f:
            layout = headers.read_pcm_layout(f, family)
    except (headers.HeaderError, OSError, ValueError) as exc:
        fallback = family == "AIFF" or "RIFX" in str(exc)
        if fallback and not isinstance(exc, headers.ImpossibleField):
            return _open_sndfile(path, family)
        raise AudioError(ErrorCode.AUDIO_CORRUPT, f"malformed {family} header: {exc}") from exc
    # Checked on our own reading of the header, before libsndfile may "fix" a field.
    limits.check_sample_rate(layout.sample_rate, f"{layout.container} header")
    limits.check_channels(layout.channels, f"{layout.container} header")
    if layout.truncated:
        raise AudioError(
            ErrorCode.AUDIO_CORRUPT,
            f"cut short: the {layout.container} header declares {layout.declared_frames} frames, "
            f"the file holds {layout.available_bytes // layout.block_align}")
    if layout.declared_frames == 0:
        raise AudioError(ErrorCode.AUDIO_EMPTY, f"the {layout.container} file holds no frames")
    width = layout.bits // 8
    fast = (
        not layout.big_endian
        and layout.block_align == layout.channels * width
        and ((layout.format_tag == headers.WAVE_FORMAT_PCM and layout.bits in (16, 24, 32))
             or (layout.format_tag == headers.WAVE_FORMAT_IEEE_FLOAT and layout.bits == 32))
    )
    if not fast:
        return _open_sndfile(path, family, declared_frames=layout.declared_frames)
    is_float = layout.format_tag == headers.WAVE_FORMAT_IEEE_FLOAT
    bits = layout.bits
    if not is_float and 8 <= layout.valid_bits < layout.bits:
        bits = layout.valid_bits  # e.g. 24 significant bits in 32-bit containers
    scale = SampleScale.floating() if is_float else SampleScale.for_integer_bits(
        bits, 16 if layout.bits == 16 else 32)
    info = StreamInfo(
        container=layout.container,
        codec="pcm",
        sample_format="FLOAT" if is_float else PCM_SAMPLE_FORMATS.get(bits, f"PCM_{bits}"),
        bit_depth=bits,
        sample_rate=layout.sample_rate,
        channels=layout.channels,
        frames=layout.declared_frames,
        frames_exact=True,
        scale=scale,
    )
    return RawPcmSource(path, info, layout)


class RawPcmSource(AudioSource):
    """Little-endian interleaved PCM read with ``readinto`` into one buffer."""

    seekable = True

    def __init__(self, path: str, info: StreamInfo, layout: headers.PcmLayout) -> None:
        super().__init__(path, info)
        self.layout = layout

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        lay = self.layout
        ch, align, width = lay.channels, lay.block_align, lay.bits // 8
        bframes = block_frames(ch)
        end = lay.declared_frames if stop is None else min(stop, lay.declared_frames)
        remaining = max(0, end - start) * align
        # 24-bit: one spare byte in front so sample i is the int32 at byte 3i (see below).
        pad = 1 if width == 3 else 0
        buf = bytearray(pad + bframes * align + pad)
        view = memoryview(buf)
        dtype = {2: "<i2", 4: "<f4" if self.info.sample_format == "FLOAT" else "<i4"}.get(width)
        wide = np.empty((ch, bframes), dtype=np.int32) if width == 3 else None
        with open(self.path, "rb", buffering=0) as f:
            f.seek(lay.data_offset + start * align)
            while remaining > 0:
                got = _read_full(f, view[pad : pad + min(bframes * align, remaining)])
                n = got // align
                if n == 0:
                    return
                remaining -= n * align
                if wide is not None:
                    # The little-endian int32 at byte 3i is (sample_i << 8) | previous byte:
                    # masking the low byte leaves the 24-bit sample left-aligned in 32 bits.
                    # One strided view per channel makes the block planar in the same pass.
                    for c in range(ch):
                        raw = np.ndarray((n,), dtype="<i4", buffer=buf, offset=3 * c,
                                         strides=(3 * ch,))
                        np.bitwise_and(raw, np.int32(-256), out=wide[c, :n])
                    yield wide[:, :n].T
                else:
                    yield np.frombuffer(buf, dtype=dtype, count=n * ch).reshape(n, ch)
                if got % align:
                    return


def _read_full(f: Any, view: memoryview) -> int:
    """Fill ``view`` unless the file ends first; returns the bytes read."""
    total = 0
    while total < len(view):
        got = f.readinto(view[total:])
        if not got:
            break
        total += got
    return total


# ----------------------------------------------------------------------------- libsndfile


_SF_CONTAINERS = {"WAV": "WAV", "WAVEX": "WAV", "RF64": "RF64", "W64": "W64", "AIFF": "AIFF",
                  "FLAC": "FLAC", "OGG": "OGG", "MP3": "MP3"}
_SF_CODECS = {"VORBIS": "vorbis", "OPUS": "opus", "MPEG_LAYER_III": "mp3",
              "MPEG_LAYER_II": "mp2", "MPEG_LAYER_I": "mp1"}
_SF_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32,
            "FLOAT": 32, "DOUBLE": 64, "ULAW": 8, "ALAW": 8}


def _open_sndfile(path: str, family: str, declared_frames: int | None = None) -> AudioSource:
    import soundfile as sf

    if family == "MP3":
        scan = _scan_mp3(path)
        if scan.truncated:
            raise AudioError(ErrorCode.AUDIO_CORRUPT, "cut short: the last MP3 frame is incomplete")
        if scan.frames == 0 or scan.junk_bytes * 2 > scan.audio_bytes:
            raise AudioError(ErrorCode.AUDIO_CORRUPT, "not an MPEG audio stream")
        if not scan.has_length_header:
            # libsndfile stops at mpg123's length estimate, which for a VBR file without a
            # Xing/Info header can be a third of the stream: FFmpeg decodes to the end.
            return open_pyav(path, "MP3", frames_estimate=scan.samples)
    try:
        with sf.SoundFile(path) as f:
            fmt, subtype = f.format, f.subtype
            rate, channels, sf_frames = f.samplerate, f.channels, f.frames
    except (RuntimeError, TypeError, ValueError) as exc:
        code = ErrorCode.AUDIO_CORRUPT
        if family in ("WAV", "W64", "AIFF") and "format" in str(exc).lower():
            code = ErrorCode.AUDIO_UNSUPPORTED
        raise AudioError(code, f"cannot decode the {family} file: {exc}") from exc
    container = _SF_CONTAINERS.get(fmt, fmt)
    codec = _SF_CODECS.get(subtype, "flac" if fmt == "FLAC" or subtype == "FLAC" else "pcm")
    bits = _SF_BITS.get(subtype)
    lossy = codec in ("vorbis", "opus", "mp3", "mp2", "mp1")
    if lossy or subtype in ("FLOAT", "DOUBLE"):
        dtype, scale = "float32", SampleScale.floating()
    elif bits is not None and bits > 16:
        dtype, scale = "int32", SampleScale.for_integer_bits(bits, 32)
    else:
        dtype, scale = "int16", SampleScale.for_integer_bits(bits or 16, 16)

    frames: int | None = sf_frames if 0 < sf_frames < (1 << 62) else None
    exact = family in ("WAV", "W64", "AIFF", "FLAC", "MP3")  # MP3: only with a Xing header
    if declared_frames is not None:
        frames = declared_frames
    if family == "OGG" and not _ogg_complete(path):
        raise AudioError(ErrorCode.AUDIO_CORRUPT,
                         "cut short: the Ogg stream does not end with a complete last page")
    if exact and frames == 0:
        raise AudioError(ErrorCode.AUDIO_EMPTY, f"the {container} file holds no frames")
    info = StreamInfo(
        container=container,
        codec=codec,
        sample_format="compressed" if lossy else subtype,
        bit_depth=None if lossy else bits,
        sample_rate=rate,
        channels=channels,
        frames=frames,
        frames_exact=exact and frames is not None,
        scale=scale,
    )
    return SndfileSource(path, info, dtype)


def _ogg_complete(path: str) -> bool:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - 65536))
        return stream_frames.ogg_ends_cleanly(f.read(), size)


def _scan_mp3(path: str) -> stream_frames.Mp3Scan:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        start = headers.id3v2_size(m[:10])
        return stream_frames.scan_mp3(memoryview(m), start)


class SndfileSource(AudioSource):
    """libsndfile reads (and decodes) into one reused buffer."""

    def __init__(self, path: str, info: StreamInfo, dtype: str) -> None:
        super().__init__(path, info)
        self.dtype = dtype
        # FLAC seeks to the exact sample (libFLAC decodes from the frame that holds it); so
        # does mpg123 for an MP3 with a Xing/Info header (it decodes from a few frames before
        # to refill the bit reservoir): identical samples, checked by the tests.
        self.seekable = info.container in ("FLAC", "MP3") and info.frames_exact

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        import soundfile as sf

        ch = self.info.channels
        buf = np.empty((block_frames(ch), ch), dtype=self.dtype)
        left = None if stop is None else stop - start
        try:
            with sf.SoundFile(self.path) as f:
                if start:
                    f.seek(start)
                while left is None or left > 0:
                    want = len(buf) if left is None else min(len(buf), left)
                    got = f.read(want, dtype=self.dtype, out=buf[:want])
                    if len(got) == 0:
                        return
                    if left is not None:
                        left -= len(got)
                    yield got
        except RuntimeError as exc:
            raise AudioError(ErrorCode.AUDIO_CORRUPT, f"decoding failed: {exc}") from exc
