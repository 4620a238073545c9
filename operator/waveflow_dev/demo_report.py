"""What ``waveflow demo`` saw, shown and checked: the per-stem table, PNG waveforms and
``index.html`` drawn from the waveform JSON in S3, the metrics summary, and the checks that
decide the demo's exit code."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import time
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from waveflow_dev import players_page
from waveflow_dev.backend import DevBackend
from waveflow_dev.demo_samples import BUCKET, REPLAYED, SAMPLES, Sample
from waveflow_job.contract import JobSummary, Outcome, Task
from waveflow_operator.local.scratch import SCRATCH_PREFIX
from waveflow_operator.metrics import Metrics
from waveflow_operator.runner.protocol import JobRequest, JobResult

__all__ = ["RunLog", "Settled", "check", "check_leftovers", "print_metrics", "print_replay",
           "print_table", "rows", "waveform_png", "write_pictures"]

_TASK_SHORT = {Task.HASH: "hash", Task.DUPLICATE: "duplicate", Task.ANALYSIS: "analysis"}


@dataclass
class Settled:
    """One job of a stem, as the runner settled it."""

    task: Task
    outcome: Outcome
    error_code: str | None
    seconds: float | None


@dataclass
class RunLog:
    """What the demo saw happen."""

    settled: dict[str, list[Settled]] = field(default_factory=dict)
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
            Settled(request.message.task, result.outcome, code, result.duration_seconds))

    def elapsed(self) -> float:
        return time.monotonic() - self.started


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


def rows(state: RunLog, backend: DevBackend, s3: Any) -> list[_Row]:
    rows = []
    for sample in SAMPLES:
        record = backend.stems.get(sample.stem)
        result = (record.result or {}) if record else {}
        settled = state.settled.get(sample.stem, [])
        if sample.stem == REPLAYED and state.before_replay is not None:
            settled = settled[:state.before_replay]
        stages = stages_of(settled)
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


def stages_of(settled: list[Settled]) -> str:
    return " → ".join(f"{_TASK_SHORT[s.task]} {_mark(s.outcome)}" for s in settled)


def _width(text: str) -> int:
    """Terminal columns: East Asian wide characters (Korean file names) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _mark(outcome: Outcome) -> str:
    return {Outcome.SUCCEEDED: "✓", Outcome.REJECTED: "✗ rejected",
            Outcome.FAILED: "✗ failed"}[outcome]


def _number(value: Any, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, int | float) else "-"


def print_table(rows: list[_Row]) -> None:
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


def print_replay(state: RunLog) -> None:
    if state.before_replay is None:
        return
    replay = state.settled.get(REPLAYED, [])[state.before_replay:]
    codes = ", ".join(s.error_code for s in replay if s.error_code)
    print(f"\nReplayed upload event of {REPLAYED}: {stages_of(replay)}"
          f"{f' ({codes})' if codes else ''}: the analysed original is kept and no FAILURE "
          "is sent, so the stem stays analysed.")


def write_pictures(rows: list[_Row], s3: Any, output: Path, players: Path) -> None:
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


def check(rows: list[_Row], state: RunLog, backend: DevBackend, s3: Any) -> list[str]:
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
    replayed = backend.stems.get(REPLAYED)
    if replayed is not None and replayed.status == "failed":
        problems.append(f"{REPLAYED} was marked failed by the replayed event")
    return problems


def _keys(s3: Any) -> set[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET)
    return {o["Key"] for o in listing.get("Contents", [])}


def check_leftovers(scratch: Path, sqs: Any, queue_url: str, dlq_url: str) -> list[str]:
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


def print_metrics(metrics: Metrics) -> None:
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
