"""kernel.split_stereo (an interleaved stereo block into two contiguous channels) is exact.

Float samples are moved as bits (NaN payloads, -0.0 and infinities included); the accumulator's
results do not depend on whether a block arrives interleaved, planar or non-native.
"""

from __future__ import annotations

import numpy as np
import pytest

import waveflow_job.audio._kernel as kernel
from waveflow_job.audio.peaks import SampleScale, WaveformAccumulator


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
def test_split_stereo_gives_each_channel_bit_for_bit(dtype: type) -> None:
    rng = np.random.default_rng(8)
    for n in (1, 2, 15, 16, 17, 4_099):
        bits = rng.integers(0, 256, n * 2 * np.dtype(dtype).itemsize, dtype=np.uint8)
        block = bits.view(dtype).reshape(n, 2)
        left, right = np.empty(n, dtype), np.empty(n, dtype)
        kernel.split_stereo(block, left, right)
        assert left.tobytes() == np.ascontiguousarray(block[:, 0]).tobytes()
        assert right.tobytes() == np.ascontiguousarray(block[:, 1]).tobytes()


def test_split_stereo_refuses_what_it_cannot_split() -> None:
    out = np.empty(4, np.int16)
    with pytest.raises(ValueError):
        kernel.split_stereo(np.zeros((4, 3), np.int16), out, out.copy())
    with pytest.raises(ValueError):  # left too short
        kernel.split_stereo(np.zeros((5, 2), np.int16), out, np.empty(5, np.int16))
    with pytest.raises(ValueError):  # item size differs
        kernel.split_stereo(np.zeros((4, 2), np.int16), np.empty(4, np.int32), out)
    with pytest.raises(TypeError):
        kernel.split_stereo(np.zeros((4, 2), np.float64), out, out.copy())
    with pytest.raises(ValueError):  # not C-contiguous
        kernel.split_stereo(np.zeros((4, 4), np.int16)[:, ::2], out, out.copy())


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32])
def test_interleaved_planar_and_non_native_blocks_give_the_same_waveform(dtype: type) -> None:
    rng = np.random.default_rng(3)
    if dtype is np.float32:
        block = (rng.standard_normal((9_001, 2)) * 0.5).astype(np.float32)
        scale = SampleScale.floating()
    else:
        info = np.iinfo(dtype)
        block = rng.integers(info.min, info.max, (9_001, 2), endpoint=True, dtype=dtype)
        scale = SampleScale.for_integer_bits(info.bits, info.bits)
    layouts = [block, np.ascontiguousarray(block.T).T, block.astype(block.dtype.newbyteorder())]
    results = []
    for b in layouts:
        acc = WaveformAccumulator(frames=len(b), channels=2, num_peaks=64, scale=scale)
        columns = acc.add(b)
        assert [c.tolist() for c in columns] == [block[:, 0].tolist(), block[:, 1].tolist()]
        results.append(acc.finish())
    assert results[1] == results[0]
    assert (results[2].peaks, results[2].data) == (results[0].peaks, results[0].data)
