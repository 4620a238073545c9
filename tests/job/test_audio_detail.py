"""The detail waveform (.dat) equals, byte for byte, the min/max definition computed with numpy.

The expected data is computed independently of the job: every point's minimum and maximum per
channel from the whole decoded signal at once (padded with NaN and reshaped), then scaled as
audiowaveform stores them (``trunc(x * 2**(bits-1))``, clipped). Lossless files are compared with
the samples written; lossy ones with the samples their decoder gives (read separately).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from waveflow_dev import synth
from waveflow_job import waveform
from waveflow_job.audio.decode import open_audio
from waveflow_job.audio.detail import detail_size, fit_resolution
from waveflow_job.audio.limits import AudioLimits
from waveflow_job.waveform import DetailRequest, analyse_file


def expected_points(samples: np.ndarray, spp: int, bits: int) -> np.ndarray:
    """``(length, channels, 2)`` min,max of ``samples`` (float, full scale 1.0) per point."""
    frames, channels = samples.shape
    length = -(-frames // spp)
    padded = np.full((length * spp, channels), np.nan)
    padded[:frames] = samples
    points = padded.reshape(length, spp, channels)
    top = 2 ** (bits - 1)
    low, high = np.nanmin(points, axis=1), np.nanmax(points, axis=1)
    return np.clip(np.trunc(np.stack([low, high], axis=-1) * top), -top, top - 1)


def read_dat(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    raw = path.read_bytes()
    header = struct.unpack("<iIiiIi", raw[:24])
    dtype = "<i1" if header[1] & 1 else "<i2"
    return header, np.frombuffer(raw[24:], dtype=dtype).reshape(header[4], header[5], 2)


def decoded(path: Path) -> np.ndarray:
    """Every sample our decoder yields, scaled to 1.0 (the lossy files' reference signal)."""
    source = open_audio(path)
    blocks = [np.array(b, dtype=np.float64) for b in source.blocks()]
    return np.concatenate(blocks) / source.info.scale.full_scale


def music(frames: int, rate: int, channels: int, seed: int = 3) -> np.ndarray:
    """Noise bursts over tones: transients and quiet passages, a few samples past full scale."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / rate
    tones = 0.4 * np.sin(2 * np.pi * (110 + 70 * np.arange(channels))[None, :] * t)
    bursts = rng.standard_normal((frames, channels)) * (rng.random((frames // 500 + 1, 1)) > 0.8
                                                       ).repeat(500, axis=0)[:frames] * 0.3
    return tones * (0.2 + 0.8 * (np.sin(2 * np.pi * 0.7 * t) > 0)) + bursts


LOSSLESS = ["wav-u8", "wav-16", "wav-24", "wav-32", "wav-float", "rf64-24", "w64-16", "aiff-16",
            "aiff-24", "flac-16", "flac-24", "m4a-alac-16", "m4a-alac-24"]


def _writable(fmt: str, channels: int) -> bool:
    """FFmpeg's ALAC encoder writes neither 3 nor more than its maximum channels."""
    spec = synth.FORMATS[fmt]
    return channels <= spec.max_channels and not (fmt.startswith("m4a-alac") and channels == 3)


@pytest.mark.parametrize(("fmt", "channels"), [
    (fmt, channels) for fmt in LOSSLESS for channels in (1, 2, 3, 6, 8)
    if _writable(fmt, channels)])
def test_detail_of_lossless_files_equals_the_min_max_definition(tmp_path: Path, fmt: str,
                                                                channels: int) -> None:
    spec = synth.FORMATS[fmt]
    frames, rate = 44100 + 12345, 44100  # odd, and no multiple of the resolution
    path = synth.write_audio(tmp_path / f"x{spec.suffix}", fmt, music(frames, rate, channels),
                             rate)
    written, _ = sf.read(path, dtype="float64", always_2d=True) if fmt[:3] != "m4a" else (
        decoded(path), None)
    out = tmp_path / "x.dat"
    analysis = analyse_file(path, 100, detail=DetailRequest(out))
    header, points = read_dat(out)
    assert header == (2, 1, rate, 256, -(-frames // 256), channels)
    assert analysis.detail is not None and analysis.detail.size == out.stat().st_size
    assert np.array_equal(points, expected_points(written, 256, 8))


@pytest.mark.parametrize(("spp", "bits"), [(1, 16), (7, 8), (256, 16), (1000, 8), (4096, 16)])
def test_any_resolution_and_16_bit_data_equal_the_definition(tmp_path: Path, spp: int,
                                                             bits: int) -> None:
    frames = 3 * 4096 + 1001
    samples = music(frames, 48000, 2)
    samples[5] = 1.5  # float sources beyond full scale are clipped, never rescaled
    path = synth.write_audio(tmp_path / "x.wav", "wav-float", samples, 48000)
    written, _ = sf.read(path, dtype="float64", always_2d=True)
    out = tmp_path / "x.dat"
    analyse_file(path, 64, detail=DetailRequest(out, spp, bits))
    header, points = read_dat(out)
    assert header == (2, 1 if bits == 8 else 0, 48000, spp, -(-frames // spp), 2)
    assert np.array_equal(points, expected_points(written, spp, bits))


@pytest.mark.parametrize("fmt", ["ogg-vorbis", "opus", "mp3-cbr", "mp3-vbr-noheader", "m4a-aac",
                                 "webm-opus"])
def test_detail_of_lossy_files_equals_the_definition_on_their_decoded_samples(
        tmp_path: Path, fmt: str) -> None:
    spec = synth.FORMATS[fmt]
    rate = 48000 if spec.rates is None or 48000 in spec.rates else spec.rates[-1]
    path = synth.write_audio(tmp_path / f"x{spec.suffix}", fmt, music(rate * 2 + 777, rate, 2),
                             rate)
    out = tmp_path / "x.dat"
    analysis = analyse_file(path, 100, detail=DetailRequest(out))
    header, points = read_dat(out)
    reference = decoded(path)
    assert header == (2, 1, rate, 256, -(-len(reference) // 256), 2)
    assert analysis.waveform.frames == len(reference)
    assert np.array_equal(points, expected_points(reference, 256, 8))


@pytest.mark.parametrize("fmt", ["wav-16", "wav-24", "flac-16", "mp3-vbr"])
def test_ranges_decoded_side_by_side_write_the_same_bytes(tmp_path: Path, fmt: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waveform, "PARALLEL_MIN_FRAMES", 0)
    path = synth.write_tone(tmp_path / f"x{synth.FORMATS[fmt].suffix}", fmt, 4.0, 44100, 2)
    one, two = tmp_path / "one.dat", tmp_path / "two.dat"
    sequential = analyse_file(path, 300, workers=1, detail=DetailRequest(one, 100))
    parallel = analyse_file(path, 300, workers=3, detail=DetailRequest(two, 100))
    assert parallel == sequential
    assert one.read_bytes() == two.read_bytes()


def test_a_second_decode_after_a_wrong_length_estimate_rewrites_the_file(tmp_path: Path) -> None:
    # WebM declares its length in milliseconds: the estimate is always off, so the job decodes
    # twice; the .dat must describe the second, exact pass only.
    path = synth.write_audio(tmp_path / "x.webm", "webm-opus", music(48000 + 999, 48000, 2),
                             48000)
    out = tmp_path / "x.dat"
    analyse_file(path, 100, detail=DetailRequest(out, 64))
    reference = decoded(path)
    header, points = read_dat(out)
    assert header[4] == -(-len(reference) // 64)
    assert out.stat().st_size == 24 + header[4] * 2 * 2
    assert np.array_equal(points, expected_points(reference, 64, 8))


def test_cli_writes_the_json_and_the_dat_in_one_run(tmp_path: Path) -> None:
    from waveflow_job import cli

    path = synth.write_tone(tmp_path / "x.flac", "flac-16", 3.0, 44100, 2)
    json_out, dat_out = tmp_path / "x.json", tmp_path / "x.dat"
    assert cli.main(["waveform", str(path), "-o", str(json_out), "--detail", str(dat_out)]) == 0
    import json

    document = json.loads(json_out.read_text())
    assert document["waveform_detail_path"] == str(dat_out)
    header, points = read_dat(dat_out)
    assert header == (2, 1, 44100, 256, -(-3 * 44100 // 256), 2)
    assert points.shape == (header[4], 2, 2)
    assert {"integrated_lufs", "loudness_range_lu", "true_peak_dbtp"} <= set(document)


# --------------------------------------------------------------------------- the size bound


def test_the_default_bound_holds_four_hours_of_8_and_12_channels_at_96_khz_in_8_bits() -> None:
    """The numbers behind the default (audio/limits.py): 4 h is the default duration limit."""
    bound, four_hours = AudioLimits().max_detail_bytes, 4 * 3600
    assert bound == 134_217_728
    assert detail_size(four_hours * 96000, 8, 8, 256) == 86_400_024
    assert detail_size(four_hours * 48000, 8, 16, 256) == 86_400_024
    assert detail_size(four_hours * 96000, 12, 8, 256) == 129_600_024 < bound
    for channels, rate, bits in ((8, 96000, 8), (12, 96000, 8), (8, 48000, 16), (2, 192000, 16)):
        assert fit_resolution(four_hours * rate, channels, bits, 256, bound, 10**6).note is None
    coarser = fit_resolution(four_hours * 96000, 16, 8, 256, bound, 10**6)
    assert coarser.samples_per_pixel == 512
    assert "coarsened to 512" in (coarser.note or "") and "172800024 bytes" in (coarser.note or "")


def test_a_detail_over_its_bound_is_coarsened_to_the_finest_doubling_that_fits(
        tmp_path: Path) -> None:
    frames, rate = 4 * 48000 + 333, 48000
    samples = music(frames, rate, 2)
    path = synth.write_audio(tmp_path / "x.wav", "wav-24", samples, rate)
    written, _ = sf.read(path, dtype="float64", always_2d=True)
    bound = detail_size(frames, 2, 8, 1024)  # 256 and 512 are too large, 1024 fits exactly
    out = tmp_path / "x.dat"

    analysis = analyse_file(path, 50, detail=DetailRequest(out), limits=AudioLimits(
        max_detail_bytes=bound))

    header, points = read_dat(out)
    assert header == (2, 1, rate, 1024, -(-frames // 1024), 2)
    assert out.stat().st_size == bound
    assert np.array_equal(points, expected_points(written, 1024, 8))
    assert analysis.detail is not None and analysis.detail.samples_per_pixel == 1024
    assert analysis.detail_note is not None and "coarsened to 1024" in analysis.detail_note
    document = waveform.build_waveform_document(analysis, created_at="t", detail_path="x.dat")
    assert document["waveform_detail_samples_per_pixel"] == 1024


def test_ranges_decoded_side_by_side_align_on_the_coarsened_points(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waveform, "PARALLEL_MIN_FRAMES", 0)
    path = synth.write_tone(tmp_path / "x.flac", "flac-16", 4.0, 44100, 2)
    limits = AudioLimits(max_detail_bytes=detail_size(4 * 44100, 2, 8, 400))
    one, two = tmp_path / "one.dat", tmp_path / "two.dat"
    sequential = analyse_file(path, 100, workers=1, detail=DetailRequest(one, 100),
                              limits=limits)
    parallel = analyse_file(path, 100, workers=3, detail=DetailRequest(two, 100), limits=limits)
    assert parallel == sequential
    assert sequential.detail is not None and sequential.detail.samples_per_pixel == 400
    assert one.read_bytes() == two.read_bytes()


def test_a_detail_that_fits_only_as_coarse_as_the_overview_is_left_out(tmp_path: Path) -> None:
    """Nothing finer than the overview fits: no .dat, the overview as always, and why."""
    frames, rate = 48000 + 17, 48000
    path = synth.write_audio(tmp_path / "x.wav", "wav-16", music(frames, rate, 2), rate)
    out = tmp_path / "x.dat"

    analysis = analyse_file(path, 100, detail=DetailRequest(out, 64),
                            limits=AudioLimits(max_detail_bytes=100))

    assert analysis.detail is None
    assert analysis.detail_note is not None and analysis.detail_note.startswith(
        "detail waveform left out: at 64 frames per point")
    assert "overview's 481" in analysis.detail_note
    assert (analysis.waveform.frames, len(analysis.waveform.peaks)) == (frames, 100)
    document = waveform.build_waveform_document(analysis, created_at="t", detail_path="x.dat")
    assert "waveform_detail_path" not in document
    assert "waveform_detail_samples_per_pixel" not in document


def test_a_length_estimate_fits_the_detail_again_on_the_second_decode(tmp_path: Path) -> None:
    path = synth.write_audio(tmp_path / "x.webm", "webm-opus", music(48000 + 999, 48000, 2),
                             48000)
    reference = decoded(path)
    bound = detail_size(len(reference), 2, 8, 256)
    out = tmp_path / "x.dat"
    analysis = analyse_file(path, 100, detail=DetailRequest(out, 64),
                            limits=AudioLimits(max_detail_bytes=bound))
    header, points = read_dat(out)
    assert header[3:5] == (256, -(-len(reference) // 256))
    assert out.stat().st_size <= bound
    assert np.array_equal(points, expected_points(reference, 256, 8))
    assert analysis.detail_note is not None


def test_a_local_run_whose_detail_is_left_out_leaves_no_empty_dat_behind(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = synth.write_tone(tmp_path / "x.flac", "flac-16", 1.0, 44100, 2)
    json_out, dat_out = tmp_path / "x.json", tmp_path / "x.dat"
    document = waveform.write_waveform_file(path, json_out, 100, detail=DetailRequest(dat_out),
                                            limits=AudioLimits(max_detail_bytes=64))
    assert not dat_out.exists()
    assert "waveform_detail_path" not in document
    assert "detail waveform left out" in capsys.readouterr().err


# --------------------------------------------------------------------------- replacing files


def test_a_rejected_run_keeps_the_files_an_earlier_run_wrote(tmp_path: Path) -> None:
    """`waveflow-job waveform` over earlier results: a corrupt input fails with a clear error
    and leaves the earlier JSON and .dat byte for byte, and no scratch file beside them."""
    from waveflow_job import cli

    good = synth.write_tone(tmp_path / "good.wav", "wav-16", 2.0, 44100, 2)
    json_out, dat_out = tmp_path / "x.json", tmp_path / "x.dat"
    argv = ["-o", str(json_out), "--detail", str(dat_out)]
    assert cli.main(["waveform", str(good), *argv]) == 0
    before = json_out.read_bytes(), dat_out.read_bytes()
    # A NaN two thirds in: found only when decoding reaches it, after the .dat was opened.
    samples = music(88200, 44100, 2)
    samples[58800, 1] = np.nan
    bad = synth.write_audio(tmp_path / "bad.wav", "wav-float", samples, 44100)

    assert cli.main(["waveform", str(bad), *argv]) != 0

    assert (json_out.read_bytes(), dat_out.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav", "good.wav", "x.dat",
                                                          "x.json"]


def test_a_successful_run_replaces_both_files_and_leaves_no_scratch(tmp_path: Path) -> None:
    from waveflow_job import cli

    json_out, dat_out = tmp_path / "x.json", tmp_path / "x.dat"
    json_out.write_text("old"), dat_out.write_bytes(b"old")
    dat_out.chmod(0o600)
    path = synth.write_tone(tmp_path / "in.flac", "flac-16", 1.5, 48000, 1)

    assert cli.main(["waveform", str(path), "-o", str(json_out), "--detail", str(dat_out)]) == 0

    header, points = read_dat(dat_out)
    assert header == (2, 1, 48000, 256, -(-72000 // 256), 1)
    assert np.array_equal(points, expected_points(decoded(path), 256, 8))
    assert json_out.read_text().startswith("{")
    assert dat_out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # a new file, as open() makes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.flac", "x.dat", "x.json"]


def test_a_detail_left_out_also_removes_the_dat_of_an_earlier_run(tmp_path: Path) -> None:
    """The JSON no longer names a .dat, so a stale one from an earlier run must not stay."""
    dat_out = tmp_path / "x.dat"
    dat_out.write_bytes(b"from an earlier run")
    path = synth.write_tone(tmp_path / "x.flac", "flac-16", 1.0, 44100, 2)
    waveform.write_waveform_file(path, tmp_path / "x.json", 100, detail=DetailRequest(dat_out),
                                 limits=AudioLimits(max_detail_bytes=64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.flac", "x.json"]


def test_the_json_can_go_to_a_device(tmp_path: Path) -> None:
    """A target that is not a regular file (/dev/null, /dev/stdout) is written, not replaced."""
    from waveflow_job import cli

    path = synth.write_tone(tmp_path / "x.wav", "wav-16", 0.5, 44100, 2)
    assert cli.main(["waveform", str(path), "-o", os.devnull, "--detail",
                     str(tmp_path / "x.dat")]) == 0
    assert Path(os.devnull).is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dat", "x.wav"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
