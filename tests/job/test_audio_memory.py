"""Decoding is block by block: peak memory does not grow with the length of the file.

Measured as the peak RSS of a fresh process analysing a short file and one four times longer,
with the detail waveform written and loudness measured in the same pass: a ratio, not a timing,
so it holds on any machine. Both files of a pair take the same path (sequential, or ranges in
threads above ``PARALLEL_MIN_FRAMES``), so the ratio shows growth with length only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from waveflow_dev import synth

# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec() from the (large) pytest parent.
CHILD = """
import sys
from waveflow_job.waveform import DetailRequest, analyse_file
analysis = analyse_file(sys.argv[1], 1024, detail=DetailRequest(sys.argv[1] + ".dat"))
assert analysis.loudness.integrated_lufs is not None and analysis.detail.length > 0
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(analysis.waveform.frames, hwm.split()[1])
"""

MIB = 1024


def peak_rss_kib(path: Path) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                          text=True, check=True)
    frames, rss = done.stdout.split()
    return int(frames), int(rss)


def test_memory_of_an_8_channel_file_does_not_grow_with_its_length(tmp_path: Path) -> None:
    # The detail points of a long many-channel file go to disk as they are made: 4 h of 8
    # channels would be 5.4 million points per channel; here 4x the length costs nothing.
    short = synth.write_tone(tmp_path / "short.wav", "wav-16", 30, 48000, 8)
    long = synth.write_tone(tmp_path / "long.wav", "wav-16", 120, 48000, 8)
    short_frames, short_rss = peak_rss_kib(short)
    long_frames, long_rss = peak_rss_kib(long)
    assert long_frames == 4 * short_frames
    assert long_rss <= short_rss * 1.1 + 2 * MIB, (short_rss, long_rss)


@pytest.mark.parametrize(("fmt", "seconds", "rate"), [
    ("wav-24", 15, 96000),  # 8.6 MB vs 34.6 MB on disk, 23 MB vs 92 MB as float64
    ("flac-16", 25, 48000),  # both above PARALLEL_MIN_FRAMES: decoded in ranges
    ("mp3-vbr-noheader", 10, 44100),  # PyAV, length estimated
    ("m4a-aac", 15, 44100),
])
def test_peak_memory_does_not_grow_with_file_length(tmp_path: Path, fmt: str, seconds: int,
                                                    rate: int) -> None:
    suffix = synth.FORMATS[fmt].suffix
    short = synth.write_tone(tmp_path / f"short{suffix}", fmt, seconds, rate, 2)
    long = synth.write_tone(tmp_path / f"long{suffix}", fmt, 4 * seconds, rate, 2)
    short_frames, short_rss = peak_rss_kib(short)
    long_frames, long_rss = peak_rss_kib(long)
    assert long_frames >= 4 * short_frames - 4096
    # Four times the audio may cost a few buffers more, never four times the memory.
    assert long_rss <= short_rss * 1.1 + 2 * MIB, (short_rss, long_rss)
    # The absolute figure (≤ 64 MiB) is a benchmark target (`make bench`), not asserted here:
    # VmHWM counts the file-backed pages of FFmpeg's libraries, and how many of those a process
    # maps depends on the page cache (a fresh install maps ~17 MiB more of libavcodec).


LIBRARIES_CHILD = """
import sys
from waveflow_job.cli import main
sys.argv = ["waveflow-job", "waveform", sys.argv[1], "-o", sys.argv[1] + ".json",
            "--detail", sys.argv[1] + ".dat"]
assert main() == 0
maps = open("/proc/self/maps").read()
print("_hashlib" in sys.modules, "libcrypto" in maps, "av" in sys.modules)
"""


def test_the_analysis_does_not_load_openssl(tmp_path: Path) -> None:
    # libcrypto (through hashlib, which only the webhook sender needs) is 3.4 MiB resident
    # in every job; on an M4A it was part of a peak over the 64 MiB bar.
    path = synth.write_tone(tmp_path / "tone.m4a", "m4a-aac", 5, 44100, 2)
    done = subprocess.run([sys.executable, "-c", LIBRARIES_CHILD, str(path)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False", "True"]
