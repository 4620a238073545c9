"""The kernel an aarch64 (Graviton) node runs equals the x86 one: the portable build (plain C,
no AVX2/AVX-512 groups, no target clones, no SSE flush-to-zero; see job.portable_kernel), with
and without FMA contraction, fed the same generated blocks as the installed build.

Exact where the kernel promises exactness (true peak and its history, detail points, segment
min/max, the levels' mono peaks, split_stereo), each also against the numpy definition; the
K-weighting within libebur128's bar (1e-9 relative), against libebur128 itself. Covered: int16,
int32 and float32; interleaved, planar, strided and reversed layouts; 1 to 8 channels; odd
lengths and blocks of one frame; 8 kHz to 192 kHz; NaN and infinities; the running peak just
under the answer, priming on the frames before a range.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from job import portable_kernel
from job.test_detail_kernel import SCALES, random_samples, reference_points
from job.test_kweight_kernel import assert_same_energies, energies, uneven_blocks
from job.test_levels_kernel import numpy_levels
from job.test_levels_kernel import samples as level_columns
from job.test_loudness_kernel import FULL_SCALE, random_blocks, reference_steps, signal
from job.test_loudness_kernel import as_type as loudness_type
from job.test_true_peak_kernel import DTYPES, RATES, SIGNALS, blocks_of, full_interpolation, music
from job.test_true_peak_kernel import as_type as peak_type
from waveflow_job.audio import _kernel as installed
from waveflow_job.audio.loudness import interpolator_taps, kweighting

PORTABLE = portable_kernel.runnable_variants()


@pytest.fixture(scope="module")
def kernels(portable_kernels: dict[str, ModuleType]) -> dict[str, ModuleType]:
    """The installed build first, then every portable one."""
    return {"installed": installed, **portable_kernels}


def symbols(module: ModuleType) -> set[str]:
    """The function names in the module's shared object (static ones included)."""
    out = subprocess.run([shutil.which("nm") or "nm", module.__file__ or ""],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if " t " in line or " T " in line}


def test_the_portable_build_holds_only_the_plain_c_paths(kernels: dict[str, ModuleType]) -> None:
    assert sys.modules[portable_kernel.MODULE] is installed  # loading replaced nothing
    # The installed build has the x86 code (the guard is on): target clones of the hot loops
    # with their resolvers, the CPU feature tests that pick the AVX2/AVX-512 kernels.
    x86 = symbols(installed)
    assert any(".arch_x86_64_v3" in s for s in x86) and any(".resolver" in s for s in x86)
    assert "__cpu_indicator_init" in x86
    args = (np.zeros((4, 1), np.float32), 1.0, kweighting(48000), np.ones(1), np.zeros((1, 5)),
            4800, 4800, 0, np.zeros(0))
    for name in PORTABLE:
        plain = symbols(kernels[name])
        assert {"wf_kweight", "wf_true_peak", "wf_levels", "wf_split_stereo"} <= plain
        assert not {s for s in plain if ".arch_" in s or ".resolver" in s or "cpu_indicator" in s}
        kernels[name].kweight(*args, 2, 0)
        for width in (4, 8):  # no AVX group to force
            with pytest.raises(ValueError):
                kernels[name].kweight(*args, width, 0)


def test_no_x86_only_code_outside_the_guard() -> None:
    """An x86 attribute or intrinsic left outside WF_X86_SIMD builds on x86 even with
    -DWAVEFLOW_PORTABLE_KERNEL, but not on aarch64: after the preprocessor, a portable
    build's kernel lines hold none (the default build's do: the check sees them)."""
    sources = [portable_kernel.REPO / s for s in portable_kernel.pyproject_extension()["sources"]]
    default = [line for s in sources for line in portable_kernel.x86_only_lines(s, ())]
    assert any("target_clones" in line for line in default)
    assert any("__builtin_cpu_supports" in line for line in default)
    for source in sources:
        assert portable_kernel.x86_only_lines(source, ("-DWAVEFLOW_PORTABLE_KERNEL",)) == []


#: The aarch64 cross compiler `make test` installs (Debian's gcc-aarch64-linux-gnu).
CROSS_CC = os.environ.get("WAVEFLOW_CROSS_CC", "aarch64-linux-gnu-gcc")


def test_the_kernel_builds_for_aarch64_with_a_real_cross_compiler(tmp_path: Path) -> None:
    """What a Graviton node's `pip install` compiles: no warning, an AArch64 shared object that
    exports the module's init and needs nothing but Python's stable ABI and libc (no CPU
    dispatch resolver, no x86 symbol)."""
    compiler = shutil.which(CROSS_CC)
    assert compiler is not None, (
        f"{CROSS_CC} is missing: `make tools-cross` installs Debian's gcc-aarch64-linux-gnu")
    library, log = portable_kernel.cross_build(compiler, tmp_path)
    assert "warning" not in log, log
    header = subprocess.run(["readelf", "-h", str(library)], capture_output=True, text=True,
                            check=True).stdout
    assert re.search(r"Machine:\s+AArch64", header), header
    symbols = subprocess.run(["readelf", "--dyn-syms", "-W", str(library)], capture_output=True,
                             text=True, check=True).stdout
    defined = {f[7].split("@")[0] for f in (line.split() for line in symbols.splitlines())
               if len(f) >= 8 and f[6] != "UND" and f[3] == "FUNC"}
    needed = {f[7].split("@")[0] for f in (line.split() for line in symbols.splitlines())
              if len(f) >= 8 and f[6] == "UND"}
    assert "PyInit__kernel" in defined
    libc = {"malloc", "free", "memcpy", "memmove", "memset", "strchr", "__cxa_finalize",
            "__gmon_start__", "_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable"}
    assert {s for s in needed if not re.match(r"_?Py", s)} <= libc, needed
    assert not any("cpu" in s.lower() for s in needed | defined), needed | defined


def test_every_variant_is_built_and_loaded(kernels: dict[str, ModuleType]) -> None:
    missing = sorted(set(portable_kernel.VARIANTS) - set(PORTABLE))
    if missing:  # shown in the summary: this machine checks less than aarch64 needs
        pytest.skip(f"{missing} need FMA instructions, which this CPU lacks")
    assert set(kernels) == {"installed", *portable_kernel.VARIANTS}
    assert len({k.__file__ for k in kernels.values()}) == len(kernels)


# --- True peak: the result and the history, exact -----------------------------------------


def peak_run(kernel: ModuleType, raw: np.ndarray, rate: int, blocks: list[int],
             peak: float = 0.0) -> tuple[float, list[bytes]]:
    """The peak fed block by block (as TruePeakMeter feeds it) and the history after each."""
    bank = interpolator_taps(rate)
    history = np.zeros(max(0, len(bank) - 1), np.float32)
    histories, at = [], 0
    for size in blocks:
        peak = kernel.true_peak(raw[at:at + size], 1.0 / FULL_SCALE[raw.dtype.type], bank,
                                history, peak)
        histories.append(history.tobytes())
        at += size
    assert at == len(raw)
    return peak, histories


def assert_same_peaks(kernels: dict[str, ModuleType], raw: np.ndarray, rate: int,
                      blocks: list[int], expected: float, peak: float = 0.0) -> None:
    results = {name: peak_run(k, raw, rate, blocks, peak) for name, k in kernels.items()}
    for name, (got, histories) in results.items():
        assert got == expected, name
        assert histories == results["installed"][1], name


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_true_peak_equals_the_full_interpolation_in_every_build(
        kernels: dict[str, ModuleType], dtype: type, rate: int) -> None:
    first = RATES.index(rate) + 3 * DTYPES.index(dtype)
    for make in (SIGNALS * 2)[first % len(SIGNALS):][:4]:  # every signal, four per case
        rng = np.random.default_rng([rate, DTYPES.index(dtype), SIGNALS.index(make), 7])
        raw = peak_type(make(int(rng.integers(rate // 5, rate // 4)) | 1, rate, rng), dtype)
        expected = full_interpolation(raw, rate)
        assert_same_peaks(kernels, raw, rate, blocks_of(len(raw), rng), expected)
        assert_same_peaks(kernels, raw, rate, [len(raw)], expected)
        below = float(np.nextafter(expected, 0.0))  # the chunk holding the peak is evaluated
        assert_same_peaks(kernels, raw, rate, blocks_of(len(raw), rng), expected, below)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_true_peak_of_non_finite_floats_in_every_build(kernels: dict[str, ModuleType],
                                                       bad: float) -> None:
    rng = np.random.default_rng(17)
    for rate in (44100, 96000):
        x = music(30_001, rate, rng).astype(np.float32)
        x[[3, 9_000, 9_001, 20_017]] = bad
        expected = full_interpolation(x, rate)
        assert_same_peaks(kernels, x, rate, blocks_of(len(x), rng), expected)
        assert_same_peaks(kernels, x, rate, [9_001, len(x) - 9_001], expected)


def test_true_peak_of_strided_reversed_and_priming_blocks(kernels: dict[str, ModuleType]) -> None:
    rate = 96000
    rng = np.random.default_rng(23)
    for dtype in DTYPES:
        whole = peak_type(music(210_000, rate, rng), dtype)
        for column in (whole[::3], whole[::-2]):
            expected = full_interpolation(np.ascontiguousarray(column), rate)
            assert_same_peaks(kernels, column, rate, blocks_of(len(column), rng), expected)
            assert_same_peaks(kernels, column, rate, [len(column)], expected)
        # Priming (a peak nothing beats): only the history moves, the same in every build.
        assert_same_peaks(kernels, whole[:5_003], rate, [4_990, 13], math.inf, math.inf)


# --- K-weighting: libebur128's bar ---------------------------------------------------------


def kweight_run(kernel: ModuleType, samples: np.ndarray, rate: int, blocks: list[int],
                width: int, segments: int, how: str,
                skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """test_kweight_kernel's block-by-block feed through ``kernel``; the first ``skip`` steps
    are the priming a range meter drops."""
    steps, state = energies(samples, rate, blocks, width, segments, how, module=kernel)
    return steps[skip:], state


KWEIGHT_CASES = [  # (rate, channels, dtype, layout): every rate, count, type and layout
    (8000, 1, np.int16, "interleaved"),
    (22050, 2, np.int32, "planar"),
    (44100, 2, np.int16, "interleaved"),
    (44100, 3, np.float32, "strided"),
    (44105, 4, np.int16, "planar"),
    (47999, 5, np.float32, "interleaved"),
    (48000, 6, np.int16, "interleaved"),
    (48000, 7, np.int32, "strided"),
    (96000, 8, np.float32, "interleaved"),
    (96000, 2, np.float32, "planar"),
    (192000, 1, np.int32, "interleaved"),
    (12345, 8, np.int16, "planar"),
]


def assert_close_energies(ours: np.ndarray, theirs: np.ndarray) -> None:
    """libebur128's bar (1e-9 relative), to 1e-12 of the loudest step (-120 dB, far under any
    gate) rather than 1e-18: the step after 192 kHz audio stops holds only the filter's
    ringing, a small difference of the direct form's large delays (its 38 Hz poles), so it
    carries their rounding (~6e-12 of the signal, 1.3e-14 of the loudest energy there), not
    its own. The installed build's own widths differ by 1e-8 of that step's energy, and from
    libebur128 by as much; FMA contraction moves it as much."""
    assert len(ours) == len(theirs) > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12 * np.max(theirs))


@pytest.mark.parametrize(("rate", "channels", "dtype", "how"), KWEIGHT_CASES)
def test_kweight_equals_libebur128_in_every_build(kernels: dict[str, ModuleType], rate: int,
                                                  channels: int, dtype: type, how: str) -> None:
    samples = loudness_type(signal(round(2.7 * rate) + 3, rate, channels, rate + channels), dtype)
    reference = np.array(reference_steps(samples, rate)[0])
    widest, widest_state = kweight_run(installed, samples, rate,
                                       random_blocks(len(samples), rate, 2 * rate), 0, 0, how)
    for segments, blocks in ((0, random_blocks(len(samples), channels, rate)),
                             (1, uneven_blocks(len(samples), rate)),
                             (5, uneven_blocks(len(samples), rate))):
        lanes2, lanes2_state = kweight_run(installed, samples, rate, blocks, 2, segments, how)
        for name in PORTABLE:
            ours, state = kweight_run(kernels[name], samples, rate, blocks, 2, segments, how)
            assert_close_energies(ours, reference)
            assert_close_energies(ours, widest)
            np.testing.assert_allclose(state, widest_state, rtol=1e-7, atol=1e-12)
            if name == "portable-no-fma":  # x86's own 2-lane path, bit for bit
                assert ours.tobytes() == lanes2.tobytes()
                assert state.tobytes() == lanes2_state.tobytes()


def test_kweight_decays_through_subnormals_without_flush_to_zero(
        kernels: dict[str, ModuleType]) -> None:
    """aarch64 keeps subnormals (the SSE flush-to-zero is x86's): after 20 s of digital
    silence the portable filter's state has decayed to zero, x86's stays at ~1e-304; the
    energies agree to libebur128's bar, which reads silence as zero."""
    rate = 48000
    loud = signal(rate, rate, 2, 5)
    samples = loudness_type(np.concatenate([loud, np.zeros((20 * rate, 2))]), np.float32)
    reference = np.array(reference_steps(samples, rate)[0])
    for name, kernel in kernels.items():
        ours, state = kweight_run(kernel, samples, rate, [len(samples) // 3, len(samples)
                                                          - len(samples) // 3], 2, 1, "planar")
        assert_same_energies(ours, reference)
        assert np.abs(state).max() < 1e-300, name
        if name != "installed":
            assert not state.any(), name


def test_kweight_of_blocks_of_one_frame_and_a_primed_range(
        kernels: dict[str, ModuleType]) -> None:
    rate = 44105
    samples = loudness_type(signal(round(1.9 * rate), rate, 2, 31), np.int16)
    reference = np.array(reference_steps(samples, rate)[0])
    step = (rate + 5) // 10
    split = 12 * step  # a range from step 12, primed on the two steps before it
    for kernel in kernels.values():
        ones, _ = kweight_run(kernel, samples[:2 * step + 5], rate, [1] * (2 * step + 5), 0, 0,
                              "interleaved")
        assert_same_energies(ones, reference[:2])
        head, _ = kweight_run(kernel, samples[:split], rate, [split], 0, 0, "planar")
        tail, _ = kweight_run(kernel, samples[split - 2 * step:], rate, [2 * step - 1, 1, 30_000,
                              len(samples) - split - 30_000], 0, 0, "planar", skip=2)
        assert_same_energies(np.concatenate([head, tail]), reference)


# --- Segments, detail points, levels, split_stereo: exact ---------------------------------


def random_starts(rng: np.random.Generator, n: int) -> np.ndarray:
    cuts = np.unique(rng.integers(1, n, size=max(1, n // 700))) if n > 1 else np.zeros(0)
    return np.concatenate([[0], cuts]).astype(np.int64)


def columns_of(rng: np.random.Generator, dtype: type, n: int) -> list[np.ndarray]:
    """The same samples contiguous, every third of a longer run, and reversed."""
    whole = random_samples(rng, dtype, (3 * n,))
    return [np.ascontiguousarray(whole[:n]), whole[::3], whole[n - 1::-1]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_segment_and_detail_minmax_are_exact_in_every_build(kernels: dict[str, ModuleType],
                                                            dtype: type) -> None:
    rng = np.random.default_rng(DTYPES.index(dtype) + 40)
    full_scale = SCALES[dtype].full_scale
    for n, spp, offset in [(1, 256, 0), (1, 256, 255), (255, 256, 1), (257, 256, 0),
                           (30_011, 256, 100), (20_001, 7, 3), (4_999, 1, 0),
                           (3_001, 4_096, 1_000), (9_999, 3, 2)]:
        for column in columns_of(rng, dtype, n):
            if dtype is np.float32 and n > 300:
                column[rng.integers(0, n, 3)] = [np.inf, -np.inf, rng.uniform(-9.0, 9.0)]
            starts = random_starts(rng, n)
            want_max = np.maximum.reduceat(column, starts)
            want_min = np.minimum.reduceat(column, starts)
            first = -offset % spp
            count = 1 if first >= n else (first > 0) + -(-(n - first) // spp)
            for bits in (8, 16):
                want_points = reference_points(column[:, None], offset, spp, full_scale, bits)
                for name, kernel in kernels.items():
                    out_max, out_min = np.empty_like(want_max), np.empty_like(want_min)
                    kernel.segment_minmax(column, starts, out_max, out_min)
                    assert out_max.tobytes() == want_max.tobytes(), name
                    assert out_min.tobytes() == want_min.tobytes(), name
                    points = np.full((count, 1, 2), 99, np.int8 if bits == 8 else np.int16)
                    out_max[:], out_min[:] = 0, 0
                    assert kernel.detail_minmax(column, starts, out_max, out_min, first, spp,
                                                1.0 / full_scale, bits, points, 0, 1) == count
                    assert out_max.tobytes() == want_max.tobytes(), name
                    assert out_min.tobytes() == want_min.tobytes(), name
                    assert np.array_equal(points, want_points), (name, n, spp, offset, bits)


def test_detail_points_of_interleaved_channels_in_every_build(
        kernels: dict[str, ModuleType]) -> None:
    """Each channel of an interleaved block fills its pair of the shared (points, channels, 2)."""
    rng = np.random.default_rng(50)
    for dtype, channels in ((np.int16, 8), (np.int32, 3), (np.float32, 5)):
        block = random_samples(rng, dtype, (4_001, channels))
        full_scale = SCALES[dtype].full_scale
        for bits in (8, 16):
            want = reference_points(block, 70, 256, full_scale, bits)
            for name, kernel in kernels.items():
                points = np.zeros_like(want)
                for c in range(channels):
                    out_max, out_min = np.empty(2, dtype), np.empty(2, dtype)
                    kernel.detail_minmax(block[:, c], np.array([0, 999], np.int64), out_max,
                                         out_min, -70 % 256, 256, 1.0 / full_scale, bits,
                                         points, c, channels)
                assert points.tobytes() == want.tobytes(), (name, dtype, bits)


def test_nan_propagates_in_every_build(kernels: dict[str, ModuleType]) -> None:
    samples = np.array([0.5, np.nan, -7.0, np.inf, 0.0, -np.inf, 0.25, 1.0, np.nan],
                       np.float32)
    starts = np.array([0, 3, 6, 8], np.int64)
    for name, kernel in kernels.items():
        out_max, out_min = np.empty(4, np.float32), np.empty(4, np.float32)
        kernel.segment_minmax(samples, starts, out_max, out_min)
        assert np.isnan(out_max[[0, 3]]).all() and np.isnan(out_min[[0, 3]]).all(), name
        assert (out_max[1:3].tolist(), out_min[1:3].tolist()) == ([np.inf, 1.0],
                                                                   [-np.inf, 0.25]), name
        points = np.zeros((3, 1, 2), np.int8)
        kernel.detail_minmax(samples, starts, out_max, out_min, 0, 3, 1.0, 8, points, 0, 1)
        assert points.tolist() == [[[-128, -128]], [[-128, 127]], [[-128, -128]]], name


@pytest.mark.parametrize("dtype", DTYPES)
def test_levels_are_exact_in_every_build(kernels: dict[str, ModuleType], dtype: type) -> None:
    rng = np.random.default_rng(DTYPES.index(dtype) + 60)
    for channels in range(1, 9):
        for n, stride in ((1, 1), (7, 2), (1_023, 1), (1_024, 2), (1_025, 3), (4_099, 1)):
            columns = level_columns(rng, dtype, n, channels, stride)
            if channels % 3 == 0:
                columns = [c[::-1] for c in columns]
            for starts in (np.zeros(1, np.int64), random_starts(rng, n)):
                want_squares, want_mono = numpy_levels(columns, starts)
                for name, kernel in kernels.items():
                    mono = np.full(len(starts), -1.0, np.float32)
                    squares = kernel.levels(columns, starts, mono)
                    assert mono.tobytes() == want_mono.tobytes(), (name, channels, n)
                    assert squares == pytest.approx(want_squares, rel=1e-12), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_stereo_is_exact_in_every_build(kernels: dict[str, ModuleType],
                                              dtype: type) -> None:
    rng = np.random.default_rng(DTYPES.index(dtype) + 80)
    for n in (1, 2, 15, 17, 4_099):
        bits = rng.integers(0, 256, n * 2 * np.dtype(dtype).itemsize, dtype=np.uint8)
        # Any bits: NaN payloads, -0.0, subnormals.
        block: np.ndarray = bits.view(dtype).reshape(n, 2)
        for name, kernel in kernels.items():
            left: np.ndarray = np.empty(n, dtype)
            right: np.ndarray = np.empty(n, dtype)
            kernel.split_stereo(block, left, right)
            assert left.tobytes() == np.ascontiguousarray(block[:, 0]).tobytes(), name
            assert right.tobytes() == np.ascontiguousarray(block[:, 1]).tobytes(), name
