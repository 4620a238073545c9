"""A loopback HTTP proxy that injects faults, for the reliability suite (tests/reliability).

It stands in front of moto (S3 and SQS) or in front of the reference backend (webhooks) and
decides per request, from a list of :class:`Rule`\\ s, what the client gets:

- ``answer``  — an error of the right shape (AWS JSON for SQS, S3 XML, NestJS JSON for webhooks)
  with a status and headers (``Retry-After``), the request never reaching the server;
- ``reset``   — the connection closed without an answer;
- ``cut``     — the server's answer forwarded, its body cut after half (a reset mid-download);
- ``slow``    — the answer forwarded, its body dripped in small chunks;
- ``hang``    — nothing for ``seconds``, then the request forwarded (the client has timed out,
  the server still acts: the retry must be a harmless repeat);
- ``hold``    — the request parked until :meth:`FaultProxy.release`: a test stops the runner
  at an exact step of settling (e.g. before the delete), then decides to drop or forward it.

It also keeps a ledger of SQS traffic parsed from requests and answers: which MessageId each
receipt handle belongs to, and every *successful* delete and dead-letter copy, so a test can
check "settled exactly once" from the wire, whatever process did it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import requests

from support.loopback import serving

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "content-encoding"}


@dataclass(frozen=True)
class Request:
    """What a rule sees: the service (``s3`` | ``sqs`` | ``webhook``), operation and key."""

    service: str
    #: SQS: the action (``ReceiveMessage``…); S3: the HTTP method (``GET``, ``HEAD``…);
    #: webhooks: the event (``hash-check`` | ``completion``).
    operation: str
    method: str
    path: str
    #: S3: the object key (without the bucket); SQS: the QueueUrl named in the body.
    target: str
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            return {}


@dataclass
class Rule:
    """``when(request)`` → apply ``action`` (at most ``times`` times; None: forever)."""

    when: Callable[[Request], bool]
    action: str
    status: int = 503
    code: str = "ServiceUnavailable"
    #: The error's message text (an "answer"), as the service would word it.
    message: str = "injected by the fault proxy"
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    times: int | None = 1
    #: Called (with the request) when the rule fires, e.g. to count injected faults.
    on_fire: Callable[[Request], None] | None = None
    fired: int = 0


@dataclass
class _Held:
    request: Request
    released: threading.Event = field(default_factory=threading.Event)
    forward: bool = False


@dataclass
class SqsLedger:
    """SQS traffic seen through the proxy (thread-safe)."""

    #: receipt handle → MessageId, from ReceiveMessage answers.
    receipts: dict[str, str] = field(default_factory=dict)
    #: MessageId → successful deletes (DeleteMessage and DeleteMessageBatch).
    deletes: Counter[str] = field(default_factory=Counter)
    #: MessageId → how often it was handed to a receiver.
    receives: Counter[str] = field(default_factory=Counter)
    #: MessageId → the body's ``id`` (the backend's message id), when it has one.
    bodies: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultProxy:
    """The proxy's state: where it listens, its rules, parked requests and the SQS ledger."""

    def __init__(self, target: str, service: str | None = None) -> None:
        self.url = ""
        self.target = target.rstrip("/")
        #: Force a service for every request ("webhook" in front of the backend).
        self.service = service
        self.rules: list[Rule] = []
        self.ledger = SqsLedger()
        self.held: list[_Held] = []
        self.fired: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._parked = threading.Condition(self._lock)
        self._session = threading.local()

    # ------------------------------------------------------------------ scripting

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def wait_held(self, timeout: float = 30.0) -> Request:
        """Block until a request is parked by a ``hold`` rule; returns it."""
        deadline = time.monotonic() + timeout
        with self._parked:
            while not any(not h.released.is_set() for h in self.held):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no request was held")
                self._parked.wait(left)
            return next(h for h in self.held if not h.released.is_set()).request

    def release(self, *, forward: bool) -> None:
        """Let every parked request go: forwarded to the server, or dropped (reset)."""
        with self._lock:
            for held in self.held:
                held.forward = forward
                held.released.set()

    def _match(self, request: Request) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if rule.when(request):
                    rule.fired += 1
                    self.fired[f"{request.service}:{rule.action}"] += 1
                    return rule
        return None

    # ------------------------------------------------------------------ relaying

    def http(self) -> requests.Session:
        session = getattr(self._session, "value", None)
        if session is None:
            session = self._session.value = requests.Session()
        return session

    def classify(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Request:
        lowered = {k.lower(): v for k, v in headers.items()}
        amz_target = lowered.get("x-amz-target", "")
        if self.service == "webhook":
            return Request("webhook", path.rstrip("/").rsplit("/", 1)[-1], method, path, "",
                           body)
        if amz_target.startswith("AmazonSQS."):
            operation = amz_target.split(".", 1)[1]
            try:
                queue = str(json.loads(body or b"{}").get("QueueUrl", ""))
            except ValueError:
                queue = ""
            return Request("sqs", operation, method, path, queue, body)
        parts = path.split("?", 1)[0].lstrip("/").split("/", 1)
        key = requests.utils.unquote(parts[1]) if len(parts) > 1 else ""
        return Request("s3", method, method, path, key, body)

    def note_sqs(self, request: Request, answer: bytes, status: int) -> None:
        """Keep the ledger: receipts from receives, MessageIds of successful deletes."""
        if request.service != "sqs" or status >= 300:
            return
        try:
            sent, got = request.json(), json.loads(answer or b"{}")
        except ValueError:
            return
        with self.ledger.lock:
            if request.operation == "ReceiveMessage":
                for message in got.get("Messages", []):
                    self.ledger.receipts[message["ReceiptHandle"]] = message["MessageId"]
                    self.ledger.receives[message["MessageId"]] += 1
                    self.ledger.bodies[message["MessageId"]] = body_id(message.get("Body", ""))
            elif request.operation == "DeleteMessage":
                found = self.ledger.receipts.get(sent.get("ReceiptHandle", ""))
                if found:
                    self.ledger.deletes[found] += 1
            elif request.operation == "DeleteMessageBatch":
                entries = {e["Id"]: e["ReceiptHandle"] for e in sent.get("Entries", [])}
                for success in got.get("Successful", []):
                    found = self.ledger.receipts.get(entries.get(success["Id"], ""))
                    if found:
                        self.ledger.deletes[found] += 1


def body_id(text: str) -> str:
    """The backend's ``id`` inside an SQS body ("?" when it has none)."""
    try:
        document = json.loads(text)
    except ValueError:
        return "?"
    return str(document.get("id", "?")) if isinstance(document, dict) else "?"


def error_payload(request: Request, rule: Rule) -> tuple[dict[str, str], bytes]:
    """An error in the shape the client expects from that service."""
    if request.service == "sqs":
        return ({"Content-Type": "application/x-amz-json-1.0",
                 "x-amzn-query-error": f"{rule.code};Sender"},
                json.dumps({"__type": f"com.amazonaws.sqs#{rule.code}",
                            "message": rule.message}).encode())
    if request.service == "s3":
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" + rule.code +
                "</Code><Message>" + rule.message + "</Message></Error>")
        return {"Content-Type": "application/xml"}, (b"" if request.method == "HEAD"
                                                      else body.encode())
    return ({"Content-Type": "application/json"},
            json.dumps({"statusCode": rule.status, "message": [rule.message],
                        "error": rule.code}).encode())


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._relay()

        do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = dict(self.headers.items())
            request = proxy.classify(self.command, self.path, headers, body)
            rule = proxy._match(request)
            if rule is not None and rule.on_fire is not None:
                rule.on_fire(request)
            action = rule.action if rule else "forward"
            if action == "answer":
                assert rule is not None
                extra, payload = error_payload(request, rule)
                self._answer(rule.status, {**extra, **rule.headers}, payload,
                             length=len(payload))
                return
            if action == "reset":
                self.close_connection = True
                return
            if action == "hang":
                assert rule is not None
                time.sleep(rule.seconds)
            if action == "hold":
                held = _Held(request)
                with proxy._parked:
                    proxy.held.append(held)
                    proxy._parked.notify_all()
                held.released.wait()
                if not held.forward:
                    self.close_connection = True
                    return
            status, answer_headers, payload = self._forward(request, headers, body)
            proxy.note_sqs(request, payload, status)
            if action == "cut" and len(payload) > 1:
                self._answer(status, answer_headers, payload[: len(payload) // 2],
                             length=len(payload))
                self.close_connection = True
                return
            drip = rule.seconds if rule and action == "slow" else 0.0
            self._answer(status, answer_headers, payload, length=len(payload), drip=drip)

        def _forward(self, request: Request, headers: dict[str, str], body: bytes
                     ) -> tuple[int, dict[str, str], bytes]:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream = proxy.http().request(self.command, proxy.target + self.path, data=body,
                                            headers=sent, timeout=120, allow_redirects=False)
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            if self.command == "HEAD":
                kept["Content-Length"] = upstream.headers.get("Content-Length", "0")
            return upstream.status_code, kept, upstream.content

        def _answer(self, status: int, headers: dict[str, str], payload: bytes, *,
                    length: int, drip: float = 0.0) -> None:
            try:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                declared = headers.get("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", declared or str(length))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if drip:
                    for start in range(0, len(payload), 1024):
                        self.wfile.write(payload[start:start + 1024])
                        self.wfile.flush()
                        time.sleep(drip)
                else:
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


@contextmanager
def running_fault_proxy(target: str, service: str | None = None) -> Iterator[FaultProxy]:
    """Serve a :class:`FaultProxy` in front of ``target`` on a free loopback port."""
    proxy = FaultProxy(target, service)
    with serving(_handler_for(proxy)) as port:
        proxy.url = f"http://127.0.0.1:{port}"
        try:
            yield proxy
        finally:
            proxy.release(forward=False)


def seeded_chance(seed: int, probability: float) -> Callable[[Request], bool]:
    """A predicate true for a seeded-random share of the requests it is asked about."""
    generator = random.Random(seed)
    lock = threading.Lock()

    def chance(_: Request) -> bool:
        with lock:
            return generator.random() < probability

    return chance
