"""``QueueSpec``: one queue's settings, the ONE typed value the dispatcher and both launchers get.

Every tunable number has one row in :data:`TUNABLES`: its default, its range, where it lives in
the ``WaveflowQueue`` spec (the CRD) and which variable sets it for ``waveflow local``. The CRD,
the chart's ``values.yaml``/``values.schema.json`` and ``waveflow local``'s defaults are checked
against this table (tests/runner/test_spec_table.py), so they cannot drift apart again.

Rows marked ``job`` are settings of the job itself (its ``WAVEFLOW_*`` variables, read by
``waveflow_job.config``): :mod:`waveflow_operator.runner.jobenv` passes each one's value to every
job, and the test checks the job accepts exactly the same range. A ``switch`` row is on/off (a
boolean in the CRD, ``on``/``off`` in the environment) rather than a number.

One column is deliberately different: ``runner_minimum``. The CRD refuses a visibility timeout
under 30 s (shorter ones cost ChangeMessageVisibility calls and buy nothing in production), but
the runner itself accepts down to 1 s so ``waveflow local`` on a laptop and the tests can use a
few seconds. Where ``runner_minimum`` is None it equals ``minimum``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from waveflow_job.config import ConfigError
from waveflow_job.contract import Task
from waveflow_job.contract import env as names

__all__ = [
    "SQS_MAX_VISIBILITY_SECONDS",
    "TASK_KEYS",
    "TUNABLES",
    "ConfigError",
    "QueueSpec",
    "Tunable",
    "deadline_tunable",
    "default_deadlines",
    "job_limit",
]

#: SQS's hard cap on how long one receipt can stay invisible.
SQS_MAX_VISIBILITY_SECONDS = 43200


@dataclass(frozen=True)
class TaskKey:
    """The names one task goes by outside the contract (the one task-name map)."""

    #: ``spec.job.activeDeadlineSeconds.<key>``, ``spec.job.resources.<key>``,
    #: ``WAVEFLOW_DEADLINE_<KEY>_SECONDS``.
    key: str
    #: Job names are ``wf-<prefix>-<hash>``; "dup" is kept so Jobs made by earlier releases
    #: are still found (and adopted) under the same name.
    job_prefix: str


TASK_KEYS: Mapping[Task, TaskKey] = {
    Task.HASH: TaskKey("hash", "hash"),
    Task.DUPLICATE: TaskKey("duplicate", "dup"),
    Task.ANALYSIS: TaskKey("analysis", "analysis"),
}


@dataclass(frozen=True)
class Tunable:
    """One number of a queue's settings: default, range and its names in every source."""

    #: The :class:`QueueSpec` attribute (for a deadline: ``deadline.<task key>``).
    attribute: str
    #: Dotted path in the WaveflowQueue spec (and under ``queue.`` in values.yaml).
    crd_path: str
    #: The ``waveflow local`` variable.
    env: str
    default: int
    minimum: int
    #: None: unbounded.
    maximum: int | None
    #: What the runner itself accepts, when it allows less than the CRD (see module docstring).
    runner_minimum: int | None = None
    #: A setting of the job: its ``env`` is the job's variable and every job gets the value.
    job: bool = False
    #: On/off rather than a number (``default`` is True or False; range 0..1).
    switch: bool = False
    #: The only values allowed inside the range (None: every integer in it).
    choices: tuple[int, ...] | None = None

    @property
    def is_deadline(self) -> bool:
        return self.attribute.startswith("deadline.")

    @property
    def floor(self) -> int:
        return self.minimum if self.runner_minimum is None else self.runner_minimum

    def render(self, value: float) -> str:
        """The value as its environment variable holds it (``on``/``off`` for a switch)."""
        if self.switch:
            return "on" if value else "off"
        return str(int(value))

    def typed(self, value: float) -> int | bool:
        return bool(value) if self.switch else int(value)

    def check(self, value: float) -> None:
        if self.switch and value not in (0, 1):
            raise ConfigError(f"{self.attribute} ({self.env} / spec.{self.crd_path}) must be "
                              f"on or off (true or false), got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.attribute} ({self.env} / spec.{self.crd_path}) must be "
                              f"one of {self.allowed}, got {value:g}")
        if value < self.floor or (self.maximum is not None and value > self.maximum):
            raise ConfigError(f"{self.attribute} ({self.env} / spec.{self.crd_path}) must be "
                              f"in {self.allowed}, got {value:g}")

    @property
    def allowed(self) -> str:
        """What the value may be, as the help and the errors say it."""
        if self.switch:
            return "on|off"
        if self.choices is not None:
            return "|".join(str(c) for c in self.choices)
        return f"{self.floor}..{'' if self.maximum is None else self.maximum}"


def job_limit(attribute: str, crd_name: str, env: str, default: int, minimum: int,
              maximum: int) -> Tunable:
    """A bound of the job (``waveflow_job.audio.limits``, ``waveflow_job.config``)."""
    return Tunable(attribute, f"job.limits.{crd_name}", env, default, minimum, maximum, job=True)


def deadline_tunable(task: Task, default: int) -> Tunable:
    key = TASK_KEYS[task].key
    return Tunable(f"deadline.{key}", f"job.activeDeadlineSeconds.{key}",
                   f"WAVEFLOW_DEADLINE_{key.upper()}_SECONDS", default, 1, None)


#: The ONE table of defaults and ranges.
TUNABLES: tuple[Tunable, ...] = (
    Tunable("max_in_flight", "maxInFlight", "WAVEFLOW_MAX_IN_FLIGHT", 10, 1, 1000),
    Tunable("receive_batch_size", "receiveBatchSize", "WAVEFLOW_RECEIVE_BATCH_SIZE", 10, 1, 10),
    Tunable("wait_time_seconds", "waitTimeSeconds", "WAVEFLOW_WAIT_TIME_SECONDS", 20, 0, 20),
    Tunable("visibility_timeout_seconds", "visibilityTimeoutSeconds",
            "WAVEFLOW_VISIBILITY_TIMEOUT_SECONDS", 300, 30, SQS_MAX_VISIBILITY_SECONDS,
            runner_minimum=1),
    Tunable("backoff_limit", "job.backoffLimit", "WAVEFLOW_BACKOFF_LIMIT", 2, 0, 20),
    # Frames per point of the detail waveform each analysis stores beside its JSON; 0: none.
    Tunable("detail_samples_per_pixel", "job.detailSamplesPerPixel",
            names.DETAIL_SAMPLES_PER_PIXEL, 256, 0, 1 << 20, job=True),
    # Bits per value of the detail waveform: 8 (what peaks.js and `audiowaveform -b 8` use) or 16.
    Tunable("detail_bits", "job.detailBits", names.DETAIL_BITS, 8, 8, 16, job=True,
            choices=(8, 16)),
    # Integrated loudness, loudness range and true peak in each analysis: on or off.
    Tunable("loudness", "job.loudness", names.LOUDNESS, True, 0, 1, job=True, switch=True),
    # The job's bounds on what it accepts (reasons for the defaults: audio/limits.py, config.py).
    job_limit("min_sample_rate", "minSampleRate", names.MIN_SAMPLE_RATE, 4000, 1, 768_000),
    job_limit("max_sample_rate", "maxSampleRate", names.MAX_SAMPLE_RATE, 768_000, 4000,
              10_000_000),
    job_limit("max_channels", "maxChannels", names.MAX_CHANNELS, 64, 1, 4096),
    job_limit("max_waveform_values", "maxWaveformValues", names.MAX_WAVEFORM_VALUES, 1 << 20,
              2, 1 << 24),
    job_limit("max_detail_bytes", "maxDetailBytes", names.MAX_DETAIL_BYTES, 1 << 27, 1 << 16,
              1 << 32),
    job_limit("max_duration_seconds", "maxDurationSeconds", names.MAX_DURATION_SECONDS,
              4 * 3600, 0, 7 * 24 * 3600),
    job_limit("max_file_bytes", "maxFileBytes", names.MAX_FILE_BYTES, 2 << 30, 1, 5 << 40),
    job_limit("max_num_peaks", "maxNumPeaks", names.MAX_NUM_PEAKS, 65536, 1, 65536),
    deadline_tunable(Task.HASH, 600),
    deadline_tunable(Task.DUPLICATE, 300),
    deadline_tunable(Task.ANALYSIS, 3600),
)
_BY_ATTRIBUTE = {t.attribute: t for t in TUNABLES}


def default_deadlines() -> dict[Task, float]:
    """Per-task ``activeDeadlineSeconds`` from the table (hashing needs little, analysis more)."""
    return {task: float(_BY_ATTRIBUTE[f"deadline.{k.key}"].default)
            for task, k in TASK_KEYS.items()}


def tunable_fields(values: Mapping[str, float]) -> dict[str, Any]:
    """:class:`QueueSpec` keyword arguments from ``{Tunable.attribute: value}`` (every row)."""
    fields: dict[str, Any] = {t.attribute: t.typed(values[t.attribute]) for t in TUNABLES
                              if not t.is_deadline}
    fields["deadlines"] = {task: float(values[f"deadline.{key.key}"])
                           for task, key in TASK_KEYS.items()}
    return fields


def _default(attribute: str) -> int:
    return _BY_ATTRIBUTE[attribute].default


@dataclass(frozen=True)
class QueueSpec:
    """One SQS queue and how its jobs run; built once from the CRD spec or the environment."""

    #: A short name for logs, metrics labels and job labels (the WaveflowQueue's name).
    name: str
    #: The SQS queue the backend sends to.
    queue_url: str
    #: The S3 bucket holding uploads and waveform JSON.
    bucket: str
    #: The backend's webhook base URL (``/hash-check`` and ``/completion`` are appended).
    webhook_url: str
    #: The dead-letter queue; None means "the queue's RedrivePolicy target".
    dlq_url: str | None = None
    #: AWS region for SQS, S3 and the job.
    region: str | None = None
    #: An AWS-compatible endpoint (moto, LocalStack); None on real AWS.
    endpoint_url: str | None = None
    #: Key prefixes the duplicate stage may delete under; empty means any key outside waveforms/.
    upload_prefixes: tuple[str, ...] = ()
    #: Signs every webhook (``X-WaveFlow-Signature``) when set.
    webhook_secret: str | None = None
    #: Jobs in flight at most; the rest waits in SQS.
    max_in_flight: int = _default("max_in_flight")
    #: Messages per ReceiveMessage call at most (SQS allows 1..10).
    receive_batch_size: int = _default("receive_batch_size")
    #: Long-poll wait per ReceiveMessage call (0..20 seconds).
    wait_time_seconds: int = _default("wait_time_seconds")
    #: How long a received message stays invisible; renewed by the heartbeat until settled.
    visibility_timeout_seconds: int = _default("visibility_timeout_seconds")
    #: Retries of a failing job before it counts as failed (Kubernetes ``backoffLimit``).
    backoff_limit: int = _default("backoff_limit")
    #: Frames per point of the job's detail waveform (``.dat``); 0 stores none.
    detail_samples_per_pixel: int = _default("detail_samples_per_pixel")
    #: Bits per value of the detail waveform (``WAVEFLOW_DETAIL_BITS``): 8 or 16.
    detail_bits: int = _default("detail_bits")
    #: Whether the analysis measures loudness (``WAVEFLOW_LOUDNESS``).
    loudness: bool = bool(_default("loudness"))
    #: The job's bounds (``WAVEFLOW_MIN_SAMPLE_RATE`` …), passed to every job.
    min_sample_rate: int = _default("min_sample_rate")
    max_sample_rate: int = _default("max_sample_rate")
    max_channels: int = _default("max_channels")
    max_waveform_values: int = _default("max_waveform_values")
    max_detail_bytes: int = _default("max_detail_bytes")
    #: 0: no limit.
    max_duration_seconds: int = _default("max_duration_seconds")
    max_file_bytes: int = _default("max_file_bytes")
    max_num_peaks: int = _default("max_num_peaks")
    #: Per-task deadline in seconds for the whole job, retries included.
    deadlines: Mapping[Task, float] = field(default_factory=default_deadlines)
    #: The job's ``LOG_LEVEL``.
    log_level: str = "INFO"
    #: Extra environment for every job (job tuning such as ``WAVEFLOW_WEBHOOK_BUDGET_SECONDS``).
    job_env: Mapping[str, str] = field(default_factory=dict)
    #: Seconds between queue-depth polls (GetQueueAttributes) for the metrics.
    depth_poll_seconds: float = 15.0

    def __post_init__(self) -> None:
        for name in ("name", "queue_url", "bucket", "webhook_url"):
            if not getattr(self, name):
                raise ConfigError(f"QueueSpec.{name} is required")
        for tunable in TUNABLES:
            if not tunable.is_deadline:
                tunable.check(getattr(self, tunable.attribute))
        if self.min_sample_rate > self.max_sample_rate:
            raise ConfigError(f"min_sample_rate ({self.min_sample_rate}) is above "
                              f"max_sample_rate ({self.max_sample_rate})")

    def deadline(self, task: Task) -> float:
        """The deadline for one task, falling back to the table's default."""
        return float(self.deadlines.get(task, default_deadlines()[task]))
