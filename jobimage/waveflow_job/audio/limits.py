"""What a file may declare before we decode it: sample rate, channels, waveform size.

A header is the file's claim, and a hostile or broken one can claim anything: a 4 GHz or 1 Hz
rate (durations off by a factor of a million), 4,096 channels (buffers and a waveform
document that grow with every channel). Anything outside these bounds is rejected before the
first sample is read, with a code that names the field; nothing is ever clamped or rounded to
a plausible value.

Defaults, and why:

- **sample rate 4,000 … 768,000 Hz**: the lowest rates in real use are 8 kHz telephony and
  the 5,512 Hz of old Flash audio; the highest, DXD (352.8 kHz) and the 768 kHz some
  converters record. Below 4 kHz there is no audio a listener would upload, above 768 kHz
  no converter on the market.
- **64 channels**: covers 7.1.4 (12), 9.1.6 (16) and higher-order ambisonics up to 7th order
  (64; 3rd order is 16, 4th 25). Dolby Atmos ADM masters (up to 128 tracks) need the limit
  raised on purpose.
- **1,048,576 waveform values**: the ``data`` array holds min and max per point and channel,
  so ``2 x num_peaks x channels`` values; 2²⁰ allows 65,536 peaks of 8 channels (7.1) or the
  default 1,024 peaks of 64 channels, and keeps the JSON under about 4 MB and the job's peak
  memory under about 100 MiB (measured: 2²¹ values took 160 MiB).

- **128 MiB of detail waveform** (the ``.dat``, 2 x channels x bytes per value per point): at
  the default 256 frames per point and 8 bits, a 4-hour (the default duration limit) file
  makes 14,400 s x rate / 256 points, x 16 bytes for 8 channels: 43.2 MB at 48 kHz,
  86.4 MB at 96 kHz, and 129.6 MB for 7.1.4 (12 channels) at 96 kHz; 16-bit doubles these
  (86.4 MB for 8 channels at 48 kHz). 2^27 bytes (134.2 MB) holds all of them, is a small
  part of the 4 GiB scratch volume, and is about the most a browser should be handed for one
  zoomable view. Beyond it the detail is coarsened (256 → 512 → 1024 … frames per point) or,
  when nothing finer than the overview fits, left out: the detail is optional, so the stem is
  analysed either way and its SUCCESS says what happened (``waveform_detail_note``). Unlike
  the others this bound rejects nothing.

All five are settings of the job (``WAVEFLOW_MIN_SAMPLE_RATE``, ``WAVEFLOW_MAX_SAMPLE_RATE``,
``WAVEFLOW_MAX_CHANNELS``, ``WAVEFLOW_MAX_WAVEFORM_VALUES``, ``WAVEFLOW_MAX_DETAIL_BYTES``), and
fields of a ``WaveflowQueue`` (``spec.job.limits``).
"""

from __future__ import annotations

from dataclasses import dataclass

from waveflow_job.contract import ErrorCode
from waveflow_job.errors import AudioError

__all__ = ["AudioLimits"]


@dataclass(frozen=True)
class AudioLimits:
    """Bounds on what a file's headers may declare."""

    min_sample_rate: int = 4_000
    max_sample_rate: int = 768_000
    max_channels: int = 64
    max_waveform_values: int = 1 << 20
    #: Bytes of the detail waveform (``.dat``) at most; beyond it the detail is coarsened or
    #: left out (``audio.detail.fit_resolution``), never the stem rejected.
    max_detail_bytes: int = 1 << 27

    def check_sample_rate(self, rate: int | float, where: str) -> None:
        """A rate that is no rate at all is corrupt; one outside the range, unsupported."""
        if rate != rate or rate <= 0 or rate in (float("inf"), float("-inf")):
            raise AudioError(ErrorCode.AUDIO_CORRUPT,
                             f"the {where} declares a sample rate of {rate} Hz")
        if not self.min_sample_rate <= rate <= self.max_sample_rate:
            raise AudioError(
                ErrorCode.AUDIO_SAMPLE_RATE_UNSUPPORTED,
                f"the {where} declares {_hz(rate)}; supported: {self.min_sample_rate}"
                f"..{self.max_sample_rate} Hz")

    def check_channels(self, channels: int, where: str) -> None:
        if channels < 1:
            raise AudioError(ErrorCode.AUDIO_CORRUPT,
                             f"the {where} declares {channels} channels")
        if channels > self.max_channels:
            raise AudioError(ErrorCode.AUDIO_TOO_MANY_CHANNELS,
                             f"the {where} declares {channels} channels; at most "
                             f"{self.max_channels} are supported")

    def check_waveform(self, num_peaks: int, channels: int) -> None:
        """The document's ``data`` grows with peaks x channels: bound it before decoding."""
        values = 2 * num_peaks * channels
        if values > self.max_waveform_values:
            raise AudioError(ErrorCode.WAVEFORM_TOO_LARGE,
                             f"{num_peaks} peaks of {channels} channels make {values} waveform "
                             f"values; at most {self.max_waveform_values} (ask for fewer peaks)")


def _hz(rate: int | float) -> str:
    """Readable even for 2**1000: the number's size, not 300 digits."""
    if rate >= 10**12:
        return f"about 2^{int(rate).bit_length() - 1} Hz"
    return f"{rate:g} Hz" if isinstance(rate, float) else f"{rate} Hz"
