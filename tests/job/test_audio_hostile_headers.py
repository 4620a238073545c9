"""Headers that lie about rate, channels or size are rejected, never believed or "fixed"
(issue 8, items 4-6; CONTRACT.md §8).

Each file is built byte by byte (tests/support/hostile.py) with real samples behind one lying
field, and goes through the real analysis: ``analyse_file`` in this process, or the whole job
(``waveflow-job run``) against moto and the recording backend.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from support.aws import MotoEndpoint
from support.hostile import (
    EXTENDED_INF_EXPONENT,
    WavFields,
    aiff_file,
    extended,
    tone_pcm16,
    wav_file,
)
from support.jobrun import KWARGS, json_message, make_world
from support.webhooks import WebhookRecorder
from waveflow_job.audio.limits import AudioLimits
from waveflow_job.errors import AudioError
from waveflow_job.waveform import analyse_file

PCM_BE = tone_pcm16(8000, big_endian=True)
PCM_LE = tone_pcm16(8000)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def code_of(path: Path, num_peaks: int = 100, limits: AudioLimits | None = None) -> str:
    with pytest.raises(AudioError) as caught:
        analyse_file(path, num_peaks, limits=limits)
    return caught.value.code.value


# --------------------------------------------------------------------------- item 4: AIFF rate


@pytest.mark.parametrize(("name", "rate"), [
    ("infinity", extended(exponent=EXTENDED_INF_EXPONENT)),
    ("nan", extended(exponent=EXTENDED_INF_EXPONENT, mantissa=(1 << 63) | 1)),
    ("negative infinity", extended(exponent=EXTENDED_INF_EXPONENT, negative=True)),
    ("negative", extended(44100.0, negative=True)),
    ("zero", extended(0)),
    ("below one hertz", extended(exponent=16383 - 1)),  # 0.5 Hz
])
def test_an_aiff_rate_that_is_no_rate_is_corrupt(tmp_path: Path, name: str,
                                                 rate: bytes) -> None:
    path = write(tmp_path, "x.aiff", aiff_file(rate, PCM_BE))
    assert code_of(path) == "AUDIO_CORRUPT"


def test_an_aiff_of_2_to_the_1000_hz_is_refused_not_clamped(tmp_path: Path) -> None:
    path = write(tmp_path, "x.aiff", aiff_file(extended(exponent=16383 + 1000), PCM_BE))
    with pytest.raises(AudioError) as caught:
        analyse_file(path, 100)
    assert caught.value.code.value == "AUDIO_SAMPLE_RATE_UNSUPPORTED"
    assert "2^1000" in caught.value.message and "67108864" not in caught.value.message


@pytest.mark.parametrize(("rate", "expected"), [(44100.0, 44100), (22254.545454, 22254),
                                                (8000.0, 8000), (384000.0, 384000)])
def test_real_aiff_rates_are_read_exactly(tmp_path: Path, rate: float, expected: int) -> None:
    exponent = 16383 + int(rate).bit_length() - 1
    mantissa = int(rate * 2 ** (63 - (exponent - 16383)))
    path = write(tmp_path, "x.aiff", aiff_file(extended(exponent=exponent, mantissa=mantissa),
                                                PCM_BE))
    analysis = analyse_file(path, 100)
    assert analysis.info.sample_rate == expected
    assert analysis.waveform.frames == 8000


def test_the_job_rejects_an_infinite_aiff_rate_for_good(
        aws: MotoEndpoint, bucket: str, webhooks: WebhookRecorder, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 3 and one FAILURE (retryable: false), not a traceback, exit 1 and three retries."""
    world = make_world(aws, bucket, webhooks, tmp_path, monkeypatch)
    data = aiff_file(extended(exponent=EXTENDED_INF_EXPONENT), PCM_BE)
    world.put("audio/inf.aiff", data)
    message = json_message("process_audio_analysis", **KWARGS, filepath="audio/inf.aiff",
                           audio_hash=hashlib.sha256(data).hexdigest())

    assert world.run(message) == 3

    [body] = webhooks.bodies("/completion")
    assert body["status"] == "FAILURE"
    assert body["result"]["error_code"] == "AUDIO_CORRUPT"
    assert body["result"]["retryable"] is False
    assert world.summary()["error_code"] == "AUDIO_CORRUPT"
    assert world.scratch_entries() == []
    assert [k for k in world.object_keys() if k.startswith("waveforms/")] == []


# --------------------------------------------------------------------------- item 5: WAV rate


@pytest.mark.parametrize("rate", [1, 3999, 768_001, 4_000_000_000, 0xFFFFFFFF])
def test_a_wav_rate_outside_the_range_is_refused(tmp_path: Path, rate: int) -> None:
    path = write(tmp_path, "x.wav", wav_file(WavFields(sample_rate=rate), PCM_LE))
    assert code_of(path) == "AUDIO_SAMPLE_RATE_UNSUPPORTED"


@pytest.mark.parametrize("rate", [4000, 5512, 8000, 352_800, 768_000])
def test_rates_at_and_inside_the_bounds_are_analysed_as_written(tmp_path: Path,
                                                                rate: int) -> None:
    path = write(tmp_path, "x.wav", wav_file(WavFields(sample_rate=rate), PCM_LE))
    analysis = analyse_file(path, 100)
    assert (analysis.info.sample_rate, analysis.waveform.frames) == (rate, 8000)
    assert analysis.duration == pytest.approx(8000 / rate)


def test_a_wav_rate_of_zero_is_corrupt(tmp_path: Path) -> None:
    path = write(tmp_path, "x.wav", wav_file(WavFields(sample_rate=0), PCM_LE))
    assert code_of(path) == "AUDIO_CORRUPT"


def test_the_range_is_the_job_configuration(
        aws: MotoEndpoint, bucket: str, webhooks: WebhookRecorder, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(aws, bucket, webhooks, tmp_path, monkeypatch)
    monkeypatch.setenv("WAVEFLOW_MAX_SAMPLE_RATE", "48000")
    data = wav_file(WavFields(sample_rate=96000), PCM_LE)
    world.put("audio/hi.wav", data)
    message = json_message("process_audio_analysis", **KWARGS, filepath="audio/hi.wav",
                           audio_hash=hashlib.sha256(data).hexdigest())

    assert world.run(message) == 3

    [body] = webhooks.bodies("/completion")
    assert body["result"]["error_code"] == "AUDIO_SAMPLE_RATE_UNSUPPORTED"
    assert body["result"]["error_message"] == (
        "the WAV header declares 96000 Hz; supported: 4000..48000 Hz")


# --------------------------------------------------------------------------- item 6: channels


def test_64_channels_are_analysed_and_65_refused(tmp_path: Path) -> None:
    ok = write(tmp_path, "64.wav", wav_file(WavFields(channels=64), tone_pcm16(500, 64)))
    assert analyse_file(ok, 16).info.channels == 64
    too_many = write(tmp_path, "65.wav", wav_file(WavFields(channels=65), tone_pcm16(500, 65)))
    assert code_of(too_many) == "AUDIO_TOO_MANY_CHANNELS"


def test_zero_channels_or_zero_bits_are_corrupt(tmp_path: Path) -> None:
    none = write(tmp_path, "0.wav", wav_file(WavFields(channels=0, block_align=2), PCM_LE))
    assert code_of(none) == "AUDIO_CORRUPT"
    no_bits = write(tmp_path, "b.wav", wav_file(WavFields(bits=0, block_align=2), PCM_LE))
    assert code_of(no_bits) == "AUDIO_CORRUPT"


def test_the_channel_bound_is_checked_for_aiff_too(tmp_path: Path) -> None:
    samples = tone_pcm16(100, 100, big_endian=True)
    path = write(tmp_path, "x.aiff", aiff_file(extended(44100.0), samples, channels=100))
    assert code_of(path) == "AUDIO_TOO_MANY_CHANNELS"


def test_the_waveform_document_is_bounded_by_peaks_times_channels(tmp_path: Path) -> None:
    """2 x peaks x channels values: 65,536 peaks of 7.1 fit the default, of 16 channels not."""
    eight = write(tmp_path, "8.wav", wav_file(WavFields(channels=8), tone_pcm16(200, 8)))
    assert analyse_file(eight, 65536).info.channels == 8
    sixteen = write(tmp_path, "16.wav", wav_file(WavFields(channels=16), tone_pcm16(200, 16)))
    assert code_of(sixteen, 65536) == "WAVEFORM_TOO_LARGE"
    assert analyse_file(sixteen, 1024).info.channels == 16


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec() from the (large) pytest parent.
PEAK_CHILD = """
import sys
from waveflow_job.errors import AudioError
from waveflow_job.waveform import analyse_file
try:
    outcome = str(analyse_file(sys.argv[1], 1024).info.channels)
except AudioError as error:
    outcome = error.code.value
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(outcome, hwm.split()[1])
"""


def peak(path: Path) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(path)], capture_output=True,
                          text=True, check=True, timeout=120)
    outcome, kib = done.stdout.split()
    return outcome, int(kib)


def test_a_24_mb_wav_declaring_4096_channels_costs_no_more_than_a_small_file(
        tmp_path: Path) -> None:
    """The issue's file peaked at 460 MiB and wrote a 24 MB JSON; now it is refused up front,
    for the memory any small file costs."""
    frames = 24_000_000 // (4096 * 2)
    hostile = write(tmp_path, "4096.wav",
                    wav_file(WavFields(channels=4096, sample_rate=44100),
                             tone_pcm16(frames, 4096)))
    small = write(tmp_path, "small.wav", wav_file(WavFields(channels=2), tone_pcm16(8000, 2)))
    outcome, hostile_kib = peak(hostile)
    small_outcome, small_kib = peak(small)
    assert (outcome, small_outcome) == ("AUDIO_TOO_MANY_CHANNELS", "2")
    assert hostile_kib <= small_kib * 1.1 + 2048, (hostile_kib, small_kib)


# --------------------------------------------------------------------------- other fields


def test_a_header_chunk_cut_inside_its_fields_is_corrupt_not_a_traceback(
        tmp_path: Path) -> None:
    """An RF64 whose ds64 chunk ends inside its own fields (struct.error before)."""
    body = b"WAVE" + b"ds64" + (28).to_bytes(4, "little") + b"\x00" * 4
    path = write(tmp_path, "x.wav", b"RF64" + (0xFFFFFFFF).to_bytes(4, "little") + body)
    assert code_of(path) in ("AUDIO_CORRUPT", "AUDIO_UNSUPPORTED")


def test_a_data_size_larger_than_the_file_is_cut_short(tmp_path: Path) -> None:
    path = write(tmp_path, "x.wav", wav_file(WavFields(), PCM_LE, data_size=10 * len(PCM_LE)))
    assert code_of(path) == "AUDIO_CORRUPT"
