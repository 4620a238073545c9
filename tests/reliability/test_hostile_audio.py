"""Mutated audio through the real analysis: a sane document or a specific rejection, always
(issue 8, "Hostile input").

Seeds are real files of every family the job decodes (written by the encoders in
``waveflow_dev.synth``) and byte-built WAV/AIFF; hypothesis mutates them — bit flips (anywhere,
and concentrated in the headers), cuts at any offset, lying header fields (sizes, channels,
rates, bits, frame counts, with extreme and random values), one format's header spliced onto
another's body, other formats and plain garbage under audio names. Each file goes to a forked
child of :mod:`hostile_worker` running ``analyse_file`` with the detail waveform and loudness,
as the analysis stage does, and must end in one of:

- ``ok``, with a document that passes every sanity check (peaks in 0..1, finite duration, rate
  and channels within the limits, data consistent with length and channels, a sane ``.dat``);
- a rejection with one of the audio error codes;

never an exception of any other kind, a crash, a run past the deadline, or peak memory above
:data:`PEAK_BOUND_MIB`.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reliability.fuzzing import fuzz_settings, report
from support.hostile import WavFields, aiff_file, extended, tone_pcm16, wav_file
from waveflow_dev import synth

WORKER = Path(__file__).with_name("hostile_worker.py")
#: Peak RSS growth of one analysis, whatever the file claims: decode buffers are a few MiB and
#: the waveform is bounded by the limits; FFmpeg's first use of a codec maps a little more.
PEAK_BOUND_MIB = 96
REJECTIONS = {"AUDIO_CORRUPT", "AUDIO_EMPTY", "AUDIO_UNSUPPORTED", "AUDIO_TOO_LONG",
              "AUDIO_SAMPLE_RATE_UNSUPPORTED", "AUDIO_TOO_MANY_CHANNELS", "WAVEFORM_TOO_LARGE"}
SEED_FORMATS = ["wav-16", "wav-24", "wav-float", "wav-u8", "rf64-24", "w64-16", "aiff-16",
                "flac-16", "ogg-vorbis", "opus", "mp3-cbr", "mp3-vbr-noheader", "m4a-aac",
                "m4a-alac-16", "webm-opus"]
#: Values a lying header field is most likely to break something with.
EXTREMES = [0, 1, 2, 3, 7, 8, 255, 256, 4095, 4096, 32767, 32768, 65535, 65536, 2**31 - 1,
            2**31, 2**32 - 1]
SUFFIXES = [".wav", ".aiff", ".flac", ".mp3", ".ogg", ".m4a", ".webm", ".w64", ".opus", ""]
MAGICS = [b"RIFF\xff\xff\xff\xffWAVE", b"RF64\xff\xff\xff\xffWAVE", b"FORM\x00\x00\x10\x00AIFF",
          b"FORM\x00\x00\x10\x00AIFC", b"fLaC", b"OggS\x00\x02", b"ID3\x04\x00\x00",
          b"\x00\x00\x00\x20ftypM4A ", b"\x1a\x45\xdf\xa3", b"\xff\xfb\x90\x64", b"\xff\xf1",
          b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b""]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("seeds")
    files: dict[str, bytes] = {}
    for fmt in SEED_FORMATS:
        spec = synth.FORMATS[fmt]
        rate = 48000 if spec.rates and 44100 not in spec.rates else 44100
        path = synth.write_tone(directory / f"{fmt}{spec.suffix}", fmt, 0.3, rate, 2)
        files[fmt] = path.read_bytes()
    files["built-wav"] = wav_file(WavFields(channels=2, sample_rate=22050),
                                  tone_pcm16(2000, 2))
    files["built-aiff"] = aiff_file(extended(22050.0), tone_pcm16(2000, 2, big_endian=True),
                                    channels=2)
    return files


class Worker:
    """The forking analysis worker, one request (a path) and one answer (a JSON line) at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def analyse(self, path: Path) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, f"the worker died (exit {self.process.poll()})"
        result: dict[str, Any] = json.loads(answer)
        return result

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    running = Worker()
    try:
        yield running
    finally:
        running.close()


# --------------------------------------------------------------------------- mutations


def flip_bits(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    mutated = bytearray(data)
    for offset, bit in flips:
        mutated[offset % len(mutated)] ^= 1 << bit
    return bytes(mutated)


def put(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    width = struct.calcsize(fmt)
    value &= (1 << (8 * width)) - 1
    if fmt[-1].islower():  # signed field: wrap into range
        value -= (1 << (8 * width)) if value >= 1 << (8 * width - 1) else 0
    return data[:offset] + struct.pack(fmt, value) + data[offset + width:]


#: (chunk id, offset in its body, struct format, field name) of the fields a header may lie in.
RIFF_FIELDS = [(b"fmt ", 0, "<H", "format tag"), (b"fmt ", 2, "<H", "channels"),
               (b"fmt ", 4, "<I", "sample rate"), (b"fmt ", 8, "<I", "byte rate"),
               (b"fmt ", 12, "<H", "block align"), (b"fmt ", 14, "<H", "bits"),
               (b"data", -4, "<I", "data size"), (b"RIFF", 4, "<I", "riff size"),
               (b"ds64", 8, "<Q", "ds64 data size")]
AIFF_FIELDS = [(b"COMM", 0, ">h", "channels"), (b"COMM", 2, ">I", "frames"),
               (b"COMM", 6, ">h", "bits"), (b"SSND", -4, ">I", "ssnd size"),
               (b"SSND", 0, ">I", "ssnd offset"), (b"FORM", 4, ">I", "form size")]


def lie(data: bytes, field: tuple[bytes, int, str, str], value: int) -> bytes | None:
    chunk, offset, fmt, _ = field
    at = 0 if chunk in (b"RIFF", b"FORM") and data.startswith(chunk) else data.find(chunk, 12)
    if at < 0:
        return None
    position = at + (offset if chunk in (b"RIFF", b"FORM") else 8 + offset)
    if position < 0 or position + struct.calcsize(fmt) > len(data):
        return None
    return put(data, position, fmt, value)


def lie_about_rate(data: bytes, rate: bytes) -> bytes | None:
    at = data.find(b"COMM", 12)
    return None if at < 0 else data[:at + 16] + rate + data[at + 26:]


@st.composite
def mutated_files(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[str, str, bytes]:
    """(mutation kind, suffix, bytes)."""
    name = draw(st.sampled_from(sorted(seeds)))
    data = seeds[name]
    kind = draw(st.sampled_from(["flip header", "flip anywhere", "cut", "lying field",
                                 "lying aiff rate", "splice", "renamed", "garbage"]))
    suffix = draw(st.sampled_from(SUFFIXES))
    if kind == "flip header":
        flips = draw(st.lists(st.tuples(st.integers(0, 127), st.integers(0, 7)),
                              min_size=1, max_size=6))
        return kind, suffix, flip_bits(data, flips)
    if kind == "flip anywhere":
        flips = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)),
                              min_size=1, max_size=12))
        return kind, suffix, flip_bits(data, flips)
    if kind == "cut":
        return kind, suffix, data[:draw(st.integers(0, len(data) - 1))]
    if kind == "lying field":
        fields = RIFF_FIELDS if data[:4] in (b"RIFF", b"RF64") else AIFF_FIELDS
        field = draw(st.sampled_from(fields))
        value = draw(st.sampled_from(EXTREMES) | st.integers(0, 2**32 - 1))
        lied = lie(data, field, value)
        return f"lying {field[3]}", suffix, data if lied is None else lied
    if kind == "lying aiff rate":
        rate = draw(st.sampled_from([
            extended(exponent=0x7FFF), extended(exponent=0x7FFF, mantissa=3),
            extended(0), extended(1.0), extended(exponent=16383 + 1000),
            extended(44100.0, negative=True), extended(exponent=16383 - 40),
        ]) | st.binary(min_size=10, max_size=10))
        lied = lie_about_rate(seeds["built-aiff"], rate)
        assert lied is not None
        return kind, ".aiff", lied
    if kind == "splice":
        other = seeds[draw(st.sampled_from(sorted(seeds)))]
        cut = draw(st.integers(0, min(len(data), 512)))
        return kind, suffix, data[:cut] + other[draw(st.integers(0, len(other) - 1)):]
    if kind == "renamed":
        return kind, draw(st.sampled_from(SUFFIXES)), data
    magic = draw(st.sampled_from(MAGICS))
    return kind, suffix, magic + draw(st.binary(max_size=4096))


def test_mutated_audio_ends_in_a_sane_document_or_a_specific_rejection(
        seeds: dict[str, bytes], worker: Worker, tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    slowest, peak_kib = 0.0, 0

    @fuzz_settings(quick_examples=120)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        nonlocal slowest, peak_kib
        kind, suffix, content = data.draw(mutated_files(seeds))
        path = tmp_path / f"upload{suffix}"
        path.write_bytes(content)
        result = worker.analyse(path)
        outcome = result["outcome"]
        outcomes[outcome] += 1
        by_kind[f"{kind.split()[0]}: {outcome}"] += 1
        slowest = max(slowest, result["seconds"])
        peak_kib = max(peak_kib, result.get("peak_growth_kib", 0))
        assert outcome == "ok" or outcome in REJECTIONS, (kind, suffix, result)
        assert result.get("problems") == [], (kind, suffix, result)
        assert result["peak_growth_kib"] <= PEAK_BOUND_MIB * 1024, (kind, suffix, result)

    check()
    report("audio", outcomes, by_mutation=dict(sorted(by_kind.items())),
           peak_growth_mib=round(peak_kib / 1024, 1), slowest_seconds=slowest)
    assert outcomes["ok"] > 0 and sum(outcomes[c] for c in REJECTIONS) > 0  # both kinds met


def test_every_seed_is_analysed_cleanly(seeds: dict[str, bytes], worker: Worker,
                                        tmp_path: Path) -> None:
    """The fuzzer's starting points are real, analysable files (else it would only fuzz
    rejections)."""
    for name, data in seeds.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        result = worker.analyse(path)
        assert (result["outcome"], result["problems"]) == ("ok", []), (name, result)
