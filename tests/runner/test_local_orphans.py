"""Jobs never outlive a killed ``waveflow local``, and the in-flight limit holds across restarts.

A real ``waveflow local`` runs fake jobs (tests/support/fakejob.py) that hang and start a helper
process of their own; the runner is SIGKILLed while they run (no clean-up code of its own can
run) and started again. A watch thread samples the job processes all along.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from support.local_process import JobWatch, finish, process_alive, recorded, start_local
from support.queues import backend_message
from support.runner import Stack
from support.waiting import wait_for

pytestmark = pytest.mark.slow


def done(log: Path) -> list[str]:
    return sorted(line for line in log.read_text().splitlines() if line.startswith("done")) \
        if log.exists() else []


def test_a_sigkilled_runner_takes_its_jobs_along_and_the_next_one_ends_the_rest(
        stack: Stack, tmp_path: Path) -> None:
    log, record = tmp_path / "jobs.log", tmp_path / "processes.txt"
    stems = [f"stem-{i}" for i in range(4)]
    for stem in stems:
        stack.queues.send(backend_message("generate_hash_and_webhook", stem))
    common = {"FAKEJOB_RECORD": str(record), "WAVEFLOW_VISIBILITY_TIMEOUT_SECONDS": "4"}
    runners: list[subprocess.Popen[bytes]] = []
    with JobWatch(record) as watch:
        try:
            runners.append(first := start_local(stack, log, FAKEJOB_SLEEP="600",
                                                FAKEJOB_CHILD="1", **common))
            wait_for(lambda: len([p for p in recorded(record) if p.role == "child"]) == 2, 30,
                     message="two jobs running, each with a helper process")
            jobs = [p for p in recorded(record) if p.role == "job"]
            helpers = [p for p in recorded(record) if p.role == "child"]
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            # The jobs themselves die with their runner at once (the kernel kills them)...
            wait_for(lambda: not any(process_alive(p.pid) for p in jobs), 5,
                     message="the jobs to die with their runner")
            # ...and the next runner ends what they left behind before it starts anything.
            runners.append(second := start_local(stack, log, FAKEJOB_SLEEP="1", **common))
            wait_for(lambda: not any(process_alive(p.pid) for p in helpers), 15,
                     message="the next runner to end the jobs' helper processes")
            # The interrupted messages come back after their visibility timeout and run again.
            wait_for(lambda: len(done(log)) == 4, 60, message="every stem done")
            wait_for(lambda: stack.queues.counts() == (0, 0), 30, message="an empty queue")
            second.send_signal(signal.SIGTERM)
            finish(second)
            left_running = watch.alive()
        finally:
            for runner in runners:
                if runner.poll() is None:
                    runner.kill()
                    runner.wait()
    assert left_running == []
    assert done(log) == [f"done {stem}" for stem in stems]  # each exactly once
    assert watch.most_at_once <= 2, f"{watch.most_at_once} jobs ran at once; the limit is 2"
    assert watch.doubled == set(), f"stems run twice at the same time: {watch.doubled}"
    assert stack.queues.drain_dlq() == []
    assert stack.backend.webhooks == []  # nothing failed: the backend heard nothing from us
    assert stack.leftovers() == []  # the dead runner's scratch directories are gone too
