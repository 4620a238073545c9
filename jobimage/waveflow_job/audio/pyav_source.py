"""FFmpeg (through PyAV) for what neither raw PCM nor libsndfile reads: MP4/M4A/3GP (AAC,
ALAC, AMR), Matroska/WebM and ADTS, and MP3s whose length libsndfile cannot be trusted with."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from waveflow_job.audio.peaks import SampleScale
from waveflow_job.audio.source import (
    PCM_SAMPLE_FORMATS,
    PYAV_BLOCK_SAMPLES,
    AudioSource,
    StreamInfo,
    block_frames,
)
from waveflow_job.contract import ErrorCode
from waveflow_job.errors import AudioError

__all__ = ["PyAVSource", "open_pyav"]

#: PyAV demuxers we accept; anything else it might "recognise" in random bytes is refused.
_PYAV_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "aac", "mp3"}
_PYAV_CONTAINERS = {"MP4": "M4A", "MATROSKA": "WEBM", "ADTS": "AAC", "MP3": "MP3"}

_AV_DTYPES = {"flt": "float32", "fltp": "float32", "dbl": "float32", "dblp": "float32",
              "s16": "int16", "s16p": "int16", "u8": "int16", "u8p": "int16",
              "s32": "int32", "s32p": "int32"}
_AV_CODECS = {"mp3float": "mp3", "libopus": "opus", "aac_fixed": "aac"}
_AV_LOSSLESS = {"alac", "flac", "pcm_s16le", "pcm_s24le", "pcm_s16be", "pcm_s24be"}


def open_pyav(path: str, family: str, frames_estimate: int | None = None) -> AudioSource:
    """The stream's facts; the source keeps the container open for its first decode (a second
    open would parse the sample table and probe the stream again: 2 MiB and a few ms)."""
    import av

    try:
        # Tags are not ours to judge: a byte that is not UTF-8 in one must not stop the decode
        # (PyAV decodes them strictly by default and raises UnicodeDecodeError).
        container = av.open(path, metadata_errors="replace")
    except av.error.FFmpegError as exc:
        raise AudioError(ErrorCode.AUDIO_CORRUPT,
                         f"cannot decode the {family} file: {exc}") from exc
    try:
        return _describe(container, path, family, frames_estimate)
    except BaseException:
        container.close()
        raise


def _describe(container: Any, path: str, family: str,
              frames_estimate: int | None) -> PyAVSource:
    import av

    try:
        if container.format.name not in _PYAV_FORMATS:
            raise AudioError(ErrorCode.AUDIO_UNSUPPORTED,
                             f"unsupported container {container.format.name!r}")
        if not container.streams:
            # An MP4 cut before its sample table (moov) still opens, with nothing in it.
            raise AudioError(ErrorCode.AUDIO_CORRUPT,
                             "no readable stream: the file is cut short or damaged")
        if not container.streams.audio:
            raise AudioError(ErrorCode.AUDIO_UNSUPPORTED, "the file has no audio stream")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        codec = _AV_CODECS.get(ctx.name, ctx.name)
        rate, channels = ctx.sample_rate, ctx.channels
        fmt_name = ctx.format.name if ctx.format is not None else "fltp"
        raw_bits = _alac_bits(ctx.extradata) if codec == "alac" else 0
        frames = frames_estimate or _pyav_frames(stream, container, rate)
    except av.error.FFmpegError as exc:
        raise AudioError(ErrorCode.AUDIO_CORRUPT,
                         f"cannot decode the {family} file: {exc}") from exc
    if not rate or not channels:
        raise AudioError(ErrorCode.AUDIO_CORRUPT, "the audio stream declares no rate or channels")
    dtype = _AV_DTYPES.get(fmt_name)
    if dtype is None:
        raise AudioError(ErrorCode.AUDIO_UNSUPPORTED, f"unsupported sample format {fmt_name!r}")
    lossless = codec in _AV_LOSSLESS
    if dtype == "float32":
        scale = SampleScale.floating()
    elif dtype == "int32":
        scale = SampleScale.for_integer_bits(raw_bits if 16 < raw_bits <= 32 else 32, 32)
    else:
        scale = SampleScale.for_integer_bits(8 if fmt_name.startswith("u8") else 16, 16)
    bits = (raw_bits or (16 if dtype == "int16" else 32)) if lossless else None
    info = StreamInfo(
        container=_PYAV_CONTAINERS[family],
        codec=codec,
        sample_format=(PCM_SAMPLE_FORMATS.get(bits or 0, "PCM_32") if lossless else "compressed"),
        bit_depth=bits,
        sample_rate=rate,
        channels=channels,
        frames=frames,
        frames_exact=False,
        scale=scale,
    )
    return PyAVSource(path, info, dtype, container)


def _alac_bits(extradata: bytes | None) -> int:
    """Bit depth from ALAC's magic cookie (ALACSpecificConfig, maybe inside an 'alac' atom)."""
    cookie = extradata or b""
    if cookie[4:8] == b"alac":
        cookie = cookie[12:]
    return cookie[5] if len(cookie) > 5 else 0


def _pyav_frames(stream: Any, container: Any, rate: int) -> int | None:
    """The container's idea of the length, as an estimate (priming and edit lists vary).

    Fixed-size codecs (AAC: 1024) decode every packet whole, priming included, so packets x
    frame size is what comes out unless an edit list trims it; otherwise the duration.
    """
    frame_size = stream.codec_context.frame_size
    if frame_size and stream.frames:
        return int(stream.frames) * int(frame_size)
    if stream.duration is not None and stream.time_base is not None:
        return round(float(stream.duration * stream.time_base) * rate)
    if container.duration is not None:
        return round(container.duration / 1_000_000 * rate)
    return None


class PyAVSource(AudioSource):
    """FFmpeg decoding; frames are gathered into fixed blocks of the stream's type.

    Decoded frames (1024 samples for AAC) go into FFmpeg's own FIFO and come out as one frame
    per block, so numpy sees a few large arrays instead of thousands of small ones. Blocks are
    transposed planar arrays: ``(n, channels)`` views with contiguous channels, each of a frame
    of its own (the FIFO allocates every frame it reads).
    """

    fresh_blocks = True

    def __init__(self, path: str, info: StreamInfo, dtype: str, opened: Any = None) -> None:
        super().__init__(path, info)
        self.dtype = dtype
        #: The container :func:`open_pyav` read the facts from, for the first decode.
        self._opened = opened

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        import av

        if start or stop is not None:
            raise ValueError("PyAV sources are decoded whole")
        size = block_frames(self.info.channels, PYAV_BLOCK_SAMPLES)
        fifo = av.AudioFifo()
        container, self._opened = self._opened, None
        try:
            if container is None:
                container = av.open(self.path, metadata_errors="replace")
            with container:
                stream = container.streams.audio[0]
                for frame in container.decode(stream):
                    self._check(frame)
                    frame.pts = None  # the FIFO would refuse a timestamp gap
                    fifo.write(frame)
                    while fifo.samples >= size:
                        yield self._frame_planes(fifo.read(size)).T
                tail = fifo.read()
                if tail is not None and tail.samples:
                    yield self._frame_planes(tail).T
        except av.error.FFmpegError as exc:
            raise AudioError(ErrorCode.AUDIO_CORRUPT, f"decoding failed: {exc}") from exc

    def _check(self, frame: Any) -> None:
        if (frame.layout.nb_channels != self.info.channels
                or frame.sample_rate != self.info.sample_rate):
            raise AudioError(ErrorCode.AUDIO_UNSUPPORTED,
                             "the channel count or sample rate changes inside the stream")

    def _frame_planes(self, frame: Any) -> np.ndarray:
        """One frame as ``(channels, n)`` in the source's dtype."""
        ch = self.info.channels
        name = frame.format.name
        if not frame.format.is_planar:
            arr = frame.to_ndarray().reshape(-1, ch).T
        elif ch < 8:
            arr = frame.to_ndarray()
        else:
            # Not to_ndarray(): PyAV reports 9 planes for 8 planar channels.
            np_type = {"flt": np.float32, "dbl": np.float64, "s16": np.int16, "s32": np.int32,
                       "u8": np.uint8}[name.rstrip("p")]
            arr = np.stack([np.frombuffer(frame.planes[c], dtype=np_type, count=frame.samples)
                            for c in range(ch)])
        if name.startswith("u8"):
            return (arr.astype(np.int16) - 128) << 8
        return arr
