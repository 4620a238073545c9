"""Files that must never become a plausible-looking waveform: cut, undecodable, empty, too long."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from waveflow_dev import synth
from waveflow_job.contract import ErrorCode
from waveflow_job.errors import AudioError, Rejected
from waveflow_job.waveform import analyse_file


def refused(path: Path, **kwargs: float) -> AudioError:
    with pytest.raises(AudioError) as caught:
        analyse_file(path, 100, **kwargs)
    assert isinstance(caught.value, Rejected)
    return caught.value


def written(tmp_path: Path, fmt: str, seconds: float = 2.0, rate: int = 44100,
            channels: int = 2) -> Path:
    return synth.write_tone(tmp_path / f"x{synth.FORMATS[fmt].suffix}", fmt, seconds, rate,
                            channels)


@pytest.mark.parametrize("fmt", ["wav-16", "wav-24", "wav-float", "wav-u8", "wav-double",
                                 "rf64-24", "w64-16", "aiff-16", "aiff-24", "flac-16",
                                 "flac-24", "mp3-cbr", "mp3-vbr", "mp3-cbr-noheader",
                                 "mp3-vbr-noheader", "mp3-id3", "ogg-vorbis", "opus"])
@pytest.mark.parametrize("fraction", [0.5, 0.97])
def test_a_file_cut_short_is_rejected_as_corrupt(tmp_path: Path, fmt: str,
                                                 fraction: float) -> None:
    rate = 48000 if synth.FORMATS[fmt].rates else 44100
    path = synth.truncate(written(tmp_path, fmt, rate=rate), fraction)
    assert refused(path).code == ErrorCode.AUDIO_CORRUPT


@pytest.mark.parametrize("fmt", ["m4a-aac", "m4a-alac-16", "webm-opus"])
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.97])
def test_an_m4a_or_webm_cut_short_is_rejected_as_corrupt(tmp_path: Path, fmt: str,
                                                         fraction: float) -> None:
    # MP4: the sample table (moov) is written after the audio, a cut file has none or half of
    # one. WebM: the cut is found by decoding well short of the declared duration.
    if fmt == "webm-opus":
        path = written(tmp_path, fmt, seconds=10.0, rate=48000)
    else:
        path = written(tmp_path, fmt)
    synth.truncate(path, fraction)
    assert refused(path).code == ErrorCode.AUDIO_CORRUPT


def test_text_named_wav_is_rejected_as_corrupt(tmp_path: Path) -> None:
    path = synth.write_bytes(tmp_path / "song.wav", b"<html>404 Not Found</html>\n" * 40)
    error = refused(path)
    assert error.code == ErrorCode.AUDIO_CORRUPT
    assert "not an audio file" in error.message


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("name", ["noise.wav", "noise.mp3", "noise.m4a", "noise.bin"])
def test_random_bytes_are_rejected_as_corrupt(tmp_path: Path, seed: int, name: str) -> None:
    data = np.random.default_rng(seed).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    assert refused(synth.write_bytes(tmp_path / name, data)).code == ErrorCode.AUDIO_CORRUPT


@pytest.mark.parametrize("prefix", [b"RIFF\x00\x00\x00\x00WAVE", b"\xff\xfb\x90\x00", b"ID3",
                                    b"fLaC", b"OggS", b"\x00\x00\x00\x18ftypM4A "])
def test_a_real_signature_followed_by_garbage_is_rejected_as_corrupt(tmp_path: Path,
                                                                      prefix: bytes) -> None:
    data = prefix + np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    assert refused(synth.write_bytes(tmp_path / "x.audio", data)).code == ErrorCode.AUDIO_CORRUPT


def test_zero_bytes_is_rejected_as_empty(tmp_path: Path) -> None:
    assert refused(synth.write_bytes(tmp_path / "empty.wav", b"")).code == ErrorCode.AUDIO_EMPTY


@pytest.mark.parametrize("fmt", ["wav-16", "wav-24", "aiff-16", "flac-16", "w64-16"])
def test_a_valid_file_with_zero_frames_is_rejected_as_empty(tmp_path: Path, fmt: str) -> None:
    path = synth.write_audio(tmp_path / f"z{synth.FORMATS[fmt].suffix}", fmt,
                             np.zeros((0, 2)), 44100)
    assert refused(path).code == ErrorCode.AUDIO_EMPTY


def test_a_wav_whose_data_chunk_overstates_its_size_is_rejected(tmp_path: Path) -> None:
    path = written(tmp_path, "wav-16", seconds=1.0)
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    size = struct.unpack("<I", data[at + 4:at + 8])[0]
    data[at + 4:at + 8] = struct.pack("<I", size + 4000)
    path.write_bytes(bytes(data))
    error = refused(path)
    assert error.code == ErrorCode.AUDIO_CORRUPT and "cut short" in error.message


def test_a_streamed_wav_with_an_open_data_size_is_read_to_the_end(tmp_path: Path) -> None:
    path = written(tmp_path, "wav-16", seconds=1.0)
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[at + 4:at + 8] = b"\xff\xff\xff\xff"  # as a recorder that never came back writes it
    path.write_bytes(bytes(data))
    assert analyse_file(path, 10).waveform.frames == 44100


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_wav_with_non_finite_samples_is_rejected_as_corrupt(tmp_path: Path,
                                                                  bad: float) -> None:
    samples = synth.tone(20_000, 44100, 2)
    samples[12_345, 1] = bad
    for fmt in ("wav-float", "wav-double"):
        path = synth.write_audio(tmp_path / f"{fmt}.wav", fmt, samples, 44100)
        error = refused(path)
        assert error.code == ErrorCode.AUDIO_CORRUPT and "NaN or infinite" in error.message


@pytest.mark.parametrize("fmt", ["wav-24", "flac-16", "mp3-vbr", "mp3-vbr-noheader", "m4a-aac",
                                 "ogg-vorbis"])
def test_audio_longer_than_the_limit_is_rejected_as_too_long(tmp_path: Path, fmt: str) -> None:
    path = written(tmp_path, fmt, seconds=3.0, rate=48000 if fmt.startswith("mp3") else 44100)
    assert refused(path, max_duration_seconds=2.0).code == ErrorCode.AUDIO_TOO_LONG
    assert analyse_file(path, 10, max_duration_seconds=4.0).duration >= 3.0


def test_a_container_without_audio_is_unsupported(tmp_path: Path) -> None:
    import av

    path = tmp_path / "video.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 32, 32
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    assert refused(path).code == ErrorCode.AUDIO_UNSUPPORTED


def understated_webm(tmp_path: Path) -> Path:
    """A 5-second WebM whose Matroska Duration claims 1 second."""
    path = written(tmp_path, "webm-opus", seconds=5.0, rate=48000)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88")  # Duration element, 8-byte float, milliseconds
    data[at + 3:at + 11] = struct.pack(">d", 1000.0)
    path.write_bytes(bytes(data))
    return path


def test_the_duration_limit_holds_while_decoding_when_the_container_understates_it(
        tmp_path: Path) -> None:
    error = refused(understated_webm(tmp_path), max_duration_seconds=3.0)
    assert error.code == ErrorCode.AUDIO_TOO_LONG


def test_a_container_that_understates_its_length_is_still_decoded_to_the_end(
        tmp_path: Path) -> None:
    analysis = analyse_file(understated_webm(tmp_path), 100)
    assert analysis.waveform.frames == 5 * 48000
    assert analysis.waveform.peaks[-1] > 0
