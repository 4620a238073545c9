"""``waveflow local``'s settings: ``RunnerConfig.from_env()``, the one place the local runner
reads ``os.environ``.

The queue's numbers (defaults, ranges, variable names) come from the one table in
:mod:`waveflow_operator.runner.spec`; the job's own variables are built from the resulting
:class:`QueueSpec` by :mod:`waveflow_operator.runner.jobenv`.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from waveflow_job.config import EnvReader
from waveflow_job.contract import env as names
from waveflow_operator.runner.spec import (
    TUNABLES,
    ConfigError,
    QueueSpec,
    Tunable,
    tunable_fields,
)

__all__ = ["ConfigError", "RunnerConfig", "default_job_command", "local_environment_help"]


def default_job_command() -> tuple[str, ...]:
    """``waveflow-job run`` from this interpreter's environment (the venv's script)."""
    script = Path(sys.executable).parent / "waveflow-job"
    if script.exists():
        return (str(script), "run")
    return (sys.executable, "-m", "waveflow_job.cli", "run")


@dataclass(frozen=True)
class RunnerConfig:
    """Everything ``waveflow local`` needs: one queue plus the local runner's own knobs."""

    queue: QueueSpec
    #: ``WAVEFLOW_LISTEN_ADDRESS``: where metrics and liveness listen. Loopback by default: on a
    #: developer's laptop nothing should be reachable from the network; ``0.0.0.0`` in a
    #: container whose probes and scrapers come from outside.
    listen_address: str = "127.0.0.1"
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

        def tunable(item: Tunable) -> float:
            if item.switch:
                return float(env.switch(item.env, bool(item.default)))
            value = env.number(item.env, item.default, integer=not item.is_deadline)
            item.check(value)
            return value

        numbers = {item.attribute: tunable(item) for item in TUNABLES}
        queue_url = env.required("SQS_QUEUE_URL")
        queue = QueueSpec(
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
            **tunable_fields(numbers),
            log_level=(env.text("LOG_LEVEL") or "INFO").upper(),
            # WAVEFLOW_DEPTH_POLL_SECONDS: how often queue depth is read for the metrics.
            depth_poll_seconds=env.number("WAVEFLOW_DEPTH_POLL_SECONDS", 15.0, minimum=0),
            # Job tuning passed through to every job unchanged.
            job_env={k: v for k, v in environ.items() if k in _JOB_PASSTHROUGH},
        )
        command = env.text("WAVEFLOW_JOB_COMMAND")
        return cls(
            queue=queue,
            listen_address=env.text("WAVEFLOW_LISTEN_ADDRESS") or "127.0.0.1",
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


def local_environment_help() -> str:
    """The ``waveflow local --help`` lines of the queue's numbers, from the one table."""
    rows = [f"  {t.env}={t.render(t.default):<8} {t.allowed}" for t in TUNABLES]
    return "\n".join(rows)

