"""One sequential pass with the reduction in a second thread (2+ CPUs): the waveform JSON, the
detail ``.dat`` and the loudness are byte for byte those of one thread, errors surface as
they do in one thread, and no thread outlives the analysis."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from waveflow_dev import synth
from waveflow_job.audio import passes
from waveflow_job.audio.handoff import DEPTH
from waveflow_job.audio.loudness import LoudnessMeter
from waveflow_job.audio.pyav_source import PyAVSource
from waveflow_job.contract import ErrorCode
from waveflow_job.errors import AudioError
from waveflow_job.waveform import DetailRequest, analyse_file, build_waveform_document


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before


@pytest.fixture
def reducing_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads that reduced blocks: shows which path a pass took."""
    names: list[str] = []
    add = passes._Reduction.add

    def recorded(self: passes._Reduction, block: np.ndarray) -> None:
        names.append(threading.current_thread().name)
        add(self, block)

    monkeypatch.setattr(passes._Reduction, "add", recorded)
    return names


def outcome(path: Path, workers: int, **kwargs: Any) -> tuple[str, bytes]:
    """The stored document (loudness included) and the ``.dat`` bytes."""
    dat = path.with_suffix(f".{workers}.dat")
    analysis = analyse_file(path, 1024, workers=workers, detail=DetailRequest(dat), **kwargs)
    document = build_waveform_document(analysis, created_at="2026-01-01T00:00:00Z",
                                       detail_path="stem.dat")
    return json.dumps(document, sort_keys=True), dat.read_bytes()


def refusal(path: Path, workers: int, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(AudioError) as caught:
        analyse_file(path, 1024, workers=workers, detail=DetailRequest(path.with_suffix(".dat")),
                     **kwargs)
    return caught.value.code, caught.value.message


# Every kind of source a single pass reads: PyAV's own frames, and the buffers the PCM and
# libsndfile readers reuse (copied before the hand-off); several blocks each, odd lengths.
SINGLE_PASS = [
    ("m4a-aac", 7.3, 44100, 2),
    ("m4a-aac", 4.1, 48000, 1),
    ("m4a-aac", 3.7, 44100, 6),
    ("m4a-aac", 2.9, 44100, 8),
    ("m4a-alac-16", 4.2, 44100, 2),
    ("m4a-alac-24", 4.2, 96000, 2),
    ("webm-opus", 6.1, 48000, 2),  # its duration is in ms: always a second pass
    ("mp3-vbr-noheader", 6.3, 44100, 2),
    ("ogg-vorbis", 13.3, 44100, 2),
    ("wav-16", 17.1, 44100, 2),  # shorter than PARALLEL_MIN_FRAMES: not split into ranges
    ("wav-24", 9.7, 96000, 2),  # planar blocks
    ("wav-float", 13.9, 44100, 1),
    ("wav-u8", 11.3, 22050, 3),
    ("flac-16", 16.6, 44100, 2),
    ("mp3-vbr", 14.2, 44100, 2),
]


@pytest.mark.parametrize(("fmt", "seconds", "rate", "channels"), SINGLE_PASS)
def test_the_reduction_in_a_second_thread_gives_the_same_bytes(
        tmp_path: Path, reducing_threads: list[str], fmt: str, seconds: float, rate: int,
        channels: int) -> None:
    path = synth.write_tone(tmp_path / f"x{synth.FORMATS[fmt].suffix}", fmt, seconds, rate,
                            channels)
    alone = outcome(path, workers=1)
    assert set(reducing_threads) == {"MainThread"}
    reducing_threads.clear()
    assert outcome(path, workers=2) == alone
    assert set(reducing_threads) == {"reduce"} and len(reducing_threads) >= 2
    assert '"integrated_lufs"' in alone[0] and len(alone[1]) > 24


def test_without_loudness_the_pass_stays_in_one_thread(tmp_path: Path,
                                                       reducing_threads: list[str]) -> None:
    # The waveform alone does not overlap with PyAV's decoding (both need the GIL): a second
    # thread would only cost CPU.
    path = synth.write_tone(tmp_path / "x.m4a", "m4a-aac", 3.0, 44100, 2)
    assert analyse_file(path, 1024, workers=2, loudness=False).loudness is None
    assert set(reducing_threads) == {"MainThread"}


def test_music_like_audio_gives_the_same_bytes(tmp_path: Path) -> None:
    # Bursts, silence and a clipped stretch: true-peak chunks skipped and taken, clip counts.
    rng = np.random.default_rng(7)
    t = np.arange(int(44100 * 9.5)) / 44100
    left = 0.3 * np.sin(2 * np.pi * 110 * t) * (rng.random(len(t)) < 0.999)
    right = np.where((t % 2) < 0.4, rng.normal(0, 0.5, len(t)), 0.0)
    right[100_000:100_500] = 1.5
    samples = np.stack([left, right], axis=1).astype(np.float32)
    for fmt in ("m4a-aac", "wav-16", "wav-float"):
        path = synth.write_audio(tmp_path / f"music-{fmt}{synth.FORMATS[fmt].suffix}", fmt,
                                 samples, 44100)
        assert outcome(path, workers=2) == outcome(path, workers=1), fmt


def understated_webm(tmp_path: Path, seconds: float = 5.0) -> Path:
    """A WebM whose Matroska Duration claims 1 second: the first pass outgrows its estimate."""
    path = synth.write_tone(tmp_path / "long.webm", "webm-opus", seconds, 48000, 2)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88")  # Duration element, 8-byte float, milliseconds
    data[at + 3:at + 11] = struct.pack(">d", 1000.0)
    path.write_bytes(bytes(data))
    return path


def test_a_stream_longer_than_its_estimate_is_decoded_again_the_same_way(
        tmp_path: Path, reducing_threads: list[str]) -> None:
    path = understated_webm(tmp_path)
    alone = outcome(path, workers=1)
    reducing_threads.clear()
    assert outcome(path, workers=2) == alone
    assert set(reducing_threads) == {"reduce"}
    assert json.loads(alone[0])["duration"] == 5.0


def test_a_stream_over_the_duration_limit_is_too_long(tmp_path: Path) -> None:
    path = understated_webm(tmp_path)
    for workers in (1, 2):
        code, _ = refusal(path, workers, max_duration_seconds=3.0)
        assert code == ErrorCode.AUDIO_TOO_LONG


def test_a_corrupt_block_mid_file_fails_as_in_one_thread(tmp_path: Path) -> None:
    path = synth.write_tone(tmp_path / "x.m4a", "m4a-aac", 12.0, 44100, 2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4000] = bytes(4000)
    path.write_bytes(bytes(data))
    alone = refusal(path, workers=1)
    assert alone[0] == ErrorCode.AUDIO_CORRUPT and "decoding failed" in alone[1]
    assert refusal(path, workers=2) == alone


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_mid_file_are_corrupt_as_in_one_thread(tmp_path: Path,
                                                                 bad: float) -> None:
    samples = synth.tone(int(44100 * 15.5), 44100, 2)
    samples[400_000, 1] = bad  # in the second of the reader's blocks
    path = synth.write_audio(tmp_path / "x.wav", "wav-float", samples, 44100)
    alone = refusal(path, workers=1)
    assert alone[0] == ErrorCode.AUDIO_CORRUPT and "NaN or infinite" in alone[1]
    assert refusal(path, workers=2) == alone


def test_a_failing_meter_stops_the_decoder_within_the_hand_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = synth.write_tone(tmp_path / "x.m4a", "m4a-aac", 30.0, 44100, 2)  # 41 blocks
    metered, decoded = [], []
    add, planes = LoudnessMeter.add, PyAVSource._frame_planes

    def failing_add(self: LoudnessMeter, *args: Any) -> None:
        metered.append(1)
        if len(metered) == 3:
            raise RuntimeError("the meter broke")
        add(self, *args)

    def counted(self: PyAVSource, frame: Any) -> np.ndarray:
        decoded.append(1)
        return planes(self, frame)

    monkeypatch.setattr(LoudnessMeter, "add", failing_add)
    monkeypatch.setattr(PyAVSource, "_frame_planes", counted)
    with pytest.raises(RuntimeError, match="the meter broke"):
        analyse_file(path, 1024, workers=2)
    assert len(metered) == 3
    # Beyond the failed block: DEPTH waiting, one waiting for room, one decoded before the
    # decoder learns of the failure. Not the rest of the file.
    assert len(decoded) <= 3 + DEPTH + 2
