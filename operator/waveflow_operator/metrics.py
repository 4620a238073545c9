"""Every Prometheus metric of the runner, with the names of docs/ARCHITECTURE.md.

One :class:`Metrics` object per process (shared by every queue; each series carries a ``queue``
label), on its own ``CollectorRegistry`` so tests and the demo can hold several side by side.
"""

from __future__ import annotations

import logging
import threading
from http.server import ThreadingHTTPServer
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import MetricsHandler

__all__ = ["Metrics", "serve"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


def _version() -> str:
    try:
        return metadata.version("waveflow")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The runner's metrics on a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        #: SQS messages received (each receipt, redeliveries included).
        self.messages_received = Counter(
            "waveflow_messages_received_total", "SQS messages received, redeliveries included.",
            ["queue"], registry=r)
        #: Messages moved to the dead-letter queue, by reason (an ErrorCode).
        self.messages_dead_lettered = Counter(
            "waveflow_messages_dead_lettered_total",
            "Messages moved to the dead-letter queue, by reason (an ErrorCode).",
            ["queue", "reason"], registry=r)
        #: Jobs launched (Kubernetes Jobs created or local processes started); adoptions excluded.
        self.jobs_created = Counter(
            "waveflow_jobs_created_total", "Jobs launched; adopted existing Jobs are not counted.",
            ["queue", "task"], registry=r)
        #: Jobs settled, by task and final outcome (succeeded, rejected, failed).
        self.jobs_finished = Counter(
            "waveflow_jobs_finished_total", "Jobs settled, by task and final outcome.",
            ["queue", "task", "outcome"], registry=r)
        #: Messages held by the runner right now (launched, not yet settled).
        self.jobs_in_flight = Gauge(
            "waveflow_jobs_in_flight", "Messages held by the runner and not yet settled.",
            ["queue"], registry=r)
        #: SQS SentTimestamp → job launched.
        self.dispatch_latency = Histogram(
            "waveflow_dispatch_latency_seconds", "SQS SentTimestamp to job launched, seconds.",
            ["queue"], buckets=_LATENCY_BUCKETS, registry=r)
        #: Job launched → final outcome known, retries included.
        self.job_duration = Histogram(
            "waveflow_job_duration_seconds", "Job launched to final outcome, retries included.",
            ["queue", "task"], buckets=_DURATION_BUCKETS, registry=r)
        #: Queue depth from GetQueueAttributes, by state (visible, in_flight, delayed).
        self.queue_messages = Gauge(
            "waveflow_queue_messages", "Messages in the SQS queue by state, polled.",
            ["queue", "state"], registry=r)
        #: Messages waiting in the dead-letter queue (visible).
        self.dead_letter_queue_messages = Gauge(
            "waveflow_dead_letter_queue_messages", "Messages waiting in the dead-letter queue.",
            ["queue"], registry=r)
        #: Seconds of audio analysed, from the jobs' summaries.
        self.audio_seconds_processed = Counter(
            "waveflow_audio_seconds_processed_total",
            "Seconds of audio processed, from the jobs' summaries.", ["queue"], registry=r)
        #: Bytes read from S3 by jobs, from their summaries.
        self.bytes_processed = Counter(
            "waveflow_bytes_processed_total", "Bytes processed by jobs, from their summaries.",
            ["queue", "task"], registry=r)
        #: Failed SQS calls, by operation (receive, delete, change_visibility, send_dlq, depth).
        self.sqs_errors = Counter(
            "waveflow_sqs_errors_total", "Failed SQS calls by operation.",
            ["queue", "operation"], registry=r)
        #: Failed Kubernetes API calls, by operation.
        self.kubernetes_api_errors = Counter(
            "waveflow_kubernetes_api_errors_total", "Failed Kubernetes API calls by operation.",
            ["operation"], registry=r)
        #: Visibility heartbeats that failed (the message may be redelivered while its job runs).
        self.heartbeat_errors = Counter(
            "waveflow_heartbeat_errors_total", "Visibility heartbeats that failed.",
            ["queue"], registry=r)
        #: When the queue was last polled successfully (unix seconds).
        self.last_poll_timestamp = Gauge(
            "waveflow_last_poll_timestamp_seconds", "Last successful ReceiveMessage, unix time.",
            ["queue"], registry=r)
        #: Always 1; the label carries the running version.
        self.build_info = Gauge(
            "waveflow_build_info", "Always 1; the version label names the running build.",
            ["version"], registry=r)
        self.build_info.labels(version=_version()).set(1)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when absent): for tests, the demo and summaries."""
        result = self.registry.get_sample_value(name, labels)
        return float(result) if result is not None else 0.0

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample named ``name`` whose labels include ``labels``."""
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    total += sample.value
        return total


def serve(metrics: Metrics, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve ``/metrics`` on ``port`` in a daemon thread; returns the server (``.shutdown()``)."""
    handler = MetricsHandler.factory(metrics.registry)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
    return server
