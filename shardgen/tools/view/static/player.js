// avshards view: the clip player.
//
// The audio element is the clock: the frame on the canvas is always round(audio.currentTime * fps),
// the frame whose instant (i / fps from the clip's start, as the sample format defines it) is nearest
// to the sound being heard. Frames are fetched once as JPEG bytes and decoded near the playhead only.
//
// Hooks for scripts and tests (stable): <canvas id="frame"> holds the decoded frame at its native size
// and data-frame = the index drawn; <canvas id="overlay"> above it holds the boxes; <audio id="audio">;
// #t=SECONDS opens the clip paused at that time.
(() => {
  "use strict";

  const D = JSON.parse(document.getElementById("clip-data").textContent);
  const T = D.frames;
  const FPS = D.fps;
  const DURATION = T / FPS;
  const COLORS = { speaking: "#18b917", silent: "#e8362d", visible: "#4b4b57", voice: "#e07b0a", off: "#ececec" };
  const LOOKAHEAD = 20; // frames decoded ahead of the playhead while playing
  const KEEP_BEHIND = 8; // decoded frames kept behind it (stepping back is instant)

  const frameCanvas = document.getElementById("frame");
  const overlay = document.getElementById("overlay");
  const audio = document.getElementById("audio");
  const timeline = document.getElementById("timeline");
  const scrub = document.getElementById("scrub");
  const clockText = document.getElementById("clock");
  const link = document.getElementById("link");
  const playButton = document.getElementById("play");
  const problems = document.getElementById("problems");
  const fctx = frameCanvas.getContext("2d", { willReadFrequently: true });
  const octx = overlay.getContext("2d");

  function problem(text) {
    const li = document.createElement("li");
    li.textContent = text;
    problems.appendChild(li);
  }

  function pad6(n) {
    return String(n).padStart(6, "0");
  }

  // ------------------------------------------------------------------ pictures: bytes once, bitmaps near the playhead
  class Pictures {
    constructor(url, count, memberName) {
      this.url = url;
      this.count = count;
      this.memberName = memberName;
      this.blobs = new Array(count);
      this.bitmaps = new Map(); // index -> Promise<ImageBitmap>
      this.failed = new Set();
    }

    bytes(i) {
      if (!this.blobs[i]) {
        this.blobs[i] = fetch(this.url + i + ".jpg").then((r) => {
          if (!r.ok) throw new Error(`HTTP ${r.status} for ${this.url}${i}.jpg`);
          return r.blob();
        });
      }
      return this.blobs[i];
    }

    bitmap(i) {
      if (!this.bitmaps.has(i)) {
        const p = this.bytes(i).then((b) => createImageBitmap(b, { colorSpaceConversion: "none", premultiplyAlpha: "none" }));
        p.catch((err) => {
          if (!this.failed.has(i)) {
            this.failed.add(i);
            problem(`${this.memberName(i)} (shard ${D.shard}) cannot be shown: ${err.message || err}`);
          }
        });
        this.bitmaps.set(i, p);
      }
      return this.bitmaps.get(i);
    }

    // decoded frames far from the playhead are let go (their bytes stay)
    keepAround(i) {
      for (const [j, p] of this.bitmaps) {
        if (j < i - KEEP_BEHIND || j > i + LOOKAHEAD + KEEP_BEHIND) {
          this.bitmaps.delete(j);
          p.then((bm) => bm.close(), () => {});
        }
      }
    }

    // every frame's bytes, nearest to `from` first, a few requests at a time
    prefetch(from, parallel = 4) {
      const order = [];
      for (let d = 0; d < this.count; d++) {
        if (from + d < this.count) order.push(from + d);
        if (d > 0 && from - d >= 0) order.push(from - d);
      }
      const next = () => {
        const i = order.shift();
        if (i === undefined) return;
        this.bytes(i).then(next, next);
      };
      for (let k = 0; k < parallel; k++) next();
    }
  }

  const memberOf = (kind) => (i) => `${D.member_prefix}${kind}${pad6(i + 1)}.jpg`;
  const pictures = new Pictures(D.frame_url, T, memberOf(D.member_kind));
  const crops = D.crop_url
    ? D.persons.map((p, row) => new Pictures(`${D.crop_url}${row}/`, T, (i) => `${D.member_prefix}c${String(row).padStart(2, "0")}.${pad6(i + 1)}.jpg`))
    : [];

  // ------------------------------------------------------------------ the clock: the audio element (a timer if it cannot play)
  const clock = {
    broken: false,
    base: 0,
    startedAt: null,
    time() {
      if (!this.broken) return audio.currentTime;
      if (this.startedAt === null) return this.base;
      return Math.min(DURATION, this.base + (performance.now() - this.startedAt) / 1000);
    },
    playing() {
      return this.broken ? this.startedAt !== null : !audio.paused;
    },
    seek(t) {
      t = Math.max(0, Math.min(DURATION, t));
      if (!this.broken) audio.currentTime = t;
      this.base = t;
      if (this.startedAt !== null) this.startedAt = performance.now();
    },
    play() {
      if (this.time() >= DURATION - 0.5 / FPS) this.seek(0);
      if (!this.broken) return audio.play().catch((err) => problem(`audio does not play: ${err.message}`));
      this.startedAt = performance.now();
    },
    pause() {
      if (!this.broken) audio.pause();
      this.base = this.time();
      this.startedAt = null;
    },
  };
  audio.addEventListener("error", () => {
    const err = audio.error;
    const why = err ? err.message || `code ${err.code}` : "unknown error";
    problem(`${D.member_prefix}${D.audio.ext} (shard ${D.shard}) cannot play: ${why}; frames follow a timer instead`);
    clock.base = audio.currentTime || clock.base;
    clock.broken = true;
  });

  function frameAt(t) {
    return Math.max(0, Math.min(T - 1, Math.round(t * FPS)));
  }

  // ------------------------------------------------------------------ drawing
  let shown = -1; // the frame on the canvas
  let asked = -1; // the frame last asked for

  function show(i) {
    asked = i;
    for (let j = i + 1; j <= Math.min(T - 1, i + (clock.playing() ? LOOKAHEAD : 2)); j++) pictures.bitmap(j);
    pictures.keepAround(i);
    pictures.bitmap(i).then((bm) => {
      const now = frameAt(clock.time());
      // draw it if it is still the frame wanted, or (playing, decoding behind) at least newer than the one shown
      if (i !== now && !(clock.playing() && i > shown && i <= now)) return;
      if (frameCanvas.width !== bm.width || frameCanvas.height !== bm.height) {
        frameCanvas.width = overlay.width = bm.width;
        frameCanvas.height = overlay.height = bm.height;
      }
      fctx.drawImage(bm, 0, 0);
      shown = i;
      drawBoxes(i);
      showCrops(i);
      frameCanvas.dataset.frame = String(i);
    }, () => {});
  }

  function drawBoxes(i) {
    const sx = overlay.width / D.frame_size[0];
    const sy = overlay.height / D.frame_size[1];
    const line = Math.max(2, Math.round(overlay.width / 300));
    const font = Math.max(10, Math.round(overlay.width / 55));
    octx.clearRect(0, 0, overlay.width, overlay.height);
    octx.font = `${font}px sans-serif`;
    octx.textBaseline = "top";
    D.persons.forEach((person, p) => {
      const b = D.boxes[p][i];
      if (!b) return;
      const speaking = D.speaking[p][i] === 1;
      const color = speaking ? COLORS.speaking : COLORS.silent;
      const [x, y, w, h] = [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy];
      octx.lineWidth = line;
      octx.strokeStyle = color;
      octx.strokeRect(x, y, w, h);
      const text = `${person.id} ${speaking ? "speaking" : "silent"}`;
      const tw = octx.measureText(text).width + 2 * line;
      const th = font + line;
      const ty = y - line / 2 - th >= 0 ? y - line / 2 - th : y + h + line / 2; // above the box, or below it at the top edge
      octx.fillStyle = color;
      octx.fillRect(x - line / 2, ty, tw, th);
      octx.fillStyle = "#ffffff";
      octx.fillText(text, x - line / 2 + line, ty + line / 2);
    });
  }

  const cropCanvases = crops.map((_, p) => {
    const wrap = document.createElement("figure");
    const c = document.createElement("canvas");
    c.width = c.height = 112;
    c.className = "crop";
    c.dataset.person = String(p);
    const cap = document.createElement("figcaption");
    cap.textContent = `crop ${D.persons[p].id}`;
    wrap.append(c, cap);
    document.getElementById("crops").appendChild(wrap);
    return c;
  });

  function showCrops(i) {
    crops.forEach((pics, p) => {
      const ctx = cropCanvases[p].getContext("2d");
      if (!D.boxes[p][i]) {
        ctx.clearRect(0, 0, 112, 112);
        return;
      }
      pics.keepAround(i);
      pics.bitmap(i).then((bm) => {
        if (shown === i) ctx.drawImage(bm, 0, 0, 112, 112);
      }, () => {});
    });
  }

  // ------------------------------------------------------------------ timelines
  const LABEL_W = 130;
  const ROW_H = 18;
  const rows = [
    { name: "visible", values: D.visible, on: COLORS.visible },
    { name: "voice", values: D.voice, on: COLORS.voice },
    ...D.persons.map((p, k) => ({
      name: `speaking ${p.id}${p.wearer ? " (wearer)" : ""}`,
      values: D.speaking[k],
      on: COLORS.speaking,
      face: D.boxes[k].map((b) => (b ? 1 : 0)),
    })),
  ];
  let strip = null; // the rows drawn once, copied under the playhead each time

  function layoutTimeline() {
    const ratio = window.devicePixelRatio || 1;
    const cssW = timeline.clientWidth || 800;
    timeline.width = Math.round(cssW * ratio);
    timeline.height = Math.round((rows.length * ROW_H + 16) * ratio);
    timeline.style.height = `${rows.length * ROW_H + 16}px`;
    strip = document.createElement("canvas");
    strip.width = timeline.width;
    strip.height = timeline.height;
    const ctx = strip.getContext("2d");
    ctx.scale(ratio, ratio);
    const w = cssW - LABEL_W - 8;
    ctx.font = "12px sans-serif";
    ctx.textBaseline = "middle";
    rows.forEach((row, r) => {
      const y = r * ROW_H;
      ctx.fillStyle = "#222";
      ctx.fillText(row.name, 4, y + ROW_H / 2);
      ctx.fillStyle = COLORS.off;
      ctx.fillRect(LABEL_W, y + 2, w, ROW_H - 4);
      const span = (values, color) => {
        ctx.fillStyle = color;
        let start = -1;
        for (let i = 0; i <= T; i++) {
          const on = i < T && values[i] === 1;
          if (on && start < 0) start = i;
          if (!on && start >= 0) {
            ctx.fillRect(LABEL_W + (start / T) * w, y + 2, ((i - start) / T) * w, ROW_H - 4);
            start = -1;
          }
        }
      };
      if (row.face) span(row.face, "#f3c9c6");
      span(row.values, row.on);
    });
    ctx.fillStyle = "#555";
    for (let s = 0; s <= Math.floor(DURATION); s++) {
      const x = LABEL_W + (s / DURATION) * w;
      ctx.fillRect(x, rows.length * ROW_H, 1, 4);
      ctx.textAlign = x + 24 > LABEL_W + w ? "right" : "left"; // the last second's label stays inside
      ctx.fillText(`${s}s`, ctx.textAlign === "right" ? x - 2 : x + 2, rows.length * ROW_H + 9);
    }
    timeline.dataset.width = String(w);
  }

  function drawPlayhead(t) {
    if (!strip) return;
    const ctx = timeline.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, timeline.width, timeline.height);
    ctx.drawImage(strip, 0, 0);
    const w = Number(timeline.dataset.width);
    const x = (LABEL_W + (t / DURATION) * w) * ratio;
    ctx.fillStyle = "#1463d8";
    ctx.fillRect(x - ratio, 0, 2 * ratio, rows.length * ROW_H * ratio);
  }

  function timeAtPointer(ev) {
    const rect = timeline.getBoundingClientRect();
    const w = Number(timeline.dataset.width);
    return ((ev.clientX - rect.left - LABEL_W) / w) * DURATION;
  }

  let dragging = false;
  timeline.addEventListener("pointerdown", (ev) => {
    dragging = true;
    timeline.setPointerCapture(ev.pointerId);
    clock.seek(timeAtPointer(ev));
  });
  timeline.addEventListener("pointermove", (ev) => {
    if (dragging) clock.seek(timeAtPointer(ev));
  });
  timeline.addEventListener("pointerup", () => (dragging = false));
  window.addEventListener("resize", () => {
    layoutTimeline();
    drawPlayhead(clock.time());
  });

  // ------------------------------------------------------------------ controls
  function togglePlay() {
    if (clock.playing()) clock.pause();
    else clock.play();
  }

  function step(delta) {
    clock.pause();
    const from = frameAt(clock.time()); // the clock, not the canvas: a second key press before the draw steps again
    clock.seek(Math.max(0, Math.min(T - 1, from + delta)) / FPS);
  }

  playButton.addEventListener("click", togglePlay);
  document.getElementById("back").addEventListener("click", () => step(-1));
  document.getElementById("fwd").addEventListener("click", () => step(1));
  scrub.addEventListener("input", () => {
    clock.pause();
    clock.seek(Number(scrub.value) / FPS);
  });
  document.addEventListener("keydown", (ev) => {
    const target = ev.target;
    if (target && target.tagName === "INPUT" && target.type !== "range") return; // typing in the search box
    if (ev.key === " " || ev.code === "Space") {
      ev.preventDefault();
      togglePlay();
    } else if (ev.key === "ArrowLeft") {
      ev.preventDefault();
      step(-1);
    } else if (ev.key === "ArrowRight") {
      ev.preventDefault();
      step(1);
    }
  });

  function openHash() {
    const m = /(?:^#|&)t=([0-9]*\.?[0-9]+)/.exec(location.hash);
    if (!m) return false;
    clock.pause();
    clock.seek(Number(m[1]));
    return true;
  }
  window.addEventListener("hashchange", openHash);

  // ------------------------------------------------------------------ the loop: the clock drives everything shown
  let lastText = "";
  function tick() {
    const t = clock.time();
    const i = frameAt(t);
    if (i !== shown && i !== asked) show(i);
    drawPlayhead(t);
    const playing = clock.playing();
    const text = `frame ${i} / ${T} · ${t.toFixed(3)} s · source ${(D.start_time + t).toFixed(3)} s`;
    if (text !== lastText) {
      clockText.textContent = text;
      lastText = text;
      if (document.activeElement !== scrub) scrub.value = String(i);
    }
    const href = `${location.pathname}#t=${t.toFixed(3)}`;
    if (!playing && link.getAttribute("href") !== href) link.setAttribute("href", href); // the paused time, not the last one shown
    if (playButton.textContent !== (playing ? "pause" : "play")) playButton.textContent = playing ? "pause" : "play";
    requestAnimationFrame(tick);
  }

  layoutTimeline();
  const opened = openHash();
  pictures.prefetch(frameAt(opened ? clock.time() : 0));
  window.avshardsViewer = { data: D, frameAt, shown: () => shown, seek: (t) => clock.seek(t), play: () => clock.play(), pause: () => clock.pause() };
  requestAnimationFrame(tick);
})();
