"""Analyse one hostile file per forked child and report outcome, time and peak memory.

    python tests/reliability/hostile_worker.py        (paths on stdin, one JSON line out each)

The worker imports the analysis once (numpy, libsndfile, FFmpeg: ~0.3 s) and forks a fresh
child per file, so each file is measured on its own: the child resets its peak-RSS mark
(``/proc/self/clear_refs``), runs the real ``analyse_file`` with a detail waveform and
loudness (what the analysis stage runs), builds and strictly serialises the document, checks
it is sane, and reports. A child that takes longer than the deadline is killed and reported as
a hang; one that dies is reported with its signal. The worker has no threads when it forks.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

import av  # noqa: F401 - imported once here, not in every child
import soundfile  # noqa: F401

import waveflow_job.audio.decode
import waveflow_job.audio.detail
import waveflow_job.audio.loudness
import waveflow_job.audio.peaks  # noqa: F401 - with the three above: imported before forking
from waveflow_job.audio.limits import AudioLimits
from waveflow_job.contract import dumps_strict
from waveflow_job.errors import WaveflowError
from waveflow_job.waveform import DetailRequest, analyse_file, build_waveform_document

NUM_PEAKS = 64
LIMITS = AudioLimits()
DEADLINE_SECONDS = float(os.environ.get("HOSTILE_DEADLINE_SECONDS", "20"))


def main() -> int:
    for line in sys.stdin:
        path = line.strip()
        if path:
            print(json.dumps(run_one(path)), flush=True)
    return 0


def run_one(path: str) -> dict[str, Any]:
    read, write = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: analyse, report on the pipe, leave without clean-up
        os.close(read)
        try:
            report = analyse(path)
        except BaseException as error:  # anything that reaches here is what we look for
            report = {"outcome": f"EXCEPTION {type(error).__name__}: {error}"[:300]}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    output = _read_until(read, started + DEADLINE_SECONDS)
    os.close(read)
    seconds = time.monotonic() - started
    if output is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return {"path": path, "outcome": "HANG", "seconds": round(seconds, 2)}
    _, status = os.waitpid(pid, 0)
    if not output:
        return {"path": path, "outcome": f"DIED {os.waitstatus_to_exitcode(status)}",
                "seconds": round(seconds, 2)}
    return {"path": path, "seconds": round(seconds, 3), **json.loads(output)}


def analyse(path: str) -> dict[str, Any]:
    _clear_peak_rss()
    baseline = _status_kib("VmHWM")
    detail = Path(path).with_suffix(".detail.dat")
    try:
        analysis = analyse_file(path, NUM_PEAKS, max_duration_seconds=3600.0, limits=LIMITS,
                                detail=DetailRequest(detail), loudness=True)
        document = build_waveform_document(analysis, created_at="2026-12-01T00:00:00.000Z")
        body = dumps_strict(document)
        problems = document_problems(document, len(body))
        if analysis.detail is not None:
            problems += detail_problems(detail, document["channels"])
        outcome = "ok"
    except WaveflowError as error:
        outcome, problems = error.code.value, []
    finally:
        detail.unlink(missing_ok=True)
    return {"outcome": outcome, "problems": problems,
            "peak_growth_kib": _status_kib("VmHWM") - baseline}


def document_problems(doc: dict[str, Any], size: int) -> list[str]:
    """What a sane waveform document must be (CONTRACT.md §3), as a list of violations."""
    problems = []
    peaks, data = doc["peaks"], doc["data"]
    channels, length = doc["channels"], doc["length"]
    if len(peaks) != NUM_PEAKS or doc["num_peaks"] != NUM_PEAKS:
        problems.append(f"{len(peaks)} peaks")
    if not all(isinstance(p, float | int) and 0.0 <= p <= 1.0 for p in peaks):
        problems.append("a peak outside 0..1")
    if not (isinstance(doc["duration"], float | int) and math.isfinite(doc["duration"])
            and doc["duration"] > 0):
        problems.append(f"duration {doc['duration']!r}")
    if not LIMITS.min_sample_rate <= doc["sample_rate"] <= LIMITS.max_sample_rate:
        problems.append(f"sample rate {doc['sample_rate']}")
    if not 1 <= channels <= LIMITS.max_channels:
        problems.append(f"{channels} channels")
    if not 1 <= length <= NUM_PEAKS or doc["samples_per_pixel"] < 1:
        problems.append(f"length {length}, samples_per_pixel {doc['samples_per_pixel']}")
    if len(data) != 2 * length * channels:
        problems.append(f"{len(data)} data values for {length} points x {channels} channels")
    if not all(isinstance(v, int) and -128 <= v <= 127 for v in data):
        problems.append("a data value outside 8 bits")
    if size > 64 * 1024 + 8 * LIMITS.max_waveform_values:
        problems.append(f"a {size}-byte document")
    return problems


def detail_problems(path: Path, channels: int) -> list[str]:
    """The .dat: a 24-byte v2 header, then min/max per point and channel (8-bit)."""
    data = path.read_bytes()
    if len(data) < 24:
        return [f"a {len(data)}-byte .dat"]
    version, _flags, _rate, _spp, length, dat_channels = (
        int.from_bytes(data[i:i + 4], "little") for i in range(0, 24, 4))
    problems = []
    if (version, dat_channels) != (2, channels):
        problems.append(f".dat version {version}, {dat_channels} channels")
    if len(data) != 24 + 2 * length * channels:
        problems.append(f".dat of {len(data)} bytes for {length} points")
    return problems


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything the child writes, or None when it is still writing at the deadline."""
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _clear_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux: 5 > /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
