"""Types of the C kernel (_loudness_kernel.c): any buffer of int16, int32 or float32 samples."""

from typing import Any

def kweight(samples: Any, inv_scale: float, coeffs: Any, weights: Any, state: Any, step: int,
            window: int, filled: int, energies: Any) -> tuple[int, int]: ...
def true_peak(samples: Any, inv_scale: float, taps: Any, history: Any, peak: float) -> float: ...
