"""The stems ``waveflow demo`` uploads, what must become of each, and their generated audio."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from waveflow_dev import synth

__all__ = ["BUCKET", "REPLAYED", "SAMPLES", "TRACK", "USER", "Sample", "music", "write_samples"]

BUCKET = "waveflow-demo"
USER, TRACK = "user-demo", "track-demo"


@dataclass(frozen=True)
class Sample:
    """One stem the demo uploads, and what must become of it."""

    stem: str
    filename: str
    fmt: str
    seconds: float
    rate: int
    channels: int
    #: ``analysed``, ``duplicate deleted`` or ``failed``.
    expect: str
    expect_code: str | None = None
    #: This stem's bytes are an exact copy of that stem's file.
    copy_of: str | None = None
    #: Cut the file short, as an interrupted upload would.
    cut: bool = False

    @property
    def key(self) -> str:
        return f"uploads/{USER}/{TRACK}/{self.filename}"


SAMPLES: tuple[Sample, ...] = (
    Sample("stem-kick", "kick.wav", "wav-16", 2.0, 44100, 1, "analysed"),
    Sample("stem-pad", "pad.flac", "flac-24", 3.0, 48000, 2, "analysed"),
    Sample("stem-vocals", "vocals 보컬.mp3", "mp3-cbr", 2.5, 44100, 2, "analysed"),
    Sample("stem-ambience", "ambience 5.1.m4a", "m4a-aac", 2.0, 48000, 6, "analysed"),
    Sample("stem-bass", "bass.aiff", "aiff-16", 2.0, 22050, 1, "analysed"),
    Sample("stem-pad-again", "pad (1).flac", "flac-24", 3.0, 48000, 2, "duplicate deleted",
           copy_of="stem-pad"),
    Sample("stem-broken", "broken.wav", "wav-24", 2.0, 44100, 2, "failed", "AUDIO_CORRUPT",
           cut=True),
)
#: The analysed stem whose upload event is replayed: its original must survive.
REPLAYED = "stem-kick"


def write_samples(directory: Path) -> dict[str, bytes]:
    """Generate each sample's bytes (numpy + soundfile/PyAV via :mod:`waveflow_dev.synth`)."""
    directory.mkdir(parents=True)
    data: dict[str, bytes] = {}
    for i, sample in enumerate(SAMPLES):
        if sample.copy_of:
            data[sample.stem] = data[sample.copy_of]
            continue
        frames = int(sample.seconds * sample.rate)
        samples = music(sample.stem.removeprefix("stem-"), frames, sample.rate, sample.channels,
                        seed=i)
        path = directory / f"{sample.stem}{synth.FORMATS[sample.fmt].suffix}"
        synth.write_audio(path, sample.fmt, samples, sample.rate)
        if sample.cut:
            synth.truncate(path, 0.4)
        data[sample.stem] = path.read_bytes()
    return data


def music(kind: str, frames: int, rate: int, channels: int, *, seed: int = 0) -> np.ndarray:
    """A few seconds that look like their stem's name in a waveform (kick, pad, bass…)."""
    t = np.arange(frames, dtype=np.float64) / rate
    rng = np.random.default_rng(seed)
    lanes = []
    for ch in range(channels):
        if kind == "kick":
            beat = t % 0.5
            lane = 0.9 * np.exp(-beat * 9) * np.sin(2 * np.pi * (45 + 90 * np.exp(-beat * 35))
                                                    * beat)
        elif kind == "bass":
            notes = np.array([55.0, 73.42, 82.41, 65.41])[(t // 0.5).astype(int) % 4]
            lane = 0.7 * np.exp(-(t % 0.5) * 3) * np.sin(2 * np.pi * notes * t)
        elif kind == "vocals":
            phrase = np.clip(np.sin(2 * np.pi * 0.9 * t + ch * 0.3), 0, None) ** 0.6
            vibrato = 6 * np.sin(2 * np.pi * 5.5 * t)
            lane = 0.6 * phrase * np.sin(2 * np.pi * (310 + vibrato) * t)
        elif kind == "ambience":
            if ch == 3:  # the LFE channel of 5.1: a low rumble
                lane = 0.3 * np.sin(2 * np.pi * 40 * t)
            else:
                swell = 0.5 + 0.5 * np.sin(2 * np.pi * (0.3 + 0.07 * ch) * t + ch)
                lane = 0.15 * swell * rng.standard_normal(frames)
        else:  # pad, and anything else: a slow swell of a chord, detuned per channel
            swell = np.sin(np.pi * t / max(t[-1], 1e-9)) ** 2 if frames else t
            chord = sum(np.sin(2 * np.pi * f * (1 + 0.002 * ch) * t) for f in (220, 277, 330))
            lane = 0.3 * swell * chord
        lanes.append(lane)
    return np.stack(lanes, axis=1) if lanes else np.zeros((frames, 0))
