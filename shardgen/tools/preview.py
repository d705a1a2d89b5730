"""``shardgen preview``: a contact sheet of one clip, to see that frames, boxes, audio and labels agree.

Numbers in a manifest cannot show an off-by-one frame, a box on the wrong face or a voice
label half a second late; a picture does. The sheet shows ~10 frames spread over the clip
with every person's face box and id, then the waveform, a spectrogram and the label tracks
(``visible``, ``voice``, each person's ``speaking``) on ONE time axis in source-video seconds
(frame i at ``(start_frame + i) / fps``, audio sample j at ``(audio_start_sample + j) / sr``,
as :mod:`shardgen.core.format` defines them), so a shift between streams is visible at a glance.

The clip is read like the loader reads it: :func:`shardgen.core.sources.resolve` finds its byte
range in the source's clip index (manifest and ``clips.idx``, split directory, shard, URL) and
:func:`shardgen.core.sources.read_clip` reads only that range, checked as every reader checks it. The layout is computed here in pixels
(:class:`Layout`), not by matplotlib's auto-layout, so tests can map seconds to pixel columns.

matplotlib is the optional ``[viz]`` extra; it is imported lazily (Agg backend).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.decode import gray_small, rgb_frame
from ..core.format import audio_sample_range
from ..core.sample import ClipSample
from ..core.sources import read_clip, resolve
from ..core.storage import TransportOptions

DPI = 100
FRAME_COLS = 5
TRACK_ROW_PX = 22
OFF_COLOR = (0.92, 0.92, 0.92)
VISIBLE_COLOR = (0.30, 0.30, 0.35)
VOICE_COLOR = (0.85, 0.45, 0.05)


# --------------------------------------------------------------------------- shared helpers


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a clear error naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("this command draws with matplotlib, which is not installed: "
                           "pip install 'avshards[viz]' (or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def figure_rgb(fig) -> np.ndarray:
    """Render a figure at its own size and dpi → ``uint8 [H, W, 3]`` (pixels = layout pixels)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_image(rgb: np.ndarray, path: Path | str, *, palette: bool = True) -> Path:
    """Write an RGB array; PNGs get a 256-colour adaptive palette (photos stay readable, files small)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb)
    if path.suffix.lower() == ".png":
        if palette:
            img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        img.save(path, optimize=True)
    else:
        img.save(path, quality=90) if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else img.save(path)
    return path


def person_color(row: int) -> tuple[float, float, float]:
    """Person row p's colour (tab10 without the orange used for ``voice``); boxes and tracks share it."""
    palette = [(0.12, 0.47, 0.71), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.40, 0.74),
               (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81)]
    return palette[row % len(palette)]


# --------------------------------------------------------------------------- reading one clip


def load_clip(source, key: str | None = None, *, remote_options: TransportOptions | dict | None = None) -> ClipSample:
    """One checked clip from a shard, manifest, split directory or URL; the first clip unless ``key``.

    The clip is found in the source's clip index by its video and start frame (no object per clip
    is made), and only the clip's own byte range is read (:func:`shardgen.core.sources.read_clip`).
    """
    index = resolve(str(source), remote_options=remote_options)
    clips = index.clips
    if not len(clips):
        raise ValueError(f"{source}: holds no clips")
    row = 0 if key is None else clips.find(key)
    if row is None:
        near = clips.video_rows(key.split("/")[0])[:6]
        if not len(near):
            near = np.arange(min(6, len(clips)))
        keys = [clips.key(int(r)) for r in near[:5]]
        raise ValueError(f"clip {key!r} is not in {source}; it has {len(clips)} clips, e.g. "
                         f"{', '.join(keys)}{', ...' if len(near) > 5 else ''}")
    return read_clip(index, row, options=remote_options)


# --------------------------------------------------------------------------- what is drawn


@dataclass
class TrackRow:
    """One label track: ``values[i]`` is frame i's label; ``face[i]`` (speaking rows) marks a face box."""

    name: str
    values: np.ndarray
    color: tuple[float, float, float]
    face: np.ndarray | None = None


def track_rows(sample: ClipSample) -> list[TrackRow]:
    """The label tracks in drawing order: ``visible``, ``voice``, then ``speaking <person_id>`` per person row."""
    rows = [TrackRow("visible", sample.visible, VISIBLE_COLOR), TrackRow("voice", sample.voice, VOICE_COLOR)]
    for p, person in enumerate(sample.meta["persons"]):
        name = f"speaking {person['person_id']}" + (" (wearer)" if person.get("camera_wearer") else "")
        rows.append(TrackRow(name, sample.speaking[p], person_color(p), ~np.isnan(sample.boxes[p, :, 0])))
    return rows


def track_image(rows: list[TrackRow]) -> np.ndarray:
    """``float [rows, T, 3]`` RGB: label 1 in the row's colour, 0 light gray (pale tint where a face box is)."""
    T = len(rows[0].values) if rows else 0
    img = np.empty((len(rows), T, 3), np.float64)
    off = np.array(OFF_COLOR)
    for r, row in enumerate(rows):
        on = np.array(row.color)
        img[r] = off
        if row.face is not None:
            img[r, row.face.astype(bool)] = 0.75 * off + 0.25 * on
        img[r, row.values.astype(bool)] = on
    return img


def sample_frames(n_frames: int, n: int) -> np.ndarray:
    """``n`` clip frame indices spread evenly from the first to the last frame."""
    return np.unique(np.linspace(0, n_frames - 1, max(1, min(n, n_frames))).round().astype(int))


def spectrogram(samples: np.ndarray, sr: int, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """Log-power STFT ``[n_fft//2+1, frames]`` in dB; column k is centred on sample ``k*hop`` (32 ms Hann, 10 ms hop)."""
    x = np.pad(samples.astype(np.float64) / 32768.0, n_fft // 2)  # centred: column k is at sample k*hop
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    return 10 * np.log10(power.T + 1e-10)


# --------------------------------------------------------------------------- layout in pixels

Rect = tuple[int, int, int, int]  # left, top, width, height in pixels, origin at the top-left


@dataclass
class Layout:
    """Where everything sits on the sheet, in pixels (top-left origin), and the time axes' range.

    The waveform, spectrogram and track axes share ``t0..t1`` (seconds) and the same left edge
    and width, so :meth:`column` maps a time to the same pixel column on all three.
    """

    width: int
    height: int
    frames: list[Rect]
    wave: Rect
    spec: Rect
    tracks: Rect
    track_names: list[str]
    t0: float
    t1: float
    frame_indices: list[int] = field(default_factory=list)

    def column(self, t: float) -> float:
        """Pixel column (x) of source-video time ``t`` on the time axes."""
        left, _, w, _ = self.tracks
        return left + (t - self.t0) / (self.t1 - self.t0) * w

    def row(self, name: str) -> float:
        """Pixel row (y) of the centre of label track ``name``."""
        _, top, _, h = self.tracks
        return top + (self.track_names.index(name) + 0.5) * h / len(self.track_names)

    def fraction(self, rect: Rect) -> list[float]:
        """A pixel rect as matplotlib's ``[left, bottom, width, height]`` figure fractions."""
        left, top, w, h = rect
        return [left / self.width, 1 - (top + h) / self.height, w / self.width, h / self.height]


def make_layout(sample: ClipSample, frame_size: tuple[int, int], *, n_frames: int = 10, width: int = 1400) -> Layout:
    """Compute the sheet's pixel layout for a clip (frames grid, waveform, spectrogram, tracks)."""
    m = sample.meta
    W, H = frame_size
    idx = sample_frames(sample.n_frames, n_frames)
    margin, gap, caption, title = 12, 8, 18, 36
    cols = min(FRAME_COLS, len(idx))
    tw = (width - 2 * margin - (cols - 1) * gap) // cols
    th = max(1, round(tw * H / W))
    frames = []
    y = margin + title
    for k in range(len(idx)):
        r, c = divmod(k, cols)
        frames.append((margin + c * (tw + gap), y + r * (caption + th + gap) + caption, tw, th))
    y += math.ceil(len(idx) / cols) * (caption + th + gap) + 6
    left, right = 150, 24
    aw = width - left - right
    wave = (left, y, aw, 80)
    y += 80 + 8
    spec = (left, y, aw, 110)
    y += 110 + 8
    names = [r.name for r in track_rows(sample)]
    tracks = (left, y, aw, TRACK_ROW_PX * len(names))
    y += tracks[3] + 62  # tick labels, axis label and the legend line
    t0 = m["start_frame"] / m["fps"]
    return Layout(width, y, frames, wave, spec, tracks, names, t0, t0 + sample.n_frames / m["fps"], idx.tolist())


# --------------------------------------------------------------------------- drawing


@dataclass
class Preview:
    """A rendered sheet: the pixels and the layout they were drawn with."""

    rgb: np.ndarray
    layout: Layout
    key: str


def _frame_size(sample: ClipSample) -> tuple[int, int]:
    size = sample.meta.get("frame_size")
    if size:
        return int(size[0]), int(size[1])
    h, w = rgb_frame(sample.frame(0), name=f"{sample.key} frame 1").shape[:2]
    return w, h


def _thumbnail(sample: ClipSample, i: int, size: tuple[int, int]) -> np.ndarray:
    """Frame i decoded straight to the thumbnail size (gray ``g`` member when originals were left out)."""
    if sample.meta.get("originals", True):
        return rgb_frame(sample.frame(i), (size[1], size[0]), name=f"{sample.key} frame {i + 1}")
    g = gray_small(sample.gray(i), name=f"{sample.key} gray {i + 1}")
    return np.repeat(g[..., None], 3, axis=2)


def render_preview(sample: ClipSample, *, n_frames: int = 10, width: int = 1400) -> Preview:
    """Draw the contact sheet of ``sample``; returns the pixels and their :class:`Layout`."""
    plt = pyplot()
    m = sample.meta
    W, H = _frame_size(sample)
    lay = make_layout(sample, (W, H), n_frames=n_frames, width=width)
    fps, T = m["fps"], sample.n_frames
    fig = plt.figure(figsize=(lay.width / DPI, lay.height / DPI), dpi=DPI)
    try:
        persons = m["persons"]
        fig.text(12 / lay.width, 1 - 12 / lay.height, (
            f"{sample.key}   split {m.get('split', '?')}   source frames {m['start_frame']}–{m['start_frame'] + T - 1} "
            f"({_frames_origin(m)})   {T} frames @ {fps:g} fps = {lay.t0:.2f}–{lay.t1:.2f} s   "
            f"{len(persons)} person(s)   {W}x{H}"), fontsize=11, weight="bold", va="top")
        for i, rect in zip(lay.frame_indices, lay.frames):
            _draw_frame(fig, lay, rect, sample, i, (W, H))
        samples, sr = sample.audio()
        ta = (m["audio_start_sample"] + np.arange(len(samples))) / sr
        ax_w = fig.add_axes(lay.fraction(lay.wave))
        _draw_wave(ax_w, samples, ta, m, lay)
        ax_s = fig.add_axes(lay.fraction(lay.spec), sharex=ax_w)
        spec = spectrogram(samples, sr)
        hop_t = 160 / sr
        ta0 = ta[0] if len(ta) else lay.t0
        ax_s.imshow(spec, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                    extent=(ta0 - hop_t / 2, ta0 + (spec.shape[1] - 0.5) * hop_t, 0, sr / 2000),
                    vmin=spec.max() - 80, vmax=spec.max())
        ax_s.set_ylabel("kHz")
        ax_s.tick_params(labelbottom=False)
        for t in (lay.t0 + i / fps for i in lay.frame_indices):
            for ax in (ax_w, ax_s):
                ax.axvline(t, color="#1f77b4", lw=0.8, alpha=0.6)
        ax_t = fig.add_axes(lay.fraction(lay.tracks), sharex=ax_w)
        rows = track_rows(sample)
        ax_t.imshow(track_image(rows), aspect="auto", interpolation="nearest",
                    extent=(lay.t0, lay.t1, len(rows), 0))
        ax_t.set_yticks(np.arange(len(rows)) + 0.5, [r.name for r in rows])
        ax_t.set_xlabel("seconds from the start of the source video (frame i at (start_frame + i) / fps)")
        ax_w.set_xlim(lay.t0, lay.t1)
        fig.text(lay.tracks[0] / lay.width, 6 / lay.height,
                 "label tracks: solid = 1; speaking rows: pale tint = face box present, gray = none. "
                 "Blue lines / ticks: the frames shown above.", fontsize=8, color="#555555")
        return Preview(figure_rgb(fig), lay, sample.key)
    finally:
        plt.close(fig)


def _draw_frame(fig, lay: Layout, rect: Rect, sample: ClipSample, i: int, size: tuple[int, int]) -> None:
    from matplotlib.patches import Rectangle

    m = sample.meta
    W, H = size
    ax = fig.add_axes(lay.fraction(rect))
    ax.imshow(_thumbnail(sample, i, (rect[2], rect[3])), extent=(0, W, H, 0), interpolation="nearest")
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_axis_off()
    t = (m["start_frame"] + i) / m["fps"]
    flags = "".join(s for s, on in (("  voice", sample.voice[i]), ("  no face", not sample.visible[i])) if on)
    ax.set_title(f"frame {i} · {t:.2f} s{flags}", fontsize=8, pad=3)
    for p, person in enumerate(m["persons"]):
        x, y, w, h = (float(v) for v in sample.boxes[p, i])
        if not math.isfinite(x):
            continue
        speaking = bool(sample.speaking[p, i])
        color = person_color(p)
        ax.add_patch(Rectangle((x, y), w, h, fill=False, lw=2.2 if speaking else 1.2, ec=color,
                               ls="-" if speaking else "--"))
        above = y > 0.08 * H  # the id sits above the box, or below it when the box touches the top
        ax.text(x, y - H * 0.01 if above else y + h + H * 0.01, f"{person['person_id']}" + (" speaking" if speaking else ""),
                color="white", fontsize=7, va="bottom" if above else "top", ha="left", clip_on=True,
                bbox=dict(boxstyle="square,pad=0.15", fc=color, ec="none", alpha=0.85))


def _frames_origin(m: dict) -> str:
    """Where the clip's frames came from: the source images, or a video file decoded at the clip's rate."""
    src = m.get("source") or {}
    if src.get("kind") == "video_file":
        return f"{src.get('file', 'video file')} decoded at {m['fps']:g} fps"
    return f"img_{m['start_frame'] + 1:05d}…"


def _audio_zeros_labels(m: dict) -> tuple[str, str]:
    """How the wave plot names zeros: (before the audio starts, after it ends), by where the audio came from."""
    src = m.get("source") or {}
    origin = src.get("audio_from") if src.get("kind") == "video_file" else "wav"
    if origin == "stream":
        return "audio stream starts later: zeros ", "audio stream ended: zeros "
    if origin == "none":
        return "no audio stream: zeros ", "no audio stream: zeros "
    return "", "wav ended: zeros "


def _draw_wave(ax, samples: np.ndarray, ta: np.ndarray, m: dict, lay: Layout) -> None:
    """Min/max envelope per pixel column (a plot of every sample would be slow and no clearer)."""
    y = samples.astype(np.float32) / 32768.0
    n = max(1, len(y) // max(1, lay.wave[2]))
    k = len(y) // n * n
    if k:
        mn, mx = y[:k].reshape(-1, n).min(1), y[:k].reshape(-1, n).max(1)
        ax.fill_between(ta[:k:n], mn, mx, color="#333333", lw=0)
    lim = max(0.05, float(np.abs(y).max()) if len(y) else 1.0)
    # zeros where the wav ended early sit at the end of the real frames' audio; padded frames follow them
    start, real = m["start_frame"], m["n_frames"] - int(m.get("pad_frames", 0))
    a, b = audio_sample_range(start, start + real, m.get("fps_exact", m["fps"]), m["sample_rate"])
    real_len = min(b - a, len(ta))
    before_label, after_label = _audio_zeros_labels(m)
    before = min(int((m.get("source") or {}).get("audio_padded_start_samples") or 0), real_len)
    padded = min(int(m.get("audio_padded_samples", 0)) - before, real_len - before)
    if before:  # a video file's audio stream that starts after the clip does
        ax.axvspan(ta[0], ta[before - 1], color="red", alpha=0.15, lw=0)
        ax.text(ta[0], 0.95 * lim, " " + before_label, color="red", fontsize=7, va="top", ha="left")
    if padded > 0:
        ax.axvspan(ta[real_len - padded], ta[real_len - 1], color="red", alpha=0.15, lw=0)
        ax.text(ta[real_len - 1], 0.95 * lim, after_label, color="red", fontsize=7, va="top", ha="right")
    if real_len < len(ta):
        ax.axvspan(ta[real_len], ta[-1], color="gray", alpha=0.2, lw=0)
        ax.text(ta[-1], -0.95 * lim, "padded frames ", color="gray", fontsize=7, va="bottom", ha="right")
    ax.set_ylim(-lim, lim)
    ax.set_ylabel("audio")
    ax.tick_params(labelbottom=False)
    for k, i in enumerate(lay.frame_indices):
        ax.text(lay.t0 + i / m["fps"], lim, f"{i}", fontsize=6, color="#1f77b4", ha="center", va="bottom")


def preview(source, out: Path | str, *, key: str | None = None, n_frames: int = 10, width: int = 1400,
            remote_options: TransportOptions | dict | None = None) -> Preview:
    """``shardgen preview``: read one clip from ``source`` and write its contact sheet to ``out``."""
    sample = load_clip(source, key, remote_options=remote_options)
    sheet = render_preview(sample, n_frames=n_frames, width=width)
    save_image(sheet.rgb, out)
    return sheet


__all__ = ["load_clip", "render_preview", "preview", "Preview", "Layout", "make_layout", "track_rows",
           "track_image", "TrackRow", "sample_frames", "spectrogram", "pyplot", "figure_rgb", "save_image"]
