"""A valid message near SQS's size limit reaches its job whole, through a real ``waveflow local``.

A body travelling in one environment variable fails exec with E2BIG past 128 KiB (the kernel's
MAX_ARG_STRLEN), so such a message could never run; the runner hands it over as a file.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from support.local_process import finish, recorded, start_local
from support.queues import backend_message
from support.runner import Stack
from support.waiting import wait_for
from waveflow_dev import synth

pytestmark = pytest.mark.slow

WAVEFLOW_JOB = Path(sys.executable).parent / "waveflow-job"
#: A 250 KiB unknown kwarg: the contract carries unknown kwargs through, so the message is valid.
BIG_KWARG = "wave" * (250 * 1024 // 4)


def big_hash_message(stem: str, key: str) -> dict[str, Any]:
    return backend_message("generate_hash_and_webhook", stem, filepath=key,
                           stageNotes=BIG_KWARG)


def test_a_250_kib_message_runs_through_waveflow_local(stack: Stack, tmp_path: Path) -> None:
    rate = 22050
    audio = synth.write_audio(tmp_path / "big.wav", "wav-16", synth.tone(rate // 2, rate, 1),
                              rate).read_bytes()
    stack.aws.client("s3").put_object(Bucket=stack.bucket, Key="audio/big.wav", Body=audio)
    body = json.dumps(big_hash_message("stem-big", "audio/big.wav"))
    assert 250 * 1024 < len(body.encode()) <= 262_144
    stack.queues.send(body)
    runner = start_local(stack, tmp_path / "unused.log",
                         WAVEFLOW_JOB_COMMAND=f"{WAVEFLOW_JOB} run")
    try:
        # hash-check → the backend sends the analysis → the stem completes.
        wait_for(lambda: getattr(stack.backend.stems.get("stem-big"), "status", None)
                 == "completed", 60, message="the big message's stem to complete")
        wait_for(lambda: stack.queues.counts() == (0, 0), 30, message="an empty queue")
    finally:
        runner.send_signal(signal.SIGTERM)
        finish(runner)
    stem = stack.backend.stems["stem-big"]
    assert stem.audio_hash == hashlib.sha256(audio).hexdigest()
    assert stack.queues.drain_dlq() == []
    assert stack.leftovers() == []  # the message file went with the job's scratch directory


def test_the_job_gets_a_large_body_byte_for_byte(stack: Stack, tmp_path: Path) -> None:
    record = tmp_path / "processes.txt"
    body = json.dumps(big_hash_message("stem-exact", "audio/x.wav"), ensure_ascii=False)
    stack.queues.send(body)
    runner = start_local(stack, tmp_path / "jobs.log", FAKEJOB_RECORD=str(record))
    try:
        wait_for(lambda: stack.queues.counts() == (0, 0), 30, message="an empty queue")
    finally:
        runner.send_signal(signal.SIGTERM)
        finish(runner)
    digests = [line.split()[2] for line in record.read_text().splitlines()
               if line.startswith("body stem-exact ")]
    assert digests == [hashlib.sha256(body.encode()).hexdigest()]
    assert [p.role for p in recorded(record)] == ["job"]
    assert stack.queues.drain_dlq() == []
