"""The viewer's HTML pages, rendered on the server from the catalog and the clip summaries.

Pages are plain HTML with every value escaped; the only script is the player's own file
(``static/player.js``), which reads the clip's data from a JSON block in the clip page (the server
sends a Content-Security-Policy that allows nothing else).
"""

from __future__ import annotations

import html
import json
from urllib.parse import quote, urlencode

from .catalog import Catalog, Split, VideoRow
from .media import clip_data
from .summary import FILTERS, ClipSummary, ScanPage


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def clip_href(key: str, t: float | None = None) -> str:
    return "/clip/" + quote(key) + (f"#t={t:.3f}" if t is not None else "")


def split_href(split: Split, *rest: str, **query) -> str:
    path = "/split/" + quote(split.name, safe="") + "".join("/" + quote(p, safe="") for p in rest)
    return path + ("?" + urlencode(query) if query else "")


def page(title: str, body: str, crumbs: list[tuple[str, str | None]] = (), *, catalog: Catalog, scripts=()) -> str:
    trail = " / ".join(f'<a href="{esc(h)}">{esc(t)}</a>' if h else esc(t) for t, h in [("build", "/"), *crumbs])
    js = "".join(f'<script src="/static/{esc(s)}"></script>' for s in scripts)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)} · avshards view</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/view.css"></head><body>'
        f'<header><a class="brand" href="/">avshards view</a><span class="source" title="the build being viewed">'
        f'{esc(catalog.source)}</span><form action="/search" method="get" role="search">'
        '<input name="q" placeholder="clip key or video id" aria-label="search"></form></header>'
        f'<nav class="crumbs">{trail}</nav><main>{body}</main>{js}</body></html>\n'
    )


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """``rows`` are already-escaped HTML cells."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _filters(split: Split) -> str:
    links = " ".join(f'<a class="filter" href="{esc(split_href(split, "find", flag=name))}">{esc(f.title)}</a>'
                     for name, f in FILTERS.items())
    return f'<p class="filters">find: {links}</p>'


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 120 else f"{s / 60:.1f} min"


# --------------------------------------------------------------------------- browse


def home(catalog: Catalog) -> str:
    rows = []
    for split in catalog.splits.values():
        c = split.index.clips.columns
        frames = int(c["n_frames"].sum()) if len(split.index.clips) else 0
        skipped = sum(1 for s in split.skipped if s.get("key"))
        rows.append([f'<a href="{esc(split_href(split))}">{esc(split.name)}</a>', esc(len(split.index.clips)),
                     esc(len(split.index.clips.video_names())), esc(_seconds(frames / split.fps)),
                     esc(len(split.index.shards)), esc(skipped), esc(split.location)])
    empty = "".join(f'<p class="muted">{esc(e)}: no clips (its manifest lists no shards)</p>' for e in catalog.empty)
    body = ("<h1>Splits</h1>" + _table(["split", "clips", "videos", "length", "shards", "skipped clips", "read from"], rows)
            + empty
            + "".join(f"<h2>{esc(s.name)}</h2>{_filters(s)}" for s in catalog.splits.values()))
    return page("build", body, catalog=catalog)


def split_page(catalog: Catalog, split: Split) -> str:
    rows = []
    for v in split.videos():
        skipped = ", ".join(esc(s.get("reason", "")) for s in v.skipped if not s.get("key"))
        name = (f'<a href="{esc(split_href(split, "video", v.video_id))}">{esc(v.video_id)}</a>' if v.clips
                else esc(v.video_id))
        rows.append([name, esc(v.clips), esc(_seconds(v.frames / split.fps)), esc(v.tracks),
                     esc(sum(1 for s in v.skipped if s.get("key"))), skipped or ""])
    body = (f"<h1>{esc(split.name)}</h1>{_filters(split)}"
            + _table(["video", "clips", "length", "face tracks", "skipped clips", "skipped whole"], rows))
    return page(split.name, body, [(split.name, None)], catalog=catalog)


def _summary_cells(summary: ClipSummary, row_start: float | None = None) -> list[str]:
    if summary.error:
        return [f'<a href="{esc(clip_href(summary.key))}">{esc(summary.key)}</a>', "", esc(_seconds(summary.seconds)),
                "", "", "", "", f'<span class="error">{esc(summary.error)}</span>']
    flags = " ".join(f'<span class="flag">{esc(FILTERS[f].title)}</span>' for f in summary.flags())
    return [f'<a href="{esc(clip_href(summary.key))}">{esc(summary.key)}</a>',
            "" if row_start is None else esc(f"{row_start:.2f} s"), esc(_seconds(summary.seconds)),
            esc(summary.persons), esc(summary.faces), esc(f"{100 * summary.voice_share:.0f} %"),
            esc(f"{100 * summary.speaking_share:.0f} %"), flags]


SUMMARY_HEAD = ["clip", "starts at", "length", "persons", "with a face", "voice", "speaking", "flags"]


def video_page(catalog: Catalog, split: Split, video: VideoRow, summaries: list[tuple[int, ClipSummary]]) -> str:
    c = split.index.clips.columns
    rows = [_summary_cells(s, int(c["start_frame"][r]) / split.fps) for r, s in summaries]
    for s in video.skipped:
        if s.get("key"):
            rows.append([esc(s["key"]), "", "", "", "", "", "", f'<span class="skipped">skipped: {esc(s.get("reason", ""))}</span>'])
    body = f"<h1>{esc(video.video_id)}</h1>" + _table(SUMMARY_HEAD, rows, "clips")
    return page(video.video_id, body, [(split.name, split_href(split)), (video.video_id, None)], catalog=catalog)


def find_page(catalog: Catalog, split: Split, flag: str, result: ScanPage) -> str:
    c = split.index.clips.columns
    rows = [_summary_cells(s, int(c["start_frame"][r]) / split.fps) for r, s in result.matches]
    n = len(split.index.clips)
    more = (f'<a class="next" href="{esc(split_href(split, "find", flag=flag, **{"from": result.next_row}))}">'
            f'scan on from clip {result.next_row + 1}</a>' if result.next_row is not None else "end of the split")
    body = (f"<h1>{esc(split.name)}: {esc(FILTERS[flag].title)}</h1>{_filters(split)}"
            f'<p class="scanned">{len(result.matches)} found among clips {result.scanned.start + 1}–{result.scanned.stop} '
            f"of {n} (index order) · {more}</p>" + _table(SUMMARY_HEAD, rows, "clips"))
    return page(FILTERS[flag].title, body, [(split.name, split_href(split)), (FILTERS[flag].title, None)], catalog=catalog)


def search_page(catalog: Catalog, query: str, clips: list[str], videos: list[tuple[Split, str]]) -> str:
    items = [f'<li><a href="{esc(clip_href(k))}">{esc(k)}</a></li>' for k in clips]
    items += [f'<li><a href="{esc(split_href(s, "video", v))}">{esc(v)}</a> <span class="muted">({esc(s.name)})</span></li>'
              for s, v in videos]
    found = f"<ul>{''.join(items)}</ul>" if items else "<p>No clip key or video id contains that.</p>"
    return page("search", f"<h1>Search: {esc(query)}</h1>{found}", [("search", None)], catalog=catalog)


def not_found(catalog: Catalog, what: str) -> str:
    return page("not found", f'<h1>Not found</h1><p class="error">{esc(what)}</p>', catalog=catalog)


# --------------------------------------------------------------------------- one clip


def _json_block(data: dict) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' survive as themselves."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _clip_crumbs(split: Split, key: str) -> list[tuple[str, str | None]]:
    video = key.split("/", 1)[0]
    return [(split.name, split_href(split)), (video, split_href(split, "video", video)), (key.split("/", 1)[1], None)]


def clip_page(catalog: Catalog, split: Split, row: int, sample) -> str:
    d = clip_data(split, row, sample)
    m = sample.meta
    ref = split.index.clips.ref(row)
    W, H = d["frame_size"]
    nav = "".join(f'<a class="{cls}" href="{esc(clip_href(d[cls]))}">{label}</a>'
                  for cls, label in (("prev", "← previous clip"), ("next", "next clip →")) if d[cls])
    facts = [
        ("shard", f"{d['shard']}, bytes {ref.offset}–{ref.offset + ref.bytes}"),
        ("frames", f"{d['frames']} at {d['fps']:g} fps = {d['frames'] / d['fps']:.3f} s"
                   + (f" ({d['pad_frames']} padded)" if d["pad_frames"] else "")),
        ("source time", f"{d['start_time']:.3f} s (source frames {m['start_frame']}–{m['start_frame'] + d['frames'] - 1})"),
        ("picture", f"{'original JPEG' if d['picture'] == 'original' else 'derived 112x112 gray (no originals in this build)'}, "
                    f"boxes in {W}x{H} pixels"),
        ("audio", f"{sample.audio_ext}, {d['audio']['samples']} samples at {d['audio']['rate']} Hz"
                  + (f", {d['audio']['padded']} zero-padded" if d["audio"]["padded"] else "")),
        ("persons", ", ".join(p["id"] + (" (camera wearer)" if p["wearer"] else "") for p in d["persons"]) or "none"),
    ]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    body = (
        f'<h1>{esc(sample.key)}</h1><p class="clipnav">{nav}</p>'
        '<div class="player"><div id="stage" class="stage">'
        f'<canvas id="frame" width="{W}" height="{H}"></canvas><canvas id="overlay" width="{W}" height="{H}"></canvas>'
        '</div><div id="crops" class="crops"></div></div>'
        '<div class="controls"><button id="play" type="button" title="play / pause (space)">play</button>'
        '<button id="back" type="button" title="previous frame (←)">◀ frame</button>'
        '<button id="fwd" type="button" title="next frame (→)">frame ▶</button>'
        f'<input id="scrub" type="range" min="0" max="{d["frames"] - 1}" step="1" value="0" aria-label="frame">'
        '<span id="clock" class="clock"></span><a id="link" href="#">link to this time</a></div>'
        '<canvas id="timeline" class="timeline"></canvas>'
        '<p class="legend"><span class="sw speaking"></span>speaking <span class="sw silent"></span>face, not speaking '
        '<span class="sw visible"></span>visible <span class="sw voice"></span>voice · space: play/pause, ← →: one frame</p>'
        '<ul id="problems" class="problems"></ul>'
        f'<audio id="audio" src="{esc(d["audio"]["url"])}" preload="auto"></audio>'
        f'<table class="facts">{table}</table>'
        f'<script type="application/json" id="clip-data">{_json_block(d)}</script>'
    )
    return page(sample.key, body, _clip_crumbs(split, sample.key), catalog=catalog, scripts=["player.js"])


def clip_error_page(catalog: Catalog, split: Split, row: int, message: str) -> str:
    key = split.index.clips.key(row)
    ref = split.index.clips.ref(row)
    shard = split.index.shards[ref.shard]
    body = (f"<h1>{esc(key)}</h1>"
            f'<div id="error" class="error" role="alert"><p>This clip cannot be shown.</p><pre>{esc(message)}</pre>'
            f"<p>shard {esc(shard.name)} ({esc(shard.url)}), bytes {ref.offset}–{ref.offset + ref.bytes}. "
            "<code>shardgen verify</code> checks every clip of the split.</p></div>")
    return page(key, body, _clip_crumbs(split, key), catalog=catalog)
