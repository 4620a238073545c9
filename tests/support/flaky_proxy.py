"""A loopback HTTP proxy in front of moto that answers the next N requests with an AWS error.

For "SQS throttles or fails, the runner backs off and carries on" without patching boto3: the
runner's endpoint is the proxy; the proxy forwards to moto once its failures are spent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import requests

from support.loopback import serving

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "content-encoding"}


@dataclass
class FlakyProxy:
    """Where it listens, and how many requests it still fails (with which AWS error)."""

    url: str
    target: str
    failures_left: int = 0
    status: int = 400
    code: str = "ThrottlingException"
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, count: int, *, status: int = 400,
                  code: str = "ThrottlingException") -> None:
        with self.lock:
            self.failures_left, self.status, self.code = count, status, code


def _handler_for(proxy: FlakyProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self._relay()

        def do_GET(self) -> None:
            self._relay()

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with proxy.lock:
                fail = proxy.failures_left > 0
                if fail:
                    proxy.failures_left -= 1
                    proxy.failed += 1
            if fail:
                payload = json.dumps({"__type": f"com.amazonaws.sqs#{proxy.code}",
                                      "message": "injected by the test proxy"}).encode()
                self._answer(proxy.status, {"Content-Type": "application/x-amz-json-1.0",
                                            "x-amzn-query-error": f"{proxy.code};Sender"},
                             payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream = requests.request(self.command, proxy.target + self.path, data=body,
                                        headers=headers, timeout=60)
            self._answer(upstream.status_code,
                         {k: v for k, v in upstream.headers.items()
                          if k.lower() not in _HOP_BY_HOP}, upstream.content)

        def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


@contextmanager
def running_flaky_proxy(target: str) -> Iterator[FlakyProxy]:
    """Serve on a free loopback port in front of ``target`` (moto's URL)."""
    proxy = FlakyProxy(url="", target=target.rstrip("/"))
    with serving(_handler_for(proxy)) as port:
        proxy.url = f"http://127.0.0.1:{port}"
        yield proxy
