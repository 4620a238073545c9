"""The naive analysis the old service did, kept only as the benchmark's yardstick.

Reads the whole file as float64, mixes it to mono, and takes the max |sample| per bucket:
memory grows with the file (8 bytes per sample), and the mono mix and every bucket allocate
copies. Usage: ``python baseline_waveform.py INPUT OUTPUT [NUM_PEAKS]``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import soundfile as sf


def main() -> None:
    path, out = sys.argv[1], sys.argv[2]
    num_peaks = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    data, sample_rate = sf.read(path, dtype="float64", always_2d=True)
    mono = data.mean(axis=1)
    frames = len(mono)
    peaks = []
    for i in range(num_peaks):
        bucket = mono[i * frames // num_peaks : (i + 1) * frames // num_peaks]
        peaks.append(float(np.max(np.abs(bucket))) if len(bucket) else 0.0)
    top = max(peaks) or 1.0
    document = {
        "peaks": [round(p / top, 4) for p in peaks],
        "duration": frames / sample_rate,
        "sample_rate": sample_rate,
        "num_peaks": num_peaks,
    }
    with open(out, "w") as f:
        json.dump(document, f)


if __name__ == "__main__":
    main()
