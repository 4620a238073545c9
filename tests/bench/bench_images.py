"""Image benchmark: what each image adds above its base, and how fast the job starts in one.

1. Bytes above the base image (the image's own layers), uncompressed and gzip'd as a registry
   push sends them, against the targets: job ≤ 200 MB, operator ≤ 120 MB.
2. ``waveflow-job run`` for a hash message (a 1 MiB WAV on moto, the webhook to a loopback
   recorder), side by side: on the host (this venv) and in the job image run the way
   ``build_job()`` says (tests/support/jobpod.py), interleaved, median of N rounds. Also the
   time from ``podman run`` to the container's first log line, and an empty container
   (``--entrypoint true``) as the engine's own floor.

The images are built first with charts/images/build.py (cached layers: quick when nothing changed).

    .venv/bin/python tests/bench/bench_images.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.aws import BUCKET, moto_process
from support.containers import PodRun, image_build
from support.jobpod import job_pod, queue_spec
from support.jobrun import wav_bytes, waveflow_job_command
from support.webhooks import running_webhook_recorder
from waveflow_job.contract import Task

TARGETS_MB = {"job": 200, "operator": 120}
TAGS = {"job": "localhost/waveflow/job:bench", "operator": "localhost/waveflow/operator:bench"}
KEY = "audio/bench/stem.wav"


def sizes(images, engine, base: str) -> None:  # type: ignore[no-untyped-def]
    print(f"\nbytes above the base image ({base})")
    print(f"  {'image':<10} {'uncompressed':>13} {'gzip (push)':>12} {'target':>8}")
    for image, tag in TAGS.items():
        size = images.bytes_above_base(engine, tag, base)
        verdict = "ok" if size.uncompressed <= TARGETS_MB[image] * 1e6 else "OVER"
        print(f"  {image:<10} {size.uncompressed / 1e6:>10.1f} MB {size.gzipped / 1e6:>9.1f} MB "
              f"{TARGETS_MB[image]:>5} MB  {verdict}")


def host_env(run: PodRun, workdir: Path) -> dict[str, str]:
    """The pod's environment for a host process: its own scratch dir and summary file."""
    env = dict(value.split("=", 1) for flag, value in zip(run.flags, run.flags[1:], strict=False)
               if flag == "--env")
    scratch = workdir / "host-scratch"
    scratch.mkdir(exist_ok=True)
    env.update({"TMPDIR": str(scratch), "WAVEFLOW_SUMMARY_FILE": str(workdir / "host-summary"),
                "PATH": os.environ["PATH"], "HOME": str(workdir)})
    return env


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds to the first output line, seconds to exit); fails on a non-zero exit."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    process.stdout.readline()
    first = time.perf_counter() - start
    rest = process.stdout.read()
    code = process.wait()
    total = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{command[0]} exited {code}:\n{rest[-2000:]}")
    return first, total


def startup(images, engine, rounds: int) -> None:  # type: ignore[no-untyped-def]
    data = wav_bytes(seconds=32.0, sample_rate=16000)  # 1 MiB
    with moto_process() as aws, running_webhook_recorder() as webhooks, \
            tempfile.TemporaryDirectory(prefix="waveflow-bench-") as tmp:
        s3 = aws.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
        spec = queue_spec(aws, BUCKET, webhooks.url, TAGS["job"])
        results: dict[str, list[tuple[float, float]]] = {"host": [], "container": [], "true": []}
        for index in range(rounds + 1):  # round 0 warms the page cache and is dropped
            workdir = Path(tmp) / f"round-{index}"
            image, run = job_pod(spec, Task.HASH, workdir, filepath=KEY)
            container = [engine.command, "run", "--rm", *run.flags, image, *run.command]
            host = [waveflow_job_command(), *run.command]
            floor = [engine.command, "run", "--rm", "--network", "host", "--entrypoint", "true",
                     image]
            measured = {
                "host": timed(host, host_env(run, workdir)),
                "container": timed(container, {**os.environ, **engine.env}),
                "true": timed(floor, {**os.environ, **engine.env}),
            }
            if index:
                for name, value in measured.items():
                    results[name].append(value)
        expected = hashlib.sha256(data).hexdigest()
        posted = {body["audio_hash"] for body in webhooks.bodies("/hash-check")}
        assert posted == {expected}, posted
    print(f"\nwaveflow-job run, hash of a 1 MiB WAV on moto (median of {rounds}, seconds)")
    print(f"  {'where':<32} {'first log line':>15} {'exit':>8}")
    rows = {"host (venv)": "host", "job image (podman, as the Job)": "container",
            "empty container (true)": "true"}
    for label, name in rows.items():
        first = statistics.median(r[0] for r in results[name])
        total = statistics.median(r[1] for r in results[name])
        print(f"  {label:<32} {first:>15.2f} {total:>8.2f}" if name != "true"
              else f"  {label:<32} {'-':>15} {total:>8.2f}")
    host_total = statistics.median(r[1] for r in results["host"])
    container_total = statistics.median(r[1] for r in results["container"])
    print(f"  container / host: {container_total / host_total:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    images = image_build()
    engine = images.detect_engine("podman")
    base = images.ensure_base(engine)
    started = time.perf_counter()
    for image, tag in TAGS.items():
        images.build(engine, image, tag, base)
    print(f"images built in {time.perf_counter() - started:.1f} s (cached layers reused)")
    sizes(images, engine, base)
    startup(images, engine, args.rounds)


if __name__ == "__main__":
    main()
