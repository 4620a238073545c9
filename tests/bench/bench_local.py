"""Benchmark: the local runner under a burst (``python tests/bench/bench_local.py``).

A burst of messages is sent to moto's SQS at once; the runner (the shared dispatcher + local
launcher) runs each as a trivial child process (``/bin/true``: the dispatcher's own cost plus a
fork/exec) and, for a smaller burst, the real ``waveflow-job`` hashing a small file. Reports
dispatch latency (SQS SentTimestamp → job started) p50/p99 and settled messages per second at
two in-flight limits, plus a steady trickle below the limit (where latency is the dispatcher's
own). moto runs in a process of its own (``--in-process`` shares ours, as the tests do); it is
the ceiling here: a bare receive + batch-delete loop against it settles ~75 messages/s on
2 cores. Numbers depend on the machine; compare them as ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.aws import BUCKET, REGION, MotoEndpoint, moto_process, running_moto
from support.queues import backend_message, make_queues
from support.webhooks import running_webhook_recorder
from waveflow_operator.local.config import default_job_command
from waveflow_operator.local.launcher import LocalLauncher
from waveflow_operator.metrics import Metrics
from waveflow_operator.runner.dispatcher import Dispatcher
from waveflow_operator.runner.protocol import Adopted, Created, JobRequest
from waveflow_operator.runner.spec import QueueSpec


class TimedLauncher(LocalLauncher):
    """Records SentTimestamp → launch for every job it starts."""

    latencies: list[float]

    async def launch(self, request: JobRequest) -> Created | Adopted:
        answer = await super().launch(request)
        sent = request.delivery.sent_timestamp_ms
        if isinstance(answer, Created) and sent is not None:
            self.latencies.append(time.time() - sent / 1000)
        return answer


async def burst(endpoint_url: str, webhook_url: str, count: int, max_in_flight: int,
                command: tuple[str, ...], name: str, rate: float | None = None
                ) -> dict[str, float]:
    endpoint = MotoEndpoint(endpoint_url)
    queues = make_queues(endpoint, name)
    settings = QueueSpec(name=name, queue_url=queues.url, bucket=BUCKET,
                         webhook_url=webhook_url, region=REGION,
                         endpoint_url=endpoint_url, max_in_flight=max_in_flight,
                         wait_time_seconds=1, depth_poll_seconds=60)
    scratch = Path(tempfile.mkdtemp(prefix="wf-bench-"))
    launcher = TimedLauncher(settings, scratch, job_command=command)
    launcher.latencies = []
    dispatcher = Dispatcher(settings, launcher, metrics=Metrics())
    client = queues.client()
    bodies = [json.dumps(backend_message("generate_hash_and_webhook", f"s{i}",
                                         filepath="audio/tiny.wav")) for i in range(count)]
    start = time.monotonic()
    if rate is None:  # a burst: everything is queued before the runner starts
        for i in range(0, count, 10):
            client.send_message_batch(QueueUrl=queues.url, Entries=[
                {"Id": str(j), "MessageBody": body} for j, body in enumerate(bodies[i:i + 10])])
        await dispatcher.start()
    else:  # a steady trickle below the in-flight limit: latency is the dispatcher's own
        await dispatcher.start()
        for body in bodies:
            await asyncio.to_thread(client.send_message, QueueUrl=queues.url, MessageBody=body)
            await asyncio.sleep(1 / rate)
    while dispatcher.status.succeeded + dispatcher.status.rejected + dispatcher.status.failed \
            < count:
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - start
    await dispatcher.stop(5)
    shutil.rmtree(scratch, ignore_errors=True)
    latencies = sorted(launcher.latencies)
    return {"p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "per_second": count / elapsed, "failed": dispatcher.status.failed}


def main() -> None:
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": REGION})
    emulator = running_moto if "--in-process" in sys.argv else moto_process
    with emulator() as endpoint, running_webhook_recorder() as webhooks:
        os.environ["AWS_ENDPOINT_URL"] = endpoint.url
        endpoint.client("s3").create_bucket(Bucket=BUCKET)
        endpoint.client("s3").put_object(Bucket=BUCKET, Key="audio/tiny.wav", Body=b"x" * 4096)
        true = ("/bin/true",)
        cases: list[tuple[str, int, int, tuple[str, ...], float | None]] = [
            ("true, 10/s trickle", 60, 10, true, 10.0),
            ("true, burst", 300, 10, true, None), ("true, burst", 300, 50, true, None),
            ("waveflow-job hash", 40, 4, default_job_command(), None)]
        print(f"{'job':<22}{'messages':>9}{'in flight':>10}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'settled/s':>11}", flush=True)
        for i, (label, count, limit, command, rate) in enumerate(cases):
            result = asyncio.run(burst(endpoint.url, webhooks.url, count, limit, command,
                                       f"bench-{i}", rate))
            print(f"{label:<22}{count:>9}{limit:>10}{result['p50'] * 1000:>9.0f}"
                  f"{result['p99'] * 1000:>9.0f}{result['per_second']:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
