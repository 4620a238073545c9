"""The demo page in a real headless Chromium: wavesurfer.js and peaks.js draw the stored waveforms.

The stems are long enough that the waveform JSON is coarser than 512 frames per point, so
peaks.js can only zoom to 256 and 512 from the detail ``.dat``; the control test shows the same
page without it stopping at the JSON's resolution, with the error a user would see.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from support.chromium import Page
from waveflow_dev import players_page
from waveflow_job.waveform import write_waveform_file

#: stem id, file name, rate, channels, seconds, soundfile subtype: every JSON coarser than 512.
STEMS = (
    ("stem-drums", "drums.wav", 44100, 1, 20.0, "PCM_16"),
    ("stem-keys", "keys.flac", 48000, 2, 12.345, "PCM_24"),
    ("stem-room", "room 5.1.wav", 48000, 6, 12.0, "PCM_16"),
)
DETAIL_SCALE = 256
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


def detail_waveform(samples: np.ndarray, rate: int, scale: int) -> bytes:
    """Stand-in for the job's detail ``.dat`` (CONTRACT.md §8): audiowaveform binary v2, 8-bit,
    min/max of each ``scale`` frames per channel, trunc(x·128) as the waveform JSON's pairs."""
    frames, channels = samples.shape
    length = math.ceil(frames / scale)
    padded = np.pad(samples, ((0, length * scale - frames), (0, 0)), mode="edge")
    points = padded.reshape(length, scale, channels)
    pairs = np.stack([points.min(axis=1), points.max(axis=1)], axis=-1)
    data = np.clip(np.trunc(pairs * 128.0), -128, 127).astype(np.int8)
    header = struct.pack("<iIiiIi", 2, 1, rate, scale, length, channels)
    return header + data.tobytes()


def write_stems(directory: Path, *, with_detail: bool) -> list[players_page.StemCard]:
    """Each stem's waveform JSON from the job's own analysis, its .dat, and the page."""
    directory.mkdir(parents=True)
    cards = []
    for stem, filename, rate, channels, seconds, subtype in STEMS:
        samples = music_like(rate, channels, seconds)
        audio = directory / filename
        sf.write(audio, samples, rate, subtype=subtype)
        document = write_waveform_file(audio, directory / f"{stem}.json")
        decoded, _ = sf.read(audio, dtype="float64", always_2d=True)
        cards.append(players_page.StemCard(
            stem=stem, filename=filename, stages="analysis ✓", facts=f"{channels} ch",
            document=document,
            detail=detail_waveform(decoded, rate, DETAIL_SCALE) if with_detail else None))
    assert not players_page.copy_bundles(players_page.default_node_modules(), directory), \
        "peaks.js / wavesurfer.js are missing: `make players` installs them"
    players_page.write_page(directory, cards, players=True)
    return cards


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
        tmp_path: Path, browser: Page) -> None:
    cards = write_stems(tmp_path / "page", with_detail=True)
    reports = ready(browser, tmp_path / "page" / "index.html")
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
        tmp_path: Path, browser: Page) -> None:
    cards = write_stems(tmp_path / "page", with_detail=False)
    reports = ready(browser, tmp_path / "page" / "index.html")
    first = cards[0]
    assert first.document is not None
    coarsest = first.document["samples_per_pixel"]
    assert reports[first.stem]["zoomviewScale"] == coarsest
    assert zoom(browser, first.stem, 512) == coarsest
    assert browser.errors() == [
        f"console.error: peaks.zoomview.setZoom(): zoom level must be at least {coarsest}"]
