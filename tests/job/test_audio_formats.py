"""Every supported format, written here from numpy, decodes to the waveform it should."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf

from job.audio_helpers import assert_peaks_close, reference_pairs, reference_peaks
from waveflow_dev import synth
from waveflow_job import waveform
from waveflow_job.contract import ErrorCode, json_schemas
from waveflow_job.errors import AudioError
from waveflow_job.waveform import (
    analyse_file,
    build_waveform_document,
    write_waveform_file,
)

#: (format, channels, rate) cases: every format, every channel count it takes, rates from 8 kHz
#: to 192 kHz where the codec allows. Half a second each keeps the whole matrix quick.
CASES = [
    *[("wav-16", ch, rate) for ch in (1, 2, 6, 8) for rate in (8000, 44100, 96000, 192000)],
    *[(fmt, ch, 44100) for fmt in ("wav-u8", "wav-24", "wav-32", "wav-float", "wav-double",
                                   "rf64-24", "w64-16", "aiff-16", "aiff-24", "flac-16",
                                   "flac-24", "m4a-alac-16", "m4a-alac-24", "ogg-vorbis")
      for ch in (1, 2, 6, 8) if ch <= synth.FORMATS[fmt].max_channels],
    ("wav-24", 2, 192000), ("flac-24", 2, 96000), ("flac-16", 1, 8000), ("aiff-24", 2, 96000),
    ("ogg-vorbis", 2, 8000), ("ogg-vorbis", 2, 96000),
    *[("opus", ch, rate) for ch in (1, 2, 6, 8) for rate in (48000,)], ("opus", 1, 8000),
    *[(fmt, ch, rate) for fmt in ("mp3-cbr", "mp3-vbr", "mp3-cbr-noheader", "mp3-vbr-noheader",
                                  "mp3-id3") for ch in (1, 2) for rate in (8000, 44100)],
    *[("m4a-aac", ch, rate) for ch in (1, 2, 6, 8) for rate in (44100,)], ("m4a-aac", 1, 8000),
    ("m4a-aac", 2, 96000), ("webm-opus", 1, 48000), ("webm-opus", 2, 48000),
]
CONTAINERS = {"wav": "WAV", "rf64": "RF64", "w64": "W64", "aiff": "AIFF", "flac": "FLAC",
              "ogg": "OGG", "opus": "OGG", "mp3": "MP3", "m4a": "M4A", "webm": "WEBM"}
PEAKS = 200


def make(tmp_path: Path, fmt: str, channels: int, rate: int, seconds: float = 0.5) -> tuple[
        Path, np.ndarray]:
    samples = synth.tone(int(rate * seconds) + 17, rate, channels)
    path = synth.write_audio(tmp_path / f"in{synth.FORMATS[fmt].suffix}", fmt, samples, rate)
    return path, samples


@pytest.mark.parametrize(("fmt", "channels", "rate"), CASES,
                         ids=[f"{f}-{c}ch-{r}" for f, c, r in CASES])
def test_every_format_decodes_to_its_facts_and_a_faithful_waveform(
        tmp_path: Path, fmt: str, channels: int, rate: int) -> None:
    path, samples = make(tmp_path, fmt, channels, rate)
    spec = synth.FORMATS[fmt]
    a = analyse_file(path, PEAKS)

    assert a.info.container == CONTAINERS[fmt.split("-")[0]]
    assert (a.info.channels, a.info.sample_rate) == (channels, rate)
    assert len(a.waveform.peaks) == PEAKS and max(a.waveform.peaks) == 1.0
    assert len(a.waveform.data) == a.waveform.length * channels * 2
    assert a.waveform.samples_per_pixel == -(-a.waveform.frames // PEAKS)
    assert a.duration == pytest.approx(a.waveform.frames / rate)
    assert a.waveform.peak_dbfs is not None and a.waveform.rms_dbfs is not None
    source_peak = 20 * np.log10(np.abs(samples).max())
    source_rms = 10 * np.log10(np.mean(samples**2))
    if spec.lossy:
        # Encoder delay and padding may add up to a few codec frames; never lose audio. Low
        # bit rates overshoot on the first transient, so the peak may rise, the RMS barely.
        assert len(samples) <= a.waveform.frames <= len(samples) + 4096
        assert a.info.sample_format == "compressed" and a.info.bit_depth is None
        assert a.waveform.rms_dbfs == pytest.approx(source_rms, abs=2.0)
        assert source_peak - 1.0 <= a.waveform.peak_dbfs <= source_peak + 7.0
    else:
        assert a.waveform.frames == len(samples)
        assert a.waveform.peak_dbfs == pytest.approx(source_peak,
                                                     abs=0.3 if fmt == "wav-u8" else 0.02)
        assert a.waveform.rms_dbfs == pytest.approx(source_rms, abs=0.1)
        assert a.info.bit_depth in (8, 16, 24, 32, 64)


@pytest.mark.parametrize("fmt", ["wav-u8", "wav-16", "wav-24", "wav-32", "wav-float",
                                 "wav-double", "rf64-24", "w64-16", "aiff-16", "aiff-24",
                                 "flac-16", "flac-24"])
def test_lossless_files_match_the_whole_array_reference_exactly(tmp_path: Path, fmt: str) -> None:
    path, _ = make(tmp_path, fmt, 2, 44100, seconds=1.3)
    decoded, _ = sf.read(path, dtype="float64", always_2d=True)  # an independent reader
    a = analyse_file(path, 1000)
    assert_peaks_close(a.waveform.peaks, reference_peaks(decoded, 1000))
    spp, length, data = reference_pairs(decoded, 1000)
    assert (a.waveform.samples_per_pixel, a.waveform.length) == (spp, length)
    differing = sum(x != y for x, y in zip(a.waveform.data, data, strict=True))
    assert differing == 0


@pytest.mark.parametrize(("fmt", "twin"), [("m4a-alac-16", "wav-16"), ("m4a-alac-24", "wav-24"),
                                           ("flac-24", "aiff-24")])
def test_lossless_codecs_agree_with_the_same_samples_in_another_container(
        tmp_path: Path, fmt: str, twin: str) -> None:
    ints = np.round(synth.tone(30_011, 44100, 2) * 32767).astype(np.int16)
    samples = ints if twin == "wav-16" else ints.astype(np.int32) << 16
    a = analyse_file(synth.write_audio(tmp_path / f"a{synth.FORMATS[fmt].suffix}", fmt,
                                       samples, 44100), 300)
    b = analyse_file(synth.write_audio(tmp_path / f"b{synth.FORMATS[twin].suffix}", twin,
                                       samples, 44100), 300)
    wa, wb = a.waveform, b.waveform
    assert (wa.frames, wa.peaks, wa.data, wa.peak_dbfs, wa.clipped_samples) == (
        wb.frames, wb.peaks, wb.data, wb.peak_dbfs, wb.clipped_samples)
    assert a.waveform.rms_dbfs == pytest.approx(b.waveform.rms_dbfs, abs=0.01)


def test_a_vbr_mp3_without_length_header_is_decoded_to_its_last_frame(tmp_path: Path) -> None:
    samples = synth.tone(44100 * 3, 44100, 2)
    with_header = synth.write_audio(tmp_path / "h.mp3", "mp3-vbr", samples, 44100)
    without = synth.write_audio(tmp_path / "n.mp3", "mp3-vbr-noheader", samples, 44100)
    a, b = analyse_file(with_header, 100), analyse_file(without, 100)
    assert a.waveform.frames == len(samples)
    # Without the LAME tag nothing says how much encoder delay to trim: b keeps it, all of it.
    assert len(samples) <= b.waveform.frames <= len(samples) + 2 * 1152
    assert b.waveform.peaks[-5:] != [0.0] * 5


def test_mp3_with_id3_tags_and_cover_art_decodes_like_the_untagged_file(tmp_path: Path) -> None:
    samples = synth.tone(44100, 44100, 2)
    tagged = synth.write_audio(tmp_path / "t.mp3", "mp3-id3", samples, 44100)
    plain = synth.write_audio(tmp_path / "p.mp3", "mp3-vbr", samples, 44100)
    assert tagged.read_bytes()[:3] == b"ID3" and tagged.stat().st_size > 150_000
    a, b = analyse_file(tagged, 100), analyse_file(plain, 100)
    assert (a.waveform.frames, a.waveform.peaks, a.waveform.data) == (
        b.waveform.frames, b.waveform.peaks, b.waveform.data)


def test_float_wav_above_full_scale_counts_clipping_and_keeps_its_scale(tmp_path: Path) -> None:
    samples = np.zeros((10_000, 1))
    samples[1000] = 1.5
    samples[2000] = -2.0
    samples[3000] = 0.5
    path = synth.write_audio(tmp_path / "hot.wav", "wav-float", samples, 44100)
    a = analyse_file(path, 10)
    assert a.waveform.clipped_samples == 2
    assert a.waveform.peak_dbfs == pytest.approx(6.02, abs=0.01)
    assert a.waveform.peaks[:4] == [0.0, 0.75, 1.0, 0.25]


def test_waveform_document_matches_the_contract_schema(tmp_path: Path) -> None:
    path, _ = make(tmp_path, "flac-24", 2, 48000)
    document = build_waveform_document(analyse_file(path, 256),
                                       created_at="2026-11-26T08:36:48.817Z")
    jsonschema.validate(document, json_schemas()["waveform.json"])
    assert document["version"] == 2 and document["bits"] == 8 and document["channels"] == 2
    assert document["num_peaks"] == 256 and document["duration"] == pytest.approx(24017 / 48000)


def test_waveform_command_writes_the_document_and_refuses_bad_audio(tmp_path: Path) -> None:
    path, _ = make(tmp_path, "wav-16", 1, 8000)
    out = tmp_path / "out.json"
    ok = subprocess.run([sys.executable, "-m", "waveflow_job.waveform", str(path), "-o",
                         str(out), "--peaks", "64"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(out.read_text())["peaks"] == write_waveform_file(path, None, 64)["peaks"]
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio at all")
    refused = subprocess.run([sys.executable, "-m", "waveflow_job.waveform", str(bad)],
                             capture_output=True, text=True, check=False)
    assert refused.returncode == 3
    assert "AUDIO_CORRUPT" in refused.stderr


@pytest.mark.parametrize("fmt", ["wav-16", "wav-24", "wav-float", "flac-16", "flac-24",
                                 "mp3-vbr", "mp3-cbr"])
def test_ranges_decoded_side_by_side_give_the_sequential_result_exactly(
        tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waveform, "PARALLEL_MIN_FRAMES", 0)
    path = synth.write_tone(tmp_path / f"x{synth.FORMATS[fmt].suffix}", fmt, 3.0, 48000, 2)
    sequential = analyse_file(path, 500, workers=1)
    for workers in (2, 3):
        assert analyse_file(path, 500, workers=workers) == sequential


@pytest.mark.parametrize("fmt", ["wav-24", "flac-16", "mp3-vbr"])
def test_a_cut_file_is_rejected_on_the_parallel_path_too(
        tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waveform, "PARALLEL_MIN_FRAMES", 0)
    path = synth.write_tone(tmp_path / f"x{synth.FORMATS[fmt].suffix}", fmt, 3.0, 48000, 2)
    synth.truncate(path, 0.6)
    with pytest.raises(AudioError) as caught:
        analyse_file(path, 100, workers=2)
    assert caught.value.code == ErrorCode.AUDIO_CORRUPT


def test_an_mp3_with_padding_before_its_first_frame_is_still_an_mp3(tmp_path: Path) -> None:
    samples = synth.tone(44100, 44100, 2)
    path = synth.write_audio(tmp_path / "p.mp3", "mp3-vbr", samples, 44100)
    clean = analyse_file(path, 50)
    path.write_bytes(b"\x00" * 1000 + path.read_bytes())
    padded = analyse_file(path, 50)
    assert (padded.info.container, padded.waveform.frames, padded.waveform.peaks) == (
        "MP3", clean.waveform.frames, clean.waveform.peaks)


def test_digital_silence_gives_a_flat_document_with_no_levels(tmp_path: Path) -> None:
    path = synth.write_audio(tmp_path / "silence.flac", "flac-16", np.zeros((48_000, 2)), 48000)
    a = analyse_file(path, 128)
    assert a.waveform.peaks == [0.0] * 128 and set(a.waveform.data) == {0}
    assert (a.waveform.peak_dbfs, a.waveform.rms_dbfs, a.waveform.clipped_samples) == (
        None, None, 0)
    document = build_waveform_document(a, created_at="2026-11-26T08:36:48.817Z")
    json.dumps(document, allow_nan=False)  # the backend rejects NaN and Infinity
    jsonschema.validate(document, json_schemas()["waveform.json"])


def test_a_near_silent_recording_is_not_drawn_at_full_height(tmp_path: Path) -> None:
    samples = synth.tone(44100, 44100, 1, amplitude=0.0002)  # about -70 dBFS
    a = analyse_file(synth.write_audio(tmp_path / "hiss.wav", "wav-24", samples, 44100), 100)
    assert 0.05 < max(a.waveform.peaks) < 0.5
    assert a.waveform.peak_dbfs is not None and a.waveform.peak_dbfs < -60


def test_a_file_shorter_than_num_peaks_gives_one_peak_per_frame_then_zeros(
        tmp_path: Path) -> None:
    samples = np.array([[0.5], [-0.25], [0.125], [0.0], [1.0 - 2**-15]])
    a = analyse_file(synth.write_audio(tmp_path / "tiny.wav", "wav-16", samples, 8000), 1024)
    assert a.waveform.peaks[:5] == [0.5, 0.25, 0.125, 0.0, 1.0]
    assert a.waveform.peaks[5:] == [0.0] * 1019
    assert (a.waveform.frames, a.waveform.samples_per_pixel, a.waveform.length) == (5, 1, 5)
    assert a.waveform.data == [64, 64, -32, -32, 16, 16, 0, 0, 127, 127]
    document = build_waveform_document(a, created_at="2026-11-26T08:36:48.817Z")
    jsonschema.validate(document, json_schemas()["waveform.json"])


def test_24_bit_samples_in_32_bit_containers_are_reported_and_clipped_as_24_bit(
        tmp_path: Path) -> None:
    samples = np.zeros((1000, 2), dtype=np.int32)
    samples[10, 0] = (2**23 - 1) << 8  # the largest 24-bit code, left-aligned
    samples[20, 1] = -(2**31)
    samples[30, 0] = 1 << 30
    path = tmp_path / "wavex.wav"
    sf.write(path, samples, 48000, subtype="PCM_32", format="WAVEX")
    data = bytearray(path.read_bytes())
    fmt = data.index(b"fmt ") + 8
    assert struct.unpack("<H", data[fmt:fmt + 2])[0] == 0xFFFE  # WAVE_FORMAT_EXTENSIBLE
    data[fmt + 18:fmt + 20] = struct.pack("<H", 24)  # wValidBitsPerSample
    path.write_bytes(bytes(data))
    a = analyse_file(path, 10)
    assert (a.info.bit_depth, a.info.sample_format, a.waveform.clipped_samples) == (24, "PCM_24", 2)
