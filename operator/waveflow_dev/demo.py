"""``waveflow demo``: the whole pipeline on this machine — no AWS, no cluster.

It starts an embedded S3+SQS emulator (moto, loopback only: :mod:`waveflow_dev.emulator`), the
reference backend (:mod:`waveflow_dev.backend`) and the local runner (the same dispatcher the
operator uses, with child processes for jobs). It then generates a handful of stems
(:mod:`waveflow_dev.demo_samples`: several formats and channel counts, one exact duplicate of
another, one file cut short), uploads them, starts each through ``/upload-complete`` exactly as
the platform does, and shows progress while the three stages run. Finally
(:mod:`waveflow_dev.demo_report`): a per-stem table, a PNG waveform per analysed stem and an
``index.html`` showing each analysed stem in wavesurfer.js and peaks.js
(:mod:`waveflow_dev.players_page`), and a short metrics summary.

The exit code is 0 only when every outcome is the expected one and nothing is left behind
(no child process, no scratch directory). ``--keep-running`` leaves the stack up afterwards
and prints its endpoints, so a real backend can be pointed at it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any

import requests

from waveflow_dev import demo_report as report
from waveflow_dev import players_page
from waveflow_dev.backend import DevBackend
from waveflow_dev.demo_report import RunLog
from waveflow_dev.demo_samples import BUCKET, REPLAYED, SAMPLES, TRACK, USER, Sample, write_samples
from waveflow_dev.emulator import REGION, Emulator, create_queues, pointed_at, running_emulator
from waveflow_job.contract import Task
from waveflow_operator.local.config import RunnerConfig, default_job_command
from waveflow_operator.local.launcher import local_dispatcher
from waveflow_operator.metrics import Metrics, serve
from waveflow_operator.runner.dispatcher import Dispatcher
from waveflow_operator.runner.spec import QueueSpec

__all__ = ["run"]

log = logging.getLogger(__name__)

#: The demo gives up (and fails) after this long.
TIME_LIMIT_SECONDS = 55.0


def run(output: Path, *, keep_running: bool = False, webhook_url: str | None = None,
        players: Path | None = None) -> int:
    """Run the demo; returns the process exit code. With ``keep_running`` the stack stays up
    afterwards; ``webhook_url`` then sends the runner's webhooks to a real backend (signed with
    ``$WEBHOOK_SECRET`` when set) instead of the reference backend. ``players`` is the
    ``node_modules`` holding peaks.js and wavesurfer.js for index.html (default: the checkout's
    ``operator/waveflow_dev/players/node_modules``)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("werkzeug", "moto", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with (tempfile.TemporaryDirectory(prefix="waveflow-demo-") as work,
          running_emulator() as emulator, pointed_at(emulator)):
        return asyncio.run(_main(Path(work), emulator, output, keep_running, webhook_url,
                                 players or players_page.default_node_modules()))


async def _main(work: Path, emulator: Emulator, output: Path, keep_running: bool,
                webhook_url: str | None, players: Path) -> int:
    run_state = RunLog()
    endpoint = emulator.url
    s3, sqs = emulator.client("s3"), emulator.client("sqs")
    s3.create_bucket(Bucket=BUCKET)
    queue_url, dlq_url = astuple(create_queues(sqs, "waveflow-demo"))
    secret = secrets.token_hex(16)
    backend = DevBackend(queue_url, secret=secret, region=REGION, endpoint_url=endpoint).start()
    scratch = work / "scratch"
    config = RunnerConfig(
        queue=QueueSpec(
            name="demo", queue_url=queue_url, bucket=BUCKET, webhook_url=backend.webhook_url,
            region=REGION, endpoint_url=endpoint, webhook_secret=secret,
            upload_prefixes=("uploads/",), max_in_flight=4, wait_time_seconds=1,
            visibility_timeout_seconds=60, backoff_limit=1,
            deadlines={Task.HASH: 30.0, Task.DUPLICATE: 30.0, Task.ANALYSIS: 45.0},
            log_level="WARNING", depth_poll_seconds=2.0,
            job_env={"WAVEFLOW_WEBHOOK_BUDGET_SECONDS": "10"}),
        metrics_port=0, health_port=0, scratch_root=scratch, job_command=default_job_command(),
        retry_backoff_seconds=0.5)
    metrics = Metrics()
    dispatcher = local_dispatcher(config, metrics=metrics, on_settled=run_state.on_settled)
    print(f"WaveFlow demo: S3+SQS emulator at {endpoint}, reference backend at {backend.url}")
    files = write_samples(work / "samples")
    await dispatcher.start()
    problems: list[str] = []
    try:
        problems += await _scenario(run_state, dispatcher, backend, s3, files)
    except TimeoutError as error:
        problems.append(str(error))
    rows = report.rows(run_state, backend, s3)
    report.print_table(rows)
    report.print_replay(run_state)
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob("stem-*.png"):  # pictures of an earlier run
        stale.unlink()
    report.write_pictures(rows, s3, output, players)
    problems += report.check(rows, run_state, backend, s3)
    report.print_metrics(metrics)
    print(f"\nWaveform pictures, and the stems in wavesurfer.js and peaks.js (open it in a "
          f"browser): {(output.resolve() / 'index.html').as_uri()}")
    wall = run_state.elapsed()
    if keep_running:
        if webhook_url:  # a real backend takes over the webhooks: a runner pointed at it
            await dispatcher.stop(10)
            queue = replace(config.queue, webhook_url=webhook_url.rstrip("/"),
                            webhook_secret=os.environ.get("WEBHOOK_SECRET") or None)
            dispatcher = local_dispatcher(replace(config, queue=queue), metrics=metrics)
            await dispatcher.start()
        await _stay_up(endpoint, queue_url, dlq_url, backend, metrics,
                       dispatcher.spec.webhook_url, dispatcher.spec.webhook_secret)
    await dispatcher.stop(10)
    backend.stop()
    problems += report.check_leftovers(scratch, sqs, queue_url, dlq_url)
    print(f"Wall time: {wall:.1f} s")
    if problems:
        print("\nNOT as expected:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("Every outcome is the expected one.")
    return 0


# --------------------------------------------------------------------------- scenario


async def _scenario(state: RunLog, dispatcher: Dispatcher, backend: DevBackend, s3: Any,
                    files: dict[str, bytes]) -> list[str]:
    """Upload everything, the duplicate after its original is analysed; replay one event."""
    by_stem = {s.stem: s for s in SAMPLES}
    first = [s for s in SAMPLES if not s.copy_of]
    print(f"\nUploading {len(first)} stems and starting each through /upload-complete …")
    for sample in first:
        await asyncio.to_thread(_upload, backend, s3, sample, files[sample.stem])
    for sample in SAMPLES:
        if sample.copy_of is None:
            continue
        source: str = sample.copy_of
        await _until(state, backend, functools.partial(_analysed, backend, source),
                     f"{source} to be analysed")
        original = by_stem[source].filename
        print(f"Uploading {sample.filename!r}: the same bytes as {original!r} …")
        await asyncio.to_thread(_upload, backend, s3, sample, files[sample.stem])
    terminal = ("completed", "duplicate_deleted", "failed")
    await _until(state, backend, lambda: all(_status(backend, s.stem) in terminal
                                             for s in SAMPLES), "every stem to finish")
    state.before_replay = len(state.settled.get(REPLAYED, []))
    state.decision_before_replay = backend.stems[REPLAYED].decision
    print(f"Replaying the upload event of {by_stem[REPLAYED].filename!r} (a user retry) …")
    await asyncio.to_thread(_start, backend, by_stem[REPLAYED])
    await _until(state, backend, lambda: any(
        s.task is Task.DUPLICATE for s in state.settled.get(REPLAYED, [])),
        "the replayed event to settle")
    await _until(state, backend, lambda: dispatcher.in_flight == 0, "the runner to be idle")
    return []


def _upload(backend: DevBackend, s3: Any, sample: Sample, data: bytes) -> None:
    s3.put_object(Bucket=BUCKET, Key=sample.key, Body=data)
    _start(backend, sample)


def _start(backend: DevBackend, sample: Sample) -> None:
    answer = requests.post(f"{backend.url}/upload-complete", timeout=10, json={
        "userId": USER, "trackId": TRACK, "stemId": sample.stem, "filepath": sample.key,
        "original_filename": sample.filename})
    answer.raise_for_status()


def _analysed(backend: DevBackend, stem: str) -> bool:
    return _status(backend, stem) in ("completed", "failed")


def _status(backend: DevBackend, stem: str) -> str | None:
    record = backend.stems.get(stem)
    return record.status if record else None


async def _until(state: RunLog, backend: DevBackend, done: Callable[[], bool], what: str) -> None:
    """Wait for ``done()``, printing each stem's status changes as they happen."""
    while True:
        for stem, record in list(backend.stems.items()):
            if state.statuses.get(stem) != record.status:
                state.statuses[stem] = record.status
                print(f"  [{state.elapsed():5.1f} s] {stem:<16} {record.status}")
        if done():
            return
        if state.elapsed() > TIME_LIMIT_SECONDS:
            raise TimeoutError(f"gave up waiting for {what} after {TIME_LIMIT_SECONDS:g} s")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- keep running


async def _stay_up(endpoint: str, queue_url: str, dlq_url: str, backend: DevBackend,
                   metrics: Metrics, webhook_url: str, secret: str | None) -> None:
    server = serve(metrics, 0, host="127.0.0.1")
    metrics_port = server.server_address[1]
    print(f"""
The stack stays up (Ctrl-C to stop). Point a backend or your tools at it:
  S3 + SQS emulator   {endpoint}   (any access key; region {REGION})
  bucket              {BUCKET}
  queue               {queue_url}
  dead-letter queue   {dlq_url}
  reference backend   {backend.url}   (GET /state, POST /upload-complete)
  runner's webhooks   {webhook_url}   (--webhook-url sends them to your backend)
  WEBHOOK_SECRET      {secret or "(unset: webhooks are not signed)"}
  metrics             http://127.0.0.1:{metrics_port}/metrics

A backend sends its messages to the queue with:
  AWS_ENDPOINT_URL={endpoint} AWS_REGION={REGION} AWS_ACCESS_KEY_ID=testing \\
  AWS_SECRET_ACCESS_KEY=testing SQS_QUEUE_URL={queue_url} S3_BUCKET_NAME={BUCKET}
""", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)
    server.shutdown()
    server.server_close()
