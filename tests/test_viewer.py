"""``shardgen view`` over HTTP, without a browser: what the pages list, the bytes served, the refusals, damage.

References are independent of the viewer: the labels come from the annotation written by
``tests/view_builds.py``, member bytes from Python's tarfile, and requests are sent raw (``http.client``
sends a path exactly as written, ``..`` and all).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from shardgen.cli import _parser
from shardgen.core.storage import TransportOptions
from shardgen.tools.view import BackgroundServer
from shardgen.tools.view.catalog import open_catalog
from shardgen.tools.view.summary import FILTERS, Summaries, scan
from tests.sources import read_clips
from tests.view_builds import DAMAGED, FPS, SPLITS, TRACKS, VIDEOS, VOICE, box, damaged, speaking
from tests.view_builds import view_build, view_build_s3  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
CLIP = 30  # frames a clip (1 s at 30 fps)


def request(base: str, path: str, *, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One raw request: the path goes out exactly as written (no client-side normalisation)."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=bool(headers and "Host" in headers))
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def text(base: str, path: str) -> tuple[int, str]:
    status, _, body = request(base, path)
    return status, body.decode()


@pytest.fixture(scope="module")
def viewer(view_build):
    with BackgroundServer(view_build) as url:
        yield url


def reference_clips() -> dict[str, dict]:
    """Every clip the build should hold (1 s windows of each listed video), with its labels from the annotation."""
    out = {}
    for split, videos in SPLITS.items():
        for v in videos:
            for start in range(0, VIDEOS[v], CLIP):
                frames = range(start, min(VIDEOS[v], start + CLIP))
                persons = sorted(set(TRACKS.get(v, {})) | set(VOICE.get(v, {})))
                visible = [any(box(v, p, f) for p in persons) for f in frames]
                voice = [any(speaking(v, p, f) for p in persons) for f in frames]
                faced = [p for p in persons if any(box(v, p, f) for f in frames)]
                talk = [any(speaking(v, p, f) for p in faced) for f in frames]
                out[f"{v}/clip_f{start:06d}"] = {
                    "split": split, "visible": visible, "voice": voice, "faces": len(faced),
                    "voice_share": sum(voice) / len(frames), "speaking_share": sum(talk) / len(frames),
                    "audio_padded": v == "v2" and start + CLIP > 1.5 * FPS}
    return out


def table_rows(page: str) -> dict[str, list[str]]:
    """The clip tables of a page: {key: [cell texts]}."""
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", tr, re.S)]
        if cells:
            rows[cells[0]] = cells
    return rows


# --------------------------------------------------------------------------- browse


def test_home_split_and_video_pages_list_what_the_build_holds(viewer, view_build):
    ref = reference_clips()
    status, home = text(viewer, "/")
    assert status == 200
    rows = table_rows(home)
    assert sorted(rows) == ["train", "val"]
    for split in ("train", "val"):
        assert rows[split][1] == str(sum(1 for c in ref.values() if c["split"] == split))
        status, page = text(viewer, f"/split/{split}")
        videos = table_rows(page)
        assert sorted(videos) == sorted(SPLITS[split])
        for v in SPLITS[split]:
            assert videos[v][1] == str(-(-VIDEOS[v] // CLIP)), v  # clips of that video
    # a video's page: one row per clip, persons from each clip's own metadata (tarfile), shares from the annotation
    stored = read_clips(*sorted((view_build / "train").glob("*.tar")))
    for v in ("v0", "v1"):
        status, page = text(viewer, f"/split/train/video/{v}")
        clips = table_rows(page)
        keys = [k for k in ref if k.startswith(v + "/")]
        assert status == 200 and sorted(clips) == keys
        for k in keys:
            cells = clips[k]
            meta = json.loads(stored[k]["json"])
            assert cells[1] == f"{int(k[-6:]) / FPS:.2f} s" and cells[2] == "1.00 s"
            assert cells[3] == str(len(meta["persons"])) and cells[4] == str(ref[k]["faces"]), (k, cells)
            assert cells[5] == f"{100 * ref[k]['voice_share']:.0f} %" and cells[6] == f"{100 * ref[k]['speaking_share']:.0f} %"


def test_filters_find_exactly_the_suspicious_clips(viewer, view_build):
    ref = reference_clips()
    expected = {
        "speech-no-face": {k for k, c in ref.items() if any(v and not s for v, s in zip(c["voice"], c["visible"]))},
        "faces-no-voice": {k for k, c in ref.items() if any(c["visible"]) and not any(c["voice"])},
        "audio-padded": {k for k, c in ref.items() if c["audio_padded"]},
        "unreadable": {"d1/clip_f000000", "d3/clip_f000000"},  # d2's labels are intact: only a frame is damaged
    }
    expected["faces-no-voice"] -= expected["unreadable"]  # an unreadable clip's labels are unknown
    assert all(expected.values()) and expected["speech-no-face"] == {"v1/clip_f000000"}
    for flag, keys in expected.items():
        found = set()
        for split in SPLITS:
            status, page = text(viewer, f"/split/{split}/find?flag={flag}")
            assert status == 200 and "end of the split" in page
            found |= set(table_rows(page))
        assert found == keys, flag
    # a scan in small steps visits every clip once and finds the same clips
    catalog = open_catalog(view_build)
    split = catalog.splits["train"]
    summaries = Summaries(catalog.options)
    try:
        start, steps, seen, found = 0, 0, [], set()
        while start is not None:
            page = scan(summaries, split, "faces-no-voice", start, max_scanned=2, batch=1)
            seen += list(page.scanned)
            found |= {s.key for _, s in page.matches}
            start, steps = page.next_row, steps + 1
        assert seen == list(range(len(split.index.clips))) and steps == 4
        assert found == {k for k in expected["faces-no-voice"] if ref[k]["split"] == "train"}
    finally:
        summaries.close()
    assert set(FILTERS) >= set(expected)


def test_search_by_key_video_and_key_prefix(viewer):
    status, headers, _ = request(viewer, "/search?q=v0/clip_f000030")
    assert status == 302 and headers["location"] == "/clip/v0/clip_f000030"
    status, page = text(viewer, "/search?q=v0/clip_f0000")
    assert re.findall(r'href="/clip/([^"]+)"', page) == ["v0/clip_f000000", "v0/clip_f000030"]
    status, page = text(viewer, "/search?q=D")  # video ids, case-insensitive
    assert re.findall(r'href="/split/train/video/([^"]+)"', page) == ["d1", "d2", "d3"]


# --------------------------------------------------------------------------- bytes


def test_audio_and_frames_are_the_clips_members_with_byte_ranges(viewer, view_build):
    stored = read_clips(*sorted((view_build / "train").glob("*.tar")))["v0/clip_f000030"]
    wav = stored["wav"]
    status, h, body = request(viewer, "/media/v0/clip_f000030/audio")
    assert status == 200 and body == wav and h["accept-ranges"] == "bytes" and h["content-type"] == "audio/wav"
    for spec, (a, b) in {"bytes=100-199": (100, 200), "bytes=1000-": (1000, len(wav)), "bytes=-10": (len(wav) - 10, len(wav)),
                         f"bytes=5-{10 * len(wav)}": (5, len(wav))}.items():
        status, h, body = request(viewer, "/media/v0/clip_f000030/audio", headers={"Range": spec})
        assert status == 206 and body == wav[a:b], spec
        assert h["content-range"] == f"bytes {a}-{b - 1}/{len(wav)}" and h["content-length"] == str(b - a)
    status, h, body = request(viewer, "/media/v0/clip_f000030/audio", headers={"Range": f"bytes={len(wav)}-"})
    assert status == 416 and h["content-range"] == f"bytes */{len(wav)}"
    status, h, body = request(viewer, "/media/v0/clip_f000030/audio", method="HEAD")
    assert status == 200 and body == b"" and h["content-length"] == str(len(wav))
    for i in (0, 7, 29):
        status, h, body = request(viewer, f"/media/v0/clip_f000030/frame/{i}.jpg")
        assert status == 200 and body == stored[f"f{i + 1:06d}.jpg"] and h["content-type"] == "image/jpeg"
    assert request(viewer, "/media/v0/clip_f000030/frame/30.jpg")[0] == 404


def _snapshot(root: Path) -> dict[str, tuple]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


TRICKS = [
    "/static/../../../../etc/passwd", "/static/..%2f..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/view.css/..", "/static/player.js%00.css", "/static/PLAYER.JS", "/static/manifest.json",
    "/clip/../../etc/passwd", "/clip/..%2F..%2F..%2Fetc/passwd", "/clip/v0/clip_f000000/../../../manifest.json",
    "/media/v0/clip_f000000/../../train/manifest.json", "/media/v0/clip_f000000/frame/..%2f..%2fclips.idx",
    "/media/v0/clip_f000000/frame/-1.jpg", "/media/..%5c..%5cetc/clip_f000000/audio", "/split/..", "/split/train/../../etc",
    "/split/train/video/..%2F..%2Fetc", "//etc/passwd", "/train/manifest.json", "/train/clips.idx", "/build-report.json",
    "/train/train-000000.tar", "/%ff%fe", "/etc/passwd", "\\..\\..\\etc\\passwd",
]


def test_path_tricks_get_a_404_and_nothing_outside_the_build_is_served(viewer, view_build):
    before = _snapshot(view_build)
    secrets = [Path("/etc/passwd").read_bytes()[:20], (view_build / "train" / "manifest.json").read_bytes()[:40],
               (view_build / "train" / "clips.idx").read_bytes()[:16]]
    for path in TRICKS:
        status, _, body = request(viewer, path)
        assert status == 404, path
        assert not any(s in body for s in secrets), path
    assert request(viewer, "/", method="POST")[0] == 405
    assert request(viewer, "/", method="DELETE")[0] == 405
    # a page fetched by a rebound DNS name (another site's page) names another Host: refused
    assert request(viewer, "/", headers={"Host": "attacker.example:80"})[0] == 421
    for path in ("/", "/split/train", "/split/train/video/v0", "/split/train/find?flag=unreadable", "/clip/v0/clip_f000000",
                 "/media/v0/clip_f000000/audio", *[f"/clip/{k}" for k in DAMAGED]):
        assert request(viewer, path)[0] in (200, 500)
    assert _snapshot(view_build) == before  # the viewer wrote nothing into the build


def test_damaged_clips_are_named_and_the_rest_still_served(viewer, view_build):
    where = damaged(view_build)
    expect = {"d1/clip_f000000": ["d1/clip_f000000.boxes.npy", "not a valid .npy"],
              "d2/clip_f000000": ["differs from the sha256"],
              "d3/clip_f000000": [f"at byte {where['d3/clip_f000000'][1]}", "header checksum"]}
    for key, words in expect.items():
        status, page = text(viewer, f"/clip/{key}")
        assert status == 500 and 'id="error"' in page, key
        error = re.search(r'<div id="error".*?</div>', page, re.S).group(0)
        for w in [where[key][0], *words]:
            assert w in error, (key, w, error)
        assert request(viewer, f"/media/{key}/audio")[0] == 404
        status, page = text(viewer, "/clip/v0/clip_f000000")  # the server keeps serving the others
        assert status == 200 and 'id="clip-data"' in page


def test_clip_page_data_follows_the_annotation(viewer):
    status, page = text(viewer, "/clip/v0/clip_f000030")
    data = json.loads(re.search(r'<script type="application/json" id="clip-data">(.*?)</script>', page, re.S).group(1))
    assert status == 200 and data["fps"] == FPS and data["frames"] == CLIP and data["frame_size"] == [160, 96]
    persons = [p["id"] for p in data["persons"]]
    assert len(data["boxes"]) == len(persons) and all(len(b) == CLIP for b in data["boxes"])
    for p, pid in enumerate(persons):
        for i in range(CLIP):
            want = box("v0", pid, 30 + i)
            assert (data["boxes"][p][i] is None) == (want is None)
            if want is not None:
                assert data["boxes"][p][i] == pytest.approx(list(want))
            assert data["speaking"][p][i] == int(speaking("v0", pid, 30 + i))
    assert data["prev"] == "v0/clip_f000000" and data["next"] == "v1/clip_f000000"


def test_clip_store_reads_a_clip_once_and_keeps_clips_within_its_budget(view_build, monkeypatch):
    from shardgen.tools.view import clips as clip_store

    reads: list[str] = []
    real = clip_store.read_clip
    monkeypatch.setattr(clip_store, "read_clip", lambda index, row, **kw: reads.append(index.clips.key(row)) or real(index, row, **kw))
    catalog = open_catalog(view_build)
    split = catalog.splits["train"]
    rows = {k: split.index.clips.find(k) for k in ("v0/clip_f000000", "v0/clip_f000030", "d1/clip_f000000")}
    one_clip = int(split.index.clips.columns["bytes"][rows["v0/clip_f000000"]])
    store = clip_store.ClipStore(catalog.options, budget=one_clip + one_clip // 2)  # room for one clip, not two
    with ThreadPoolExecutor(8) as pool:  # eight requests at once for one clip: one read
        samples = list(pool.map(lambda _: store.get(split, rows["v0/clip_f000000"]), range(8)))
    assert reads == ["v0/clip_f000000"] and all(s is samples[0] for s in samples)
    store.get(split, rows["v0/clip_f000030"])  # a second clip pushes the first out
    store.get(split, rows["v0/clip_f000030"])
    store.get(split, rows["v0/clip_f000000"])
    assert reads == ["v0/clip_f000000", "v0/clip_f000030", "v0/clip_f000000"]
    for _ in range(2):  # a damaged clip is not kept: each request reads it again (a transient error would clear)
        with pytest.raises(clip_store.ClipUnreadable, match="d1/clip_f000000.boxes.npy"):
            store.get(split, rows["d1/clip_f000000"])
    assert reads[3:] == ["d1/clip_f000000"] * 2


# --------------------------------------------------------------------------- sources and the command line


def test_every_kind_of_source_opens(view_build, view_build_s3, http_server):
    s3_url, s3_opts = view_build_s3
    http = http_server(view_build)
    sources = {
        "build dir": (str(view_build), None, {"train", "val"}),
        "split dir": (str(view_build / "val"), None, {"val"}),
        "manifest": (str(view_build / "train" / "manifest.json"), None, {"train"}),
        "shard": (str(view_build / "val" / "val-000000.tar"), None, {"val"}),
        "s3 build": (s3_url, s3_opts, {"train", "val"}),
        "s3 split": (f"{s3_url}/val", s3_opts, {"val"}),
        "http build": (http.url, None, {"train", "val"}),
    }
    keys = {"train": "v0/clip_f000030", "val": "v2/clip_f000030"}
    stored = read_clips(*sorted(view_build.glob("*/*-000001.tar")), *sorted(view_build.glob("val/*.tar")))
    for name, (src, opts, splits) in sources.items():
        options = TransportOptions(s3_options=opts) if opts else None
        with BackgroundServer(src, options=options) as url:
            status, home = text(url, "/")
            assert status == 200 and set(table_rows(home)) == splits, name
            for split in splits:
                key = keys[split]
                status, _, audio = request(url, f"/media/{key}/audio")
                status2, _, frame = request(url, f"/media/{key}/frame/12.jpg")
                assert status == status2 == 200, name
                assert audio == stored[key]["wav"] and frame == stored[key]["f000013.jpg"], (name, key)
            if "build" in name:
                status, page = text(url, "/split/train/video/v1")
                assert status == 200 and "v1/clip_f000030" in page
                status, page = text(url, "/clip/d1/clip_f000000")
                assert status == 500 and "d1/clip_f000000.boxes.npy" in page, name


def test_cli_binds_loopback_by_default_and_serves_an_s3_build(view_build_s3, s3_server):
    args = _parser().parse_args(["view", "somewhere"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    s3_url, _ = view_build_s3
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": s3_server.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_DEFAULT_REGION": s3_server.region}
    proc = subprocess.Popen([sys.executable, "-m", "shardgen", "view", s3_url, "--port", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"at (http://\S+)", line)
        assert url, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert url.group(1).startswith("http://127.0.0.1:")
        status, page = text(url.group(1), "/clip/v0/clip_f000000")
        assert status == 200 and 'id="frame"' in page and 'id="audio"' in page
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == 0
