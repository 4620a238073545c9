"""The reliability rig: ``waveflow local`` as a real process between fault proxies, and the
invariants every fault and load test checks afterwards.

    backend (DevBackend) ──SQS──▶ moto ◀── aws proxy ◀── waveflow local ─▶ recording jobs
          ▲                                     ▲                              │
          └───────── webhook proxy ◀────────────┴──────────────────────────────┘

The runner and its jobs reach S3/SQS through one :class:`~support.faultproxy.FaultProxy` and
the backend through another; the test reads the truth from behind them (moto, the backend's
records, the DLQ, the proxy's SQS ledger, the jobs' own start/end records).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from support.aws import BUCKET, REGION, MotoEndpoint
from support.faultproxy import FaultProxy, body_id, running_fault_proxy
from support.jobmonitor import JobMonitor
from support.queues import Queues, make_queues
from support.secretscan import scan
from waveflow_dev.backend import DevBackend

RECORDING_JOB = Path(__file__).resolve().with_name("recordingjob.py")
WAVEFLOW = Path(sys.executable).parent / "waveflow"
#: The webhook secret of every rig (the secrets scan looks for it in the logs).
RIG_SECRET = "rig-webhook-secret-5d41402abc4b2a76"


@dataclass
class Verdict:
    """What the invariants found; ``problems`` must be empty."""

    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    peak_jobs: int = 0
    peak_rss: int = 0

    def figures(self) -> dict[str, Any]:
        return {"messages": self.sent, "outcomes": dict(self.outcomes),
                "lost": len(self.lost), "duplicated": len(self.duplicated),
                "peak_concurrent_jobs": self.peak_jobs,
                "peak_runner_rss_mib": round(self.peak_rss / 2**20, 1)}


@dataclass
class Rig:
    """One test's world. Use :func:`running_rig`."""

    aws: MotoEndpoint
    queues: Queues
    backend: DevBackend
    aws_proxy: FaultProxy
    hooks: FaultProxy
    root: Path
    max_in_flight: int = 2
    env: dict[str, str] = field(default_factory=dict)
    runner: subprocess.Popen[bytes] | None = None
    runs: int = 0
    direct: list[str] = field(default_factory=list)
    monitor: JobMonitor | None = None
    dead_letters: list[dict[str, Any]] | None = None

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    @property
    def gates(self) -> Path:
        return self.root / "gates"

    @property
    def jobs_log(self) -> Path:
        return self.root / "jobs.jsonl"

    def log_path(self, run: int) -> Path:
        return self.root / f"runner-{run}.log"

    def logs(self) -> str:
        """Every runner's stderr so far (its own logs and, at DEBUG, its jobs')."""
        return "\n".join(self.log_path(r).read_text(errors="replace")
                         for r in range(1, self.runs + 1) if self.log_path(r).exists())

    # ------------------------------------------------------------------ the runner

    def start_runner(self, **overrides: str) -> subprocess.Popen[bytes]:
        assert self.runner is None or self.runner.poll() is not None, "a runner is running"
        self.runs += 1
        environment = {
            **os.environ, **self.aws.env(),
            "AWS_ENDPOINT_URL": self.aws_proxy.url,
            "SQS_QUEUE_URL": self.queues.url, "S3_BUCKET_NAME": BUCKET,
            "WEBHOOK_URL": f"{self.hooks.url}/webhook", "WEBHOOK_SECRET": RIG_SECRET,
            "WAVEFLOW_JOB_COMMAND": f"{sys.executable} {RECORDING_JOB} run",
            "WAVEFLOW_SCRATCH_ROOT": str(self.scratch),
            "WAVEFLOW_MAX_IN_FLIGHT": str(self.max_in_flight),
            "WAVEFLOW_WAIT_TIME_SECONDS": "1", "WAVEFLOW_VISIBILITY_TIMEOUT_SECONDS": "4",
            "WAVEFLOW_BACKOFF_LIMIT": "1", "WAVEFLOW_RETRY_BACKOFF_SECONDS": "0.2",
            "WAVEFLOW_METRICS_PORT": "0", "WAVEFLOW_HEALTH_PORT": "0",
            "WAVEFLOW_KILL_GRACE_SECONDS": "0.5", "WAVEFLOW_GRACE_SECONDS": "20",
            "WAVEFLOW_DEPTH_POLL_SECONDS": "5",
            "WAVEFLOW_WEBHOOK_TIMEOUT_SECONDS": "1", "WAVEFLOW_WEBHOOK_BUDGET_SECONDS": "4",
            "WAVEFLOW_WEBHOOK_BACKOFF_SECONDS": "0.1", "WAVEFLOW_S3_MAX_ATTEMPTS": "3",
            "WAVEFLOW_S3_READ_TIMEOUT_SECONDS": "2", "WAVEFLOW_S3_CONNECT_TIMEOUT_SECONDS": "2",
            "RECORDING_JOB_LOG": str(self.jobs_log), "RECORDING_JOB_GATE": str(self.gates),
            "RECORDING_JOB_HOLD_AFTER": str(self.gates), "LOG_LEVEL": "INFO",
            **self.env, **overrides,
        }
        with self.log_path(self.runs).open("wb") as log:
            self.runner = subprocess.Popen([str(WAVEFLOW), "local"], env=environment,
                                           stdout=log, stderr=subprocess.STDOUT)
        if self.monitor is not None:
            self.monitor.runner_pid = self.runner.pid
        return self.runner

    def kill_runner(self) -> None:
        """SIGKILL: no clean-up, no goodbye (what an OOM kill or a node loss does)."""
        assert self.runner is not None
        self.runner.send_signal(signal.SIGKILL)
        self.runner.wait(10)

    def stop_runner(self, timeout: float = 60) -> None:
        """SIGTERM and wait for a clean exit (code 0)."""
        if self.runner is None or self.runner.poll() is not None:
            return
        self.runner.send_signal(signal.SIGTERM)
        code = self.runner.wait(timeout)
        assert code == 0, self.log_path(self.runs).read_text()[-3000:]

    # ------------------------------------------------------------------ the platform

    def upload(self, key: str, data: bytes | None, stem: str, *, user: str = "user-1",
               track: str = "track-1") -> None:
        """PUT the object (unless None: a re-sent upload) and tell the backend."""
        if data is not None:
            self.aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=data)
        answer = requests.post(f"{self.backend.url}/upload-complete", timeout=10, json={
            "userId": user, "trackId": track, "stemId": stem, "filepath": key})
        assert answer.status_code == 201, answer.text

    def send(self, body: dict[str, Any] | str) -> None:
        """A message straight onto the queue (a poison message, say)."""
        text = body if isinstance(body, str) else json.dumps(body)
        self.queues.send(text)
        self.direct.append(body_id(text))

    def hold_job(self, message_id: str) -> Path:
        """Make the job of the message with body id ``message_id`` wait before working."""
        (self.gates / f"{message_id}.wait").touch()
        return self.gates / f"{message_id}.go"

    def hold_after_job(self, message_id: str) -> Path:
        """Keep that job's process alive after it finished, until the marker is removed."""
        marker = self.gates / f"{message_id}.hold"
        marker.touch()
        return marker

    def next_id(self, prefix: str, stem: str) -> str:
        """The body id the backend's next message for ``stem`` will have (found once sent)."""
        found = [m["id"] for m in self.backend.sent
                 if m["id"].startswith(f"{prefix}-{stem}-")]
        return found[-1] if found else ""

    def keys(self) -> set[str]:
        listing = self.aws.client("s3").list_objects_v2(Bucket=BUCKET)
        return {o["Key"] for o in listing.get("Contents", [])}

    # ------------------------------------------------------------------ waiting

    def settled(self) -> bool:
        """Nothing visible or in flight, no job alive, every sent message deleted once."""
        if self.queues.counts() != (0, 0):
            return False
        if self.monitor is not None and self.monitor.live():
            return False
        ledger = self.aws_proxy.ledger
        with ledger.lock:
            deleted = {ledger.bodies.get(m) for m, n in ledger.deletes.items() if n}
        return all(b in deleted for b in self.sent_ids())

    def wait_settled(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not self.settled():
            if self.runner is not None and self.runner.poll() is not None:
                raise AssertionError(f"the runner exited: {self.logs()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not settled after {timeout}s: queue {self.queues.counts()}, "
                    f"live jobs {self.monitor.live() if self.monitor else '?'}\n"
                    f"{self.logs()[-4000:]}")
            time.sleep(0.2)

    def sent_ids(self) -> list[str]:
        return [m["id"] for m in list(self.backend.sent)] + list(self.direct)

    # ------------------------------------------------------------------ the invariants

    def verdict(self, *, uploaded: dict[str, str]) -> Verdict:
        """Check every invariant; ``uploaded`` maps each key PUT to the stem that PUT it."""
        self.stop_runner()
        if self.monitor is not None:
            self.monitor.stop()
        verdict = Verdict()
        sent = self.sent_ids()
        verdict.sent = len(sent)
        ledger = self.aws_proxy.ledger
        sqs_of: dict[str, str] = {b: m for m, b in ledger.bodies.items()}
        dead = self.drain_dead_letters()
        dead_per: Counter[str] = Counter(
            d["MessageAttributes"]["WaveflowSourceMessageId"]["StringValue"]
            for d in dead if "WaveflowSourceMessageId" in d.get("MessageAttributes", {}))
        for d in dead:
            if "WaveflowSourceMessageId" not in d.get("MessageAttributes", {}):
                verdict.problems.append(f"a dead letter without attributes (SQS redrive?): "
                                        f"{d['Body'][:200]}")
        exits: dict[str, list[int | None]] = defaultdict(list)
        if self.monitor is not None:
            for job in self.monitor.history:
                exits[job.body_id].append(job.code)
        if len(set(sent)) != len(sent):
            verdict.problems.append("two messages share a body id; the ledger cannot tell")
        for body in sent:
            sqs = sqs_of.get(body)
            deletes = ledger.deletes.get(sqs, 0) if sqs else 0
            letters = dead_per.get(sqs, 0) if sqs else 0
            codes = exits.get(body, [])
            last = next((c for c in reversed(codes) if c is not None), None)
            if deletes == 0:
                verdict.lost.append(body)
                continue
            if deletes > 1 or letters > 1:
                verdict.duplicated.append(f"{body}: {deletes} deletes, {letters} dead letters")
            if letters:
                verdict.outcomes["dead-lettered"] += 1
            elif last == 0:
                verdict.outcomes["completed"] += 1
            elif last == 3:
                verdict.outcomes["rejected"] += 1
            else:
                verdict.problems.append(f"{body} was deleted after exit {last} (jobs {codes}) "
                                        "without a dead letter")
        if verdict.lost:
            verdict.problems.append(f"lost (never deleted): {verdict.lost[:10]}")
        if verdict.duplicated:
            verdict.problems.append(f"settled more than once: {verdict.duplicated[:10]}")
        if self.queues.counts() != (0, 0):
            verdict.problems.append(f"the queue still holds {self.queues.counts()}")
        verdict.problems += self._completion_problems()
        verdict.problems += self._original_problems(uploaded)
        leftovers = sorted(p.name for p in self.scratch.iterdir()) if self.scratch.exists() \
            else []
        if leftovers:
            verdict.problems.append(f"scratch not empty: {leftovers[:5]}")
        if self.monitor is not None:
            verdict.peak_jobs = self.monitor.peak_concurrent
            verdict.peak_rss = max((r for _, r in self.monitor.memory), default=0)
            if self.monitor.peak_concurrent > self.max_in_flight:
                verdict.problems.append(f"{self.monitor.peak_concurrent} jobs ran at once; the "
                                        f"limit is {self.max_in_flight}")
            if self.monitor.overlapping:
                verdict.problems.append(f"two jobs at once for one message: "
                                        f"{sorted(self.monitor.overlapping)[:5]}")
        return verdict

    def drain_dead_letters(self) -> list[dict[str, Any]]:
        if self.dead_letters is None:
            self.dead_letters = self.queues.drain_dlq()
        return self.dead_letters

    def accepted_webhooks(self, event: str) -> list[dict[str, Any]]:
        """Webhooks the backend accepted and acted on (a repeat delivery id is not acted on)."""
        return [w for w in list(self.backend.webhooks) if w["event"] == event
                and w.get("answered") == 201 and not w.get("repeat")]

    def _completion_problems(self) -> list[str]:
        problems = []
        per_stem: dict[str, list[str]] = defaultdict(list)
        for hook in self.accepted_webhooks("completion"):
            body = hook["body"]
            per_stem[body["stemId"]].append(body["status"])
        for stem, statuses in per_stem.items():
            if statuses.count("SUCCESS") > 1 or statuses.count("FAILURE") > 1 or \
                    {"SUCCESS", "FAILURE"} <= set(statuses):
                problems.append(f"stem {stem} got completions {statuses}")
        hashes = Counter(m["kwargs"]["stemId"] for m in self.backend.sent
                         if m["task"].endswith("generate_hash_and_webhook"))
        followups = Counter(m["kwargs"]["stemId"] for m in self.backend.sent
                            if not m["task"].endswith("generate_hash_and_webhook"))
        for stem, count in followups.items():
            if count > hashes[stem]:
                problems.append(f"stem {stem}: {count} next-stage messages for "
                                f"{hashes[stem]} hash message(s): a hash-check acted on twice")
        return problems

    def _original_problems(self, uploaded: dict[str, str]) -> list[str]:
        problems = []
        present = self.keys()
        stems = self.backend.stems
        asked = {s.filepath for s in stems.values() if s.status == "duplicate_deleted"}
        for key, stem in uploaded.items():
            record = stems.get(stem)
            if key in present:
                continue
            if record is not None and record.status == "duplicate_deleted" and key in asked \
                    and not any(s.status == "completed" and s.filepath == key
                                for s in stems.values()):
                continue
            problems.append(f"{key} (stem {stem}, {record.status if record else '?'}) is gone")
        return problems


@contextmanager
def running_rig(aws: MotoEndpoint, root: Path, *, max_in_flight: int = 2,
                env: dict[str, str] | None = None) -> Iterator[Rig]:
    """Queues, bucket, a signed reference backend, both proxies and a job monitor."""
    queues = make_queues(aws, visibility_timeout=4)
    aws.client("s3").create_bucket(Bucket=BUCKET)
    backend = DevBackend(queues.url, secret=RIG_SECRET, region=REGION,
                         endpoint_url=aws.url).start()
    (root / "gates").mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.callback(backend.stop)
        aws_proxy = stack.enter_context(running_fault_proxy(aws.url))
        hooks = stack.enter_context(running_fault_proxy(backend.url, service="webhook"))
        rig = Rig(aws, queues, backend, aws_proxy, hooks, root, max_in_flight, dict(env or {}))
        rig.monitor = JobMonitor(rig.jobs_log).start()
        try:
            yield rig
        finally:
            if rig.runner is not None and rig.runner.poll() is None:
                rig.runner.kill()
                rig.runner.wait(10)
            rig.monitor.stop()
            scan(rig.logs(), "the reliability rig's runner logs")
            for job in rig.monitor.live():  # orphans of a SIGKILLed runner
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(job.pid, signal.SIGKILL)
