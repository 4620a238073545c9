"""End to end through the local runner: moto (server mode), the reference backend, and the real
``waveflow-job`` as child processes — or, where a job must hang or fail on purpose, the
``tests/support/fakejob.py`` stand-in given as the job command (``WAVEFLOW_JOB_COMMAND``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from support.queues import backend_message
from support.runner import Stack
from support.waiting import eventually
from waveflow_dev import synth
from waveflow_job.contract import Task
from waveflow_job.originals import DELETED_PREFIX, SOURCES_PREFIX
from waveflow_operator.local import child_lifetime
from waveflow_operator.local.launcher import LocalLauncher
from waveflow_operator.local.scratch import remove_scratch, sweep_scratch
from waveflow_operator.metrics import Metrics
from waveflow_operator.runner.dispatcher import Dispatcher
from waveflow_operator.runner.protocol import job_name_for

FAKEJOB = Path(__file__).resolve().parents[1] / "support" / "fakejob.py"
FAKE_COMMAND = (sys.executable, str(FAKEJOB))
pytestmark = pytest.mark.slow


@asynccontextmanager
async def running(stack: Stack, *, job_command: tuple[str, ...] | None = None,
                  env: dict[str, str] | None = None, grace: float = 5.0, **overrides: Any
                  ) -> AsyncIterator[Dispatcher]:
    """A started dispatcher + local launcher; stopped (``grace`` seconds) on exit."""
    settings = stack.settings(**overrides)
    launcher = LocalLauncher(settings, stack.scratch, job_command=job_command,
                             retry_backoff_seconds=0.1, kill_grace_seconds=0.5,
                             base_env={**os.environ, **(env or {})})
    dispatcher = Dispatcher(settings, launcher, metrics=Metrics())
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop(grace)


def upload(stack: Stack, key: str, data: bytes | None, stem: str, **extra: str) -> None:
    """Put the object in S3 (unless ``data`` is None: a replayed event) and tell the backend,
    as the platform does after an upload."""
    if data is not None:
        stack.aws.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=data)
    answer = requests.post(f"{stack.backend.url}/upload-complete", timeout=10, json={
        "userId": extra.get("user", "user-1"), "trackId": extra.get("track", "track-1"),
        "stemId": stem, "filepath": key})
    assert answer.status_code == 201 and answer.json() == {"status": "success"}


def audio_bytes(tmp_path: Path, fmt: str, seconds: float, rate: int, channels: int) -> bytes:
    path = synth.write_audio(tmp_path / f"in-{fmt}-{channels}{synth.FORMATS[fmt].suffix}", fmt,
                             synth.tone(int(seconds * rate), rate, channels), rate)
    return path.read_bytes()


def stem_status(stack: Stack, stem: str) -> Callable[[], str | None]:
    return lambda: getattr(stack.backend.stems.get(stem), "status", None)


RECORD_PREFIXES = (SOURCES_PREFIX, DELETED_PREFIX)


def all_keys(stack: Stack) -> set[str]:
    listing = stack.aws.client("s3").list_objects_v2(Bucket=stack.bucket)
    return {o["Key"] for o in listing.get("Contents", [])}


def records(stack: Stack) -> set[str]:
    """WaveFlow's source records and tombstones (waveflow_job.originals)."""
    return {k for k in all_keys(stack) if k.startswith(RECORD_PREFIXES)}


def keys(stack: Stack) -> set[str]:
    """Uploads and waveforms: every key but WaveFlow's records."""
    return all_keys(stack) - records(stack)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_three_stages_then_a_duplicate_is_deleted_and_the_original_stays_protected(
        stack: Stack, tmp_path: Path) -> None:
    original = audio_bytes(tmp_path, "flac-16", 1.0, 44100, 2)
    corrupt = audio_bytes(tmp_path, "wav-16", 1.0, 22050, 1)[:200] + b"\x00garbage" * 64
    async with running(stack) as dispatcher:
        upload(stack, "audio/original.flac", original, "stem-a")
        upload(stack, "audio/broken.wav", corrupt, "stem-c")
        await eventually(lambda: stem_status(stack, "stem-a")() == "completed", 60, "analysis")
        await eventually(lambda: stem_status(stack, "stem-c")() == "failed", 60, "failure")
        # The same bytes uploaded again for another stem of the same track: a duplicate.
        upload(stack, "audio/copy.flac", original, "stem-b")
        await eventually(lambda: stem_status(stack, "stem-b")() == "duplicate_deleted", 60,
                         "duplicate deletion")
        # A re-sent upload for the analysed stem comes back as a delete of its own original.
        upload(stack, "audio/original.flac", None, "stem-a")
        await eventually(lambda: dispatcher.status.rejected == 2, 60, "the refusal")
        await eventually(lambda: stack.queues.counts() == (0, 0), 10, "an empty queue")

    digest = hashlib.sha256(original).hexdigest()
    a = stack.backend.stems["stem-a"]
    assert a.audio_hash == digest
    assert a.result is not None and a.result["audio_data_hash"] == digest
    assert a.result["sample_rate"] == 44100 and a.result["file_size"] == len(original)
    waveform_key = a.result["waveform_data_path"]
    detail_key = a.result["waveform_detail_path"]
    assert detail_key == waveform_key.removesuffix(".json") + ".dat"
    assert keys(stack) == {"audio/original.flac", "audio/broken.wav", waveform_key, detail_key}
    # WaveFlow's records: stem-a's original is recorded as a source, the duplicate tombstoned.
    assert sorted(k.split("/")[1] for k in records(stack)) == ["deleted", "sources"]
    sent = [m["task"].rsplit(".", 1)[-1] for m in stack.backend.sent
            if m["kwargs"]["stemId"] == "stem-a"]
    assert sent == ["generate_hash_and_webhook", "process_audio_analysis",
                    "generate_hash_and_webhook", "process_duplicate_file"]
    # The refusal to delete stem-a's own original sent no FAILURE: stem-a stays completed.
    completions = [w["body"] for w in stack.backend.webhooks if w["event"] == "completion"]
    assert [c["status"] for c in completions if c["stemId"] == "stem-a"] == ["SUCCESS"]
    c = stack.backend.stems["stem-c"]
    assert (c.error_code, c.result and c.result["retryable"]) == ("AUDIO_CORRUPT", False)
    assert all(w["answered"] == 201 for w in stack.backend.webhooks)  # all signed correctly
    assert stack.queues.drain_dlq() == []
    assert (dispatcher.status.succeeded, dispatcher.status.rejected,
            dispatcher.status.failed) == (6, 2, 0)
    metrics = dispatcher.metrics
    assert metrics.value("waveflow_audio_seconds_processed_total", queue="test") == \
        pytest.approx(1.0, abs=0.01)
    assert metrics.total("waveflow_jobs_created_total") == 8
    assert stack.leftovers() == []


async def test_a_webhook_outage_is_retried_then_delivered_once(
        stack: Stack, tmp_path: Path) -> None:
    data = audio_bytes(tmp_path, "wav-24", 0.5, 48000, 1)
    stack.backend.fail_next(8)  # longer than one job's webhook budget: the runner retries too
    job_env = {"WAVEFLOW_WEBHOOK_BUDGET_SECONDS": "1", "WAVEFLOW_WEBHOOK_BACKOFF_SECONDS": "0.2"}
    async with running(stack, backoff_limit=4, job_env=job_env) as dispatcher:
        upload(stack, "audio/out.wav", data, "stem-o")
        await eventually(lambda: stem_status(stack, "stem-o")() == "completed", 90, "analysis")
        await eventually(lambda: stack.queues.counts() == (0, 0), 10, "an empty queue")
    checks = [w for w in stack.backend.webhooks if w["event"] == "hash-check"]
    assert [w["answered"] for w in checks] == [503] * 8 + [201]
    assert len({w["headers"]["x-waveflow-delivery"] for w in checks}) == 1
    analyses = [m for m in stack.backend.sent if m["task"].endswith("process_audio_analysis")]
    assert len(analyses) == 1  # delivered once: the backend acted once
    assert dispatcher.status.succeeded == 2 and dispatcher.status.failed == 0
    assert stack.queues.drain_dlq() == []
    assert stack.leftovers() == []


async def test_a_hanging_job_is_killed_at_its_deadline_then_failed_and_dead_lettered(
        stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    env = {"FAKEJOB_LOG": str(log), "FAKEJOB_HANG_STEMS": "stem-h", "FAKEJOB_IGNORE_TERM": "1"}
    async with running(stack, job_command=FAKE_COMMAND, env=env, backoff_limit=2,
                       deadlines={Task.HASH: 1.5}) as dispatcher:
        stack.queues.send(backend_message("generate_hash_and_webhook", "stem-h"))
        await eventually(lambda: dispatcher.status.failed == 1, 30, "the failure")
        await eventually(lambda: stack.queues.counts() == (0, 0), 10, "an empty queue")
    assert lines(log) == ["start stem-h"]  # killed once; a deadline is not retried
    [failure] = [w["body"] for w in stack.backend.webhooks if w["event"] == "completion"]
    assert failure["stemId"] == "stem-h" and failure["status"] == "FAILURE"
    assert failure["result"]["error_code"] == "JOB_DEADLINE_EXCEEDED"
    assert failure["result"]["retryable"] is True
    [dead] = stack.queues.drain_dlq()
    assert dead["MessageAttributes"]["WaveflowReason"]["StringValue"] == "JOB_DEADLINE_EXCEEDED"
    assert stack.leftovers() == []


async def test_a_rejecting_job_is_not_retried_and_its_message_is_deleted(
        stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    env = {"FAKEJOB_LOG": str(log), "FAKEJOB_EXIT": "3"}
    async with running(stack, job_command=FAKE_COMMAND, env=env, backoff_limit=2) as dispatcher:
        stack.queues.send(backend_message("generate_hash_and_webhook", "stem-r"))
        await eventually(lambda: dispatcher.status.rejected == 1, 30, "the rejection")
        await eventually(lambda: stack.queues.counts() == (0, 0), 10, "deletion")
    assert lines(log) == ["start stem-r", "done stem-r"]  # once: exit 3 is final
    assert stack.backend.webhooks == []  # the job tells the backend, never the runner
    assert stack.queues.drain_dlq() == []
    assert stack.leftovers() == []


async def test_a_job_printing_a_huge_line_is_still_drained_and_finishes(
        stack: Stack, tmp_path: Path) -> None:
    env = {"FAKEJOB_SPAM": str(3 * 1024 * 1024)}  # far more than a pipe buffer
    async with running(stack, job_command=FAKE_COMMAND, env=env,
                       deadlines={Task.HASH: 20.0}) as dispatcher:
        stack.queues.send(backend_message("generate_hash_and_webhook", "stem-s"))
        await eventually(lambda: dispatcher.status.succeeded == 1, 30, "success")
    assert dispatcher.status.failed == 0
    assert stack.leftovers() == []


async def test_a_failing_job_is_retried_up_to_the_backoff_limit_then_dead_lettered(
        stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    env = {"FAKEJOB_LOG": str(log), "FAKEJOB_EXIT": "1"}
    async with running(stack, job_command=FAKE_COMMAND, env=env, backoff_limit=2) as dispatcher:
        stack.queues.send(backend_message("generate_hash_and_webhook", "stem-f"))
        await eventually(lambda: dispatcher.status.failed == 1, 30, "the failure")
    assert lines(log).count("start stem-f") == 3
    [failure] = [w["body"] for w in stack.backend.webhooks if w["event"] == "completion"]
    assert failure["result"]["error_code"] == "JOB_BACKOFF_LIMIT"
    assert failure["result"]["error_message"] == \
        "failed 3 time(s); last attempt: exit 1 (INTERNAL_ERROR). fake job for stem-f"
    [dead] = stack.queues.drain_dlq()
    assert dead["MessageAttributes"]["WaveflowReason"]["StringValue"] == "JOB_BACKOFF_LIMIT"
    assert stack.queues.counts() == (0, 0)
    assert stack.leftovers() == []


async def test_a_long_job_keeps_its_message_invisible_through_heartbeats(
        stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    env = {"FAKEJOB_LOG": str(log), "FAKEJOB_SLEEP": "6"}
    async with running(stack, job_command=FAKE_COMMAND, env=env,
                       visibility_timeout_seconds=3) as dispatcher:
        stack.queues.send(backend_message("generate_hash_and_webhook", "stem-l"))
        await eventually(lambda: dispatcher.status.succeeded == 1, 30, "success")
        await eventually(lambda: stack.queues.counts() == (0, 0), 10, "an empty queue")
    assert lines(log) == ["start stem-l", "done stem-l"]
    assert dispatcher.status.received == 1  # two visibility timeouts passed: never redelivered
    assert dispatcher.metrics.total("waveflow_heartbeat_errors_total") == 0
    assert dispatcher.metrics.value("waveflow_bytes_processed_total", queue="test",
                                    task="generate_hash_and_webhook") == 4096
    assert stack.leftovers() == []


async def test_at_the_in_flight_maximum_no_more_jobs_start(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    env = {"FAKEJOB_LOG": str(log), "FAKEJOB_HANG_STEMS": "s0,s1"}
    async with running(stack, job_command=FAKE_COMMAND, env=env, max_in_flight=2,
                       grace=0) as dispatcher:
        for i in range(4):
            stack.queues.send(backend_message("generate_hash_and_webhook", f"s{i}"))
        await eventually(lambda: len(lines(log)) == 2, 30, "two jobs")
        await asyncio.sleep(2)  # two more long polls: nothing else may be received
        assert sorted(lines(log)) == ["start s0", "start s1"]
        assert stack.queues.counts() == (2, 2)
        assert dispatcher.in_flight == 2
    # Stopping returned the two unfinished messages at once.
    assert stack.queues.counts() == (4, 0)
    assert stack.leftovers() == []


def test_the_startup_sweep_removes_only_stale_scratch_of_its_own(tmp_path: Path) -> None:
    now = time.time()

    def make(name: str, age: float, owner: int | None = None) -> Path:
        path = tmp_path / name
        (path / "tmp").mkdir(parents=True)
        (path / "tmp" / "audio.wav").write_bytes(b"x")
        if owner is not None:
            (path / "owner.pid").write_text(str(owner))
        for p in [*sorted(path.rglob("*"), reverse=True), path]:
            os.utime(p, (now - age, now - age))
        return path

    make("wfjob-ancient-1", 3 * 3600, owner=os.getppid())      # > 2 h: always
    make("wfjob-stale-dead-1", 40 * 60, owner=2**22 + 12345)   # > 30 min, owner gone
    alive = make("wfjob-stale-alive-1", 40 * 60, owner=os.getppid())
    fresh = make("wfjob-fresh-1", 60)
    other = make("someone-elses-dir", 5 * 3600)
    removed = sweep_scratch(tmp_path, now=now)
    assert sorted(p.name for p in removed) == ["wfjob-ancient-1", "wfjob-stale-dead-1"]
    assert alive.exists() and fresh.exists() and other.exists()


def test_job_scratch_and_summary_live_in_a_fresh_directory_removed_afterwards(
        stack: Stack, tmp_path: Path) -> None:
    """The environment a child gets mirrors a Job's: TMPDIR and a summary file of its own."""
    probe = tmp_path / "probe.py"
    out = tmp_path / "env.txt"
    probe.write_text(
        "import os, pathlib\n"
        f"pathlib.Path({str(out)!r}).write_text('\\n'.join(f'{{k}}={{os.environ.get(k)}}' for "
        "k in ['TMPDIR', 'WAVEFLOW_SUMMARY_FILE', 'S3_BUCKET_NAME', 'WEBHOOK_SECRET', "
        "'AWS_ENDPOINT_URL']) + '\\n' + os.getcwd())\n")
    sent: list[str] = []

    async def scenario() -> None:
        async with running(stack, job_command=(sys.executable, str(probe))) as dispatcher:
            sent.append(stack.queues.send(backend_message("generate_hash_and_webhook", "stem-e")))
            await eventually(lambda: dispatcher.status.succeeded == 1, 30, "success")

    asyncio.run(scenario())
    values = dict(line.split("=", 1) for line in out.read_text().splitlines()[:-1])
    tmpdir = Path(values["TMPDIR"])
    assert tmpdir.parent.parent == stack.scratch and tmpdir.name == "tmp"
    assert tmpdir.parent.name.startswith("wfjob-" + job_name_for(Task.HASH, sent[0]))
    assert Path(values["WAVEFLOW_SUMMARY_FILE"]) == tmpdir.parent / "summary.json"
    assert out.read_text().splitlines()[-1] == str(tmpdir)
    assert values["S3_BUCKET_NAME"] == stack.bucket
    assert values["WEBHOOK_SECRET"] == "runner-test-secret"
    assert values["AWS_ENDPOINT_URL"] == stack.aws.url
    assert stack.leftovers() == []


async def test_a_job_command_that_cannot_start_fails_the_message_instead_of_holding_it(
        stack: Stack, tmp_path: Path) -> None:
    missing = (str(tmp_path / "no-such-command"), "run")
    async with running(stack, job_command=missing) as dispatcher:
        stack.queues.send(backend_message("generate_hash_and_webhook", "stem-n"))
        await eventually(lambda: dispatcher.status.failed == 1, 30, "the failure")
    [dead] = stack.queues.drain_dlq()
    assert dead["MessageAttributes"]["WaveflowReason"]["StringValue"] == "JOB_NOT_CREATED"
    assert stack.queues.counts() == (0, 0)
    assert stack.leftovers() == []


async def test_a_poison_message_never_starts_a_process_and_waits_in_the_dlq_with_its_reason(
        stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    poison = {"task": "app.tasks.process_audio_analysis", "id": "analysis-stem-p-1", "args": [],
              "kwargs": {"userId": "u", "trackId": "t", "stemId": "stem-p",
                         "filepath": "../../etc/passwd", "audio_hash": "0" * 64}}
    async with running(stack, job_command=FAKE_COMMAND, env={"FAKEJOB_LOG": str(log)}
                       ) as dispatcher:
        stack.queues.send(poison)
        await eventually(lambda: dispatcher.status.dead_lettered == 1, 30, "the dead letter")
        await eventually(lambda: stack.queues.counts() == (0, 0), 10, "deletion")
    assert lines(log) == []  # no job ever ran
    [dead] = stack.queues.drain_dlq()
    assert dead["MessageAttributes"]["WaveflowReason"]["StringValue"] == "KEY_INVALID"
    [failure] = [w["body"] for w in stack.backend.webhooks if w["event"] == "completion"]
    assert (failure["stemId"], failure["result"]["error_code"],
            failure["result"]["retryable"]) == ("stem-p", "KEY_INVALID", False)
    assert stack.backend.stems["stem-p"].status == "failed"
    assert dispatcher.metrics.total("waveflow_jobs_created_total") == 0
    assert stack.leftovers() == []


def test_scratch_of_a_runner_that_is_gone_is_removed_at_once_unless_its_job_still_runs(
        tmp_path: Path) -> None:
    """A runner SIGKILLed between two steps leaves its attempt's directory behind (its job
    died with it): the next sweep removes it without waiting 30 minutes — unless the record
    in it names a job that still runs (that one holds a slot until it is gone)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                start_new_session=True)  # as the launcher starts jobs
    try:
        def make(name: str, owner: int | None) -> Path:
            path = tmp_path / name
            (path / "tmp").mkdir(parents=True)
            if owner is not None:
                (path / "owner.pid").write_text(str(owner))
            return path

        left = make("wfjob-left-by-a-killed-runner-1", gone.pid)
        ours = make("wfjob-ours-1", os.getpid())
        ownerless = make("wfjob-fresh-without-owner-1", None)
        running = make("wfjob-job-still-running-1", gone.pid)
        child_lifetime.write_record(running, "wf-hash-x", survivor.pid)
        removed = sweep_scratch(tmp_path)
        assert [p.name for p in removed] == [left.name]
        assert ours.exists() and ownerless.exists() and running.exists()
    finally:
        survivor.kill()
        survivor.wait()


def test_an_attempts_directory_names_its_owner_until_the_rest_is_gone(tmp_path: Path) -> None:
    directory = tmp_path / "wfjob-x-1"
    (directory / "tmp" / "deep").mkdir(parents=True)
    (directory / "summary.json").write_text("{}")
    (directory / "owner.pid").write_text("1")
    remove_scratch(directory)
    assert not directory.exists()
