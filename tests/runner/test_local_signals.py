"""``waveflow local`` as a real process: SIGTERM stops it cleanly and loses no message.

The jobs are ``tests/support/fakejob.py`` (``WAVEFLOW_JOB_COMMAND``) so a test can make them
slow; everything else is real: the CLI, moto over HTTP, the reference backend
(tests/support/local_process.py).
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
import requests

from support.local_process import events, finish, start_local
from support.loopback import listening_address
from support.queues import backend_message
from support.runner import Stack
from support.waiting import wait_for

pytestmark = pytest.mark.slow


def test_sigterm_lets_running_jobs_finish_and_the_rest_waits_in_the_queue(
        stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    stems = [f"stem-{i}" for i in range(4)]
    for stem in stems:
        stack.queues.send(backend_message("generate_hash_and_webhook", stem))
    runner = start_local(stack, log, FAKEJOB_SLEEP="2", WAVEFLOW_GRACE_SECONDS="30")
    wait_for(lambda: sum(events(log).values()) == 2, 30, message="two jobs started")
    runner.send_signal(signal.SIGTERM)
    finish(runner)
    first = events(log)
    assert sum(v for k, v in first.items() if k.startswith("done")) == 2  # they finished
    assert stack.queues.counts() == (2, 0)  # the two never started wait, visible
    # After a restart the rest is processed; every stem completes exactly once.
    runner = start_local(stack, log, FAKEJOB_SLEEP="0")
    wait_for(lambda: stack.queues.counts() == (0, 0), 30, message="an empty queue")
    wait_for(lambda: sum(1 for k in events(log) if k.startswith("done")) == 4, 30,
             message="four jobs done")
    runner.send_signal(signal.SIGTERM)
    finish(runner)
    assert {f"done {s}": 1 for s in stems} == {k: v for k, v in events(log).items()
                                               if k.startswith("done")}
    assert stack.queues.drain_dlq() == []
    assert stack.leftovers() == []


def test_a_second_signal_kills_running_jobs_and_still_returns_their_messages(
        stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "jobs.log"
    stems = ["stem-x", "stem-y"]
    for stem in stems:
        stack.queues.send(backend_message("generate_hash_and_webhook", stem))
    runner = start_local(stack, log, FAKEJOB_SLEEP="600", WAVEFLOW_GRACE_SECONDS="600")
    wait_for(lambda: sum(events(log).values()) == 2, 30, message="two jobs started")
    runner.send_signal(signal.SIGTERM)
    runner.send_signal(signal.SIGINT)
    finish(runner)
    assert not any(k.startswith("done") for k in events(log))
    # Returned with visibility 0: visible again at once, not after the visibility timeout.
    assert stack.queues.counts() == (2, 0)
    assert stack.leftovers() == []
    runner = start_local(stack, log, FAKEJOB_SLEEP="0")
    wait_for(lambda: stack.queues.counts() == (0, 0), 30, message="an empty queue")
    wait_for(lambda: sum(1 for k in events(log) if k.startswith("done")) == 2, 30,
             message="both jobs done")
    runner.send_signal(signal.SIGTERM)
    finish(runner)
    assert {k: v for k, v in events(log).items() if k.startswith("done")} == \
        {"done stem-x": 1, "done stem-y": 1}
    assert stack.backend.webhooks == []  # nothing failed, so the runner told the backend nothing
    assert stack.leftovers() == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_waveflow_local_serves_metrics_and_liveness_on_loopback_only(
        stack: Stack, tmp_path: Path) -> None:
    metrics_port, health_port = free_port(), free_port()
    runner = start_local(stack, tmp_path / "jobs.log", WAVEFLOW_METRICS_PORT=str(metrics_port),
                         WAVEFLOW_HEALTH_PORT=str(health_port))
    stack.queues.send(backend_message("generate_hash_and_webhook", "stem-m"))

    def scrape() -> str:
        try:
            return requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
        except requests.ConnectionError:
            return ""

    try:
        text = wait_for(lambda: (t := scrape()) and 'outcome="succeeded"' in t and t, 30,
                        message="a settled job in the metrics")
        assert 'waveflow_jobs_finished_total{outcome="succeeded",queue="waveflow-test",' \
            'task="generate_hash_and_webhook"} 1.0' in text
        live = requests.get(f"http://127.0.0.1:{health_port}/healthz", timeout=5)
        assert live.status_code == 200 and live.text.startswith("ok")
        # A laptop's runner is not reachable from the network unless asked to be.
        assert listening_address(metrics_port) == listening_address(health_port) == "127.0.0.1"
    finally:
        runner.send_signal(signal.SIGTERM)
        finish(runner)


def test_waveflow_listen_address_opens_metrics_and_liveness_to_every_interface(
        stack: Stack, tmp_path: Path) -> None:
    metrics_port, health_port = free_port(), free_port()
    runner = start_local(stack, tmp_path / "jobs.log", WAVEFLOW_METRICS_PORT=str(metrics_port),
                         WAVEFLOW_HEALTH_PORT=str(health_port), WAVEFLOW_LISTEN_ADDRESS="0.0.0.0")
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{health_port}/healthz"), 30,
                 message="liveness")
        assert listening_address(metrics_port) == listening_address(health_port) == "0.0.0.0"
    finally:
        runner.send_signal(signal.SIGTERM)
        finish(runner)
