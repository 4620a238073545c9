"""The runner's settings: ``QueueSettings`` (one queue, shared by both launchers and mirrored by
the ``WaveflowQueue`` spec) and ``RunnerConfig.from_env()`` for ``waveflow local``.

Nothing else in the runner reads ``os.environ``; the job's own variables are built from these
settings by :mod:`waveflow_operator.jobenv`.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from waveflow_job.config import ConfigError, EnvReader
from waveflow_job.contract import Task
from waveflow_job.contract import env as names

__all__ = ["DEFAULT_DEADLINES", "ConfigError", "QueueSettings", "RunnerConfig",
           "default_job_command"]

#: Per-task ``activeDeadlineSeconds`` (hashing needs little, analysis more).
DEFAULT_DEADLINES: Mapping[Task, float] = {Task.HASH: 600.0, Task.DUPLICATE: 300.0,
                                           Task.ANALYSIS: 3600.0}
#: SQS's hard cap on how long one receipt can stay invisible.
SQS_MAX_VISIBILITY_SECONDS = 43200


@dataclass(frozen=True)
class QueueSettings:
    """One SQS queue and how its jobs run. The CRD's spec maps onto this one to one."""

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
    max_in_flight: int = 10
    #: Messages per ReceiveMessage call at most (SQS allows 1..10).
    receive_batch_size: int = 10
    #: Long-poll wait per ReceiveMessage call (0..20 seconds).
    wait_time_seconds: int = 20
    #: How long a received message stays invisible; renewed by the heartbeat until settled.
    visibility_timeout_seconds: int = 300
    #: Retries of a failing job before it counts as failed (Kubernetes ``backoffLimit``).
    backoff_limit: int = 2
    #: Per-task deadline in seconds for the whole job, retries included.
    deadlines: Mapping[Task, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    #: The job's ``LOG_LEVEL``.
    log_level: str = "INFO"
    #: Extra environment for every job (job tuning such as ``WAVEFLOW_WEBHOOK_BUDGET_SECONDS``).
    job_env: Mapping[str, str] = field(default_factory=dict)
    #: Seconds between queue-depth polls (GetQueueAttributes) for the metrics.
    depth_poll_seconds: float = 15.0

    def __post_init__(self) -> None:
        for name in ("name", "queue_url", "bucket", "webhook_url"):
            if not getattr(self, name):
                raise ConfigError(f"QueueSettings.{name} is required")
        checks = [
            ("max_in_flight", 1, 1000), ("receive_batch_size", 1, 10),
            ("wait_time_seconds", 0, 20),
            ("visibility_timeout_seconds", 1, SQS_MAX_VISIBILITY_SECONDS),
            ("backoff_limit", 0, 100),
        ]
        for name, low, high in checks:
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"QueueSettings.{name} must be in {low}..{high}, got {value}")

    def deadline(self, task: Task) -> float:
        """The deadline for one task, falling back to the built-in default."""
        return float(self.deadlines.get(task, DEFAULT_DEADLINES[task]))


def default_job_command() -> tuple[str, ...]:
    """``waveflow-job run`` from this interpreter's environment (the venv's script)."""
    script = Path(sys.executable).parent / "waveflow-job"
    if script.exists():
        return (str(script), "run")
    return (sys.executable, "-m", "waveflow_job.cli", "run")


@dataclass(frozen=True)
class RunnerConfig:
    """Everything ``waveflow local`` needs: one queue plus the local runner's own knobs."""

    queue: QueueSettings
    #: ``WAVEFLOW_METRICS_PORT``: Prometheus metrics on this port; 0 turns them off.
    metrics_port: int = 9090
    #: ``WAVEFLOW_HEALTH_PORT``: liveness endpoint (``/healthz``) on this port; 0 turns it off.
    health_port: int = 8080
    #: ``WAVEFLOW_SCRATCH_ROOT``: where each job's scratch directory is created.
    scratch_root: Path = Path(tempfile.gettempdir()) / "waveflow-local"
    #: ``WAVEFLOW_JOB_COMMAND``: the job's command line (shell-quoted); default
    #: ``waveflow-job run``. Tests point it at a script that hangs or crashes.
    job_command: tuple[str, ...] = field(default_factory=default_job_command)
    #: ``WAVEFLOW_GRACE_SECONDS``: on SIGTERM, how long running jobs may finish before they
    #: are killed and their messages returned to the queue.
    grace_seconds: float = 25.0
    #: ``WAVEFLOW_RETRY_BACKOFF_SECONDS``: first retry delay of a failed job (doubles).
    retry_backoff_seconds: float = 1.0
    #: ``WAVEFLOW_KILL_GRACE_SECONDS``: SIGTERM → SIGKILL delay when a job is killed.
    kill_grace_seconds: float = 2.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RunnerConfig:
        """Read CONTRACT.md §4's variables, ``SQS_DLQ_URL`` and the ``WAVEFLOW_*`` settings."""
        env = EnvReader(environ)
        deadlines = {
            Task.HASH: env.number("WAVEFLOW_DEADLINE_HASH_SECONDS",
                                    DEFAULT_DEADLINES[Task.HASH], minimum=0),
            Task.DUPLICATE: env.number("WAVEFLOW_DEADLINE_DUPLICATE_SECONDS",
                                    DEFAULT_DEADLINES[Task.DUPLICATE], minimum=0),
            Task.ANALYSIS: env.number("WAVEFLOW_DEADLINE_ANALYSIS_SECONDS",
                                    DEFAULT_DEADLINES[Task.ANALYSIS], minimum=0),
        }
        queue_url = env.required("SQS_QUEUE_URL")
        queue = QueueSettings(
            # WAVEFLOW_QUEUE_NAME: label for metrics and logs (default: the queue's name).
            name=env.text("WAVEFLOW_QUEUE_NAME") or queue_url.rstrip("/").rsplit("/", 1)[-1],
            queue_url=queue_url,
            bucket=env.required("S3_BUCKET_NAME"),
            webhook_url=env.url("WEBHOOK_URL"),
            dlq_url=env.text("SQS_DLQ_URL"),
            region=env.text("AWS_REGION") or env.text("AWS_DEFAULT_REGION"),
            endpoint_url=env.text("AWS_ENDPOINT_URL"),
            upload_prefixes=tuple(p.strip() for p in (env.text("UPLOAD_PREFIXES") or "")
                                  .split(",") if p.strip()),
            webhook_secret=env.text("WEBHOOK_SECRET"),
            # WAVEFLOW_MAX_IN_FLIGHT: jobs running at once at most.
            max_in_flight=env.integer("WAVEFLOW_MAX_IN_FLIGHT", 4),
            # WAVEFLOW_RECEIVE_BATCH_SIZE: messages per ReceiveMessage call (1..10).
            receive_batch_size=env.integer("WAVEFLOW_RECEIVE_BATCH_SIZE", 10),
            # WAVEFLOW_WAIT_TIME_SECONDS: SQS long-poll wait (0..20).
            wait_time_seconds=env.integer("WAVEFLOW_WAIT_TIME_SECONDS", 20),
            # WAVEFLOW_VISIBILITY_TIMEOUT_SECONDS: renewed by the heartbeat while a job runs.
            visibility_timeout_seconds=env.integer("WAVEFLOW_VISIBILITY_TIMEOUT_SECONDS", 300),
            # WAVEFLOW_BACKOFF_LIMIT: retries of a failing job.
            backoff_limit=env.integer("WAVEFLOW_BACKOFF_LIMIT", 2),
            # WAVEFLOW_DEADLINE_{HASH,DUPLICATE,ANALYSIS}_SECONDS: per-task deadlines.
            deadlines=deadlines,
            log_level=(env.text("LOG_LEVEL") or "INFO").upper(),
            # WAVEFLOW_DEPTH_POLL_SECONDS: how often queue depth is read for the metrics.
            depth_poll_seconds=env.number("WAVEFLOW_DEPTH_POLL_SECONDS", 15.0, minimum=0),
            # Job tuning passed through to every job unchanged.
            job_env={k: v for k, v in environ.items() if k in _JOB_PASSTHROUGH},
        )
        command = env.text("WAVEFLOW_JOB_COMMAND")
        return cls(
            queue=queue,
            metrics_port=env.integer("WAVEFLOW_METRICS_PORT", 9090),
            health_port=env.integer("WAVEFLOW_HEALTH_PORT", 8080),
            scratch_root=Path(env.text("WAVEFLOW_SCRATCH_ROOT")
                              or Path(tempfile.gettempdir()) / "waveflow-local"),
            job_command=tuple(shlex.split(command)) if command else default_job_command(),
            grace_seconds=env.number("WAVEFLOW_GRACE_SECONDS", 25.0, minimum=0),
            retry_backoff_seconds=env.number("WAVEFLOW_RETRY_BACKOFF_SECONDS", 1.0, minimum=0),
            kill_grace_seconds=env.number("WAVEFLOW_KILL_GRACE_SECONDS", 2.0, minimum=0),
        )


#: The job's own tuning variables (waveflow_job.config) that ``waveflow local`` passes through.
_JOB_PASSTHROUGH = names.JOB_TUNING
