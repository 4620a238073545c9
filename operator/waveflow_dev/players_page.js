// The demo page's players: every analysed stem in wavesurfer.js 7 (the platform's player: peaks
// + duration from the waveform JSON) and in peaks.js (the editor's: an overview drawn from the
// waveform JSON, a zoomview drawn from the detail .dat). The stored objects are embedded in the
// page so it works opened straight from the folder (file:// forbids fetching files).
//
// The page sets window.waveflowPlayers.ready (a promise of a per-stem report) for its tests and
// logs every failure with console.error, so a browser test fails on any of them.
"use strict";

(function () {
  const ZOOM_LEVELS = [256, 512, 1024, 2048, 4096];
  const COLOURS = {
    wave: "#5eb0ff", played: "#ff9966", axis: "#3a4250", label: "#8890a0",
    playhead: "#f0d25a", highlight: "#dde",
  };

  function arrayBuffer(base64) {
    const raw = atob(base64);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  // peaks.js draws one or two channels: a wider file (5.1) is shown as the envelope of all of
  // its channels, one lane, with the same resolution.
  function forPeaks(waveform) {
    if (waveform.channels <= 2) return null;
    const data = new Array(waveform.length * 2);
    const channels = [];
    for (let c = 0; c < waveform.channels; c++) channels.push(waveform.channel(c));
    for (let i = 0; i < waveform.length; i++) {
      let low = 127, high = -128;
      for (const channel of channels) {
        low = Math.min(low, channel.min_sample(i));
        high = Math.max(high, channel.max_sample(i));
      }
      data[2 * i] = low;
      data[2 * i + 1] = high;
    }
    return {
      version: 2, channels: 1, sample_rate: waveform.sample_rate,
      samples_per_pixel: waveform.scale, bits: waveform.bits, length: waveform.length, data,
    };
  }

  // No audio is loaded (the page shows the analysis, not the recording): one silent clock that
  // both peaks.js views follow, so a click in the overview moves the zoomview there.
  function silentClock(duration) {
    const listeners = [];
    let time = 0;
    return {
      init(emitter) { listeners.push(emitter); return Promise.resolve(); },
      destroy() {},
      play() { return Promise.resolve(); },
      pause() {},
      isPlaying() { return false; },
      isSeeking() { return false; },
      getCurrentTime() { return time; },
      getDuration() { return duration; },
      seek(seconds) {
        time = Math.max(0, Math.min(duration, seconds));
        for (const emitter of listeners) {
          emitter.emit("player.seeked", time);
          emitter.emit("player.timeupdate", time);
        }
      },
    };
  }

  function initPeaks(options) {
    return new Promise((resolve, reject) => {
      window.peaks.init({ logger: console.error.bind(console), ...options },
        (error, instance) => (error ? reject(error) : resolve(instance)));
    });
  }

  function viewOptions(container) {
    return {
      container, waveformColor: COLOURS.wave, playedWaveformColor: COLOURS.played,
      playheadColor: COLOURS.playhead, axisGridlineColor: COLOURS.axis,
      axisLabelColor: COLOURS.label, highlightColor: COLOURS.highlight,
    };
  }

  function showWavesurfer(stem, container) {
    const doc = stem.document;
    const player = WaveSurfer.create({
      container, peaks: [doc.peaks], duration: doc.duration, height: 64,
      waveColor: COLOURS.wave, progressColor: COLOURS.played, cursorColor: COLOURS.playhead,
    });
    return new Promise((resolve, reject) => {
      player.once("ready", () => resolve(player));
      player.once("error", reject);
    });
  }

  async function showPeaks(stem, section) {
    const doc = stem.document;
    const clock = silentClock(doc.duration);
    const overviewData = WaveformData.create(doc);
    const overview = await initPeaks({
      overview: viewOptions(section.querySelector(".peaks-overview")), player: clock,
      waveformData: { json: forPeaks(overviewData) || doc },
      zoomLevels: [overviewData.scale],
    });
    // Without a detail waveform the zoomview can only show the overview's resolution.
    const buffer = stem.detail ? arrayBuffer(stem.detail) : null;
    const detailData = buffer ? WaveformData.create(buffer) : overviewData;
    const folded = forPeaks(detailData);
    const source = folded ? { json: folded } : buffer ? { arraybuffer: buffer } : { json: doc };
    const levels = ZOOM_LEVELS.filter((level) => level > detailData.scale);
    const zoomview = await initPeaks({
      zoomview: { ...viewOptions(section.querySelector(".peaks-zoomview")), wheelMode: "scroll" },
      player: clock, waveformData: source, zoomLevels: [detailData.scale, ...levels],
    });
    // The overview outlines what the zoomview shows: relay the zoomview's position to it.
    zoomview.on("zoomview.update", (event) => overview.emit("zoomview.update", event));
    const view = zoomview.views.getView("zoomview");
    overview.emit("zoomview.update", { startTime: view.getStartTime(), endTime: view.getEndTime() });
    const label = section.querySelector(".zoom-level");
    const showLevel = (event) => { label.textContent = `${event.currentZoom} frames/point`; };
    zoomview.on("zoom.update", showLevel);
    showLevel({ currentZoom: zoomview.zoom.getZoomLevel() });
    section.querySelector(".zoom-in").addEventListener("click", () => zoomview.zoom.zoomIn());
    section.querySelector(".zoom-out").addEventListener("click", () => zoomview.zoom.zoomOut());
    return { overview, zoomview, detailScale: detailData.scale };
  }

  async function showStem(stem) {
    const section = document.getElementById(stem.stem);
    const status = section.querySelector(".players-status");
    try {
      const [wavesurfer, views] = await Promise.all([
        showWavesurfer(stem, section.querySelector(".wavesurfer")), showPeaks(stem, section),
      ]);
      status.textContent = "";
      return { stem: stem.stem, wavesurfer, ...views };
    } catch (error) {
      status.textContent = `could not be drawn: ${error}`;
      console.error(`${stem.stem}: ${error && error.stack ? error.stack : error}`);
      throw error;
    }
  }

  // Zooms one stem's zoomview to `scale` frames per point; resolves with the zoom peaks.js
  // reports having applied (it clamps, and logs an error, when the data is too coarse).
  function zoomTo(players, scale) {
    return new Promise((resolve) => {
      const view = players.zoomview.views.getView("zoomview");
      players.zoomview.once("zoom.update", (event) => resolve(event.currentZoom));
      view.setZoom({ scale });
    });
  }

  function report(players) {
    const doc = window.waveflowPlayers.stems[players.stem];
    return {
      stem: players.stem,
      wavesurferDuration: players.wavesurfer.getDuration(),
      documentDuration: doc.document.duration,
      overviewScale: players.overview.getWaveformData().scale,
      zoomviewScale: players.zoomview.getWaveformData().scale,
      zoomLevel: players.zoomview.zoom.getZoomLevel(),
      hasDetail: Boolean(doc.detail),
    };
  }

  const stems = JSON.parse(document.getElementById("waveflow-stems").textContent);
  const shown = {};
  window.waveflowPlayers = {
    stems: Object.fromEntries(stems.map((stem) => [stem.stem, stem])),
    players: shown,
    zoomTo: (stem, scale) => zoomTo(shown[stem], scale),
    ready: Promise.all(stems.map(async (stem) => {
      shown[stem.stem] = await showStem(stem);
      return report(shown[stem.stem]);
    })).then((reports) => {
      document.body.dataset.players = "ready";
      return reports;
    }),
  };
})();
