"""Running ``waveflow-job`` in tests: in-process through ``cli.main`` or as the real command.

:class:`JobWorld` bundles what one job sees — the moto bucket, the webhook recorder, a fresh
scratch directory ($TMPDIR) and a summary file — with helpers to put objects, build messages
in each envelope (the contract's builders) and read back what the job left behind.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from support.aws import MotoEndpoint
from support.webhooks import WebhookRecorder
from waveflow_job.contract import (
    Task,
    flat_envelope,
    json_envelope,
    kombu_envelope,
    message_id_for,
)
from waveflow_job.originals import DELETED_PREFIX, SOURCES_PREFIX

HASH_ID = "hash-stem789-1732600000000"
TIMESTAMP = "2026-11-26T08:36:48.817Z"
KWARGS = {"userId": "user123", "trackId": "track-456", "stemId": "stem-789"}
_RECORD_PREFIXES = (SOURCES_PREFIX, DELETED_PREFIX)
#: The epoch milliseconds in every test message's id.
MILLIS = 1732600000000


def waveflow_job_command() -> str:
    """The installed console script next to this interpreter."""
    command = Path(sys.executable).with_name("waveflow-job")
    found = str(command) if command.exists() else shutil.which("waveflow-job")
    assert found, "the waveflow-job console script is not installed"
    return found


def wav_bytes(seconds: float = 0.5, sample_rate: int = 8000, channels: int = 1,
              subtype: str = "PCM_16", amplitude: float = 0.5) -> bytes:
    """A sine sweep as WAV bytes, generated on the spot."""
    frames = int(seconds * sample_rate)
    t = np.arange(frames) / sample_rate
    mono = amplitude * np.sin(2 * np.pi * (220 + 200 * t) * t)
    data = np.repeat(mono[:, None], channels, axis=1) if channels > 1 else mono
    buffer = io.BytesIO()
    soundfile.write(buffer, data, sample_rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def json_message(task: str, **kwargs: Any) -> str:
    """The backend's JSON envelope, ``id`` like ``analysis-stem-789-1732600000000``."""
    return json_envelope(Task(task), kwargs,
                         message_id=message_id_for(Task(task), str(kwargs.get("stemId")), MILLIS))


def flat_message(task: str, **kwargs: Any) -> str:
    """The kwargs beside ``task``; no id."""
    return flat_envelope(Task(task), kwargs)


def kombu_message(task: str, message_id: str = "celery-1", **kwargs: Any) -> str:
    """Celery protocol 2 as kombu's SQS transport writes it (base64 twice)."""
    return kombu_envelope(Task(task), kwargs, message_id=message_id)


@dataclass
class JobWorld:
    """One job's surroundings: bucket, backend, scratch dir and summary file."""

    aws: MotoEndpoint
    bucket: str
    webhooks: WebhookRecorder
    scratch: Path
    summary_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def s3(self) -> Any:
        return self.aws.client("s3")

    def put(self, key: str, data: bytes, tags: dict[str, str] | None = None) -> None:
        extra = {"Tagging": "&".join(f"{k}={v}" for k, v in tags.items())} if tags else {}
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)

    def object_keys(self) -> list[str]:
        """Every key in the bucket except WaveFlow's bookkeeping records (see :meth:`records`)."""
        return [k for k in self._all_keys() if not k.startswith(_RECORD_PREFIXES)]

    def records(self) -> list[str]:
        """WaveFlow's source records and tombstones (waveflow_job.originals)."""
        return [k for k in self._all_keys() if k.startswith(_RECORD_PREFIXES)]

    def _all_keys(self) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def tags(self, key: str) -> dict[str, str]:
        tag_set = self.s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
        return {tag["Key"]: tag["Value"] for tag in tag_set}

    def summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path.read_text(encoding="utf-8"))

    def scratch_entries(self) -> list[str]:
        return sorted(os.listdir(self.scratch))

    def run(self, message: str) -> int:
        """``waveflow-job run --message ...`` in this process (env set by the fixture)."""
        from waveflow_job import cli

        return cli.main(["run", "--message", message])

    def run_process(self, *args: str, extra_env: dict[str, str] | None = None,
                    stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The real console script as a child process, with only this world's environment."""
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.scratch.parent),
               **self.env, **(extra_env or {})}
        return subprocess.run([waveflow_job_command(), *args], env=env, input=stdin,
                              capture_output=True, text=True, timeout=120, check=False)


def make_world(aws: MotoEndpoint, bucket: str, webhooks: WebhookRecorder, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> JobWorld:
    """Configure this process (and children) like a Job: quick retries, fresh scratch dir."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    summary = tmp_path / "summary.json"
    env = {
        **aws.env(),
        "S3_BUCKET_NAME": bucket,
        "WEBHOOK_URL": webhooks.url,
        "TMPDIR": str(scratch),
        "WAVEFLOW_SUMMARY_FILE": str(summary),
        "WAVEFLOW_WEBHOOK_BACKOFF_SECONDS": "0.01",
        "WAVEFLOW_WEBHOOK_BUDGET_SECONDS": "3",
        "WAVEFLOW_S3_MAX_ATTEMPTS": "2",
        "LOG_LEVEL": "INFO",
    }
    restore_logging_after_test(monkeypatch)
    for name in ("WEBHOOK_SECRET", "UPLOAD_PREFIXES", "WAVEFLOW_MESSAGE",
                 "WAVEFLOW_MAX_FILE_BYTES", "WAVEFLOW_MAX_DURATION_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return JobWorld(aws, bucket, webhooks, scratch, summary, env)


def restore_logging_after_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cli.main`` configures logging for the process; undo that when the test ends."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    for name in ("botocore", "boto3", "urllib3", "s3transfer"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)
