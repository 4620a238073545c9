"""How one analysis decodes: what each pass builds, and the passes themselves.

A :class:`Plan` knows what a decode pass must feed (the waveform accumulator, the detail
waveform's sink under its size bound, the loudness meters); :func:`reduce_once` runs one
sequential pass (on 2+ CPUs the decoder in one thread, the reduction a few blocks behind in
another), :func:`reduce_ranges` splits a seekable source with an exact length into one
range per CPU, reduced side by side in threads and merged (identical to one pass). Either
returns the frame count instead when the source decoded to a different length than expected,
so :func:`waveflow_job.waveform.analyse_file` can decode again with the length now known.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from waveflow_job.contract import ErrorCode
from waveflow_job.errors import AudioError

if TYPE_CHECKING:
    import numpy as np

    from waveflow_job.audio.decode import AudioSource
    from waveflow_job.audio.detail import DetailSink, DetailWaveform
    from waveflow_job.audio.loudness import Loudness, LoudnessMeter
    from waveflow_job.audio.peaks import PeakResult, WaveformAccumulator
    from waveflow_job.waveform import DetailRequest

__all__ = ["Finished", "Passed", "Plan", "available_cpus", "range_bounds", "reduce_once",
           "reduce_ranges", "too_long"]


class Plan:
    """What each decode pass builds: accumulators, detail sinks and meters, per range."""

    def __init__(self, source: AudioSource, num_peaks: int, detail: DetailRequest | None,
                 loudness: bool, max_detail_bytes: int) -> None:
        self.source = source
        self.info = source.info
        self.num_peaks = num_peaks
        self.detail = detail
        self.loudness = loudness
        self.max_detail_bytes = max_detail_bytes
        self.fd: int | None = None
        #: The detail's resolution for the frame count of the current pass (None: left out).
        self.detail_spp: int | None = None
        self.detail_note: str | None = None
        self._fitted_for: int | None = None

    def fit_detail(self, frames: int) -> None:
        """Choose the detail's resolution for ``frames`` under the size bound (each pass knows
        its frame count before its first block; a second pass may choose again)."""
        from waveflow_job.audio.detail import fit_resolution
        from waveflow_job.audio.peaks import pixel_geometry

        if self.detail is None or self._fitted_for == frames:
            return
        overview_spp, _ = pixel_geometry(frames, self.num_peaks)
        fit = fit_resolution(frames, self.info.channels, self.detail.bits,
                             self.detail.samples_per_pixel, self.max_detail_bytes, overview_spp)
        self.detail_spp, self.detail_note, self._fitted_for = (
            fit.samples_per_pixel, fit.note, frames)

    @contextmanager
    def detail_file(self) -> Iterator[None]:
        if self.detail is None:
            yield
            return
        self.fd = os.open(self.detail.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            yield
        finally:
            os.close(self.fd)
            self.fd = None

    @property
    def alignment(self) -> int:
        """Range bounds fall on detail points (no point shared by two ranges) and on the
        100 ms grid of the loudness blocks (each range's meter then gates the same blocks a
        single pass would, but for the few that straddle a bound)."""
        unit = self.detail_spp or 1
        if self.loudness:
            unit = math.lcm(unit, (self.info.sample_rate + 5) // 10)
        return unit

    def accumulator(self, frames: int, start: int = 0) -> WaveformAccumulator:
        from waveflow_job.audio.peaks import WaveformAccumulator

        self.fit_detail(frames)
        return WaveformAccumulator(frames=frames, channels=self.info.channels,
                                   num_peaks=self.num_peaks, scale=self.info.scale, start=start,
                                   detail=self._sink(start))

    def _sink(self, start: int) -> DetailSink | None:
        from waveflow_job.audio.detail import DetailSink

        if self.detail is None or self.fd is None or self.detail_spp is None:
            return None
        return DetailSink(self.fd, channels=self.info.channels, sample_rate=self.info.sample_rate,
                          samples_per_pixel=self.detail_spp, bits=self.detail.bits,
                          full_scale=self.info.scale.full_scale, start=start)

    def meter(self, start: int = 0) -> LoudnessMeter | None:
        from waveflow_job.audio.loudness import LoudnessMeter

        if not self.loudness:
            return None
        return LoudnessMeter(self.info.channels, self.info.sample_rate,
                             self.info.scale.full_scale, start=start)

    def finish(self, total: WaveformAccumulator, meters: Sequence[LoudnessMeter]) -> Finished:
        from waveflow_job.audio.loudness import measure

        result = total.finish()
        detail = total.detail.finish(result.frames) if total.detail is not None else None
        return result, measure(meters) if meters else None, detail


#: What a pass that decoded exactly the frames it expected leaves: the merged accumulator and
#: the loudness meters (one per range).
Passed = tuple["WaveformAccumulator", list["LoudnessMeter"]]
#: What :meth:`Plan.finish` makes of it.
Finished = tuple["PeakResult", "Loudness | None", "DetailWaveform | None"]


def reduce_once(plan: Plan, frames: int | None, max_frames: int | None,
                max_seconds: float | None, workers: int = 1) -> Passed | int:
    """One decode; the reduction when exactly ``frames`` frames came, else the count.

    With ``workers`` > 1 and loudness to measure, the reduction runs in a second thread, a few
    blocks behind the decoder (:class:`~waveflow_job.audio.handoff.Handoff`): the same blocks
    in the same order, so the same result, in less than the time of both sides (10-min M4A,
    in-process medians: -8 to -12 %). The meter's kernels run long without the GIL; the
    waveform alone is many short numpy calls that contend for it with PyAV's per-packet
    Python, so without loudness a second thread only costs CPU (measured: no faster).
    """
    from waveflow_job.audio.handoff import Handoff

    info = plan.info
    reduction = _Reduction(plan, frames)
    decoded = 0
    with ExitStack() as stack:
        feed: Callable[[np.ndarray], None] = reduction.add
        if workers > 1 and reduction.acc is not None and reduction.meter is not None:
            feed = stack.enter_context(Handoff(reduction.add))
            if not plan.source.fresh_blocks:  # the decoder reuses its buffer: hand a copy
                feed = _copying(feed)
        for block in plan.source.blocks():
            decoded += len(block)
            if max_frames is not None and decoded > max_frames:
                raise too_long(decoded / info.sample_rate, max_seconds or 0.0)
            if reduction.acc is not None:  # None once the stream outgrew its estimate
                feed(block)
    if reduction.acc is None or decoded != frames:
        return decoded
    return reduction.acc, [reduction.meter] if reduction.meter is not None else []


class _Reduction:
    """What one whole-stream pass feeds: the accumulator and the meter, until the stream proves
    longer than expected (then the pass only counts, for a second one)."""

    def __init__(self, plan: Plan, frames: int | None) -> None:
        self.acc = plan.accumulator(frames) if frames else None
        self.meter = plan.meter()

    def add(self, block: np.ndarray) -> None:
        from waveflow_job.audio.peaks import FrameCountExceeded, NonFiniteSamples

        if self.acc is None:
            return
        try:
            columns = self.acc.add(block)
        except FrameCountExceeded:
            self.acc = None  # the estimate was short: keep counting for the second pass
            return
        except NonFiniteSamples as exc:
            raise AudioError(ErrorCode.AUDIO_CORRUPT, f"not a valid signal: {exc}") from exc
        if self.meter is not None:
            self.meter.add(block, columns, self.acc.peak_stats)


def _copying(feed: Callable[[np.ndarray], None]) -> Callable[[np.ndarray], None]:
    def feed_copy(block: np.ndarray) -> None:
        feed(block.copy(order="K"))  # keeps a planar block planar
    return feed_copy


def reduce_ranges(plan: Plan, frames: int, workers: int) -> Passed | int:
    """Split [0, frames) into ``workers`` ranges reduced in threads, then merged."""
    from concurrent.futures import ThreadPoolExecutor

    from waveflow_job.audio.peaks import NonFiniteSamples

    source, unit = plan.source, plan.alignment
    bounds = range_bounds(frames, workers, unit)

    def reduce_range(i: int) -> tuple[WaveformAccumulator, LoudnessMeter | None]:
        start, stop = bounds[i], bounds[i + 1]
        acc, meter = plan.accumulator(frames, start), plan.meter(start)
        try:
            if meter is not None and start > 0:
                for before in source.blocks(meter.priming_start, start):
                    meter.prime(before)
            for block in source.blocks(start, stop):
                columns = acc.add(block)
                if meter is not None:
                    meter.add(block, columns, acc.peak_stats)
        except NonFiniteSamples as exc:
            raise AudioError(ErrorCode.AUDIO_CORRUPT, f"not a valid signal: {exc}") from exc
        if acc.detail is not None:
            acc.detail.flush()
        return acc, meter

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        parts = list(pool.map(reduce_range, range(workers)))
    decoded = sum(acc.added for acc, _ in parts)
    if decoded != frames:
        return decoded
    total = parts[0][0]
    for acc, _ in parts[1:]:
        total.merge(acc)
    return total, [meter for _, meter in parts if meter is not None]


def range_bounds(frames: int, workers: int, unit: int) -> list[int]:
    """``workers + 1`` bounds of ranges as equal as multiples of ``unit`` allow (each within
    half a unit of ``frames / workers``).

    Rounded to the nearest multiple, not down: the unit can be coarse (at 44.1 kHz a 256-frame
    detail point and the 4410-frame loudness step make 564,480 frames, 12.8 s), and rounding
    down made the last range, which also pays for seeking and priming, up to two units longer
    than the first (a 5-minute file: 7.02 M frames against 6.21 M, 13 %).
    Needs ``frames >= 2 * workers * unit`` (then the ranges are never empty).
    """
    inner = [(2 * frames * i + workers * unit) // (2 * workers * unit) * unit
             for i in range(1, workers)]
    return [0, *inner, frames]


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, then the cgroup v2 quota (Kubernetes limits)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(cpus, 4))


def too_long(seconds: float, limit: float) -> AudioError:
    return AudioError(ErrorCode.AUDIO_TOO_LONG,
                      f"the audio lasts {seconds:.0f} s or more, over the {limit:.0f} s limit")
