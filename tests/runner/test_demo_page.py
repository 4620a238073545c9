"""The demo page in a real headless Chromium: wavesurfer.js and peaks.js draw the stored waveforms.

The waveform JSON and the detail ``.dat`` come from ``waveflow-job waveform --detail`` (the
analysis stage's own code). The stems are long enough that the JSON is coarser than 512 frames
per point, so peaks.js can only zoom to 256 and 512 from the ``.dat``; the control test shows the
same page without it stopping at the JSON's resolution, with the error a user would see.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from support.chromium import Page
from waveflow_dev import players_page

#: stem id, file name, rate, channels, seconds, soundfile subtype: every JSON coarser than 512.
STEMS = (
    ("stem-drums", "drums.wav", 44100, 1, 20.0, "PCM_16"),
    ("stem-keys", "keys.flac", 48000, 2, 12.345, "PCM_24"),
    ("stem-room", "room 5.1.wav", 48000, 6, 12.0, "PCM_16"),
)
DETAIL_SCALE = 256
WAVEFLOW_JOB = Path(sys.executable).parent / "waveflow-job"
#: The page's waveform colour (#5eb0ff), as drawn by both players.
WAVE_RGB = (94, 176, 255)

INKED_COLUMNS_JS = """
async function (stem, part, rgb) {
  await new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  const players = window.waveflowPlayers.players[stem];
  const root = part === "wavesurfer" ? players.wavesurfer.getWrapper()
    : document.getElementById(stem).querySelector("." + part);
  const origin = root.getBoundingClientRect();
  const columns = new Set();
  for (const canvas of root.querySelectorAll("canvas")) {
    const box = canvas.getBoundingClientRect();
    if (!canvas.width || !canvas.height || !box.width) continue;
    const ratio = canvas.width / box.width;
    const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < data.length; i += 4) {
      const distance = Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1])
        + Math.abs(data[i + 2] - rgb[2]);
      if (data[i + 3] > 200 && distance < 60) {
        columns.add(Math.floor(box.left - origin.left + ((i / 4) % canvas.width) / ratio));
      }
    }
  }
  return { columns: columns.size, width: Math.round(origin.width) };
}
"""

VISIBLE_SECONDS_JS = """
(stem) => {
  const view = window.waveflowPlayers.players[stem].zoomview.views.getView("zoomview");
  return view.getEndTime() - view.getStartTime();
}
"""


def music_like(rate: int, channels: int, seconds: float) -> np.ndarray:
    """Decaying hits every half second over a quiet chord, different per channel."""
    t = np.arange(round(rate * seconds)) / rate
    hits = np.exp(-18.0 * (t % 0.5)) * np.sin(2 * np.pi * 70 * t)
    lanes = [0.6 * hits * (1 - 0.1 * c) + 0.15 * np.sin(2 * np.pi * (220 + 55 * c) * t)
             for c in range(channels)]
    return np.stack(lanes, axis=1)


@pytest.fixture(scope="module")
def cards(tmp_path_factory: pytest.TempPathFactory) -> list[players_page.StemCard]:
    """Each stem's waveform JSON and .dat from the job's command line."""
    directory = tmp_path_factory.mktemp("stems")
    cards = []
    for stem, filename, rate, channels, seconds, subtype in STEMS:
        audio = directory / filename
        samples = music_like(rate, channels, seconds)
        sf.write(audio, samples, rate, subtype=subtype)
        json_path, dat_path = directory / f"{stem}.json", directory / f"{stem}.dat"
        subprocess.run([str(WAVEFLOW_JOB), "waveform", str(audio), "-o", str(json_path),
                        "--detail", str(dat_path)], check=True, timeout=60)
        document = json.loads(json_path.read_text(encoding="utf-8"))
        peak = 20 * math.log10(float(np.abs(samples).max()))  # as the SUCCESS result has it
        cards.append(players_page.StemCard(
            stem=stem, filename=filename, stages="analysis ✓",
            facts=f"{channels} ch · {players_page.levels_text({**document, 'peak_dbfs': peak})}",
            document=document,
            detail=dat_path.read_bytes()))
    return cards


def write_page(directory: Path, cards: list[players_page.StemCard]) -> Path:
    directory.mkdir(parents=True)
    assert not players_page.copy_bundles(players_page.default_node_modules(), directory), \
        "peaks.js / wavesurfer.js are missing: `make players` installs them"
    return players_page.write_page(directory, cards, players=True)


def inked(page: Page, stem: str, part: str) -> dict[str, int]:
    return page.evaluate(f"({INKED_COLUMNS_JS})({json.dumps(stem)}, {json.dumps(part)}, "
                         f"{json.dumps(WAVE_RGB)})")


def ready(page: Page, index: Path) -> dict[str, dict[str, Any]]:
    """Open the page and wait for both players of every stem; their reports by stem."""
    page.open(index.resolve().as_uri())
    reports = page.evaluate("window.waveflowPlayers.ready")
    return {report["stem"]: report for report in reports}


def zoom(page: Page, stem: str, scale: int) -> int:
    """Zoom the stem's peaks.js zoomview; the frames per point peaks.js says it applied."""
    return page.evaluate(f"window.waveflowPlayers.zoomTo({json.dumps(stem)}, {scale})")


def test_every_stem_is_drawn_by_both_players_and_peaks_zooms_to_256_and_512(
        tmp_path: Path, browser: Page, cards: list[players_page.StemCard]) -> None:
    reports = ready(browser, write_page(tmp_path / "page", cards))
    assert sorted(reports) == sorted(card.stem for card in cards)
    for card in cards:
        assert card.document is not None
        stem, doc = card.stem, card.document
        report = reports[stem]
        assert doc["samples_per_pixel"] > 512  # the JSON alone could not zoom this far
        assert report["wavesurferDuration"] == pytest.approx(doc["duration"], abs=1e-6)
        assert report["overviewScale"] == doc["samples_per_pixel"]  # overview: the JSON
        assert report["zoomviewScale"] == DETAIL_SCALE  # zoomview: the .dat
        assert report["zoomLevel"] == DETAIL_SCALE
        facts = browser.evaluate(f"document.querySelector('#{stem} .levels').textContent")
        assert f"{doc['integrated_lufs']:.1f} LUFS integrated" in facts  # beside the peak level
        assert f"true peak {doc['true_peak_dbtp']:.1f} dBTP" in facts
        assert f"range {doc['loudness_range_lu']:.1f} LU" in facts
        for part in ("wavesurfer", "peaks-overview"):
            ink = inked(browser, stem, part)
            assert ink["columns"] >= 0.95 * ink["width"], (stem, part, ink)

        frames = round(doc["duration"] * doc["sample_rate"])
        for scale in (4096, 512, 256):
            assert zoom(browser, stem, scale) == scale
            ink = inked(browser, stem, "peaks-zoomview")
            drawn = min(ink["width"], math.ceil(frames / scale))
            assert abs(ink["columns"] - drawn) <= 4, (stem, scale, ink, drawn)
            if drawn == ink["width"]:  # the view spans width * scale frames
                seconds = browser.evaluate(f"({VISIBLE_SECONDS_JS})({json.dumps(stem)})")
                assert seconds == pytest.approx(ink["width"] * scale / doc["sample_rate"],
                                                rel=0.01), (stem, scale)
    browser.screenshot(tmp_path / "page.png")
    assert browser.errors() == []


def test_without_the_detail_waveform_the_zoomview_stops_at_the_json_resolution(
        tmp_path: Path, browser: Page, cards: list[players_page.StemCard]) -> None:
    without = [dataclasses.replace(card, detail=None) for card in cards]
    reports = ready(browser, write_page(tmp_path / "page", without))
    first = without[0]
    assert first.document is not None
    coarsest = first.document["samples_per_pixel"]
    assert reports[first.stem]["zoomviewScale"] == coarsest
    assert zoom(browser, first.stem, 512) == coarsest
    assert browser.errors() == [
        f"console.error: peaks.zoomview.setZoom(): zoom level must be at least {coarsest}"]
