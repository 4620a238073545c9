"""Small, distinct audio files for the reliability tests (generated, seeded)."""

from __future__ import annotations

import io
import random

import numpy as np
import soundfile


def wav(seed: int, seconds: float = 0.25, rate: int = 8000) -> bytes:
    """A short WAV whose bytes differ for every seed (a tone at a seeded pitch, plus noise)."""
    generator = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 110 + random.Random(seed).random() * 880
    signal = 0.4 * np.sin(2 * np.pi * pitch * t) + 0.05 * generator.standard_normal(t.size)
    buffer = io.BytesIO()
    soundfile.write(buffer, signal.astype(np.float32), rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def corrupt(seed: int) -> bytes:
    """A RIFF header followed by garbage: the analysis must reject it (AUDIO_CORRUPT)."""
    return wav(seed)[:44] + bytes(random.Random(seed).randbytes(64)) + b"\x00garbage" * 32
