"""Runner-side helpers: queue settings for tests and a scripted launcher for dispatcher tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.aws import BUCKET, REGION, MotoEndpoint
from support.queues import Queues
from waveflow_dev.backend import DevBackend
from waveflow_job.contract import Outcome
from waveflow_operator.runner.protocol import (
    Adopted,
    Created,
    JobRequest,
    JobResult,
    Recovered,
    ResultCallback,
)
from waveflow_operator.runner.spec import QueueSpec

__all__ = ["SECRET", "ScriptedLauncher", "Stack", "queue_settings"]

def queue_settings(queues: Queues, webhook_url: str, **overrides: Any) -> QueueSpec:
    """Settings for tests: short long-polls and timeouts so nothing waits long."""
    values: dict[str, Any] = {
        "name": "test", "queue_url": queues.url, "bucket": BUCKET, "webhook_url": webhook_url,
        "region": REGION, "endpoint_url": queues.endpoint.url, "wait_time_seconds": 1,
        "visibility_timeout_seconds": 30, "max_in_flight": 4, "backoff_limit": 0,
        "depth_poll_seconds": 1.0,
        "job_env": {"WAVEFLOW_WEBHOOK_BUDGET_SECONDS": "5", "WAVEFLOW_WEBHOOK_BACKOFF_SECONDS":
                    "0.05", "WAVEFLOW_S3_MAX_ATTEMPTS": "2"},
    }
    values.update(overrides)
    return QueueSpec(**values)


class ScriptedLauncher:
    """A launcher whose jobs finish when the test says so (for the dispatcher's own rules).

    ``earlier`` is what a previous run left: job name → its result, or None while it runs."""

    def __init__(self, earlier: Mapping[str, JobResult | None] | None = None) -> None:
        self.launched: list[JobRequest] = []
        self.adopted: list[JobRequest] = []
        self.jobs: dict[str, JobRequest] = {}
        self.finished: set[str] = set()
        self.earlier = dict(earlier or {})
        self.on_result: ResultCallback | None = None
        #: What the settler noted (note_settling), until it forgot it.
        self.notes: dict[str, JobResult] = {}

    async def start(self, on_result: ResultCallback) -> None:
        self.on_result = on_result

    async def recover(self) -> Recovered:
        return Recovered(frozenset(k for k, v in self.earlier.items() if v is None),
                         {k: v for k, v in self.earlier.items() if v is not None})

    async def launch(self, request: JobRequest) -> Created | Adopted:
        if request.job_name in self.jobs or request.job_name in self.earlier:
            self.adopted.append(request)
            self.jobs.setdefault(request.job_name, request)
            return Adopted(self.earlier.get(request.job_name))
        self.jobs[request.job_name] = request
        self.launched.append(request)
        return Created()

    async def drain(self, grace_seconds: float) -> list[str]:
        return [name for name in self.jobs if name not in self.finished]

    async def hurry(self) -> None:
        """Nothing runs for real."""

    async def note_settling(self, result: JobResult) -> None:
        self.notes[result.job_name] = result

    async def forget(self, job_name: str) -> None:
        self.notes.pop(job_name, None)

    async def finish(self, job_name: str, outcome: Outcome, code: str | None = None,
                     message: str | None = None) -> None:
        assert self.on_result is not None
        self.finished.add(job_name)
        await self.on_result(JobResult(job_name, outcome, code, message))


#: Every runner test signs its webhooks; the reference backend refuses unsigned ones.
SECRET = "runner-test-secret"


@dataclass(frozen=True)
class Stack:
    """Everything a runner talks to: SQS queues, the bucket, the backend; and its scratch."""

    aws: MotoEndpoint
    queues: Queues
    bucket: str
    backend: DevBackend
    scratch: Path

    def settings(self, **overrides: Any) -> QueueSpec:
        """Test queue settings pointed at this stack (signed webhooks)."""
        return queue_settings(self.queues, self.backend.webhook_url,
                              **{"webhook_secret": SECRET, **overrides})

    def leftovers(self) -> list[str]:
        """Scratch entries still present (must be none once jobs have ended)."""
        return sorted(p.name for p in self.scratch.iterdir()) if self.scratch.exists() else []
