"""``waveflow demo``: the whole pipeline on this machine — no AWS, no cluster.

It starts an embedded S3+SQS emulator (moto, loopback only), the reference backend
(:mod:`waveflow_operator.devbackend`) and the local runner (the same dispatcher the operator
uses, with child processes for jobs). It then generates a handful of stems (several formats and
channel counts, one exact duplicate of another, one file cut short), uploads them, starts each
through ``/upload-complete`` exactly as the platform does, and shows progress while the three
stages run. Finally: a per-stem table, a PNG waveform per analysed stem and an ``index.html``
drawn from the waveform JSON in S3, and a short metrics summary.

The exit code is 0 only when every outcome is the expected one and nothing is left behind
(no child process, no scratch directory). ``--keep-running`` leaves the stack up afterwards
and prints its endpoints, so a real backend can be pointed at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import signal
import struct
import sys
import tempfile
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import requests

from waveflow_job.contract import JobSummary, Outcome, Task
from waveflow_operator import players_page
from waveflow_operator.devbackend import DevBackend
from waveflow_operator.local.config import RunnerConfig, default_job_command
from waveflow_operator.local.launcher import local_dispatcher
from waveflow_operator.local.scratch import SCRATCH_PREFIX
from waveflow_operator.metrics import Metrics, serve
from waveflow_operator.runner.dispatcher import Dispatcher
from waveflow_operator.runner.protocol import JobRequest, JobResult
from waveflow_operator.runner.spec import QueueSpec

__all__ = ["SAMPLES", "Sample", "run"]

log = logging.getLogger(__name__)

REGION = "us-east-1"
BUCKET = "waveflow-demo"
USER, TRACK = "user-demo", "track-demo"
#: The demo gives up (and fails) after this long.
TIME_LIMIT_SECONDS = 55.0
_TASK_SHORT = {Task.HASH: "hash", Task.DUPLICATE: "duplicate", Task.ANALYSIS: "analysis"}


@dataclass(frozen=True)
class Sample:
    """One stem the demo uploads, and what must become of it."""

    stem: str
    filename: str
    fmt: str
    seconds: float
    rate: int
    channels: int
    #: ``analysed``, ``duplicate deleted`` or ``failed``.
    expect: str
    expect_code: str | None = None
    #: This stem's bytes are an exact copy of that stem's file.
    copy_of: str | None = None
    #: Cut the file short, as an interrupted upload would.
    cut: bool = False

    @property
    def key(self) -> str:
        return f"uploads/{USER}/{TRACK}/{self.filename}"


SAMPLES: tuple[Sample, ...] = (
    Sample("stem-kick", "kick.wav", "wav-16", 2.0, 44100, 1, "analysed"),
    Sample("stem-pad", "pad.flac", "flac-24", 3.0, 48000, 2, "analysed"),
    Sample("stem-vocals", "vocals 보컬.mp3", "mp3-cbr", 2.5, 44100, 2, "analysed"),
    Sample("stem-ambience", "ambience 5.1.m4a", "m4a-aac", 2.0, 48000, 6, "analysed"),
    Sample("stem-bass", "bass.aiff", "aiff-16", 2.0, 22050, 1, "analysed"),
    Sample("stem-pad-again", "pad (1).flac", "flac-24", 3.0, 48000, 2, "duplicate deleted",
           copy_of="stem-pad"),
    Sample("stem-broken", "broken.wav", "wav-24", 2.0, 44100, 2, "failed", "AUDIO_CORRUPT",
           cut=True),
)
#: The analysed stem whose upload event is replayed: its original must survive.
REPLAYED = "stem-kick"


@dataclass
class _Settled:
    task: Task
    outcome: Outcome
    error_code: str | None
    seconds: float | None


@dataclass
class _Run:
    """What the demo saw happen."""

    settled: dict[str, list[_Settled]] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    #: How many of the replayed stem's jobs came before its event was replayed.
    before_replay: int | None = None
    #: The backend's duplicate decision for the replayed stem before the replay.
    decision_before_replay: str | None = None
    started: float = field(default_factory=time.monotonic)

    def on_settled(self, request: JobRequest, result: JobResult) -> None:
        summary: JobSummary | None = result.summary
        code = result.error_code or (summary.error_code if summary else None)
        self.settled.setdefault(request.message.stem_id, []).append(
            _Settled(request.message.task, result.outcome, code, result.duration_seconds))

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def run(output: Path, *, keep_running: bool = False, webhook_url: str | None = None,
        players: Path | None = None) -> int:
    """Run the demo; returns the process exit code. With ``keep_running`` the stack stays up
    afterwards; ``webhook_url`` then sends the runner's webhooks to a real backend (signed with
    ``$WEBHOOK_SECRET`` when set) instead of the reference backend. ``players`` is the
    ``node_modules`` holding peaks.js and wavesurfer.js for index.html (default: the checkout's
    ``dev/players/node_modules``)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("werkzeug", "moto", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="waveflow-demo-") as work, _emulator() as endpoint:
        return asyncio.run(_main(Path(work), endpoint, output, keep_running, webhook_url,
                                 players or players_page.default_node_modules()))


@contextlib.contextmanager
def _emulator() -> Iterator[str]:
    """moto's S3+SQS on a free loopback port, and this process's AWS settings pointed at it."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as error:
        raise SystemExit("waveflow demo needs the emulator from the dev extras: "
                         "pip install 'waveflow[dev]' (or run `make demo`)") from error

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    overrides = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION,
                 "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "demo",
                 "AWS_SECRET_ACCESS_KEY": "demo", "AWS_EC2_METADATA_DISABLED": "true"}
    previous = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield endpoint
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


async def _main(work: Path, endpoint: str, output: Path, keep_running: bool,
                webhook_url: str | None, players: Path) -> int:
    run_state = _Run()
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    dlq_url = sqs.create_queue(QueueName="waveflow-demo-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url,
                                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName="waveflow-demo", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
    })["QueueUrl"]
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
    files = _write_samples(work / "samples")
    await dispatcher.start()
    problems: list[str] = []
    try:
        problems += await _scenario(run_state, dispatcher, backend, s3, files)
    except TimeoutError as error:
        problems.append(str(error))
    rows = _rows(run_state, backend, s3)
    _print_table(rows)
    _print_replay(run_state)
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob("stem-*.png"):  # pictures of an earlier run
        stale.unlink()
    _write_pictures(rows, s3, output, players)
    problems += _check(rows, run_state, backend, s3)
    _print_metrics(metrics)
    print(f"\nWaveform pictures and index.html: {output.resolve()}/index.html")
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
    problems += _check_leftovers(scratch, sqs, queue_url, dlq_url)
    print(f"Wall time: {wall:.1f} s")
    if problems:
        print("\nNOT as expected:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("Every outcome is the expected one.")
    return 0


# --------------------------------------------------------------------------- samples


def _write_samples(directory: Path) -> dict[str, bytes]:
    """Generate each sample's bytes (numpy + soundfile/PyAV via the job's synth module)."""
    from waveflow_job.audio import synth

    directory.mkdir(parents=True)
    data: dict[str, bytes] = {}
    for i, sample in enumerate(SAMPLES):
        if sample.copy_of:
            data[sample.stem] = data[sample.copy_of]
            continue
        frames = int(sample.seconds * sample.rate)
        samples = music(sample.stem.removeprefix("stem-"), frames, sample.rate, sample.channels,
                        seed=i)
        path = directory / f"{sample.stem}{synth.FORMATS[sample.fmt].suffix}"
        synth.write_audio(path, sample.fmt, samples, sample.rate)
        if sample.cut:
            synth.truncate(path, 0.4)
        data[sample.stem] = path.read_bytes()
    return data


def music(kind: str, frames: int, rate: int, channels: int, *, seed: int = 0) -> np.ndarray:
    """A few seconds that look like their stem's name in a waveform (kick, pad, bass…)."""
    t = np.arange(frames, dtype=np.float64) / rate
    rng = np.random.default_rng(seed)
    lanes = []
    for ch in range(channels):
        if kind == "kick":
            beat = t % 0.5
            lane = 0.9 * np.exp(-beat * 9) * np.sin(2 * np.pi * (45 + 90 * np.exp(-beat * 35))
                                                    * beat)
        elif kind == "bass":
            notes = np.array([55.0, 73.42, 82.41, 65.41])[(t // 0.5).astype(int) % 4]
            lane = 0.7 * np.exp(-(t % 0.5) * 3) * np.sin(2 * np.pi * notes * t)
        elif kind == "vocals":
            phrase = np.clip(np.sin(2 * np.pi * 0.9 * t + ch * 0.3), 0, None) ** 0.6
            vibrato = 6 * np.sin(2 * np.pi * 5.5 * t)
            lane = 0.6 * phrase * np.sin(2 * np.pi * (310 + vibrato) * t)
        elif kind == "ambience":
            if ch == 3:  # the LFE channel of 5.1: a low rumble
                lane = 0.3 * np.sin(2 * np.pi * 40 * t)
            else:
                swell = 0.5 + 0.5 * np.sin(2 * np.pi * (0.3 + 0.07 * ch) * t + ch)
                lane = 0.15 * swell * rng.standard_normal(frames)
        else:  # pad, and anything else: a slow swell of a chord, detuned per channel
            swell = np.sin(np.pi * t / max(t[-1], 1e-9)) ** 2 if frames else t
            chord = sum(np.sin(2 * np.pi * f * (1 + 0.002 * ch) * t) for f in (220, 277, 330))
            lane = 0.3 * swell * chord
        lanes.append(lane)
    return np.stack(lanes, axis=1) if lanes else np.zeros((frames, 0))


# --------------------------------------------------------------------------- scenario


async def _scenario(state: _Run, dispatcher: Dispatcher, backend: DevBackend, s3: Any,
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


async def _until(state: _Run, backend: DevBackend, done: Callable[[], bool], what: str) -> None:
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


# --------------------------------------------------------------------------- report


@dataclass
class _Row:
    sample: Sample
    stages: str
    audio_hash: str
    decision: str
    duration: str
    sample_rate: str
    channels: str
    peak: str
    waveform_key: str | None
    outcome: str
    error_code: str
    #: The SUCCESS result the backend stored (analysed stems).
    result: dict[str, Any] = field(default_factory=dict)


def _rows(state: _Run, backend: DevBackend, s3: Any) -> list[_Row]:
    rows = []
    for sample in SAMPLES:
        record = backend.stems.get(sample.stem)
        result = (record.result or {}) if record else {}
        settled = state.settled.get(sample.stem, [])
        if sample.stem == REPLAYED and state.before_replay is not None:
            settled = settled[:state.before_replay]
        stages = _stages(settled)
        status = record.status if record else "unknown"
        if record and record.audio_hash:  # the backend stored its hash: analysis completed
            status = "completed"
        decision = record.decision if record else None
        if sample.stem == REPLAYED and state.before_replay is not None:
            decision = state.decision_before_replay
        outcome = {"completed": "analysed", "duplicate_deleted": "duplicate deleted",
                   "failed": "failed"}.get(status, status)
        reported = record.reported_hash if record else None
        rows.append(_Row(
            sample=sample, stages=stages or "-",
            audio_hash=(reported or "")[:12] + ("…" if reported else "-"),
            decision={"duplicate": "duplicate", "analysis": "original"}.get(decision or "", "-"),
            duration=_number(result.get("duration"), "{:.2f} s"),
            sample_rate=_number(result.get("sample_rate"), "{} Hz"),
            channels=_number(result.get("channels"), "{}"),
            peak=_number(result.get("peak_dbfs"), "{:.1f} dBFS"),
            waveform_key=result.get("waveform_data_path") if status == "completed" else None,
            outcome=outcome, error_code=(record.error_code if record else None) or "-",
            result=result))
    return rows


def _stages(settled: list[_Settled]) -> str:
    return " → ".join(f"{_TASK_SHORT[s.task]} {_mark(s.outcome)}" for s in settled)


def _width(text: str) -> int:
    """Terminal columns: East Asian wide characters (Korean file names) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _mark(outcome: Outcome) -> str:
    return {Outcome.SUCCEEDED: "✓", Outcome.REJECTED: "✗ rejected",
            Outcome.FAILED: "✗ failed"}[outcome]


def _number(value: Any, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, int | float) else "-"


def _print_table(rows: list[_Row]) -> None:
    header = ["stem", "file", "stages run", "hash", "decision", "duration", "rate", "ch",
              "peak", "waveform key", "outcome", "error"]
    table = [[r.sample.stem, f"{r.sample.filename} ({r.sample.fmt}, {r.sample.channels} ch)",
              r.stages, r.audio_hash, r.decision, r.duration, r.sample_rate, r.channels, r.peak,
              r.waveform_key or "-", r.outcome, r.error_code] for r in rows]
    widths = [max(_width(str(line[i])) for line in [header, *table])
              for i in range(len(header))]
    print()
    for i, line in enumerate([header, *table]):
        print("  ".join(str(cell) + " " * (width - _width(str(cell)))
                        for cell, width in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * width for width in widths))


def _print_replay(state: _Run) -> None:
    if state.before_replay is None:
        return
    replay = state.settled.get(REPLAYED, [])[state.before_replay:]
    codes = ", ".join(s.error_code for s in replay if s.error_code)
    print(f"\nReplayed upload event of {REPLAYED}: {_stages(replay)}"
          f"{f' ({codes})' if codes else ''}: the analysed original is kept and no FAILURE "
          "is sent, so the stem stays analysed.")


def _write_pictures(rows: list[_Row], s3: Any, output: Path, players: Path) -> None:
    """One PNG per analysed stem from its waveform JSON in S3, and the players' index.html."""
    missing = players_page.copy_bundles(players, output)
    if missing:
        print(f"\nindex.html without players: {', '.join(missing)} not found in {players} "
              "(`make players` installs peaks.js and wavesurfer.js)")
    cards = []
    for row in rows:
        document, detail, picture = None, None, None
        if row.waveform_key:
            document = json.loads(_object(s3, row.waveform_key))
            detail_key = document.get("waveform_detail_path")
            detail = _object(s3, detail_key) if isinstance(detail_key, str) else None
            picture = f"{row.sample.stem}.png"
            (output / picture).write_bytes(waveform_png(document))
        facts = (f"{row.outcome} · {row.duration} · {row.sample_rate} · {row.channels} ch · "
                 f"{players_page.levels_text(row.result)} · error {row.error_code}")
        cards.append(players_page.StemCard(
            stem=row.sample.stem, filename=row.sample.filename, stages=row.stages, facts=facts,
            waveform_key=row.waveform_key, document=document, detail=detail, picture=picture))
    players_page.write_page(output, cards, players=not missing)


def _object(s3: Any, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


_COLOURS = [(94, 176, 255), (255, 153, 102), (134, 220, 140), (230, 120, 200),
            (240, 210, 90), (150, 150, 255), (120, 220, 220), (220, 120, 120)]


def waveform_png(document: dict[str, Any], width: int = 900, lane: int = 90) -> bytes:
    """Draw the min/max pairs of an audiowaveform v2 document, one lane per channel."""
    channels = max(1, int(document.get("channels", 1)))
    length = int(document.get("length", 0))
    data = np.asarray(document.get("data", []), dtype=np.float64)
    image = np.empty((lane * channels, width, 3), dtype=np.uint8)
    image[:] = (20, 22, 26)
    if length and data.size >= length * channels * 2:
        pairs = data[: length * channels * 2].reshape(length, channels, 2)
        edges = np.linspace(0, length, width + 1).astype(int)
        for ch in range(channels):
            top, colour = ch * lane, _COLOURS[ch % len(_COLOURS)]
            middle = top + lane // 2
            image[middle, :] = (60, 64, 72)
            for x in range(width):
                start, end = edges[x], max(edges[x] + 1, edges[x + 1])
                low = pairs[start:end, ch, 0].min() / 128.0
                high = pairs[start:end, ch, 1].max() / 128.0
                y0 = int(middle - high * (lane // 2 - 2))
                y1 = int(middle - low * (lane // 2 - 2))
                image[min(y0, y1):max(y0, y1) + 1, x] = colour
    return _png(image)


def _png(image: np.ndarray) -> bytes:
    """A minimal RGB PNG encoder (zlib): no imaging library needed."""
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- checks


def _check(rows: list[_Row], state: _Run, backend: DevBackend, s3: Any) -> list[str]:
    problems = []
    keys = _keys(s3)
    for row in rows:
        sample = row.sample
        if row.outcome != sample.expect:
            problems.append(f"{sample.stem}: expected {sample.expect}, got {row.outcome}")
        if sample.expect_code and row.error_code != sample.expect_code:
            problems.append(f"{sample.stem}: expected error {sample.expect_code}, "
                            f"got {row.error_code}")
        if sample.expect == "analysed" and (not row.waveform_key or row.waveform_key not in keys):
            problems.append(f"{sample.stem}: no waveform JSON in S3")
        if sample.expect == "duplicate deleted" and sample.key in keys:
            problems.append(f"{sample.stem}: the duplicate upload was not deleted")
        if sample.expect != "duplicate deleted" and sample.key not in keys:
            problems.append(f"{sample.stem}: its original upload is gone from S3")
    replay = [s for s in state.settled.get(REPLAYED, []) if s.task is Task.DUPLICATE]
    if [(s.outcome, s.error_code) for s in replay] != [(Outcome.REJECTED, "ORIGINAL_PROTECTED")]:
        problems.append(f"replayed event of {REPLAYED}: expected one refusal "
                        f"(ORIGINAL_PROTECTED), got {replay}")
    if _status(backend, REPLAYED) == "failed":
        problems.append(f"{REPLAYED} was marked failed by the replayed event")
    return problems


def _keys(s3: Any) -> set[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET)
    return {o["Key"] for o in listing.get("Contents", [])}


def _check_leftovers(scratch: Path, sqs: Any, queue_url: str, dlq_url: str) -> list[str]:
    problems = []
    left = [p.name for p in scratch.glob(f"{SCRATCH_PREFIX}*")] if scratch.exists() else []
    if left:
        problems.append(f"scratch directories left behind: {left}")
    children = _child_processes()
    if children:
        problems.append(f"child processes still running: {children}")
    for name, url in (("queue", queue_url), ("dead-letter queue", dlq_url)):
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                          "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        count = sum(int(v) for v in attributes.values())
        if count:
            problems.append(f"{count} message(s) left in the {name}")
    return problems


def _child_processes() -> list[int]:
    """Live children of this process (Linux /proc; elsewhere none are reported)."""
    me, found = os.getpid(), []
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == me and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _print_metrics(metrics: Metrics) -> None:
    def total(name: str, **labels: str) -> float:
        return metrics.total(name, **labels)

    count = total("waveflow_dispatch_latency_seconds_count")
    mean = total("waveflow_dispatch_latency_seconds_sum") / count if count else 0.0
    p99 = _quantile(metrics, "waveflow_dispatch_latency_seconds", 0.99)
    print("\nMetrics")
    print(f"  messages received        {total('waveflow_messages_received_total'):.0f}")
    print("  jobs finished            " + ", ".join(
        f"{o.value} {total('waveflow_jobs_finished_total', outcome=o.value):.0f}"
        for o in Outcome))
    print(f"  dead-lettered            "
          f"{total('waveflow_messages_dead_lettered_total'):.0f}")
    print(f"  audio seconds processed  "
          f"{total('waveflow_audio_seconds_processed_total'):.1f}")
    print(f"  dispatch latency         mean {mean * 1000:.0f} ms, p99 ≤ {p99:g} s "
          f"({count:.0f} jobs; SQS SentTimestamp → job started)")


def _quantile(metrics: Metrics, name: str, q: float) -> float:
    """Upper bound of the histogram bucket holding quantile ``q``."""
    buckets: dict[float, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    if not buckets:
        return 0.0
    total = buckets.get(float("inf"), 0.0)
    for bound in sorted(buckets):
        if total and buckets[bound] >= q * total:
            return bound
    return float("inf")


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
  AWS_ENDPOINT_URL={endpoint} AWS_REGION={REGION} AWS_ACCESS_KEY_ID=demo \\
  AWS_SECRET_ACCESS_KEY=demo SQS_QUEUE_URL={queue_url} S3_BUCKET_NAME={BUCKET}
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
