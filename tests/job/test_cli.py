"""``waveflow-job``: message sources, exit codes, rejections, logs, summary, start-up imports."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.jobrun import (
    KWARGS,
    JobWorld,
    flat_message,
    json_message,
    kombu_message,
    restore_logging_after_test,
    wav_bytes,
    waveflow_job_command,
)
from waveflow_job import cli
from waveflow_job.contract import WebhookEvent, delivery_id

KEY = "audio/a b/노래.wav"
DATA = b"bytes to hash"
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def _logging_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cli.main`` configures process-wide logging; give it back after each test."""
    restore_logging_after_test(monkeypatch)


def hash_message(**overrides: Any) -> str:
    return json_message("generate_hash_and_webhook", **{**KWARGS, "filepath": KEY, **overrides})


def failure(world: JobWorld) -> dict[str, Any]:
    """The one FAILURE completion the job sent, with its timestamp checked and removed."""
    [body] = world.webhooks.bodies()
    assert body.pop("timestamp").endswith("Z")
    return body


# --------------------------------------------------------------------------- message sources


def test_message_is_read_from_a_file_from_stdin_and_from_the_environment(
        world: JobWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world.put(KEY, DATA)
    message_file = tmp_path / "message.json"
    message_file.write_text(hash_message(), encoding="utf-8")

    assert cli.main(["run", "--message-file", str(message_file)]) == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(hash_message().encode())))
    assert cli.main(["run", "--message-file", "-"]) == 0
    monkeypatch.setenv("WAVEFLOW_MESSAGE", hash_message())
    assert cli.main(["run"]) == 0

    bodies = world.webhooks.bodies("/hash-check")
    assert [b["audio_hash"] for b in bodies] == [SHA, SHA, SHA]


def test_no_message_at_all_is_a_usage_error(world: JobWorld) -> None:
    assert cli.main(["run"]) == 2

    assert world.webhooks.received() == []
    assert not world.summary_path.exists()


def test_both_message_flags_at_once_are_refused_by_the_parser(world: JobWorld) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--message", "{}", "--message-file", "x.json"])
    assert exit_info.value.code == 2


def test_missing_required_setting_is_a_usage_error_naming_it(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("S3_BUCKET_NAME")

    assert world.run(hash_message()) == 2

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert any("S3_BUCKET_NAME is required" in line["message"] for line in lines)
    assert world.webhooks.received() == []


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("raw", ["not json {", "", "   ", "[1, 2]", "bm90IGpzb24=",
                                 '{"task": "app.tasks.generate_hash_and_webhook", "kwargs": 3}'])
def test_unreadable_message_is_rejected_without_a_webhook(world: JobWorld, raw: str) -> None:
    exit_code = cli.main(["run", "--message", raw])

    assert exit_code == 3
    assert world.webhooks.received() == []
    summary = world.summary()
    assert (summary["outcome"], summary["error_code"], summary["stem_id"]) == (
        "rejected", "MESSAGE_INVALID", None)


def test_unknown_task_is_rejected_with_a_failure_for_its_stem(world: JobWorld) -> None:
    raw = json.dumps({"task": "app.tasks.resize_cover", "id": "resize-stem-789-1",
                      "kwargs": KWARGS})

    assert world.run(raw) == 3

    assert failure(world) == {
        "stemId": "stem-789", "status": "FAILURE",
        "result": {"error_code": "UNKNOWN_TASK",
                   "error_message": "task: unknown task 'app.tasks.resize_cover' (known: "
                                    "generate_hash_and_webhook, process_duplicate_file, "
                                    "process_audio_analysis)",
                   "task": "resize_cover", "retryable": False}}
    [request] = world.webhooks.received()
    assert request.header("X-WaveFlow-Delivery") == delivery_id(
        WebhookEvent.COMPLETION, "resize-stem-789-1", raw)
    assert world.summary()["task"] == "resize_cover"


@pytest.mark.parametrize(("task", "missing"), [
    ("generate_hash_and_webhook", "userId"),
    ("generate_hash_and_webhook", "filepath"),
    ("process_duplicate_file", "audio_hash"),
    ("process_audio_analysis", "trackId"),
])
def test_missing_field_is_rejected_naming_it(world: JobWorld, task: str, missing: str) -> None:
    kwargs = {**KWARGS, "filepath": KEY, "audio_hash": SHA}
    del kwargs[missing]

    assert world.run(json_message(task, **kwargs)) == 3

    assert failure(world) == {
        "stemId": "stem-789", "status": "FAILURE",
        "result": {"error_code": "MESSAGE_INVALID",
                   "error_message": f"{missing}: is required for {task}",
                   "task": task, "retryable": False}}


def test_missing_stem_id_is_rejected_without_a_webhook(world: JobWorld) -> None:
    kwargs = {k: v for k, v in KWARGS.items() if k != "stemId"}

    assert world.run(json_message("generate_hash_and_webhook", filepath=KEY, **kwargs)) == 3

    assert world.webhooks.received() == []
    assert world.summary()["error_code"] == "MESSAGE_INVALID"


@pytest.mark.parametrize(("key", "problem"), [
    ("../etc/passwd", "must not contain '.' or '..' segments"),
    ("audio/../../secrets.wav", "must not contain '.' or '..' segments"),
    ("/etc/passwd", "must be a key relative to the bucket, not an absolute path"),
    ("audio/line\nbreak.wav", "must not contain control characters, line separators or "
                               "noncharacters (found U+000A)"),
])
def test_hostile_key_is_rejected_before_s3_is_touched(world: JobWorld, key: str,
                                                      problem: str) -> None:
    world.put("etc/passwd", b"root")

    assert world.run(hash_message(filepath=key)) == 3

    assert failure(world)["result"] == {"error_code": "KEY_INVALID",
                                        "error_message": f"filepath: {problem}",
                                        "task": "generate_hash_and_webhook", "retryable": False}
    assert world.object_keys() == ["etc/passwd"]


@pytest.mark.parametrize("envelope", [json_message, flat_message, kombu_message])
def test_each_envelope_reaches_the_analysis_stage(world: JobWorld, envelope: Any) -> None:
    data = wav_bytes(seconds=0.1)
    world.put(KEY, data)
    sha = hashlib.sha256(data).hexdigest()

    raw = envelope("process_audio_analysis", **KWARGS, filepath=KEY, audio_hash=sha,
                   num_peaks="64", stageId="carried-through")
    assert world.run(raw) == 0

    [body] = world.webhooks.bodies("/completion")
    assert (body["status"], body["result"]["num_peaks"]) == ("SUCCESS", 64)


def test_failure_that_cannot_be_delivered_exits_for_a_retry(world: JobWorld) -> None:
    world.webhooks.fail_next(1, 400)

    assert world.run(hash_message()) == 1

    assert len(world.webhooks.received("/completion")) == 1
    summary = world.summary()
    assert (summary["outcome"], summary["error_code"]) == ("failed", "WEBHOOK_UNDELIVERED")


# --------------------------------------------------------------------------- logs and summary


def test_every_log_line_is_json_naming_the_message(world: JobWorld,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    world.put(KEY, DATA)

    assert world.run(hash_message()) == 0

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    ours = [line for line in lines if line["logger"].startswith("waveflow_job")]
    assert [line["message"] for line in ours] == ["processing", "hashed", "webhook delivered",
                                                  "job finished"]
    for line in ours[:3]:
        assert (line["stemId"], line["task"], line["messageId"]) == (
            "stem-789", "generate_hash_and_webhook", "hash-stem-789-1732600000000")
        assert line["time"].endswith("Z")
    assert ours[-1]["outcome"] == "succeeded"


def test_summary_is_written_only_when_asked(world: JobWorld, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.delenv("WAVEFLOW_SUMMARY_FILE")
    world.put(KEY, DATA)
    before = sorted(p.name for p in tmp_path.iterdir())

    assert world.run(hash_message()) == 0

    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --------------------------------------------------------------------------- waveform command


def test_waveform_command_writes_the_document_of_a_local_file(tmp_path: Path) -> None:
    source = tmp_path / "take.wav"
    source.write_bytes(wav_bytes(seconds=0.2, sample_rate=8000, channels=2))
    target = tmp_path / "take.json"

    assert cli.main(["waveform", str(source), "-o", str(target), "--peaks", "50"]) == 0

    document = json.loads(target.read_text(encoding="utf-8"))
    assert (document["num_peaks"], len(document["peaks"]), document["channels"]) == (50, 50, 2)
    assert document["duration"] == 0.2


def test_waveform_command_rejects_what_is_not_audio(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "notes.wav"
    source.write_text("just some notes\n", encoding="utf-8")

    assert cli.main(["waveform", str(source)]) == 3
    assert "AUDIO_CORRUPT" in capsys.readouterr().err
    assert cli.main(["waveform", str(tmp_path / "absent.wav")]) == 3


@pytest.mark.parametrize("peaks", ["0", "-1", "65537", "many"])
def test_waveform_command_refuses_bad_peak_counts(tmp_path: Path, peaks: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["waveform", str(tmp_path / "x.wav"), "--peaks", peaks])
    assert exit_info.value.code == 2


# --------------------------------------------------------------------------- the real command


def test_start_up_imports_no_aws_http_or_audio_library() -> None:
    probe = ("import sys, waveflow_job.cli as c; c._parser(); "
             "print(sorted(m for m in ('boto3', 'botocore', 'requests', 'numpy', 'soundfile', "
             "'av', 'urllib3') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    assert output.strip() == "[]"


@pytest.mark.slow
def test_real_command_analyses_signs_and_summarises(world: JobWorld) -> None:
    data = wav_bytes(seconds=0.3)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    message = json_message("process_audio_analysis", **KWARGS, filepath=KEY, audio_hash=sha)

    done = world.run_process("run", "--message", message, extra_env={"WEBHOOK_SECRET": "k"})

    assert done.returncode == 0, done.stderr
    [request] = world.webhooks.received()
    timestamp = request.header("X-WaveFlow-Signature").split(",")[0].removeprefix("t=")
    expected = hmac.new(b"k", f"{timestamp}.".encode() + request.body, hashlib.sha256)
    assert request.header("X-WaveFlow-Signature") == f"t={timestamp},v1={expected.hexdigest()}"
    assert request.json()["result"]["audio_data_hash"] == sha
    assert all(json.loads(line) for line in done.stderr.splitlines())
    summary_text = world.summary_path.read_text(encoding="utf-8")
    assert summary_text.count("\n") == 1
    assert json.loads(summary_text)["outcome"] == "succeeded"
    assert world.scratch_entries() == []


@pytest.mark.slow
def test_real_command_reads_a_kombu_message_file_and_rejects_a_missing_object(
        world: JobWorld, tmp_path: Path) -> None:
    message_file = tmp_path / "kombu.txt"
    message_file.write_text(kombu_message("process_duplicate_file", **KWARGS, filepath=KEY,
                                          audio_hash=SHA), encoding="utf-8")
    world.put("audio/keep.wav", DATA)

    done = world.run_process("run", "--message-file", str(message_file),
                             extra_env={"UPLOAD_PREFIXES": "uploads/"})

    assert done.returncode == 3, done.stderr
    [body] = world.webhooks.bodies("/completion")
    assert body["result"]["error_code"] == "KEY_OUTSIDE_PREFIXES"
    assert world.object_keys() == ["audio/keep.wav"]
    assert world.summary()["outcome"] == "rejected"


@pytest.mark.slow
def test_real_command_exits_1_without_webhooks_when_s3_is_unreachable(world: JobWorld) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"

    done = world.run_process("run", "--message", hash_message(),
                             extra_env={"AWS_ENDPOINT_URL": endpoint})

    assert done.returncode == 1, done.stderr
    assert world.webhooks.received() == []
    assert world.summary()["error_code"] == "STORAGE_UNAVAILABLE"
    assert world.scratch_entries() == []


@pytest.mark.slow
def test_real_command_help_and_version(world: JobWorld) -> None:
    helped = world.run_process("--help")
    assert helped.returncode == 0
    assert "waveform" in helped.stdout and "run" in helped.stdout
    version = world.run_process("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("waveflow-job 0.")


@pytest.mark.slow
def test_sigterm_while_waiting_for_the_backend_exits_143_without_a_failure(
        world: JobWorld) -> None:
    world.put(KEY, DATA)
    world.webhooks.fail_next(1, 503, {"Retry-After": "60"})
    env = {**world.env, "PATH": os.environ.get("PATH", ""),
           "WAVEFLOW_WEBHOOK_BUDGET_SECONDS": "120"}
    process = subprocess.Popen([waveflow_job_command(), "run", "--message", hash_message()],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        while not world.webhooks.received() and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 143, stderr
    assert [r.path for r in world.webhooks.received()] == ["/webhook/hash-check"]
    assert "terminated by signal 15" in stderr
    assert world.scratch_entries() == []


THREADS_AFTER_IMPORT = (
    "import os, waveflow_job.cli, waveflow_job.audio.decode, numpy\n"
    "numpy.dot(numpy.ones(4), numpy.ones(4))\n"
    "print(len(os.listdir('/proc/self/task')))")


def test_the_job_starts_no_blas_threads_unless_asked() -> None:
    """OpenBLAS's idle threads spin at every start-up; the job never needs them. A value the
    caller sets is kept (here, 2 threads: the main thread and one BLAS thread)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}

    def threads(**extra: str) -> int:
        out = subprocess.run([sys.executable, "-c", THREADS_AFTER_IMPORT], env={**env, **extra},
                             capture_output=True, text=True, check=True).stdout
        return int(out)

    assert threads() == 1
    assert threads(OPENBLAS_NUM_THREADS="2") == 2
