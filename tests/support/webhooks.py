"""A real HTTP server on loopback that records every webhook and answers as told."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from support.loopback import serving


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the backend would have received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class WebhookRecorder:
    """The recorded requests and a script of answers (status, headers) to give, in order."""

    url: str
    requests: list[RecordedRequest] = field(default_factory=list)
    #: Answers to give before falling back to 201 {"status":"success"} (like NestJS).
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, count: int, status: int = 503, headers: dict[str, str] | None = None):
        """Answer the next ``count`` requests with ``status``."""
        with self.lock:
            self.script.extend([(status, headers or {})] * count)

    def received(self, path_suffix: str = "") -> list[RecordedRequest]:
        """Requests whose path ends with ``path_suffix`` (e.g. "/completion")."""
        with self.lock:
            return [r for r in self.requests if r.path.endswith(path_suffix)]

    def bodies(self, path_suffix: str = "") -> list[Any]:
        return [r.json() for r in self.received(path_suffix)]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.script.clear()


def _handler_for(recorder: WebhookRecorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            with recorder.lock:
                recorder.requests.append(RecordedRequest(
                    "POST", self.path, dict(self.headers.items()), body))
                status, headers = recorder.script.pop(0) if recorder.script else (201, {})
            payload = b'{"status":"success"}' if status < 300 else b'{"message":"scripted"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


@contextmanager
def running_webhook_recorder() -> Iterator[WebhookRecorder]:
    """Serve on a free loopback port; the recorder's ``url`` is the WEBHOOK_URL to configure."""
    recorder = WebhookRecorder(url="")
    with serving(_handler_for(recorder)) as port:
        recorder.url = f"http://127.0.0.1:{port}/webhook"
        yield recorder
