"""``waveflow dev-backend``: the NestJS backend's side of the contract, small and documented.

For the demo, the end-to-end tests and the backend team (CONTRACT.md §2 and §7):

``POST /upload-complete``
    ``{"userId", "trackId", "stemId", "filepath", "original_filename"?}`` → registers the stem and
    sends ``generate_hash_and_webhook`` to SQS, as the backend does after an upload.
``POST /webhook/hash-check``
    Verifies ``X-WaveFlow-Signature`` when a secret is set (401 otherwise), validates the body
    (400 with NestJS's message shape), then decides duplicate by (userId, trackId, audio_hash)
    against the hashes of stems whose analysis SUCCEEDED — the same stem included — and sends
    ``process_duplicate_file`` or ``process_audio_analysis``.
``POST /webhook/completion``
    Verifies and validates, records the result; a SUCCESS analysis stores the stem's hash.
``GET /state``
    Every stem, webhook and message sent, as JSON.
``POST /dev/fail-next``
    ``{"count": N, "status": 503}``: answer the next N webhooks with that status (an outage).

Successful POSTs answer **201** ``{"status":"success"}`` like NestJS. A webhook delivery
(``X-WaveFlow-Delivery``) seen before is acknowledged but not acted on again.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3

from waveflow_dev.validation import BadRequest, require_strings, validate_webhook
from waveflow_job.config import ConfigError
from waveflow_job.contract import (
    DEFAULT_NUM_PEAKS,
    AnalysisKwargs,
    DuplicateKwargs,
    HashKwargs,
    Task,
    WebhookEvent,
    message_document,
    utc_now_iso,
)
from waveflow_job.contract import env as names
from waveflow_job.webhooks import signature_hex

__all__ = ["DevBackend", "StemRecord", "serve_from_env"]

log = logging.getLogger(__name__)

#: How far a signature's timestamp may be from now.
SIGNATURE_TOLERANCE_SECONDS = 300


@dataclass
class StemRecord:
    """What the backend's database knows about one stem."""

    stemId: str
    userId: str
    trackId: str
    filepath: str
    original_filename: str
    #: uploaded → hashed → analysis_requested | duplicate_requested → completed |
    #: duplicate_deleted | failed
    status: str = "uploaded"
    #: The hash reported by hash-check (not yet a stored hash).
    reported_hash: str | None = None
    #: The stored hash: set only by a SUCCESS analysis completion (``audio_data_hash``).
    audio_hash: str | None = None
    #: ``analysis`` or ``duplicate``: what the hash-check decided.
    decision: str | None = None
    result: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    #: Every status change, in order: ``[[iso time, status], ...]``.
    history: list[list[str]] = field(default_factory=list)

    def move(self, status: str) -> None:
        self.status = status
        self.history.append([utc_now_iso(), status])


class DevBackend:
    """The reference backend on a loopback (or any) port; thread-safe, in memory."""

    def __init__(self, queue_url: str, *, secret: str | None = None, region: str | None = None,
                 endpoint_url: str | None = None, host: str = "127.0.0.1", port: int = 0,
                 num_peaks: int = DEFAULT_NUM_PEAKS, sqs_client: Any | None = None) -> None:
        self.queue_url = queue_url
        self.secret = secret or None
        self.num_peaks = num_peaks
        self._sqs = sqs_client or boto3.client("sqs", region_name=region,
                                               endpoint_url=endpoint_url)
        self._lock = threading.RLock()
        self.stems: dict[str, StemRecord] = {}
        self.webhooks: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self._deliveries: set[str] = set()
        self._fail_script: list[int] = []
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def webhook_url(self) -> str:
        """The WEBHOOK_URL a runner should use."""
        return f"{self.url}/webhook"

    def start(self) -> DevBackend:
        self._thread = threading.Thread(target=self._server.serve_forever, name="dev-backend",
                                        daemon=True)
        self._thread.start()
        log.info("dev backend on %s (webhooks at %s)", self.url, self.webhook_url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> DevBackend:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in the calling thread (the CLI)."""
        self._server.serve_forever()

    # ------------------------------------------------------------------ actions

    def upload_complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """Register a stem and send ``generate_hash_and_webhook`` (the backend after upload)."""
        values = require_strings(body, ("userId", "trackId", "stemId", "filepath"))
        original = body.get("original_filename") or values["filepath"].rsplit("/", 1)[-1]
        with self._lock:
            stem = self.stems.get(values["stemId"])
            if stem is None:
                stem = StemRecord(values["stemId"], values["userId"], values["trackId"],
                                  values["filepath"], str(original))
                self.stems[stem.stemId] = stem
            # A re-sent upload (user retry, replayed event) keeps the stem's stored hash.
            stem.filepath, stem.original_filename = values["filepath"], str(original)
            stem.move("uploaded")
        kwargs: HashKwargs = {"userId": stem.userId, "trackId": stem.trackId,
                              "stemId": stem.stemId, "filepath": stem.filepath,
                              "timestamp": utc_now_iso(),
                              "original_filename": stem.original_filename}
        return self._send(Task.HASH, kwargs)

    def hash_check(self, body: dict[str, Any]) -> dict[str, Any]:
        """Decide duplicate or not and send the next stage."""
        validate_webhook(WebhookEvent.HASH_CHECK, body)
        stem_id, user_id, track_id = body["stemId"], body["userId"], body["trackId"]
        audio_hash = body["audio_hash"]
        with self._lock:
            stem = self.stems.get(stem_id)
            if stem is None:  # an upload the dev backend did not see: adopt it
                stem = StemRecord(stem_id, user_id, track_id, body["filepath"],
                                  body["original_filename"])
                self.stems[stem.stemId] = stem
            stem.reported_hash = audio_hash
            duplicate = any(other.audio_hash == audio_hash and other.userId == user_id
                            and other.trackId == track_id for other in self.stems.values())
            stem.decision = "duplicate" if duplicate else "analysis"
            stem.move("duplicate_requested" if duplicate else "analysis_requested")
        if duplicate:
            delete: DuplicateKwargs = {"userId": user_id, "trackId": track_id,
                                       "stemId": stem_id, "filepath": body["filepath"],
                                       "audio_hash": audio_hash}
            return self._send(Task.DUPLICATE, delete)
        analyse: AnalysisKwargs = {"userId": user_id, "trackId": track_id, "stemId": stem_id,
                                   "filepath": body["filepath"], "audio_hash": audio_hash,
                                   "timestamp": body["timestamp"],
                                   "original_filename": body["original_filename"],
                                   "num_peaks": self.num_peaks}
        return self._send(Task.ANALYSIS, analyse)

    def completion(self, body: dict[str, Any]) -> None:
        """Record a completion; SUCCESS with ``audio_data_hash`` stores the stem's hash."""
        validate_webhook(WebhookEvent.COMPLETION, body)
        result: dict[str, Any] = body["result"]
        with self._lock:
            stem = self.stems.setdefault(body["stemId"], StemRecord(
                body["stemId"], "", "", str(result.get("filepath", "")), ""))
            stem.result = result
            if body["status"] == "FAILURE":
                stem.error_code = str(result["error_code"])
                stem.error_message = str(result["error_message"])
                stem.move("failed")
            elif result.get("status") == "duplicate_file_deleted":
                stem.move("duplicate_deleted")
            else:
                stem.audio_hash = str(result["audio_data_hash"])
                stem.move("completed")

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` webhooks with ``status`` (simulate an outage)."""
        with self._lock:
            self._fail_script.extend([status] * count)

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"stems": {k: asdict(v) for k, v in self.stems.items()},
                    "webhooks": list(self.webhooks), "sent": list(self.sent)}

    def _send(self, task: Task, kwargs: HashKwargs | DuplicateKwargs | AnalysisKwargs
              ) -> dict[str, Any]:
        """Send in the backend's exact envelope; on a FIFO queue the group is the stemId."""
        message = message_document(task, kwargs)
        params: dict[str, Any] = {"QueueUrl": self.queue_url,
                                  "MessageBody": json.dumps(message, ensure_ascii=False)}
        if self.queue_url.endswith(".fifo"):
            params["MessageGroupId"] = kwargs["stemId"]
            params["MessageDeduplicationId"] = message["id"]
        self._sqs.send_message(**params)
        with self._lock:
            self.sent.append(message)
        log.info("sent %s for stem %s", task.value, kwargs["stemId"])
        return message

    # ------------------------------------------------------------------ webhooks

    def handle_webhook(self, event: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        """Verify, deduplicate by delivery id, then act; returns (status, answer)."""
        with self._lock:
            record = {"event": event, "headers": headers, "received_at": utc_now_iso(),
                      "body": _json_or_text(raw)}
            self.webhooks.append(record)
            if self._fail_script:
                status = self._fail_script.pop(0)
                record["answered"] = status
                return status, {"statusCode": status, "message": "simulated outage"}
        problem = self._verify(raw, headers)
        if problem:
            record["answered"] = 401
            return 401, {"statusCode": 401, "message": problem, "error": "Unauthorized"}
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            record["answered"] = 400
            return 400, {"statusCode": 400, "message": ["Content-Type must be application/json"],
                         "error": "Bad Request"}
        delivery = headers.get("x-waveflow-delivery")
        with self._lock:
            if delivery and delivery in self._deliveries:
                record["answered"] = 201
                record["repeat"] = True
                return 201, {"status": "success"}
        try:
            body = json.loads(raw, parse_constant=_no_constants)
            if not isinstance(body, dict):
                raise BadRequest(400, ["body must be a JSON object"])
            if event == WebhookEvent.HASH_CHECK.value:
                self.hash_check(body)
            else:
                self.completion(body)
        except BadRequest as error:
            record["answered"] = error.status
            return error.status, {"statusCode": error.status, "message": error.messages,
                                  "error": "Bad Request"}
        except ValueError as error:
            record["answered"] = 400
            return 400, {"statusCode": 400, "message": [f"invalid JSON: {error}"],
                         "error": "Bad Request"}
        with self._lock:
            if delivery:
                self._deliveries.add(delivery)
            record["answered"] = 201
        return 201, {"status": "success"}

    def _verify(self, raw: bytes, headers: dict[str, str]) -> str | None:
        if not self.secret:
            return None
        header = headers.get("x-waveflow-signature", "")
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        try:
            timestamp = int(parts.get("t", ""))
        except ValueError:
            return "missing or malformed X-WaveFlow-Signature"
        if abs(time.time() - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
            return "X-WaveFlow-Signature timestamp is too old"
        expected = signature_hex(self.secret, timestamp, raw)
        if not hmac.compare_digest(expected, parts.get("v1", "")):
            return "X-WaveFlow-Signature does not match"
        return None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _handler_for(backend: DevBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "waveflow-dev-backend"

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/state", ""):
                self._answer(200, backend.state())
            elif self.path.rstrip("/") == "/healthz":
                self._answer(200, {"status": "ok"})
            else:
                self._answer(404, {"statusCode": 404, "message": f"Cannot GET {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/webhook/hash-check", "/webhook/completion"):
                status, answer = backend.handle_webhook(path.rsplit("/", 1)[-1], raw, headers)
                self._answer(status, answer)
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest(400, ["body must be a JSON object"])
                if path == "/upload-complete":
                    backend.upload_complete(body)
                elif path == "/dev/fail-next":
                    backend.fail_next(int(body.get("count", 1)), int(body.get("status", 503)))
                else:
                    self._answer(404, {"statusCode": 404, "message": f"Cannot POST {self.path}"})
                    return
            except BadRequest as error:
                self._answer(400, {"statusCode": 400, "message": error.messages,
                                   "error": "Bad Request"})
                return
            except ValueError as error:
                self._answer(400, {"statusCode": 400, "message": [str(error)],
                                   "error": "Bad Request"})
                return
            self._answer(201, {"status": "success"})

        def _answer(self, status: int, document: Any) -> None:
            payload = json.dumps(document, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


def serve_from_env(*, host: str, port: int, num_peaks: int) -> int:
    """``waveflow dev-backend``: serve until interrupted; settings from the environment."""
    queue_url = os.environ.get(names.QUEUE_URL)
    if not queue_url:
        raise ConfigError("SQS_QUEUE_URL is required (where the backend sends messages)")
    backend = DevBackend(queue_url, secret=os.environ.get(names.WEBHOOK_SECRET),
                         region=os.environ.get(names.REGION),
                         endpoint_url=os.environ.get(names.ENDPOINT_URL), host=host, port=port,
                         num_peaks=num_peaks)
    print(f"dev backend on {backend.url}; WEBHOOK_URL={backend.webhook_url}", flush=True)
    # Explicit handlers: a process started in the background by a non-interactive shell
    # inherits SIGINT as ignored, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        backend.serve_forever()
    return 0
