"""``shardgen report``: one page per build — what each split holds and whether its labels look sane.

The build summary says how many clips were written; it does not say whether a split is 90 %
silence, whether faces are too small for 112-px crops, or why clips were dropped. This report
reads each manifest and its clip index (``clips.idx``: every clip's byte range), the metadata and
label arrays of every clip (only those members, through :func:`shardgen.core.sources.read_clip`:
the tar headers are walked and checked, the audio and frames seeked past, so a large split costs a
few small reads per clip) and
``<out>/build-report.json`` beside the split directories, and writes a self-contained HTML page
(charts embedded as base64 PNG) or a single PNG.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.sample import LABELS
from ..core.sources import find_manifests, read_clip, resolve
from ..core.storage import TransportOptions, is_remote, read_bytes
from .preview import DPI, figure_rgb, pyplot, save_image

UPSAMPLE_BELOW = 112 / 0.7  # max(w, h) under which TalkNet's 112-px crop is upsampled (it spans 0.7*max(w, h))


@dataclass
class SplitStats:
    """Totals, label balance and face sizes of one split (one manifest)."""

    name: str  # the split, or "split (path)" when two manifests share a split name
    path: str
    clips: int
    frames: int
    hours: float
    videos: int
    shard_bytes: list[int]
    visible: float  # fraction of frames with any face box
    voice: float  # fraction of frames covered by any voice segment
    speaking: float  # fraction of person-frames with the person speaking
    speaking_with_face: float  # ... among person-frames that have a face box
    box_sizes: np.ndarray  # max(w, h) in source pixels, one per (person, frame) box
    params: dict = field(default_factory=dict)
    build: dict | None = None  # this split's row of build-report.json, when found
    skipped: list[dict] = field(default_factory=list)  # build-report.json "skipped" rows of this split

    @property
    def skip_reasons(self) -> dict[str, int]:
        return dict(self.build.get("skip_reasons", {})) if self.build else {}


# --------------------------------------------------------------------------- reading


def manifest_paths(paths: list) -> list[str]:
    """Manifests named directly, split directories, or a build root holding several split directories."""
    return [m for p in paths for m in find_manifests(p)]


def _build_report(manifest_path: str, options: TransportOptions) -> dict | None:
    """``<out>/build-report.json`` beside the split directory, or None when there is none."""
    if is_remote(manifest_path):
        url = manifest_path.rsplit("/", 2)[0] + "/build-report.json"
        try:
            return json.loads(read_bytes(url, options))
        except FileNotFoundError:  # also a remote 404 (RemoteNotFoundError)
            return None
    path = Path(manifest_path).resolve().parent.parent / "build-report.json"
    return json.loads(path.read_text()) if path.is_file() else None


def split_stats(manifest_path: str, *, remote_options: TransportOptions | dict | None = None) -> SplitStats:
    """Read one manifest, its clips' label arrays and its build report → :class:`SplitStats`."""
    remote_options = TransportOptions.coerce(remote_options)
    index = resolve(manifest_path, remote_options=remote_options)
    m = index.manifests[0]
    n_frames = n_visible = n_voice = person_frames = n_speaking = face_frames = speaking_face = 0
    sizes = []
    for row in range(len(index.clips)):  # each clip's metadata and label arrays, read and checked; nothing else
        sample = read_clip(index, row, members=LABELS, options=remote_options)
        visible, voice, boxes, speaking = sample.visible, sample.voice, sample.boxes, sample.speaking
        face = ~np.isnan(boxes[..., 0])
        n_frames += visible.size
        n_visible += int(visible.sum())
        n_voice += int(voice.sum())
        person_frames += speaking.size
        n_speaking += int(speaking.sum())
        face_frames += int(face.sum())
        speaking_face += int(speaking[face].sum())
        sizes.append(np.maximum(boxes[face][:, 2], boxes[face][:, 3]))
    report = _build_report(manifest_path, remote_options)
    split = m["split"]
    build = next((s for s in (report or {}).get("splits", []) if s.get("split") == split), None)
    skipped = [s for s in (report or {}).get("skipped", []) if s.get("split") == split]
    t = m["totals"]
    return SplitStats(
        name=split, path=manifest_path, clips=t["clips"], frames=t["frames"], hours=t["hours"],
        videos=t.get("videos", 0), shard_bytes=[s["bytes"] for s in m["shards"]],
        visible=n_visible / max(n_frames, 1), voice=n_voice / max(n_frames, 1),
        speaking=n_speaking / max(person_frames, 1), speaking_with_face=speaking_face / max(face_frames, 1),
        box_sizes=np.concatenate(sizes).astype(np.float64) if sizes else np.zeros(0), params=m.get("params", {}),
        build=build, skipped=skipped,
    )


def collect(paths: list, *, remote_options: TransportOptions | dict | None = None) -> list[SplitStats]:
    """Stats for every manifest named (see :func:`manifest_paths`); duplicate split names get their path."""
    stats = [split_stats(p, remote_options=remote_options) for p in manifest_paths(paths)]
    counts = Counter(s.name for s in stats)
    for s in stats:
        if counts[s.name] > 1:
            s.name = f"{s.name} ({s.path})"
    return stats


# --------------------------------------------------------------------------- tables and charts


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def summary_rows(stats: list[SplitStats]) -> list[list[str]]:
    """The per-split table (header first) shared by the HTML and PNG reports."""
    rows = [["split", "clips", "hours", "videos", "shards", "total size", "shard min / median / max",
             "visible", "voice", "speaking", "speaking | face", "face boxes", "median face px",
             f"faces < {UPSAMPLE_BELOW:.0f} px", "clips skipped"]]
    for s in stats:
        sb = np.array(s.shard_bytes or [0])
        bx = s.box_sizes
        rows.append([
            s.name, f"{s.clips:,}", f"{s.hours:.3f}", f"{s.videos:,}", f"{len(s.shard_bytes):,}", _mb(sb.sum()),
            f"{_mb(sb.min())} / {_mb(np.median(sb))} / {_mb(sb.max())}",
            f"{s.visible:.1%}", f"{s.voice:.1%}", f"{s.speaking:.1%}", f"{s.speaking_with_face:.1%}",
            f"{bx.size:,}", f"{np.median(bx):.0f}" if bx.size else "–",
            f"{(bx < UPSAMPLE_BELOW).mean():.1%}" if bx.size else "–",
            "–" if s.build is None else f"{s.build.get('clips_skipped', 0):,}",
        ])
    return rows


def skip_rows(stats: list[SplitStats]) -> list[list[str]]:
    """``[reason, count per split...]`` from the build reports (header first); empty when nothing was skipped."""
    reasons = sorted({r for s in stats for r in s.skip_reasons})
    if not reasons:
        return []
    return [["reason"] + [s.name for s in stats]] + [
        [r] + [str(s.skip_reasons.get(r, 0)) if s.build else "–" for s in stats] for r in reasons]


def _balance_chart(ax, stats: list[SplitStats]) -> None:
    names = ["visible", "voice", "speaking", "speaking | face"]
    width = 0.8 / max(len(stats), 1)
    for k, s in enumerate(stats):
        vals = [s.visible, s.voice, s.speaking, s.speaking_with_face]
        bars = ax.bar(np.arange(len(names)) + (k - (len(stats) - 1) / 2) * width, vals, width, label=s.name)
        ax.bar_label(bars, [f"{v:.0%}" for v in vals], fontsize=7)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylim(0, 1.15 + 0.08 * len(stats))  # headroom for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("fraction of frames / person-frames")
    ax.set_title("label balance", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncol=2)


def _box_chart(ax, stats: list[SplitStats]) -> None:
    sizes = [s.box_sizes for s in stats if s.box_sizes.size]
    if not sizes:
        ax.text(0.5, 0.5, "no face boxes", ha="center", va="center", transform=ax.transAxes)
    else:
        lo = min(float(x.min()) for x in sizes)
        hi = max(float(x.max()) for x in sizes)
        bins = np.linspace(0.9 * min(lo, UPSAMPLE_BELOW), 1.05 * max(hi, UPSAMPLE_BELOW), 41)
        for s in stats:
            if s.box_sizes.size:
                ax.hist(s.box_sizes, bins=bins, histtype="step", lw=1.6, label=f"{s.name} ({s.box_sizes.size:,})",
                        weights=np.full(s.box_sizes.size, 1 / s.box_sizes.size))
        ax.axvline(UPSAMPLE_BELOW, color="red", ls="--", lw=1)
        ax.text(UPSAMPLE_BELOW, 0.5, "← 112-px crop upsampled ", color="red", fontsize=7, ha="right",
                va="center", transform=ax.get_xaxis_transform())
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel("face box size max(w, h), source pixels")
    ax.set_ylabel("fraction of boxes")
    ax.set_title("face box sizes", fontsize=10)


def charts_png(stats: list[SplitStats]) -> dict[str, bytes]:
    """The report's charts as PNG bytes: ``{"balance": ..., "boxes": ...}``."""
    plt = pyplot()
    out = {}
    for name, draw in (("balance", _balance_chart), ("boxes", _box_chart)):
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=DPI, layout="constrained")
        try:
            draw(ax, stats)
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            out[name] = buf.getvalue()
        finally:
            plt.close(fig)
    return out


# --------------------------------------------------------------------------- output


def _table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(stats: list[SplitStats]) -> str:
    """A self-contained HTML page: tables, charts as ``data:image/png;base64`` images, no external files."""
    charts = charts_png(stats)
    img = "".join(f'<img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}">' for k, v in charts.items())
    skips = skip_rows(stats)
    no_report = [s.name for s in stats if s.build is None]
    examples = [s for st in stats for s in st.skipped][:20]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>avshards report</title><style>",
        "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}",
        "td:first-child,th:first-child{text-align:left}img{max-width:48%;margin:4px}</style></head><body>",
        "<h1>avshards report</h1>",
        "<p>" + "<br>".join(html.escape(f"{s.name}: {s.path}") for s in stats) + "</p>",
        "<h2>splits</h2>", _table(summary_rows(stats)),
        "<p>visible / voice: fraction of frames; speaking: fraction of person-frames; speaking | face: among "
        f"person-frames with a face box. Faces under {UPSAMPLE_BELOW:.0f} px (max(w, h)) give upsampled 112-px crops.</p>",
        "<h2>charts</h2>", img,
        "<h2>clips skipped</h2>",
        _table(skips) if skips else "<p>none recorded.</p>",
    ]
    if no_report:
        parts.append(f"<p>no build-report.json next to: {html.escape(', '.join(no_report))}</p>")
    if examples:
        parts.append(_table([["split", "video", "clip", "reason"]] + [
            [e.get("split", ""), e.get("video_id", ""), e.get("key") or "(whole video)", e.get("reason", "")]
            for e in examples]))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render_png(stats: list[SplitStats], *, width: int = 1600) -> np.ndarray:
    """The same content as one image: the table, the skip reasons, the two charts."""
    plt = pyplot()
    rows = summary_rows(stats)
    skips = skip_rows(stats)
    table_h = 30 + 24 * len(rows)
    skip_h = 30 + 22 * len(skips) if skips else 30
    chart_h = 380
    height = 50 + table_h + skip_h + chart_h + 20
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    try:
        fig.text(0.01, 1 - 14 / height, "avshards report", fontsize=14, weight="bold", va="top")
        y = 50
        ax = fig.add_axes([0.01, 1 - (y + table_h) / height, 0.98, table_h / height])
        ax.set_axis_off()
        tb = ax.table(cellText=rows[1:], colLabels=rows[0], loc="upper center", cellLoc="center")
        tb.auto_set_font_size(False)
        tb.set_fontsize(8)
        tb.auto_set_column_width(list(range(len(rows[0]))))
        y += table_h
        if skips:
            ax = fig.add_axes([0.01, 1 - (y + skip_h) / height, 0.5, skip_h / height])
            ax.set_axis_off()
            ax.set_title("clips skipped, by reason (build-report.json)", fontsize=9, loc="left")
            tb = ax.table(cellText=skips[1:], colLabels=skips[0], loc="upper left", cellLoc="left")
            tb.auto_set_font_size(False)
            tb.set_fontsize(8)
        else:
            fig.text(0.01, 1 - (y + 15) / height, "clips skipped: none recorded", fontsize=9, va="center")
        y += skip_h
        for k, draw in enumerate((_balance_chart, _box_chart)):
            ax = fig.add_axes([0.05 + 0.5 * k, 1 - (y + chart_h - 50) / height, 0.42, (chart_h - 90) / height])
            draw(ax, stats)
        return figure_rgb(fig)
    finally:
        plt.close(fig)


def write_report(paths: list, out: Path | str, *, remote_options: TransportOptions | dict | None = None) -> list[SplitStats]:
    """``shardgen report``: ``.html`` (self-contained) or an image (``.png``...) by the suffix of ``out``."""
    out = Path(out)
    stats = collect(paths, remote_options=remote_options)
    if out.suffix.lower() in (".html", ".htm"):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_html(stats), encoding="utf-8")
    else:
        save_image(render_png(stats), out)
    return stats


__all__ = ["SplitStats", "collect", "split_stats", "manifest_paths", "summary_rows", "skip_rows", "charts_png",
           "render_html", "render_png", "write_report"]
