"""The webhook client against a real loopback backend: headers, signature, retries, budget."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from support.webhooks import WebhookRecorder
from waveflow_job.contract import WebhookEvent, dumps_strict
from waveflow_job.errors import WebhookUndelivered
from waveflow_job.webhooks import WebhookClient, WebhookRefused, retry_after, sign, user_agent

BODY = {"stemId": "스템-1", "status": "SUCCESS", "timestamp": "2026-11-26T08:36:48.817Z",
        "result": {"duration": 30.5, "file_size": 1024000}}
DELIVERY = "completion-0123456789abcdef0123456789abcdef"


class Sleeps:
    """Records each wait the client asks for, and really waits (capped, to stay quick)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(min(seconds, 1.5))


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(webhooks: WebhookRecorder, sleeps: Sleeps) -> Iterator[WebhookClient]:
    with WebhookClient(webhooks.url, "s3cr3t", timeout=2, budget=5, backoff=0.01,
                       sleep=sleeps) as client:
        yield client


def test_body_is_posted_with_the_contract_headers_and_a_verifiable_signature(
        client: WebhookClient, webhooks: WebhookRecorder) -> None:
    before = int(time.time())
    assert client.post(WebhookEvent.COMPLETION, BODY, delivery=DELIVERY) == 201

    [request] = webhooks.received()
    assert request.path == "/webhook/completion"
    assert request.body == dumps_strict(BODY)
    assert request.header("Content-Type") == "application/json"
    assert request.header("User-Agent") == user_agent()
    assert user_agent().startswith("waveflow/0.")
    assert request.header("X-WaveFlow-Event") == "completion"
    assert request.header("X-WaveFlow-Delivery") == DELIVERY
    fields = dict(part.split("=", 1) for part in request.header("X-WaveFlow-Signature").split(","))
    assert set(fields) == {"t", "v1"}
    assert before <= int(fields["t"]) <= int(time.time())
    expected = hmac.new(b"s3cr3t", fields["t"].encode() + b"." + request.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)


def test_no_signature_header_without_a_secret(webhooks: WebhookRecorder) -> None:
    with WebhookClient(webhooks.url + "/", None) as client:
        client.post(WebhookEvent.HASH_CHECK, BODY, delivery="d-1")

    [request] = webhooks.received()
    assert request.path == "/webhook/hash-check"
    assert request.header("X-WaveFlow-Signature") is None
    assert request.header("X-WaveFlow-Event") == "hash-check"


def test_5xx_answers_are_retried_with_the_same_delivery_id_and_body(
        client: WebhookClient, webhooks: WebhookRecorder, sleeps: Sleeps) -> None:
    webhooks.fail_next(1, 500)
    webhooks.fail_next(1, 502)
    webhooks.fail_next(1, 503)

    assert client.post(WebhookEvent.COMPLETION, BODY, delivery=DELIVERY) == 201

    attempts = webhooks.received()
    assert len(attempts) == 4
    assert {r.header("X-WaveFlow-Delivery") for r in attempts} == {DELIVERY}
    assert {r.body for r in attempts} == {dumps_strict(BODY)}
    assert len(sleeps.waits) == 3
    ceilings = [0.01, 0.02, 0.04]  # exponential, full jitter below each ceiling
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(sleeps.waits, ceilings, strict=True))


def test_429_retry_after_in_seconds_is_honoured(client: WebhookClient, webhooks: WebhookRecorder,
                                                sleeps: Sleeps) -> None:
    webhooks.fail_next(1, 429, {"Retry-After": "1"})

    assert client.post(WebhookEvent.COMPLETION, BODY, delivery=DELIVERY) == 201

    assert sleeps.waits == [1.0]
    assert len(webhooks.received()) == 2


def test_429_retry_after_as_an_http_date_is_honoured(client: WebhookClient,
                                                     webhooks: WebhookRecorder,
                                                     sleeps: Sleeps) -> None:
    webhooks.fail_next(1, 429, {"Retry-After": formatdate(time.time() + 2, usegmt=True)})

    assert client.post(WebhookEvent.COMPLETION, BODY, delivery=DELIVERY) == 201

    [wait] = sleeps.waits
    assert 0 <= wait <= 2
    assert len(webhooks.received()) == 2


def test_retry_after_beyond_the_budget_gives_up_at_once(webhooks: WebhookRecorder,
                                                        sleeps: Sleeps) -> None:
    webhooks.fail_next(1, 503, {"Retry-After": "120"})
    with WebhookClient(webhooks.url, budget=5, sleep=sleeps) as client, \
            pytest.raises(WebhookUndelivered, match="1 attempt"):
        client.post(WebhookEvent.COMPLETION, BODY, delivery=DELIVERY)

    assert sleeps.waits == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_answers_are_not_retried(client: WebhookClient, webhooks: WebhookRecorder,
                                           status: int) -> None:
    webhooks.fail_next(1, status)

    with pytest.raises(WebhookRefused) as refused:
        client.post(WebhookEvent.COMPLETION, BODY, delivery=DELIVERY)

    assert refused.value.status == status
    assert f"HTTP {status}" in str(refused.value)
    assert refused.value.answer == '{"message":"scripted"}'
    assert len(webhooks.received()) == 1


def test_unreachable_backend_is_retried_until_the_budget_runs_out(sleeps: Sleeps) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/webhook"
    with WebhookClient(url, budget=0.5, backoff=0.05, sleep=sleeps) as client, \
            pytest.raises(WebhookUndelivered, match="ConnectionError"):
        client.post(WebhookEvent.HASH_CHECK, BODY, delivery=DELIVERY)

    assert len(sleeps.waits) >= 1


def test_non_finite_numbers_are_refused_before_anything_is_sent(
        client: WebhookClient, webhooks: WebhookRecorder) -> None:
    with pytest.raises(ValueError):
        client.post(WebhookEvent.COMPLETION, {**BODY, "result": {"duration": float("nan")}},
                    delivery=DELIVERY)

    assert webhooks.received() == []


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    raw = json.dumps({"a": 1}).encode()
    assert sign("key", 1732600000, raw) == "t=1732600000,v1=" + hmac.new(
        b"key", b"1732600000." + raw, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None), ("7", 7.0), (" 0 ", 0.0), ("soon", None), ("-3", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
])
def test_retry_after_header_values(header: str | None, expected: float | None) -> None:
    assert retry_after(header) == expected


# --------------------------------------------------------------------------- the guide's snippet

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "INTEGRATION.md"


def typescript_snippet_as_javascript() -> str:
    """The guide's TypeScript verifier with its few type annotations removed, for plain node."""
    [snippet] = re.findall(r"```ts\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    code = snippet.replace('import { createHmac, timingSafeEqual } from "node:crypto";',
                           'const { createHmac, timingSafeEqual } = require("node:crypto");')
    code = code.replace("export function", "function").replace("): boolean {", ") {")
    return re.sub(r"^(\s+\w+): [\w| ]+?(?=( =|,))", r"\1", code, flags=re.M)


def test_integration_guide_typescript_verifier_accepts_real_signatures_only(
        webhooks: WebhookRecorder) -> None:
    assert shutil.which("node"), "node runs the guide's verifier (make demo needs Node.js too)"
    with WebhookClient(webhooks.url, "shared-secret") as client:
        client.post(WebhookEvent.COMPLETION, BODY, delivery=DELIVERY)
    [request] = webhooks.received()
    header = request.header("X-WaveFlow-Signature")
    now = int(header.split(",")[0].removeprefix("t="))
    checks = {
        "genuine": (request.body, header, "shared-secret", now),
        "clock skew within tolerance": (request.body, header, "shared-secret", now + 299),
        "tampered body": (request.body.replace(b"30.5", b"31.5"), header, "shared-secret", now),
        "wrong secret": (request.body, header, "other-secret", now),
        "replayed late": (request.body, header, "shared-secret", now + 301),
        "missing header": (request.body, "", "shared-secret", now),
        "garbage header": (request.body, "t=x,v1=zz", "shared-secret", now),
    }
    cases = [{"name": name, "body": body.hex(), "header": hdr, "secret": secret, "now": at}
             for name, (body, hdr, secret, at) in checks.items()]
    program = typescript_snippet_as_javascript() + """
const cases = JSON.parse(process.argv[1]);
const out = {};
for (const c of cases) {
  out[c.name] = verifyWaveflowSignature(Buffer.from(c.body, "hex"), c.header || undefined,
                                        c.secret, 300, c.now);
}
console.log(JSON.stringify(out));
"""
    done = subprocess.run(["node", "-e", program, json.dumps(cases)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "genuine": True, "clock skew within tolerance": True, "tampered body": False,
        "wrong secret": False, "replayed late": False, "missing header": False,
        "garbage header": False,
    }
