"""Straightforward references the streaming analysis is checked against (whole arrays, loops)."""

from __future__ import annotations

import math

import numpy as np


def reference_peaks(samples: np.ndarray, num_peaks: int) -> list[float]:
    """CONTRACT.md §3 read literally: buckets [floor(i·N/P), floor((i+1)·N/P)) of the mono mean."""
    mono = np.asarray(samples, dtype=np.float64).mean(axis=1)
    n = len(mono)
    if n < num_peaks:
        raw = list(np.abs(mono)) + [0.0] * (num_peaks - n)
    else:
        raw = [float(np.abs(mono[i * n // num_peaks:(i + 1) * n // num_peaks]).max())
               for i in range(num_peaks)]
    top = max(raw)
    if top == 0:
        return [0.0] * num_peaks
    return [round(v / max(top, 0.001), 4) for v in raw]


def reference_pairs(samples: np.ndarray, num_peaks: int) -> tuple[int, int, list[int]]:
    """audiowaveform v2: spp = ceil(N/P), length = ceil(N/spp), min/max per channel, 8-bit."""
    x = np.asarray(samples, dtype=np.float64)
    n, channels = x.shape
    spp = math.ceil(n / num_peaks)
    length = math.ceil(n / spp)
    data: list[int] = []
    for i in range(length):
        chunk = x[i * spp:(i + 1) * spp]
        for c in range(channels):
            for v in (chunk[:, c].min(), chunk[:, c].max()):
                data.append(int(max(-128, min(127, math.trunc(v * 128)))))
    return spp, length, data


def assert_peaks_close(actual: list[float], expected: list[float], tol: float = 1.5e-4) -> None:
    assert len(actual) == len(expected)
    worst = max((abs(a - e), i) for i, (a, e) in enumerate(zip(actual, expected, strict=True)))
    assert worst[0] <= tol, f"peak {worst[1]} differs by {worst[0]}"
