"""process_audio_analysis: waveform JSON in S3, the original tagged, SUCCESS or FAILURE."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from support.jobrun import KWARGS, TIMESTAMP, JobWorld, json_message, wav_bytes
from waveflow_job.contract import WebhookEvent, delivery_id, detail_waveform_key, waveform_key
from waveflow_job.s3 import decode_tag_value

TASK = "process_audio_analysis"
KEY = "audio/user123/녹음 2024-01-01 #3 (final).wav"


def analysis(key: str = KEY, audio_hash: str = "0" * 64, **extra: Any) -> str:
    return json_message(TASK, **KWARGS, filepath=key, audio_hash=audio_hash,
                        timestamp=TIMESTAMP, original_filename="녹음.wav", **extra)


def assert_rejected(world: JobWorld, code: str, key: str = KEY) -> dict[str, Any]:
    """One FAILURE completion with ``code``; no waveform, original untagged, scratch empty."""
    [request] = world.webhooks.received()
    assert request.path == "/webhook/completion"
    body = request.json()
    message = body["result"]["error_message"]
    assert isinstance(message, str) and message
    assert body == {"stemId": "stem-789", "status": "FAILURE", "timestamp": body["timestamp"],
                    "result": {"error_code": code, "error_message": message, "task": TASK,
                               "retryable": False}}
    assert not [k for k in world.object_keys() if k.startswith("waveforms/")]
    if key in world.object_keys():
        assert world.tags(key) == {}
    assert world.scratch_entries() == []
    assert (world.summary()["outcome"], world.summary()["error_code"]) == ("rejected", code)
    return body


def test_wav_is_analysed_stored_tagged_and_reported(world: JobWorld) -> None:
    data = wav_bytes(seconds=0.5, sample_rate=8000)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data, tags={"project": "demo", "owner": "user123"})
    message = analysis(audio_hash=sha, num_peaks=100)

    assert world.run(message) == 0

    expected_key = waveform_key("stem-789", sha)
    [request] = world.webhooks.received()
    assert request.path == "/webhook/completion"
    assert request.header("X-WaveFlow-Delivery") == delivery_id(
        WebhookEvent.COMPLETION, "analysis-stem-789-1732600000000", message)
    body = request.json()
    result = body["result"]
    assert body == {"stemId": "stem-789", "status": "SUCCESS", "timestamp": body["timestamp"],
                    "result": result}
    assert {k: result[k] for k in ("audio_data_hash", "waveform_data_path", "file_size",
                                   "duration", "sample_rate", "num_peaks")} == {
        "audio_data_hash": sha, "waveform_data_path": expected_key, "file_size": len(data),
        "duration": 0.5, "sample_rate": 8000, "num_peaks": 100}
    assert {k: result[k] for k in ("channels", "frames", "format", "codec", "sample_format",
                                   "bit_depth", "clipped_samples")} == {
        "channels": 1, "frames": 4000, "format": "WAV", "codec": "pcm",
        "sample_format": "PCM_16", "bit_depth": 16, "clipped_samples": 0}
    assert result["peak_dbfs"] == pytest.approx(-6.02, abs=0.05)
    assert result["rms_dbfs"] == pytest.approx(-9.03, abs=0.1)
    assert all(type(result[k]) is int for k in ("file_size", "sample_rate", "num_peaks"))
    assert b"NaN" not in request.body and b"Infinity" not in request.body

    detail_key = detail_waveform_key("stem-789", sha)
    assert detail_key == expected_key.removesuffix(".json") + ".dat"
    assert world.object_keys() == sorted([KEY, expected_key, detail_key])
    stored = world.s3.get_object(Bucket=world.bucket, Key=expected_key)
    assert stored["ContentType"] == "application/json"
    document = json.loads(stored["Body"].read())
    assert document["waveform_detail_path"] == result["waveform_detail_path"] == detail_key
    detail = world.s3.get_object(Bucket=world.bucket, Key=detail_key)
    assert detail["ContentType"] == "application/octet-stream"
    dat = detail["Body"].read()
    # audiowaveform v2, 8-bit, 8 kHz, 256 frames per point: ceil(4000 / 256) = 16 points.
    assert struct.unpack("<iIiiIi", dat[:24]) == (2, 1, 8000, 256, 16, 1)
    assert len(dat) == 24 + 16 * 2
    for name in ("integrated_lufs", "loudness_range_lu", "true_peak_dbtp"):
        assert name not in result or document[name] == result[name]
    assert result["true_peak_dbtp"] >= result["peak_dbfs"]
    assert -20.0 < result["integrated_lufs"] < 0.0
    assert (document["num_peaks"], len(document["peaks"])) == (100, 100)
    assert (document["sample_rate"], document["channels"], document["bits"]) == (8000, 1, 8)
    assert max(document["peaks"]) == 1.0
    assert world.read(KEY) == data
    assert world.tags(KEY) == {"project": "demo", "owner": "user123",
                               "waveflow-analysed": "true", "waveflow-stem-id": "stem-789"}
    assert world.scratch_entries() == []
    summary = world.summary()
    assert (summary["outcome"], summary["bytes"], summary["audio_seconds"]) == (
        "succeeded", len(data), 0.5)
    assert {"download", "analyse", "upload", "tag", "webhook", "total"} <= set(summary["timings"])


def test_default_num_peaks_is_1024_and_a_rerun_overwrites_the_same_key(world: JobWorld) -> None:
    data = wav_bytes(seconds=1.0, sample_rate=16000, channels=2, subtype="FLOAT")
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)

    assert world.run(analysis(audio_hash=sha)) == 0
    assert world.run(analysis(audio_hash=sha)) == 0

    first, second = world.webhooks.bodies("/completion")
    assert first["result"]["num_peaks"] == second["result"]["num_peaks"] == 1024
    assert first["result"]["channels"] == 2
    assert first["result"]["waveform_detail_path"] == second["result"]["waveform_detail_path"]
    assert world.object_keys() == sorted([KEY, waveform_key("stem-789", sha),
                                          detail_waveform_key("stem-789", sha)])


def test_detail_waveform_resolution_comes_from_the_job_config_and_0_turns_it_off(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    data = wav_bytes(seconds=1.0, sample_rate=8000)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    monkeypatch.setenv("WAVEFLOW_DETAIL_SAMPLES_PER_PIXEL", "100")
    monkeypatch.setenv("WAVEFLOW_DETAIL_BITS", "16")
    assert world.run(analysis(audio_hash=sha)) == 0
    dat = world.read(detail_waveform_key("stem-789", sha))
    assert struct.unpack("<iIiiIi", dat[:24]) == (2, 0, 8000, 100, 80, 1)
    assert len(dat) == 24 + 80 * 2 * 2

    monkeypatch.setenv("WAVEFLOW_DETAIL_SAMPLES_PER_PIXEL", "0")
    world.s3.delete_object(Bucket=world.bucket, Key=detail_waveform_key("stem-789", sha))
    assert world.run(analysis(audio_hash=sha)) == 0
    *_, body = world.webhooks.bodies("/completion")
    assert "waveform_detail_path" not in body["result"]
    assert "integrated_lufs" in body["result"]
    document = json.loads(world.read(waveform_key("stem-789", sha)))
    assert "waveform_detail_path" not in document
    assert world.object_keys() == sorted([KEY, waveform_key("stem-789", sha)])


def test_a_detail_over_its_size_bound_is_coarsened_or_left_out_and_the_result_says_so(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """WAVEFLOW_MAX_DETAIL_BYTES bounds the .dat; the stem is analysed either way."""
    data = wav_bytes(seconds=5.0, sample_rate=8000)  # 40,000 frames
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    monkeypatch.setenv("WAVEFLOW_DETAIL_SAMPLES_PER_PIXEL", "1")  # 80,024 bytes: over 64 KiB
    monkeypatch.setenv("WAVEFLOW_MAX_DETAIL_BYTES", "65536")

    assert world.run(analysis(audio_hash=sha, num_peaks=100)) == 0

    [body] = world.webhooks.bodies("/completion")
    result = body["result"]
    assert (body["status"], result["waveform_detail_samples_per_pixel"]) == ("SUCCESS", 2)
    assert result["waveform_detail_note"] == (
        "detail waveform coarsened to 2 frames per point: at 1 frames per point the detail "
        "waveform would take 80024 bytes, over the 65536-byte limit")
    dat = world.read(result["waveform_detail_path"])
    assert struct.unpack("<iIiiIi", dat[:24]) == (2, 1, 8000, 2, 20000, 1)
    document = json.loads(world.read(waveform_key("stem-789", sha)))
    assert document["waveform_detail_samples_per_pixel"] == 2

    # 20,000 peaks make an overview of 2 frames per point: a detail that coarse is no detail.
    world.s3.delete_object(Bucket=world.bucket, Key=detail_waveform_key("stem-789", sha))
    world.webhooks.clear()
    assert world.run(analysis(audio_hash=sha, num_peaks=20000)) == 0
    [body] = world.webhooks.bodies("/completion")
    assert body["status"] == "SUCCESS"
    assert "waveform_detail_path" not in body["result"]
    assert body["result"]["waveform_detail_note"].startswith("detail waveform left out")
    assert world.object_keys() == sorted([KEY, waveform_key("stem-789", sha)])
    assert "waveform_detail_path" not in json.loads(world.read(waveform_key("stem-789", sha)))
    assert world.scratch_entries() == []


def test_loudness_off_leaves_the_loudness_out_of_the_result_and_the_json(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    data = wav_bytes(seconds=1.0, sample_rate=8000)
    sha = hashlib.sha256(data).hexdigest()
    world.put(KEY, data)
    loudness = {"integrated_lufs", "loudness_range_lu", "true_peak_dbtp"}
    assert world.run(analysis(audio_hash=sha)) == 0
    monkeypatch.setenv("WAVEFLOW_LOUDNESS", "off")
    assert world.run(analysis(audio_hash=sha)) == 0

    on, off = world.webhooks.bodies("/completion")
    assert {"integrated_lufs", "true_peak_dbtp"} <= set(on["result"])
    assert not loudness & set(off["result"])
    assert off["result"]["peak_dbfs"] == on["result"]["peak_dbfs"]  # the rest is unchanged
    assert not loudness & set(json.loads(world.read(waveform_key("stem-789", sha))))


def test_stem_id_that_s3_tags_cannot_hold_is_encoded_and_read_back(world: JobWorld) -> None:
    data = wav_bytes(seconds=0.1)
    world.put(KEY, data)
    stem_id = "stem#1&2?=%"
    message = json_message(TASK, **{**KWARGS, "stemId": stem_id}, filepath=KEY,
                           audio_hash=hashlib.sha256(data).hexdigest())

    assert world.run(message) == 0

    stored = world.tags(KEY)["waveflow-stem-id"]
    assert stored.startswith("b64:")
    assert decode_tag_value(stored) == stem_id
    [body] = world.webhooks.bodies("/completion")
    assert body["stemId"] == stem_id
    assert body["result"]["waveform_data_path"].startswith("waveforms/stem_1_2____waveform_")


@pytest.mark.parametrize(("name", "content", "code"), [
    ("text", b"this is a text file, not a wave\n" * 10, "AUDIO_CORRUPT"),
    ("random", bytes(range(256)) * 20, "AUDIO_CORRUPT"),
    ("zero bytes", b"", "AUDIO_EMPTY"),
    ("truncated", wav_bytes(seconds=1.0)[:6000], "AUDIO_CORRUPT"),
    ("zero frames", wav_bytes(seconds=0.0), "AUDIO_EMPTY"),
])
def test_file_that_is_not_truthful_audio_is_rejected(world: JobWorld, name: str,
                                                     content: bytes, code: str) -> None:
    world.put(KEY, content)

    assert world.run(analysis(audio_hash=hashlib.sha256(content).hexdigest())) == 3

    assert_rejected(world, code)
    assert world.read(KEY) == content


def test_audio_longer_than_the_limit_is_rejected(world: JobWorld,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAVEFLOW_MAX_DURATION_SECONDS", "0.5")
    world.put(KEY, wav_bytes(seconds=1.0))

    assert world.run(analysis()) == 3

    assert_rejected(world, "AUDIO_TOO_LONG")


def test_missing_object_is_rejected_before_anything_is_written(world: JobWorld) -> None:
    assert world.run(analysis()) == 3

    body = assert_rejected(world, "OBJECT_NOT_FOUND")
    assert body["result"]["error_message"] == f"s3://waveflow-test/{KEY} does not exist"


@pytest.mark.parametrize("num_peaks", [0, -5, 65537, 10**9, "abc", 12.5, True])
def test_bad_num_peaks_is_rejected_naming_the_field(world: JobWorld, num_peaks: object) -> None:
    world.put(KEY, wav_bytes(seconds=0.1))

    assert world.run(analysis(num_peaks=num_peaks)) == 3

    body = assert_rejected(world, "NUM_PEAKS_INVALID")
    assert body["result"]["error_message"].startswith("num_peaks: ")


def test_unexpected_error_is_logged_with_its_traceback_and_retried_without_failure(
        world: JobWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "gone"))  # no scratch dir: mkdtemp fails
    world.put(KEY, wav_bytes(seconds=0.1))

    assert world.run(analysis()) == 1

    assert world.webhooks.received() == []
    assert world.summary()["error_code"] == "INTERNAL_ERROR"
    assert world.tags(KEY) == {}
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    [error] = [line for line in lines if line.get("error_code") == "INTERNAL_ERROR"
               and "traceback" in line]
    assert "FileNotFoundError" in error["traceback"]
    assert error["stemId"] == "stem-789"


def test_original_with_no_room_for_our_tags_is_retried_not_left_unprotected(
        world: JobWorld) -> None:
    """Untagged, the original could later be deleted as a duplicate: better to fail loudly."""
    data = wav_bytes(seconds=0.1)
    user_tags = {f"user-tag-{i}": str(i) for i in range(9)}
    world.put(KEY, data, tags=user_tags)

    assert world.run(analysis(audio_hash=hashlib.sha256(data).hexdigest())) == 1

    assert world.webhooks.received() == []
    assert world.tags(KEY) == user_tags
    summary = world.summary()
    assert (summary["outcome"], summary["error_code"]) == ("failed", "STORAGE_UNAVAILABLE")
    assert world.scratch_entries() == []
