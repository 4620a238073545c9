"""The reference backend answers and decides like the NestJS backend (CONTRACT.md §2, §7)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from support.aws import REGION, MotoEndpoint
from support.queues import Queues, make_queues
from waveflow_dev.backend import DevBackend
from waveflow_job.contract import (
    StemMessage,
    Task,
    WebhookEvent,
    analysis_success_body,
    delivery_id,
    dumps_strict,
    hash_check_body,
)
from waveflow_job.webhooks import sign

SECRET = "dev-secret"
HASH = "ab" * 32


@pytest.fixture
def queues(aws: MotoEndpoint) -> Queues:
    return make_queues(aws)


@pytest.fixture
def backend(queues: Queues, aws: MotoEndpoint) -> Iterator[DevBackend]:
    with DevBackend(queues.url, secret=SECRET, region=REGION, endpoint_url=aws.url) as server:
        yield server


def post(backend: DevBackend, event: str, body: dict[str, Any], *, secret: str | None = SECRET,
         delivery: str | None = None) -> requests.Response:
    raw = dumps_strict(body)
    headers = {"Content-Type": "application/json", "X-WaveFlow-Event": event,
               "X-WaveFlow-Delivery": delivery or f"{event}-{time.monotonic_ns()}"}
    if secret:
        headers["X-WaveFlow-Signature"] = sign(secret, int(time.time()), raw)
    return requests.post(f"{backend.webhook_url}/{event}", data=raw, headers=headers, timeout=10)


def received(queues: Queues) -> list[dict[str, Any]]:
    client = queues.client()
    bodies = []
    while True:
        messages = client.receive_message(QueueUrl=queues.url, MaxNumberOfMessages=10,
                                          WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            client.delete_message(QueueUrl=queues.url, ReceiptHandle=message["ReceiptHandle"])


def stem_message(task: Task, stem: str, audio_hash: str | None = None, *, user: str = "u1",
                 track: str = "t1") -> StemMessage:
    return StemMessage(task, user, track, stem, f"audio/{stem}.wav", audio_hash=audio_hash,
                       timestamp="2026-11-26T08:36:48.817Z", original_filename=f"{stem}.wav")


def hash_check(stem: str, audio_hash: str = HASH, **fields: str) -> dict[str, Any]:
    """What the job posts (``contract.hash_check_body``)."""
    message = stem_message(Task.HASH, stem, user=fields.get("user", "u1"),
                           track=fields.get("track", "t1"))
    return dict(hash_check_body(message, audio_hash))


def success(stem: str, audio_hash: str = HASH) -> dict[str, Any]:
    """What the job posts after an analysis (``contract.analysis_success_body``)."""
    return dict(analysis_success_body(stem_message(Task.ANALYSIS, stem, audio_hash), {
        "audio_data_hash": audio_hash, "waveform_data_path": f"waveforms/{stem}.json",
        "file_size": 1000, "duration": 1.5, "sample_rate": 44100, "num_peaks": 1024}))


def test_upload_complete_sends_the_hash_task_in_the_backends_envelope(
        backend: DevBackend, queues: Queues) -> None:
    answer = requests.post(f"{backend.url}/upload-complete", timeout=10, json={
        "userId": "u1", "trackId": "t1", "stemId": "stem-1", "filepath": "audio/노래 #1.wav"})
    assert (answer.status_code, answer.json()) == (201, {"status": "success"})
    [message] = received(queues)
    assert set(message) == {"task", "id", "args", "kwargs"}
    assert message["task"] == "app.tasks.generate_hash_and_webhook"
    assert message["id"].startswith("hash-stem-1-") and message["args"] == []
    assert message["kwargs"]["filepath"] == "audio/노래 #1.wav"
    assert message["kwargs"]["original_filename"] == "노래 #1.wav"


def test_a_new_hash_is_sent_to_analysis_and_only_a_success_stores_it(
        backend: DevBackend, queues: Queues) -> None:
    assert post(backend, "hash-check", hash_check("stem-1")).status_code == 201
    # Two identical uploads racing: neither is analysed yet, so both go to analysis.
    assert post(backend, "hash-check", hash_check("stem-2")).status_code == 201
    assert [m["task"] for m in received(queues)] == ["app.tasks.process_audio_analysis"] * 2
    assert post(backend, "completion", success("stem-1")).status_code == 201
    # Now the hash is stored: the same bytes for the same track are a duplicate…
    post(backend, "hash-check", hash_check("stem-3"))
    # …including for the very stem that owns them (a replayed event);
    post(backend, "hash-check", hash_check("stem-1"))
    # but not for another track.
    post(backend, "hash-check", hash_check("stem-4", track="t2"))
    messages = received(queues)
    assert [(m["task"], m["kwargs"]["stemId"]) for m in messages] == [
        ("app.tasks.process_duplicate_file", "stem-3"),
        ("app.tasks.process_duplicate_file", "stem-1"),
        ("app.tasks.process_audio_analysis", "stem-4")]
    assert messages[0]["kwargs"] == {"userId": "u1", "trackId": "t1", "stemId": "stem-3",
                                     "filepath": "audio/stem-3.wav", "audio_hash": HASH}
    assert messages[0]["id"].startswith("duplicate-stem-3-")
    assert messages[2]["kwargs"]["num_peaks"] == 1024
    assert backend.stems["stem-1"].audio_hash == HASH


def test_unsigned_or_wrongly_signed_webhooks_are_refused(backend: DevBackend,
                                                         queues: Queues) -> None:
    assert post(backend, "hash-check", hash_check("stem-1"), secret=None).status_code == 401
    assert post(backend, "hash-check", hash_check("stem-1"), secret="other").status_code == 401
    assert received(queues) == []


def test_invalid_bodies_get_nestjs_style_400s(backend: DevBackend) -> None:
    bad_hash = post(backend, "hash-check", hash_check("stem-1", audio_hash="ABC"))
    assert bad_hash.status_code == 400
    assert bad_hash.json()["error"] == "Bad Request"
    assert isinstance(bad_hash.json()["message"], list)
    wrong_type = success("stem-1")
    wrong_type["result"]["file_size"] = "1000"
    assert post(backend, "completion", wrong_type).status_code == 400


def test_a_repeated_delivery_is_acknowledged_but_acted_on_once(
        backend: DevBackend, queues: Queues) -> None:
    delivery = delivery_id(WebhookEvent.HASH_CHECK, "hash-stem-1-1", b"")
    for _ in range(3):
        answer = post(backend, "hash-check", hash_check("stem-1"), delivery=delivery)
        assert answer.status_code == 201
    assert len(received(queues)) == 1
    assert [w.get("repeat", False) for w in backend.webhooks] == [False, True, True]


def test_an_outage_can_be_simulated_and_state_is_served(backend: DevBackend) -> None:
    requests.post(f"{backend.url}/dev/fail-next", json={"count": 2, "status": 503}, timeout=10)
    statuses = [post(backend, "completion", success("stem-9")).status_code for _ in range(3)]
    assert statuses == [503, 503, 201]
    state = requests.get(f"{backend.url}/state", timeout=10).json()
    assert state["stems"]["stem-9"]["status"] == "completed"
    assert [w["answered"] for w in state["webhooks"]] == [503, 503, 201]


@pytest.mark.parametrize("inherited_sigint", ["default", "ignored"])
def test_waveflow_dev_backend_serves_from_the_command_line(queues: Queues, aws: MotoEndpoint,
                                                          inherited_sigint: str) -> None:
    """It stops on SIGINT even when started the way a non-interactive shell starts a
    background command (SIGINT inherited as ignored)."""
    def start_as_background_job() -> None:
        if inherited_sigint == "ignored":
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SQS_QUEUE_URL": queues.url, "WEBHOOK_SECRET": SECRET}
    process = subprocess.Popen([str(Path(sys.executable).parent / "waveflow"), "dev-backend",
                                "--port", str(port)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=start_as_background_job)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"WEBHOOK_URL=http://127.0.0.1:{port}/webhook" in banner
        answer = requests.post(f"http://127.0.0.1:{port}/upload-complete", timeout=10, json={
            "userId": "u", "trackId": "t", "stemId": "stem-cli", "filepath": "audio/x.wav"})
        assert answer.status_code == 201
        [message] = received(queues)
        assert message["kwargs"]["stemId"] == "stem-cli"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


@pytest.mark.parametrize(("secret", "problem"), [
    ("another-secret", "X-WaveFlow-Signature does not match"),
    (None, "missing or malformed X-WaveFlow-Signature"),
])
def test_a_webhook_without_a_valid_signature_is_refused_and_acts_on_nothing(
        backend: DevBackend, queues: Queues, secret: str | None, problem: str) -> None:
    answer = post(backend, "hash-check", hash_check("stem-x"), secret=secret)
    assert answer.status_code == 401
    assert answer.json()["message"] == problem
    assert received(queues) == []


@pytest.mark.parametrize(("command", "missing"), [("dev-backend", "jsonschema"),
                                                   ("demo", "moto")])
def test_without_the_demo_extra_the_cli_names_what_to_install(command: str,
                                                              missing: str) -> None:
    """The images carry no dev package: the CLI says so instead of a traceback."""
    script = (f"import sys; sys.modules[{missing!r}] = None\n"
              "from waveflow_operator.cli import main\n"
              f"sys.exit(main([{command!r}]))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 1
    assert f"missing: {missing}" in result.stderr
    assert "pip install -e '.[demo]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bodies_the_schema_refuses_are_refused_with_what_is_wrong(backend: DevBackend) -> None:
    empty_stem = post(backend, "hash-check", {**hash_check("stem-1"), "stemId": ""})
    assert (empty_stem.status_code, empty_stem.json()["message"]) == (
        400, ["stemId '' should be non-empty"])
    failure = {"stemId": "stem-1", "status": "FAILURE", "timestamp": "2026-11-26T08:37:00.000Z",
               "result": {"error_code": "AUDIO_CORRUPT", "task": None, "retryable": False}}
    missing = post(backend, "completion", failure)
    assert (missing.status_code, missing.json()["message"]) == (
        400, ["result 'error_message' is a required property"])
    neither = success("stem-1")
    del neither["result"]["num_peaks"]
    answer = post(backend, "completion", neither)
    assert answer.status_code == 400
    assert answer.json()["message"] == ["result 'num_peaks' is a required property"]
    assert backend.stems == {}
