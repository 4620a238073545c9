"""``waveflow demo`` runs the whole pipeline, reports it, and leaves nothing behind."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from support.chromium import Page
from waveflow_dev.demo_report import waveform_png
from waveflow_dev.demo_samples import SAMPLES

WAVEFLOW = Path(sys.executable).parent / "waveflow"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_waveform_document_is_drawn_one_lane_per_channel() -> None:
    document = {"channels": 2, "length": 4, "data": [-100, 100, -10, 10] * 4}
    data = waveform_png(document, width=40, lane=20)
    assert png_size(data) == (40, 40)
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    raw = zlib.decompress(data[idat + 4:idat + 4 + length])
    assert len(raw) == 40 * (1 + 40 * 3)  # filter byte + RGB per row


@pytest.mark.slow
def test_the_demo_exits_zero_with_a_table_pictures_players_and_no_leftovers(
        tmp_path: Path, browser: Page) -> None:
    # A temporary directory of its own: other demos on this machine leave theirs in /tmp.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run([str(WAVEFLOW), "demo", "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**{k: v for k, v in os.environ.items()
                                    if not k.startswith("AWS_")}, "TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Every outcome is the expected one." in result.stdout
    for sample in SAMPLES:
        assert sample.stem in result.stdout
    analysed = [s.stem for s in SAMPLES if s.expect == "analysed"]
    pictures = sorted(p.stem for p in (tmp_path / "out").glob("*.png"))
    assert pictures == sorted(analysed)
    assert png_size((tmp_path / "out" / "stem-ambience.png").read_bytes())[1] == 6 * 90
    index = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert all(f"{stem}.png" in index for stem in analysed)
    assert not list(scratch.glob("waveflow-demo-*"))

    # index.html, opened from the folder as a user would: both players draw every analysed stem
    browser.open((tmp_path / "out" / "index.html").as_uri())
    reports = {r["stem"]: r for r in browser.evaluate("window.waveflowPlayers.ready")}
    assert sorted(reports) == sorted(analysed)
    documents = browser.evaluate(
        "Object.fromEntries(Object.entries(window.waveflowPlayers.stems)"
        ".map(([stem, s]) => [stem, s.document]))")
    for stem, report in reports.items():
        document = documents[stem]
        assert report["hasDetail"] and document["waveform_detail_path"].endswith(".dat")
        assert report["wavesurferDuration"] == pytest.approx(document["duration"], abs=1e-6)
        assert report["overviewScale"] == document["samples_per_pixel"]  # from the JSON
        assert report["zoomviewScale"] == 256  # from the detail .dat
        facts = browser.evaluate(f"document.querySelector('#{stem} .levels').textContent")
        assert f"{document['integrated_lufs']:.1f} LUFS integrated" in facts
        for scale in (512, 256):
            assert browser.evaluate(f"window.waveflowPlayers.zoomTo('{stem}', {scale})") == scale
    assert browser.errors() == []
