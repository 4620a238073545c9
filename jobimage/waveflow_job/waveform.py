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
merged; the result is identical to one sequential pass (tested). Every other source is decoded
in one sequential pass; with 2+ CPUs its blocks are reduced in a second thread, a few blocks
behind the decoder (FFmpeg and libsndfile release the GIL), again identical to one thread. The
passes themselves are in :mod:`waveflow_job.audio.passes`.

Float sources keep their scale: 1.0 is full scale, a sample beyond it is counted as clipped
and drawn at the 8-bit limit, never rescaled. NaN or infinite samples have no truthful
waveform: the file is rejected as ``AUDIO_CORRUPT``. Digital silence has no level: its
``peak_dbfs`` and ``rms_dbfs`` are None (never -inf in JSON), its peaks all zeros.

``python -m waveflow_job.waveform INPUT [-o OUT] [--peaks N]`` writes the document (also
``waveflow-job waveform``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from waveflow_job.audio.limits import AudioLimits
from waveflow_job.contract import DEFAULT_NUM_PEAKS, ErrorCode, utc_now_iso
from waveflow_job.errors import AudioError

if TYPE_CHECKING:
    from waveflow_job.audio.decode import StreamInfo
    from waveflow_job.audio.detail import DetailWaveform
    from waveflow_job.audio.loudness import Loudness
    from waveflow_job.audio.peaks import PeakResult

__all__ = ["AudioAnalysis", "DetailRequest", "analyse_file", "build_waveform_document",
           "write_waveform_file"]


@dataclass(frozen=True)
class DetailRequest:
    """Write the detail waveform (audiowaveform ``.dat``) to ``path`` during the analysis."""

    path: str | os.PathLike[str]
    samples_per_pixel: int = 256
    bits: int = 8


@dataclass(frozen=True)
class AudioAnalysis:
    """What one decode pass found: the stream's facts, its waveform, loudness and detail."""

    info: StreamInfo
    waveform: PeakResult
    #: None when loudness was not asked for.
    loudness: Loudness | None = None
    #: The ``.dat`` written, None when none was asked for or none fitted the size bound.
    detail: DetailWaveform | None = None
    #: Why the detail is coarser than asked, or left out (the size bound); None otherwise.
    detail_note: str | None = None

    @property
    def duration(self) -> float:
        return self.waveform.frames / self.info.sample_rate

    def facts(self) -> dict[str, Any]:
        """Extra keys for the completion webhook's ``result``: finite values, None left out."""
        info, wave = self.info, self.waveform
        facts: dict[str, Any] = {
            "channels": info.channels,
            "frames": wave.frames,
            "format": info.container,
            "codec": info.codec,
            "sample_format": info.sample_format,
            "bit_depth": info.bit_depth,
            "peak_dbfs": wave.peak_dbfs,
            "rms_dbfs": wave.rms_dbfs,
            "clipped_samples": wave.clipped_samples,
        }
        facts.update(self.loudness_facts())
        return {k: v for k, v in facts.items() if v is not None}

    def loudness_facts(self) -> dict[str, float]:
        """``integrated_lufs``, ``loudness_range_lu``, ``true_peak_dbtp``: only those measured."""
        if self.loudness is None:
            return {}
        values = {"integrated_lufs": self.loudness.integrated_lufs,
                  "loudness_range_lu": self.loudness.loudness_range_lu,
                  "true_peak_dbtp": self.loudness.true_peak_dbtp}
        return {k: v for k, v in values.items() if v is not None and math.isfinite(v)}


#: Below this many frames (about 24 s at 44.1 kHz) a second thread costs more than it saves.
PARALLEL_MIN_FRAMES = 1 << 20


def analyse_file(path: str | os.PathLike[str], num_peaks: int, *,
                 max_duration_seconds: float | None = None,
                 limits: AudioLimits | None = None,
                 workers: int | None = None,
                 detail: DetailRequest | None = None,
                 loudness: bool = True) -> AudioAnalysis:
    """Decode the whole file once and reduce it; raises AudioError for anything untruthful.

    ``limits`` bound what the headers may declare (rate, channels) and the document's size;
    ``workers`` caps the decoding threads (default: the CPUs this process may use). With
    ``detail`` the ``.dat`` is written as points are completed; with ``loudness`` the same
    blocks feed the loudness meters.
    """
    from waveflow_job.audio.decode import open_audio
    from waveflow_job.audio.passes import (
        Plan,
        available_cpus,
        reduce_once,
        reduce_ranges,
        too_long,
    )

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
            raise too_long(info.frames / info.sample_rate, max_duration_seconds)

    plan = Plan(source, num_peaks, detail, loudness, limits.max_detail_bytes)
    if info.frames:
        plan.fit_detail(info.frames)  # before the parallel split, which aligns on its points
    workers = available_cpus() if workers is None else workers
    with plan.detail_file():
        if (source.seekable and info.frames_exact and info.frames is not None and workers > 1
                and info.frames >= max(PARALLEL_MIN_FRAMES, 2 * workers * plan.alignment)):
            passed = reduce_ranges(plan, info.frames, workers)
        else:
            passed = reduce_once(plan, info.frames, max_frames, max_duration_seconds, workers)
        if isinstance(passed, int):
            decoded = passed
            if decoded == 0:
                raise AudioError(ErrorCode.AUDIO_EMPTY, "the file decodes to no audio frames")
            if info.frames is not None and decoded < info.frames - _slack(info):
                raise AudioError(
                    ErrorCode.AUDIO_CORRUPT,
                    f"cut short: {info.container} declares {info.frames} frames, "
                    f"only {decoded} could be decoded")
            passed = reduce_once(plan, decoded, max_frames, max_duration_seconds, workers)
            if isinstance(passed, int):
                raise AudioError(ErrorCode.AUDIO_CORRUPT,
                                 f"decoding is not repeatable: {decoded} then {passed} frames")
        wave, measured, written = plan.finish(*passed)
    return AudioAnalysis(info=info, waveform=wave, loudness=measured, detail=written,
                         detail_note=plan.detail_note)


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


def build_waveform_document(analysis: AudioAnalysis, *, created_at: str,
                            detail_path: str | None = None) -> dict[str, Any]:
    """The JSON object stored in S3: old fields, audiowaveform data format v2, the detail
    waveform's key and the loudness (CONTRACT.md §3, §8)."""
    wave = analysis.waveform
    document: dict[str, Any] = {
        "peaks": wave.peaks,
        "duration": round(analysis.duration, 6),
        "sample_rate": analysis.info.sample_rate,
        "num_peaks": len(wave.peaks),
        "created_at": created_at,
        "version": 2,
        "channels": analysis.info.channels,
        "samples_per_pixel": wave.samples_per_pixel,
        "bits": 8,
        "length": wave.length,
        "data": wave.data,
    }
    if detail_path is not None and analysis.detail is not None:
        document["waveform_detail_path"] = detail_path
        document["waveform_detail_samples_per_pixel"] = analysis.detail.samples_per_pixel
    document.update(analysis.loudness_facts())
    return document


def write_waveform_file(input_path: str | os.PathLike[str],
                        output_path: str | os.PathLike[str] | None,
                        num_peaks: int = DEFAULT_NUM_PEAKS, *,
                        detail: DetailRequest | None = None,
                        loudness: bool = True,
                        limits: AudioLimits | None = None) -> dict[str, Any]:
    """Analyse ``input_path`` and write its waveform JSON to ``output_path`` (stdout if None),
    and its detail waveform when ``detail`` asks for one (and it fits ``limits``).

    Each file is written beside its name and renamed into place only once the whole analysis
    has succeeded: a rejected or interrupted run leaves the files an earlier run wrote (or
    none), never a half-written ``.dat`` or a JSON without its ``.dat``."""
    replacing: AbstractContextManager[_Replacement | None] = (
        _replacing(detail.path) if detail is not None else nullcontext())
    with replacing as scratch:
        written = None
        if detail is not None and scratch is not None:
            written = dataclasses.replace(detail, path=scratch.path)
        analysis = analyse_file(input_path, num_peaks, detail=written, loudness=loudness,
                                limits=limits)
        if scratch is not None and analysis.detail is None:
            scratch.remove()  # left out: no file of an earlier run beside this JSON either
    # The .dat is in place (or gone) before the JSON that names it.
    document = build_waveform_document(
        analysis, created_at=utc_now_iso(),
        detail_path=os.fspath(detail.path) if detail is not None else None)
    if analysis.detail_note is not None:
        sys.stderr.write(f"waveflow-job: {analysis.detail_note}\n")
    text = json.dumps(document, allow_nan=False, separators=(",", ":"))
    if output_path is None:
        sys.stdout.write(text + "\n")
    else:
        with _replacing(output_path) as out:
            out.path.write_text(text, encoding="utf-8")
    return document


class _Replacement:
    """Where the new content of ``target`` is written: a file beside it, renamed over it on
    :meth:`commit`; or ``target`` itself when that is not a regular file (``/dev/stdout``,
    a pipe: nothing to replace, and renaming over a device would be wrong)."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)
        self.removed = False
        try:
            self.direct = not stat.S_ISREG(os.stat(self.target).st_mode)
        except FileNotFoundError:
            self.direct = False
        if self.direct:
            self.path = self.target
            return
        self.path = self.target.with_name(f".{self.target.name}.{os.urandom(4).hex()}.part")
        # As open(target, "w") would: mode 0o666 less the umask, and an error now if the
        # directory cannot take the file.
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))

    def remove(self) -> None:
        """Leave no file at the target, not even one an earlier run wrote."""
        self.removed = True
        if not self.direct:
            with suppress(FileNotFoundError):
                os.unlink(self.target)

    def commit(self) -> None:
        if self.removed:
            self.discard()
        elif not self.direct:
            os.replace(self.path, self.target)

    def discard(self) -> None:
        if not self.direct:
            with suppress(FileNotFoundError):
                os.unlink(self.path)


@contextmanager
def _replacing(target: str | os.PathLike[str]) -> Iterator[_Replacement]:
    """The new content of ``target`` goes to a file beside it that replaces it atomically if
    the block ends normally and is deleted if it raises."""
    replacement = _Replacement(target)
    try:
        yield replacement
    except BaseException:
        replacement.discard()
        raise
    replacement.commit()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m waveflow_job.waveform INPUT [-o OUT] [--peaks N]``; exit 3 on bad audio."""
    import argparse

    parser = argparse.ArgumentParser(prog="waveflow-job waveform",
                                     description="Write the waveform JSON of an audio file.")
    parser.add_argument("input")
    parser.add_argument("-o", "--output", default=None)
    parser.add_argument("--peaks", type=int, default=DEFAULT_NUM_PEAKS)
    parser.add_argument("--detail", default=None, metavar="OUT.dat")
    args = parser.parse_args(argv)
    try:
        write_waveform_file(args.input, args.output, args.peaks,
                            detail=DetailRequest(args.detail) if args.detail else None)
    except AudioError as exc:
        sys.stderr.write(f"{exc}\n")
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
