"""Every environment variable the job reads, in one place (CONTRACT.md §4).

``JobConfig.from_env()`` is called once by the CLI; nothing else in the job looks at
``os.environ`` (boto3 still reads its own credentials chain).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from waveflow_job.audio.limits import AudioLimits
from waveflow_job.contract import MAX_NUM_PEAKS, WAVEFORM_PREFIX
from waveflow_job.contract import env as names

__all__ = ["ConfigError", "EnvReader", "JobConfig"]

GIB = 1024**3
#: A coarser "detail" than this is no detail (the overview is ceil(N/num_peaks) already).
MAX_DETAIL_SAMPLES_PER_PIXEL = 1 << 20
#: S3's largest object (5 TiB): no larger limit means anything.
S3_MAX_OBJECT_BYTES = 5 << 40
#: The longest duration limit that may be set (a week); 0 turns the limit off.
MAX_DURATION_LIMIT = 7 * 24 * 3600
#: The smallest detail bound a queue may set: a header and a few thousand points.
MIN_DETAIL_BYTES = 1 << 16


class ConfigError(ValueError):
    """A required variable is missing or a value cannot be used; names the variable."""


@dataclass(frozen=True)
class JobConfig:
    """The job's settings, read from the environment once per process."""

    #: ``S3_BUCKET_NAME`` (required): the bucket holding uploads and waveform JSON.
    bucket: str
    #: ``WEBHOOK_URL`` (required): the backend's webhook base; ``/hash-check`` and
    #: ``/completion`` are appended.
    webhook_url: str
    #: ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``): passed to boto3 as ``region_name``.
    region: str | None = None
    #: ``AWS_ENDPOINT_URL``: an S3-compatible endpoint (moto, MinIO, LocalStack); unset on AWS.
    endpoint_url: str | None = None
    #: ``WEBHOOK_SECRET``: when set, every webhook carries ``X-WaveFlow-Signature``.
    webhook_secret: str | None = None
    #: ``UPLOAD_PREFIXES``: comma-separated key prefixes the duplicate stage may delete under;
    #: empty means any key outside ``waveforms/``.
    upload_prefixes: tuple[str, ...] = ()
    #: ``LOG_LEVEL``: DEBUG, INFO (default), WARNING, ERROR.
    log_level: str = "INFO"
    #: ``WAVEFLOW_SUMMARY_FILE``: where the one-line JSON summary goes; unset means nowhere.
    summary_file: Path | None = None
    #: ``TMPDIR``: the only place the job writes scratch files (``/scratch`` in the image).
    scratch_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    #: ``WAVEFLOW_MAX_FILE_BYTES``: larger objects are rejected (FILE_TOO_LARGE). 2 GiB.
    max_file_bytes: int = 2 * GIB
    #: ``WAVEFLOW_MAX_DURATION_SECONDS``: longer audio is rejected (AUDIO_TOO_LONG). 4 hours;
    #: ``0`` disables the limit.
    max_duration_seconds: float | None = 4 * 3600.0
    #: ``WAVEFLOW_MAX_NUM_PEAKS``: the largest ``num_peaks`` a message may ask for. 65536.
    max_num_peaks: int = MAX_NUM_PEAKS
    #: ``WAVEFLOW_MIN_SAMPLE_RATE`` / ``WAVEFLOW_MAX_SAMPLE_RATE`` (4000 / 768000 Hz),
    #: ``WAVEFLOW_MAX_CHANNELS`` (64), ``WAVEFLOW_MAX_WAVEFORM_VALUES`` (2^20): what a file's
    #: headers may declare (AUDIO_SAMPLE_RATE_UNSUPPORTED, AUDIO_TOO_MANY_CHANNELS,
    #: WAVEFORM_TOO_LARGE); ``WAVEFLOW_MAX_DETAIL_BYTES`` (2^27): the detail waveform's size,
    #: beyond which it is coarsened or left out; the reasons for the defaults are in
    #: ``audio/limits.py``.
    audio_limits: AudioLimits = field(default_factory=AudioLimits)
    #: ``WAVEFLOW_DETAIL_SAMPLES_PER_PIXEL``: frames per point of the detail waveform (``.dat``)
    #: stored beside the JSON; 256 (audiowaveform's default); ``0`` stores none.
    detail_samples_per_pixel: int = 256
    #: ``WAVEFLOW_DETAIL_BITS``: 8 (what peaks.js reads) or 16.
    detail_bits: int = 8
    #: ``WAVEFLOW_LOUDNESS``: ``on`` (default) measures integrated loudness, loudness range and
    #: true peak in the analysis' decode pass; ``off`` leaves them out of the result and JSON
    #: (a queue whose stems never need them saves the meters' time).
    loudness: bool = True
    #: ``WAVEFLOW_WEBHOOK_TIMEOUT_SECONDS``: per-attempt read timeout of a webhook POST.
    webhook_timeout: float = 10.0
    #: ``WAVEFLOW_WEBHOOK_BUDGET_SECONDS``: total time for all attempts of one webhook.
    webhook_budget: float = 60.0
    #: ``WAVEFLOW_WEBHOOK_BACKOFF_SECONDS``: first retry's backoff ceiling (doubles, full jitter).
    webhook_backoff: float = 0.5
    #: ``WAVEFLOW_S3_CONNECT_TIMEOUT_SECONDS``: boto3 connect timeout.
    s3_connect_timeout: float = 5.0
    #: ``WAVEFLOW_S3_READ_TIMEOUT_SECONDS``: boto3 read timeout (per socket read).
    s3_read_timeout: float = 60.0
    #: ``WAVEFLOW_S3_MAX_ATTEMPTS``: boto3 "standard" retry mode's total attempts per call.
    s3_max_attempts: int = 5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> JobConfig:
        """Read and check every setting; raises :class:`ConfigError` naming the variable."""
        env = EnvReader(environ)
        max_duration = env.number(names.MAX_DURATION_SECONDS, 4 * 3600.0, minimum=0,
                                  maximum=MAX_DURATION_LIMIT)
        return cls(
            bucket=env.required(names.BUCKET),
            webhook_url=env.url(names.WEBHOOK_URL),
            region=env.text(names.REGION) or env.text(names.REGION_FALLBACK),
            endpoint_url=env.text(names.ENDPOINT_URL),
            webhook_secret=env.text(names.WEBHOOK_SECRET),
            upload_prefixes=_prefixes(env.text(names.UPLOAD_PREFIXES) or ""),
            log_level=(env.text(names.LOG_LEVEL) or "INFO").upper(),
            summary_file=Path(p) if (p := env.text(names.SUMMARY_FILE)) else None,
            scratch_dir=Path(env.text(names.SCRATCH_DIR) or tempfile.gettempdir()),
            max_file_bytes=int(env.number(names.MAX_FILE_BYTES, 2 * GIB, minimum=1,
                                          maximum=S3_MAX_OBJECT_BYTES, integer=True)),
            max_duration_seconds=max_duration or None,
            max_num_peaks=int(env.number(names.MAX_NUM_PEAKS, MAX_NUM_PEAKS, minimum=1,
                                         maximum=MAX_NUM_PEAKS, integer=True)),
            audio_limits=_audio_limits(env),
            detail_samples_per_pixel=env.integer(names.DETAIL_SAMPLES_PER_PIXEL, 256, minimum=0,
                                                 maximum=MAX_DETAIL_SAMPLES_PER_PIXEL),
            detail_bits=_detail_bits(env),
            loudness=env.switch(names.LOUDNESS, True),
            webhook_timeout=env.number(names.WEBHOOK_TIMEOUT_SECONDS, 10.0, minimum=0.1),
            webhook_budget=env.number(names.WEBHOOK_BUDGET_SECONDS, 60.0, minimum=0.1),
            webhook_backoff=env.number(names.WEBHOOK_BACKOFF_SECONDS, 0.5, minimum=0),
            s3_connect_timeout=env.number(names.S3_CONNECT_TIMEOUT_SECONDS, 5.0,
                                          minimum=0.1),
            s3_read_timeout=env.number(names.S3_READ_TIMEOUT_SECONDS, 60.0, minimum=0.1),
            s3_max_attempts=int(env.number(names.S3_MAX_ATTEMPTS, 5, minimum=1,
                                           integer=True)),
        )

    def may_delete(self, key: str) -> bool:
        """Whether ``key`` is somewhere the duplicate stage is allowed to delete (§6)."""
        if key.startswith(WAVEFORM_PREFIX):
            return False
        return not self.upload_prefixes or key.startswith(self.upload_prefixes)


def _audio_limits(env: EnvReader) -> AudioLimits:
    default = AudioLimits()
    low = env.integer(names.MIN_SAMPLE_RATE, default.min_sample_rate, minimum=1,
                      maximum=768_000)
    high = env.integer(names.MAX_SAMPLE_RATE, default.max_sample_rate, minimum=4000,
                       maximum=10_000_000)
    if low > high:
        raise ConfigError(f"{names.MIN_SAMPLE_RATE} ({low}) is above "
                          f"{names.MAX_SAMPLE_RATE} ({high})")
    return AudioLimits(
        min_sample_rate=low, max_sample_rate=high,
        max_channels=env.integer(names.MAX_CHANNELS, default.max_channels, minimum=1,
                                 maximum=4096),
        max_waveform_values=env.integer(names.MAX_WAVEFORM_VALUES,
                                        default.max_waveform_values, minimum=2,
                                        maximum=1 << 24),
        max_detail_bytes=env.integer(names.MAX_DETAIL_BYTES, default.max_detail_bytes,
                                     minimum=MIN_DETAIL_BYTES, maximum=1 << 32))


def _detail_bits(env: EnvReader) -> int:
    bits = env.integer(names.DETAIL_BITS, 8)
    if bits not in (8, 16):
        raise ConfigError(f"{names.DETAIL_BITS} must be 8 or 16, got {bits}")
    return bits


_SWITCH = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}


def _prefixes(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


class EnvReader:
    """Typed reads from a mapping, with errors that name the variable (the runner uses it too)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def required(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise ConfigError(f"{name} is required but not set")
        return value

    def url(self, name: str) -> str:
        value = self.required(name)
        if not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    def number(self, name: str, default: float, *, minimum: float | None = None,
               maximum: float | None = None, integer: bool = False) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(int(raw)) if integer else float(raw)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{name} must be finite, got {raw!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum:g}, got {raw!r}")
        return value

    def switch(self, name: str, default: bool) -> bool:
        """``on``/``off`` (also ``true``/``false``, ``1``/``0``, any case)."""
        raw = self.text(name)
        if raw is None:
            return default
        value = _SWITCH.get(raw.lower())
        if value is None:
            raise ConfigError(f"{name} must be on or off, got {raw!r}")
        return value

    def integer(self, name: str, default: int, *, minimum: int | None = None,
                maximum: int | None = None) -> int:
        return int(self.number(name, default, minimum=minimum, maximum=maximum, integer=True))
