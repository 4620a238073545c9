"""Waveform benchmark: ``waveflow-job waveform`` against the naive baseline, as whole processes.

Our command runs twice per round, side by side: the full analysis the analysis stage runs
(overview, detail ``.dat`` at 256 frames per point, loudness and true peak) and the same
analysis without the detail and the loudness (``--no-loudness``, no ``--detail``), one right
after the other; the table shows what the extra work costs (target: at most +25 %) and the
speed-up of the full analysis over the baseline. The extra is the median of each round's own
ratio (full over plain, measured seconds apart): a slower spell of a shared machine then moves
both sides of a ratio, not just one of two medians.

Generates the files on the fly in a temporary directory (deleted afterwards), runs our command
and ``baseline_waveform.py`` alternately (each after an untimed read of the file, so both find
it in the page cache), and prints a table of medians: wall time, CPU time (user + system of all
threads: what the extra work costs a node even where it runs beside the decoding), peak RSS,
speed-up and times real time. Each process is measured by ``os.wait4`` (its own rusage); this
parent imports nothing heavy and generates the files in child processes, because Linux carries
a parent's peak RSS over ``exec`` into the child's ``ru_maxrss``.

    python tests/bench/bench_waveform.py [--quick] [--runs N] [--no-long] [--json OUT]

The 60-minute 24-bit/96 kHz file (about 2 GB) is analysed by the baseline only when the machine
has enough free memory for it (about 10 GiB).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
BASELINE = HERE / "baseline_waveform.py"

#: Targets from the issue: minimum speed-up over the baseline per file, and peak RSS.
RSS_LIMIT_MIB = 64
#: Detail waveform + loudness may add at most this much to the analysis time of any file.
EXTRA_LIMIT = 0.25


#: One whole process: wall seconds, peak RSS (MiB), CPU seconds (user + system, all threads).
Run = tuple[float, float, float]


@dataclass
class Case:
    name: str
    fmt: str
    seconds: float
    rate: int
    target: float | None  # minimum speed-up, None: no target
    baseline: bool = True
    path: Path = Path()
    size: int = 0
    ours: list[Run] = field(default_factory=list)  # full analysis
    plain: list[Run] = field(default_factory=list)  # no detail, no loudness
    base: list[Run] = field(default_factory=list)
    peaks_delta: float | None = None
    skipped_baseline: str = ""


def cases(quick: bool, long: bool) -> list[Case]:
    """The issue's files; --quick makes them 1 minute long and drops the targets (set for 10)."""
    minutes = 1 if quick else 10

    def target(x: float) -> float | None:
        return None if quick else x

    out = [
        Case(f"WAV 16-bit 44.1k stereo {minutes} min", "wav-16", 60 * minutes, 44100, target(3)),
        Case(f"WAV 24-bit 96k stereo {minutes} min", "wav-24", 60 * minutes, 96000, target(4)),
        Case(f"FLAC 16-bit 44.1k stereo {minutes} min", "flac-16", 60 * minutes, 44100,
             target(1.5)),
        Case(f"MP3 VBR 44.1k stereo {minutes} min", "mp3-vbr", 60 * minutes, 44100,
             target(1.5)),
        Case(f"M4A AAC 44.1k stereo {minutes} min", "m4a-aac", 60 * minutes, 44100, None,
             baseline=False),
    ]
    if long:
        out.append(Case("WAV 24-bit 96k stereo 60 min", "wav-24", 3600, 96000, 6.0))
    return out


def generate(case: Case, directory: Path) -> None:
    from_suffix = {"wav-16": ".wav", "wav-24": ".wav", "flac-16": ".flac", "mp3-vbr": ".mp3",
                   "m4a-aac": ".m4a"}
    case.path = directory / f"{case.fmt}-{int(case.seconds)}s{from_suffix[case.fmt]}"
    code = ("import sys; from waveflow_dev import synth; "
            "synth.write_tone(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), 2)")
    subprocess.run([PY, "-c", code, str(case.path), case.fmt, str(case.seconds),
                    str(case.rate)], check=True)
    case.size = case.path.stat().st_size


def our_command() -> list[str]:
    """``waveflow-job waveform`` when the CLI has it, else the module's own entry point."""
    script = Path(PY).with_name("waveflow-job")
    if script.exists():
        probe = subprocess.run([str(script), "waveform", "--help"], capture_output=True,
                               check=False)
        if probe.returncode == 0:
            return [str(script), "waveform"]
    return [PY, "-m", "waveflow_job.waveform"]


def warm(path: Path) -> None:
    """Read the file once, untimed: the baseline's gigabytes can evict it from the page cache,
    and then the next run would measure the disk rather than the program."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def measure(argv: list[str], path: Path) -> Run:
    """Wall seconds, peak RSS (MiB) and CPU seconds of one whole process analysing ``path``."""
    warm(path)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return 0.0


def run(case: Case, runs: int, ours_cmd: list[str], directory: Path,
        base_runs: int | None = None) -> None:
    """``runs`` rounds of ours and plain; the baseline in the first ``base_runs`` of them (all
    by default: the 60-minute file's takes 25 s and 8 GB a run)."""
    ours_out, base_out = directory / "ours.json", directory / "base.json"
    if case.baseline:
        need = case.size / 3 * 8 * 2 / 1024**3 + 2  # float64 samples + mono mix + slack
        if mem_available_gib() < need:
            case.skipped_baseline = f"needs ~{need:.0f} GiB"
    detail_out = directory / "ours.dat"
    for i in range(runs):
        order = ["ours", "plain", "base"] if i % 2 == 0 else ["base", "plain", "ours"]
        if base_runs is not None and i >= base_runs:
            order.remove("base")
        for who in order:
            if who == "ours":
                case.ours.append(measure([*ours_cmd, str(case.path), "-o", str(ours_out),
                                          "--peaks", "1024", "--detail", str(detail_out)],
                                         case.path))
            elif who == "plain":
                case.plain.append(measure([*ours_cmd, str(case.path), "-o", str(ours_out),
                                           "--peaks", "1024", "--no-loudness"], case.path))
            elif case.baseline and not case.skipped_baseline:
                case.base.append(measure([PY, str(BASELINE), str(case.path), str(base_out),
                                          "1024"], case.path))
    if case.base:
        a = json.loads(ours_out.read_text())["peaks"]
        b = json.loads(base_out.read_text())["peaks"]
        case.peaks_delta = max(abs(x - y) for x, y in zip(a, b, strict=True))


def median(values: list[Run], index: int) -> float:
    return statistics.median(v[index] for v in values)


def paired_extra(full: list[Run], plain: list[Run], index: int) -> float:
    """Median over the rounds of full / plain - 1 (wall: ``index`` 0, CPU: 2)."""
    return statistics.median(f[index] / p[index] - 1 for f, p in zip(full, plain, strict=True))


def report(all_cases: list[Case]) -> tuple[str, bool]:
    lines = [
        "| file | size | overview only (median s) | + detail + loudness (median s) | "
        "extra (paired) | CPU s, overview only -> full (paired extra) | baseline (median s) | "
        "speed-up | target | "
        "ours peak RSS | baseline peak RSS | x real time | max peaks diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ok = True
    for c in all_cases:
        ours_s, ours_rss = median(c.ours, 0), max(v[1] for v in c.ours + c.plain)
        plain_s = median(c.plain, 0)
        extra = paired_extra(c.ours, c.plain, 0)
        plain_cpu, ours_cpu = median(c.plain, 2), median(c.ours, 2)
        base_s = median(c.base, 0) if c.base else None
        base_rss = max(v[1] for v in c.base) if c.base else None
        ratio = base_s / ours_s if base_s else None
        met = ours_rss <= RSS_LIMIT_MIB and (c.target is None or ratio is None
                                             or ratio >= c.target)
        cheap = extra <= EXTRA_LIMIT
        ok = ok and met and cheap
        lines.append(
            f"| {c.name} | {c.size / 1e6:,.0f} MB | {plain_s:.2f} | {ours_s:.2f} | "
            f"{extra:+.0%}{'' if cheap else ' MISSED'} | "
            f"{plain_cpu:.2f} -> {ours_cpu:.2f} ({paired_extra(c.ours, c.plain, 2):+.0%}) | "
            f"{f'{base_s:.2f}' if base_s else c.skipped_baseline or 'n/a'} | "
            f"{f'{ratio:.1f}x' if ratio else '-'} | "
            f"{f'>={c.target}x' if c.target else '-'}{'' if met else ' MISSED'} | "
            f"{ours_rss:.0f} MiB | {f'{base_rss:,.0f} MiB' if base_rss else '-'} | "
            f"{c.seconds / ours_s:,.0f}x | "
            f"{'-' if c.peaks_delta is None else f'{c.peaks_delta:.4f}'} |")
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1-minute files, no 60-min file")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-long", action="store_true", help="skip the 60-minute file")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = parser.parse_args()
    ours_cmd = our_command()
    print(f"ours: {' '.join(Path(a).name for a in ours_cmd)}; baseline: {BASELINE.name}; "
          f"{2 * args.runs + 1} interleaved rounds of full and plain per file "
          f"({4 * args.runs + 1} for the 60-minute one), the baseline in {args.runs} of them "
          f"({max(3, args.runs // 2)} for the 60-minute one); CPUs: "
          f"{len(os.sched_getaffinity(0))}",
          flush=True)
    all_cases = cases(args.quick, not (args.quick or args.no_long))
    with tempfile.TemporaryDirectory(prefix="waveflow-bench-") as tmp:
        directory = Path(tmp)
        for case in all_cases:
            generate(case, directory)
            # Full and plain take seconds: twice the rounds of the baseline, so that the
            # median of their ratios holds against a shared machine's slower spells; four
            # times for the 60-minute file, whose ratio is the closest to its bar and whose
            # rounds are cheap beside its baseline (3.5 s a round against 25 s).
            long = case.seconds > 1800
            base_runs = max(3, args.runs // 2) if long else args.runs
            run(case, (4 if long else 2) * args.runs + 1, ours_cmd, directory, base_runs)
            print(f"  {case.name}: ours {median(case.ours, 0):.2f} s "
                  f"(overview only {median(case.plain, 0):.2f} s)"
                  + (f", baseline {median(case.base, 0):.2f} s" if case.base else ""),
                  flush=True)
            if case.seconds > 1800:
                case.path.unlink()  # 2 GB: gone as soon as it has been measured
        table, ok = report(all_cases)
    print(table)
    if args.json:
        args.json.write_text(json.dumps([{"file": c.name, "ours": c.ours, "plain": c.plain,
                                          "baseline": c.base, "target": c.target}
                                         for c in all_cases], indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
