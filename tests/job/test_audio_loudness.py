"""Loudness: the EBU Tech 3341/3342 cases that can be generated, channel weights, and agreement
with other implementations (libebur128's own functions, pyloudnorm) on music-like files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from waveflow_dev import synth
from waveflow_job import waveform
from waveflow_job.audio.loudness import Loudness, interpolator_taps
from waveflow_job.waveform import analyse_file


def sine(seconds: float, dbfs: float, rate: int = 48000, freq: float = 1000.0,
         channels: int = 2, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    wave = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t + phase)
    return np.repeat(wave[:, None], channels, axis=1)


def program(*parts: tuple[float, float], rate: int = 48000, channels: int = 2) -> np.ndarray:
    """Consecutive 1 kHz sines: (seconds, dBFS) each."""
    return np.concatenate([sine(s, db, rate, channels=channels) for s, db in parts])


def loudness(tmp_path: Path, samples: np.ndarray, rate: int = 48000, fmt: str = "wav-float",
             **kwargs: object) -> waveform.AudioAnalysis:
    path = synth.write_audio(tmp_path / f"x{synth.FORMATS[fmt].suffix}", fmt, samples, rate)
    return analyse_file(path, 100, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("parts", "expected"), [
    ([(20, -23.0)], -23.0),  # Tech 3341 case 1
    ([(20, -33.0)], -33.0),  # case 2
    ([(10, -36.0), (60, -23.0), (10, -36.0)], -23.0),  # case 3: relative gate
    ([(10, -72.0), (10, -36.0), (60, -23.0), (10, -36.0), (10, -72.0)], -23.0),  # case 4
    ([(20, -26.0), (20.1, -20.0), (20, -26.0)], -23.0),  # case 5
])
def test_ebu_tech_3341_stereo_sine_cases(tmp_path: Path, parts: list[tuple[float, float]],
                                         expected: float) -> None:
    analysis = loudness(tmp_path, program(*parts))
    assert analysis.loudness is not None
    assert analysis.loudness.integrated_lufs == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize(("parts", "expected"), [
    ([(20, -20.0), (20, -30.0)], 10.0),  # Tech 3342 case 1
    ([(20, -20.0), (20, -15.0)], 5.0),  # case 2
    ([(20, -40.0), (20, -20.0)], 20.0),  # case 3
    ([(20, -50.0), (20, -35.0), (20, -20.0), (20, -35.0), (20, -50.0)], 15.0),  # case 4
])
def test_ebu_tech_3342_loudness_range_cases(tmp_path: Path, parts: list[tuple[float, float]],
                                            expected: float) -> None:
    analysis = loudness(tmp_path, program(*parts))
    assert analysis.loudness is not None
    assert analysis.loudness.loudness_range_lu == pytest.approx(expected, abs=1.0)


def test_channel_weights_mono_stereo_and_5_1(tmp_path: Path) -> None:
    tone = sine(10, -23.0, channels=1)[:, 0]

    def measured(layout: list[int], channels: int) -> float | None:
        samples = np.zeros((len(tone), channels))
        for c in layout:
            samples[:, c] = tone
        result = loudness(tmp_path, samples).loudness
        assert result is not None
        return result.integrated_lufs

    stereo = measured([0, 1], 2)
    assert stereo == pytest.approx(-23.0, abs=0.1)
    assert measured([0], 1) == pytest.approx(stereo - 10 * math.log10(2), abs=0.02)  # mono: once
    left_51 = measured([0], 6)
    assert left_51 == pytest.approx(stereo - 10 * math.log10(2), abs=0.02)
    assert measured([2], 6) == pytest.approx(left_51, abs=0.01)  # centre: 1.0
    assert measured([4], 6) == pytest.approx(left_51 + 10 * math.log10(1.41), abs=0.02)  # Ls
    assert measured([5], 6) == pytest.approx(left_51 + 10 * math.log10(1.41), abs=0.02)  # Rs
    # The LFE does not count: a tone only there has a true peak but no loudness.
    samples = np.zeros((len(tone), 6))
    samples[:, 3] = tone
    lfe = loudness(tmp_path, samples).loudness
    assert lfe is not None and lfe.integrated_lufs is None and lfe.true_peak_dbtp is not None


def test_digital_silence_has_no_loudness_and_no_key_for_it(tmp_path: Path) -> None:
    analysis = loudness(tmp_path, np.zeros((48000 * 5, 2)))
    assert analysis.loudness == Loudness(None, None, None)
    document = waveform.build_waveform_document(analysis, created_at="2026-01-01T00:00:00.000Z")
    assert not {"integrated_lufs", "loudness_range_lu", "true_peak_dbtp"} & set(document)
    assert not {"integrated_lufs", "loudness_range_lu", "true_peak_dbtp"} & set(analysis.facts())


def test_short_audio_has_a_true_peak_but_no_gated_loudness(tmp_path: Path) -> None:
    short = loudness(tmp_path, sine(0.3, -10.0)).loudness
    assert short is not None and short.integrated_lufs is None
    assert short.true_peak_dbtp == pytest.approx(-10.0, abs=0.1)
    two_seconds = loudness(tmp_path, sine(2.0, -10.0)).loudness
    assert two_seconds is not None and two_seconds.integrated_lufs is not None
    assert two_seconds.loudness_range_lu is None  # under one 3 s block


def test_true_peak_finds_the_peak_between_samples(tmp_path: Path) -> None:
    # fs/4 at 45 degrees: every sample is at 0.707 of the wave's peak (EBU Tech 3341 case 17's
    # idea); the interpolated peak is the wave's.
    samples = sine(2.0, -6.0, freq=12000.0, phase=math.pi / 4)
    analysis = loudness(tmp_path, samples)
    assert analysis.waveform.peak_dbfs == pytest.approx(-9.01, abs=0.05)
    assert analysis.loudness is not None
    assert analysis.loudness.true_peak_dbtp == pytest.approx(-6.0, abs=0.3)


MUSIC_FORMATS = ["wav-16", "wav-24", "wav-float", "flac-16", "mp3-vbr", "m4a-aac"]


def music(seconds: float, rate: int, channels: int = 2, seed: int = 1) -> np.ndarray:
    """Chords, noise bursts and a loud/quiet structure: something to gate and to range."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 277.2, 329.6, 1318.5))
    section = np.where((t // 4) % 3 == 0, 0.1, 0.5)
    hats = rng.standard_normal(n) * (np.sin(2 * np.pi * 2 * t) > 0.9) * 0.3
    mono = (chord / 4 * section + hats) * 0.8
    pan = np.linspace(0.3, 1.0, channels)[None, :]
    return mono[:, None] * pan + rng.standard_normal((n, channels)) * 0.005


@pytest.mark.parametrize("fmt", MUSIC_FORMATS)
def test_agrees_with_libebur128_and_pyloudnorm_on_music(tmp_path: Path, fmt: str) -> None:
    import pyebur128
    import pyloudnorm

    rate = 44100
    path = synth.write_audio(tmp_path / f"x{synth.FORMATS[fmt].suffix}", fmt,
                             music(40, rate), rate)
    analysis = analyse_file(path, 100)
    ours = analysis.loudness
    assert ours is not None
    source = waveform_samples(path)
    mode = pyebur128.MeasurementMode
    state = pyebur128.R128State(2, rate, mode.MODE_I | mode.MODE_LRA | mode.MODE_TRUE_PEAK)
    state.add_frames(np.ascontiguousarray(source, dtype=np.float32).reshape(-1), len(source))
    assert ours.integrated_lufs == pytest.approx(pyebur128.get_loudness_global(state), abs=0.01)
    assert ours.loudness_range_lu == pytest.approx(pyebur128.get_loudness_range(state), abs=0.01)
    true_peak = max(pyebur128.get_true_peak(state, c) for c in range(2))
    assert ours.true_peak_dbtp == pytest.approx(20 * math.log10(true_peak), abs=0.01)
    second = pyloudnorm.Meter(rate).integrated_loudness(source.astype(np.float64))
    assert ours.integrated_lufs == pytest.approx(second, abs=0.1)


def waveform_samples(path: Path) -> np.ndarray:
    """What the decoder hands the meters, as float at full scale 1.0."""
    from waveflow_job.audio.decode import open_audio

    source = open_audio(path)
    return np.concatenate([np.array(b, dtype=np.float64) for b in source.blocks()]
                          ) / source.info.scale.full_scale


@pytest.mark.parametrize(("rate", "channels"), [(44100, 1), (48000, 2), (96000, 2),
                                                (192000, 1), (22050, 6), (88200, 8)])
def test_true_peak_equals_libebur128s_full_computation(tmp_path: Path, rate: int,
                                                       channels: int) -> None:
    import pyebur128

    rng = np.random.default_rng(rate + channels)
    samples = music(3, rate, channels) + rng.standard_normal((3 * rate, channels)) * 0.05
    samples[rate // 2 :: rate // 3] *= -3.0  # clicks: inter-sample overs
    path = synth.write_audio(tmp_path / "x.wav", "wav-float", samples, rate)
    ours = analyse_file(path, 100).loudness
    assert ours is not None
    written, _ = sf.read(path, dtype="float32", always_2d=True)
    state = pyebur128.R128State(channels, rate, pyebur128.MeasurementMode.MODE_TRUE_PEAK)
    state.add_frames(np.ascontiguousarray(written).reshape(-1), len(written))
    reference = max(pyebur128.get_true_peak(state, c) for c in range(channels))
    assert ours.true_peak_dbtp == round(20 * math.log10(reference), 2)
    assert len(interpolator_taps(rate)) == (13 if rate < 96000 else 25 if rate < 192000 else 0)


@pytest.mark.parametrize("fmt", ["wav-16", "wav-24", "flac-16"])
def test_ranges_decoded_side_by_side_measure_the_same_loudness(
        tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waveform, "PARALLEL_MIN_FRAMES", 0)
    path = synth.write_audio(tmp_path / f"x{synth.FORMATS[fmt].suffix}", fmt, music(30, 44100),
                             44100)
    sequential = analyse_file(path, 100, workers=1).loudness
    for workers in (2, 3):
        assert analyse_file(path, 100, workers=workers).loudness == sequential
