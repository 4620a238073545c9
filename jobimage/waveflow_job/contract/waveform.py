"""The waveform JSON document in S3 and its key (CONTRACT.md §3)."""

import re
from typing import Annotated, Literal, NotRequired, TypedDict

from waveflow_job.contract.fields import MAX_NUM_PEAKS, Timestamp

__all__ = ["WAVEFORM_PREFIX", "WaveformDocument", "detail_waveform_key", "waveform_key"]

#: Where waveform JSON lives; never an upload, never deleted by the duplicate stage.
WAVEFORM_PREFIX = "waveforms/"
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_Count = Annotated[int, {"minimum": 1}]


class WaveformDocument(TypedDict):
    """The waveform JSON in S3: the old fields plus audiowaveform data format v2."""

    #: One value per bucket of the mono mix, normalised to 0..1.
    peaks: list[Annotated[float, {"minimum": 0, "maximum": 1}]]
    duration: Annotated[float, {"minimum": 0}]
    sample_rate: _Count
    num_peaks: Annotated[int, {"minimum": 1, "maximum": MAX_NUM_PEAKS}]
    created_at: Timestamp
    version: Literal[2]
    channels: _Count
    samples_per_pixel: _Count
    #: 8: Peaks.js reads only 8-bit data.
    bits: Literal[8]
    length: Annotated[int, {"minimum": 0}]
    #: min,max pairs interleaved by channel.
    data: list[Annotated[int, {"minimum": -128, "maximum": 127}]]
    #: S3 key of the detail waveform (audiowaveform binary data v2, CONTRACT.md §8); absent
    #: when the job was configured without one.
    waveform_detail_path: NotRequired[str]
    #: Frames per point of the detail waveform (its ``.dat`` header says the same): the asked
    #: resolution (256 by default), or a coarser one when the asked one's file would be over
    #: the size bound (``WAVEFLOW_MAX_DETAIL_BYTES``); a player's zoom levels start here.
    waveform_detail_samples_per_pixel: NotRequired[Annotated[int, {"minimum": 1}]]
    #: BS.1770-4 integrated loudness; absent for digital silence or audio too short/quiet to
    #: gate (under 400 ms, or every block under -70 LUFS).
    integrated_lufs: NotRequired[float]
    #: EBU Tech 3342 loudness range; absent as integrated_lufs, and under 3 s.
    loudness_range_lu: NotRequired[Annotated[float, {"minimum": 0}]]
    #: True peak (4x oversampled below 96 kHz, 2x below 192 kHz); absent for digital silence.
    true_peak_dbtp: NotRequired[float]


def waveform_key(stem_id: str, audio_sha256: str) -> str:
    """Deterministic for the same stem and bytes: re-running overwrites, never piles up."""
    safe_stem = _UNSAFE_KEY_CHARS.sub("_", stem_id)[:200]
    return f"{WAVEFORM_PREFIX}{safe_stem}_waveform_{audio_sha256[:16]}.json"


def detail_waveform_key(stem_id: str, audio_sha256: str) -> str:
    """The detail waveform beside the JSON: the same key stem, ``.dat``."""
    return waveform_key(stem_id, audio_sha256).removesuffix(".json") + ".dat"
