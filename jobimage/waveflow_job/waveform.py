"""From an audio file to the waveform JSON document (CONTRACT.md §3).

``analyse_file`` decodes the whole stream once, block by block, and reduces it with
:class:`~waveflow_job.audio.peaks.WaveformAccumulator`. The bucket edges depend on the
frame count N, so N must be known before the first block:

- PCM (WAV/RF64/W64/AIFF), FLAC and MP3 with a Xing/Info/VBRI header declare N exactly. We
  trust it for the edges and check it at the end: fewer frames decoded means the file was cut
  short (``AUDIO_CORRUPT``), never a waveform of what happened to be there.
- MP3 without a length header, Ogg and every PyAV source (M4A, WebM, ADTS) only let us
  estimate N (the MP3 frame walk, the last Ogg granule, the MP4 packet count times the codec's
  frame size, the Matroska duration; encoder delay and edit lists make them differ by a few
  hundred frames). We reduce speculatively with the estimate; if the decoded count differs, we
  decode a second time with the now-known N. The result is exact and memory stays bounded;
  the second decode costs time only for files whose estimate was wrong (in practice: none of
  the MP3/Ogg/M4A files our encoders write; WebM, whose duration is in milliseconds, always).
  Truncation of these files is judged by their own structure before decoding (the last MP3
  frame or Ogg page must be complete, an MP4 needs its sample table), by the decoder's errors,
  or by decoding far fewer frames than estimated (see ``_slack``).

Sources that seek to an exact frame (raw PCM, FLAC, MP3 with a Xing header) with a trusted N
are split into one range per available CPU (affinity and cgroup quota respected), decoded and
reduced side by side in threads (libsndfile, ``readinto`` and numpy release the GIL) and
merged; the result is identical to one sequential pass (tested).

Float sources keep their scale: 1.0 is full scale, a sample beyond it is counted as clipped
and drawn at the 8-bit limit, never rescaled. NaN or infinite samples have no truthful
waveform: the file is rejected as ``AUDIO_CORRUPT``. Digital silence has no level: its
``peak_dbfs`` and ``rms_dbfs`` are None (never -inf in JSON), its peaks all zeros.

``python -m waveflow_job.waveform INPUT [-o OUT] [--peaks N]`` writes the document (also
``waveflow-job waveform``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from waveflow_job.audio.limits import AudioLimits
from waveflow_job.contract import DEFAULT_NUM_PEAKS, ErrorCode, utc_now_iso
from waveflow_job.errors import AudioError

__all__ = ["AudioAnalysis", "analyse_file", "build_waveform_document", "write_waveform_file"]


@dataclass(frozen=True)
class AudioAnalysis:
    """Facts, levels and both waveform representations of one file."""

    frames: int
    sample_rate: int
    channels: int
    duration: float
    container: str
    codec: str
    sample_format: str
    bit_depth: int | None
    #: dBFS of the loudest sample (above 0 for float sources that clip); None for digital silence.
    peak_dbfs: float | None
    #: dBFS of the RMS over all samples of all channels; None for digital silence.
    rms_dbfs: float | None
    #: Samples at or beyond full scale (integer extremes, or |x| >= 1.0 for float sources).
    clipped_samples: int
    peaks: list[float]
    samples_per_pixel: int
    length: int
    data: list[int]

    def facts(self) -> dict[str, Any]:
        """Extra keys for the completion webhook's ``result`` (all finite JSON values)."""
        return {
            "channels": self.channels,
            "frames": self.frames,
            "format": self.container,
            "codec": self.codec,
            "sample_format": self.sample_format,
            "bit_depth": self.bit_depth,
            "peak_dbfs": self.peak_dbfs,
            "rms_dbfs": self.rms_dbfs,
            "clipped_samples": self.clipped_samples,
        }


#: Below this many frames (about 24 s at 44.1 kHz) a second thread costs more than it saves.
PARALLEL_MIN_FRAMES = 1 << 20


def analyse_file(path: str | os.PathLike[str], num_peaks: int, *,
                 max_duration_seconds: float | None = None,
                 limits: AudioLimits | None = None,
                 workers: int | None = None) -> AudioAnalysis:
    """Decode the whole file and reduce it; raises AudioError for anything untruthful.

    ``limits`` bound what the headers may declare (rate, channels) and the document's size;
    ``workers`` caps the decoding threads (default: the CPUs this process may use).
    """
    from waveflow_job.audio.decode import open_audio

    if num_peaks < 1:
        raise ValueError("num_peaks must be at least 1")
    limits = limits or AudioLimits()
    source = open_audio(path, limits)
    info = source.info
    limits.check_waveform(num_peaks, info.channels)
    max_frames = None
    if max_duration_seconds:
        max_frames = math.floor(max_duration_seconds * info.sample_rate)
        if info.frames is not None and info.frames > max_frames:
            raise _too_long(info.frames / info.sample_rate, max_duration_seconds)

    workers = available_cpus() if workers is None else workers
    if (source.seekable and info.frames_exact and info.frames is not None and workers > 1
            and info.frames >= PARALLEL_MIN_FRAMES):
        result, decoded = _reduce_ranges(source, info.frames, num_peaks, workers)
    else:
        result, decoded = _reduce(source, info.frames, num_peaks, max_frames,
                                  max_duration_seconds)
    if result is None:
        if decoded == 0:
            raise AudioError(ErrorCode.AUDIO_EMPTY, "the file decodes to no audio frames")
        if info.frames is not None and decoded < info.frames - _slack(info):
            raise AudioError(
                ErrorCode.AUDIO_CORRUPT,
                f"cut short: {info.container} declares {info.frames} frames, "
                f"only {decoded} could be decoded")
        result, again = _reduce(source, decoded, num_peaks, max_frames, max_duration_seconds)
        if result is None:
            raise AudioError(ErrorCode.AUDIO_CORRUPT,
                             f"decoding is not repeatable: {decoded} then {again} frames")
    return AudioAnalysis(
        frames=result.frames,
        sample_rate=info.sample_rate,
        channels=info.channels,
        duration=result.frames / info.sample_rate,
        container=info.container,
        codec=info.codec,
        sample_format=info.sample_format,
        bit_depth=info.bit_depth,
        peak_dbfs=result.peak_dbfs,
        rms_dbfs=result.rms_dbfs,
        clipped_samples=result.clipped_samples,
        peaks=result.peaks,
        samples_per_pixel=result.samples_per_pixel,
        length=result.length,
        data=result.data,
    )


def _reduce(source: Any, frames: int | None, num_peaks: int, max_frames: int | None,
            max_seconds: float | None) -> tuple[Any, int]:
    """One decode; the reduction when exactly ``frames`` frames came, else None and the count."""
    from waveflow_job.audio.peaks import (
        FrameCountExceeded,
        NonFiniteSamples,
        WaveformAccumulator,
    )

    info = source.info
    acc = None
    if frames:
        acc = WaveformAccumulator(frames=frames, channels=info.channels, num_peaks=num_peaks,
                                  scale=info.scale)
    decoded = 0
    for block in source.blocks():
        decoded += len(block)
        if max_frames is not None and decoded > max_frames:
            raise _too_long(decoded / info.sample_rate, max_seconds or 0.0)
        if acc is None:
            continue
        try:
            acc.add(block)
        except FrameCountExceeded:
            acc = None  # the estimate was short: keep counting for the second pass
        except NonFiniteSamples as exc:
            raise AudioError(ErrorCode.AUDIO_CORRUPT, f"not a valid signal: {exc}") from exc
    if acc is None or decoded != frames:
        return None, decoded
    return acc.finish(), decoded


def _reduce_ranges(source: Any, frames: int, num_peaks: int, workers: int) -> tuple[Any, int]:
    """Split [0, frames) into ``workers`` ranges reduced in threads, then merged."""
    from concurrent.futures import ThreadPoolExecutor

    from waveflow_job.audio.peaks import NonFiniteSamples, WaveformAccumulator

    info = source.info
    bounds = [frames * i // workers for i in range(workers + 1)]

    def reduce_range(i: int) -> tuple[WaveformAccumulator, int]:
        acc = WaveformAccumulator(frames=frames, channels=info.channels, num_peaks=num_peaks,
                                  scale=info.scale, start=bounds[i])
        try:
            for block in source.blocks(bounds[i], bounds[i + 1]):
                acc.add(block)
        except NonFiniteSamples as exc:
            raise AudioError(ErrorCode.AUDIO_CORRUPT, f"not a valid signal: {exc}") from exc
        return acc, acc.added

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        parts = list(pool.map(reduce_range, range(workers)))
    decoded = sum(got for _, got in parts)
    if decoded != frames:
        return None, decoded
    total = parts[0][0]
    for acc, _ in parts[1:]:
        total.merge(acc)
    return total.finish(), decoded


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, then the cgroup v2 quota (Kubernetes limits)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(cpus, 4))


def _slack(info: Any) -> int:
    """How far below the declared length decoding may end before the file counts as cut.

    None for exact lengths. An estimate may overstate the decoded length by the encoder delay
    trimmed on decoding and by the container's rounding (Matroska counts milliseconds):
    a few codec frames, never the 0.5 % and 4096 frames allowed here. A stream cut at the
    end of a complete packet (Matroska, ADTS) is otherwise indistinguishable from a short one.
    """
    if info.frames_exact or info.frames is None:
        return 0
    return max(4096, info.frames // 200)


def _too_long(seconds: float, limit: float) -> AudioError:
    return AudioError(ErrorCode.AUDIO_TOO_LONG,
                      f"the audio lasts {seconds:.0f} s or more, over the {limit:.0f} s limit")


def build_waveform_document(analysis: AudioAnalysis, *, created_at: str) -> dict[str, Any]:
    """The JSON object stored in S3: old fields plus audiowaveform data format v2."""
    return {
        "peaks": analysis.peaks,
        "duration": round(analysis.duration, 6),
        "sample_rate": analysis.sample_rate,
        "num_peaks": len(analysis.peaks),
        "created_at": created_at,
        "version": 2,
        "channels": analysis.channels,
        "samples_per_pixel": analysis.samples_per_pixel,
        "bits": 8,
        "length": analysis.length,
        "data": analysis.data,
    }


def write_waveform_file(input_path: str | os.PathLike[str],
                        output_path: str | os.PathLike[str] | None,
                        num_peaks: int = DEFAULT_NUM_PEAKS) -> dict[str, Any]:
    """Analyse ``input_path`` and write its waveform JSON to ``output_path`` (stdout if None)."""
    analysis = analyse_file(input_path, num_peaks)
    document = build_waveform_document(analysis, created_at=utc_now_iso())
    text = json.dumps(document, allow_nan=False, separators=(",", ":"))
    if output_path is None:
        sys.stdout.write(text + "\n")
    else:
        with open(output_path, "w", encoding="utf-8") as f:
            f.write(text)
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m waveflow_job.waveform INPUT [-o OUT] [--peaks N]``; exit 3 on bad audio."""
    import argparse

    parser = argparse.ArgumentParser(prog="waveflow-job waveform",
                                     description="Write the waveform JSON of an audio file.")
    parser.add_argument("input")
    parser.add_argument("-o", "--output", default=None)
    parser.add_argument("--peaks", type=int, default=DEFAULT_NUM_PEAKS)
    args = parser.parse_args(argv)
    try:
        write_waveform_file(args.input, args.output, args.peaks)
    except AudioError as exc:
        sys.stderr.write(f"{exc}\n")
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
