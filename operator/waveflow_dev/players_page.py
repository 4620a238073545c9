"""The demo's ``index.html``: each analysed stem in the browser players the platform uses.

wavesurfer.js 7 draws the waveform JSON's ``peaks`` + ``duration`` (as the platform's player
does); peaks.js draws an overview from the same JSON and a zoomable view from the detail ``.dat``
(as its editor does). Their UMD bundles come from the npm packages in ``players/`` beside this
module (``make players``) and are copied next to the page; the stored objects are embedded in it,
so the page works opened straight from the folder (a ``file://`` page may load scripts but not
fetch files).
Without the bundles the page still lists every stem with its PNG.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BUNDLES", "StemCard", "copy_bundles", "default_node_modules", "levels_text",
           "write_page"]

#: Bundle file name next to the page → its path inside ``node_modules``, in loading order
#: (peaks.ext needs the Konva and WaveformData globals).
BUNDLES: dict[str, str] = {
    "konva.min.js": "konva/konva.min.js",
    "waveform-data.min.js": "waveform-data/dist/waveform-data.min.js",
    "peaks.ext.min.js": "peaks.js/dist/peaks.ext.min.js",
    "wavesurfer.min.js": "wavesurfer.js/dist/wavesurfer.min.js",
}
PAGE_SCRIPT = "waveflow-players.js"
_SCRIPT_SOURCE = Path(__file__).with_name("players_page.js")


@dataclass(frozen=True)
class StemCard:
    """What the page shows of one stem."""

    stem: str
    filename: str
    stages: str
    #: One line of facts (outcome, duration, levels...).
    facts: str
    waveform_key: str | None = None
    #: The stored waveform JSON (analysed stems only).
    document: dict[str, Any] | None = None
    #: The stored detail waveform (audiowaveform binary data v2), when there is one.
    detail: bytes | None = None
    #: File name of the stem's PNG next to the page.
    picture: str | None = None


def default_node_modules() -> Path:
    """``players/node_modules`` beside this module (``make players`` installs it)."""
    return Path(__file__).resolve().parent / "players" / "node_modules"


def copy_bundles(node_modules: Path, output: Path) -> list[str]:
    """Copy the players' bundles next to the page; returns the missing ones (none: all there)."""
    missing = [name for name, path in BUNDLES.items() if not (node_modules / path).is_file()]
    if missing:
        return missing
    for name, path in BUNDLES.items():
        shutil.copyfile(node_modules / path, output / name)
    shutil.copyfile(_SCRIPT_SOURCE, output / PAGE_SCRIPT)
    return []


def levels_text(result: dict[str, Any]) -> str:
    """Peak level and loudness, side by side ("-" for what the result does not hold)."""
    def number(key: str, unit: str) -> str:
        value = result.get(key)
        return f"{value:.1f} {unit}" if isinstance(value, int | float) else f"- {unit}"

    return (f"peak {number('peak_dbfs', 'dBFS')} · true peak {number('true_peak_dbtp', 'dBTP')}"
            f" · {number('integrated_lufs', 'LUFS')} integrated"
            f" · range {number('loudness_range_lu', 'LU')}")


def write_page(output: Path, cards: Sequence[StemCard], *, players: bool) -> Path:
    """Write ``index.html`` (players only when their bundles were copied next to it)."""
    stems = [{"stem": card.stem, "document": card.document,
              "detail": base64.b64encode(card.detail).decode() if card.detail else None}
             for card in cards if card.document is not None] if players else []
    if players:
        scripts = "".join(f'<script src="{name}"></script>' for name in [*BUNDLES, PAGE_SCRIPT])
        note = ("<p>Each analysed stem in <b>wavesurfer.js 7</b> (the waveform JSON's peaks + "
                "duration) and <b>peaks.js</b> (overview from the waveform JSON, zoomview from "
                "the detail <code>.dat</code>: scroll it with the mouse wheel, zoom with "
                "&minus; / +, click the overview to move it). The PNGs are the same JSON drawn "
                "for terminals and READMEs.</p>")
    else:
        scripts = ""
        note = ("<p>peaks.js and wavesurfer.js are not installed (<code>make players</code> "
                "installs them), so only the PNGs are shown.</p>")
    # Embedded JSON: "<" escaped so no value can close the script element.
    data = json.dumps(stems, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    page = (
        "<!doctype html><meta charset=utf-8><title>WaveFlow demo</title>"
        f"<style>{_STYLE}</style><h1>WaveFlow demo</h1>"
        "<p>Drawn from the waveform JSON and the detail waveform the analysis stage stored in S3 "
        "(audiowaveform data format v2: min/max pairs per channel).</p>" + note
        + "".join(_card(card, players) for card in cards)
        + f'<script type="application/json" id="waveflow-stems">{data}</script>{scripts}')
    path = output / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


_STYLE = (
    "body{font:14px system-ui,sans-serif;background:#111418;color:#dde;margin:2em;max-width:1000px}"
    "section{margin-bottom:2.5em}small,.label{color:#889}h3{font-size:12px;font-weight:normal;"
    "margin:.8em 0 .3em;color:#99a}img{max-width:100%;border:1px solid #334}"
    ".wavesurfer,.peaks-overview,.peaks-zoomview{background:#181c22;border:1px solid #2a303a}"
    ".peaks-overview{height:70px}.peaks-zoomview{height:140px}"
    "button{background:#232934;color:#dde;border:1px solid #3a4250;border-radius:3px;"
    "min-width:2em;cursor:pointer}.players-status{color:#f99}"
    ".levels{font-variant-numeric:tabular-nums}"
)


def _card(card: StemCard, players: bool) -> str:
    esc = html.escape
    parts = [f'<section id="{esc(card.stem)}"><h2>{esc(card.filename)} '
             f"<small>{esc(card.stem)}</small></h2><p>{esc(card.stages)}</p>"
             f'<p class="levels">{esc(card.facts)}</p>']
    if card.waveform_key:
        parts.append(f"<p><code>{esc(card.waveform_key)}</code></p>")
    if players and card.document is not None:
        doc = card.document
        overview = f"{doc.get('samples_per_pixel')} frames/point"
        detail = ("detail .dat" if card.detail else
                  "no detail waveform stored: the waveform JSON, zoom limited to its resolution")
        lanes = int(doc.get("channels", 1))
        folded = f" · {lanes} channels drawn as one envelope" if lanes > 2 else ""
        parts.append(
            '<p class="players-status">loading…</p>'
            "<h3>wavesurfer.js · waveform JSON peaks + duration</h3>"
            '<div class="wavesurfer"></div>'
            f"<h3>peaks.js overview · waveform JSON, {esc(overview)}{esc(folded)}</h3>"
            '<div class="peaks-overview"></div>'
            f"<h3>peaks.js zoomview · {esc(detail)}{esc(folded)} · "
            '<button class="zoom-out" title="zoom out">&minus;</button> '
            '<button class="zoom-in" title="zoom in">+</button> '
            '<span class="zoom-level"></span></h3><div class="peaks-zoomview"></div>')
    if card.picture:
        name = esc(card.picture)
        image = f'<img src="{name}" alt="waveform of {esc(card.stem)}">'
        parts.append(f"<details><summary>PNG</summary>{image}</details>" if players else image)
    parts.append("</section>")
    return "".join(parts)
