"""Tiny source corpora written by the tests themselves (fast, and each test may damage its own)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
REALDATA = SHARED / "realdata" / "hamilton"


def tiny_jpeg(i: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(i)
    arr = (rng.integers(0, 255, (size[1], size[0], 3))).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def write_source(
    root: Path,
    videos: dict[str, int],
    *,
    splits: dict[str, list[str]] | None = None,
    fps: float = 30.0,
    sample_rate: int = 16000,
    channels: int = 1,
    subtype: str = "PCM_16",
    wav_seconds: dict[str, float] | None = None,
    annotations: dict | None = None,
    size=(64, 48),
) -> Path:
    """Write videos {id: n_frames} with random-noise frames and a ramp-coded wav.

    The wav's sample k (at 16 kHz mono) is ``k % 32768``-ish so a test can tell exactly which
    samples a clip got. ``annotations`` is the Ego4D AV dict to write as json/av_<split>.json.
    """
    root = Path(root)
    splits = splits or {"train": list(videos)}
    (root / "split").mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (root / "split" / f"{split}.list").write_text("".join(f"{v}\n" for v in ids))
    for vid, n in videos.items():
        d = root / "video_imgs" / vid
        d.mkdir(parents=True, exist_ok=True)
        for f in range(n):
            (d / f"img_{f + 1:05d}.jpg").write_bytes(tiny_jpeg(f, size))
        secs = (wav_seconds or {}).get(vid, n / fps)
        m = int(round(secs * sample_rate))
        ramp = (np.arange(m) % 30000).astype(np.int16)
        data = np.stack([ramp] * channels, axis=1) if channels > 1 else ramp
        (root / "wav").mkdir(exist_ok=True)
        sf.write(root / "wav" / f"{vid}.wav", data, sample_rate, subtype=subtype)
    if annotations is not None:
        (root / "json").mkdir(exist_ok=True)
        for split in splits:
            (root / "json" / f"av_{split}.json").write_text(json.dumps(annotations))
    return root


def ego4d_json(tracks: dict[str, dict[str, list[tuple[int, float, float, float, float]]]],
               voice: dict[str, dict[str, list[tuple[int, int]]]]) -> dict:
    """{video: {person: [(frame,x,y,w,h)...]}}, {video: {person: [(s,e)...]}} → Ego4D AV dict."""
    videos = []
    for vid in sorted(set(tracks) | set(voice)):
        persons = []
        for pid in sorted(set(tracks.get(vid, {})) | set(voice.get(vid, {}))):
            pts = tracks.get(vid, {}).get(pid, [])
            persons.append({
                "person_id": pid, "camera_wearer": not pts,
                "tracking_paths": [{"track_id": f"{pid}-t", "track": [
                    {"frame": f, "x": x, "y": y, "width": w, "height": h} for f, x, y, w, h in pts]}] if pts else [],
                "voice_segments": [{"start_frame": s, "end_frame": e, "start_time": s / 30, "end_time": e / 30,
                                    "person": pid} for s, e in voice.get(vid, {}).get(pid, [])],
            })
        videos.append({"video_uid": vid, "clips": [{"clip_uid": vid, "video_uid": vid, "persons": persons}]})
    return {"videos": videos}


def read_clips(*shards: Path) -> dict[str, dict[str, bytes]]:
    """An independent reader for tests: Python's tarfile, grouping members by webdataset's key rule."""
    import tarfile

    out: dict[str, dict[str, bytes]] = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for m in tar:
                d, base = m.name.rsplit("/", 1)
                stem, ext = base.split(".", 1)
                out.setdefault(f"{d}/{stem}", {})[ext] = tar.extractfile(m).read()
    return out


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def index_clips(split: Path | str) -> list[dict]:
    """A built split's clip rows, read from its ``clips.idx``, as the dicts a version-1 manifest listed
    inline (``key, shard, offset, bytes, sha256, members, video_id, start_frame, n_frames, pad_frames,
    tracks``). ``split``: the split directory or its manifest.json (local)."""
    from shardgen.core.manifest import read_index, read_manifest

    url = str(Path(split) / "manifest.json") if Path(split).is_dir() else str(split)
    index = read_index(read_manifest(url), url)
    c = index.columns
    names = c["video_names"].tobytes().decode("ascii")
    videos = [names[int(a):int(b)] for a, b in zip(c["video_offsets"][:-1], c["video_offsets"][1:])]
    ts = c["track_start"]
    rows = []
    for i in range(len(index)):
        video, start = videos[int(c["video"][i])], int(c["start_frame"][i])
        tracks = range(int(ts[i]), int(ts[i + 1]))
        rows.append({"key": f"{video}/clip_f{start:06d}", "shard": int(c["shard"][i]), "offset": int(c["offset"][i]),
                     "bytes": int(c["bytes"][i]), "sha256": c["sha256"][i].tobytes().hex(),
                     "members": int(c["members"][i]), "video_id": video, "start_frame": start,
                     "n_frames": int(c["n_frames"][i]), "pad_frames": int(c["pad_frames"][i]),
                     "tracks": [[int(c["track_person"][t]), int(c["track_first"][t]), int(c["track_frames"][t])]
                                for t in tracks]})
    return rows


def v1_manifest(split: Path | str) -> bytes:
    """The version-1 ``manifest.json`` (clips inline, no clip index) that avshards before the clip index
    wrote for the same build: a fresh build's manifest and ``clips.idx`` folded back together."""
    path = Path(split) / "manifest.json" if Path(split).is_dir() else Path(split)
    m = json.loads(path.read_text())
    doc = {"schema": m["schema"], "schema_version": 1, "split": m["split"], "params": m["params"],
           "totals": m["totals"], "shards": m["shards"], "clips": index_clips(path)}
    return (json.dumps(doc, indent=1) + "\n").encode()
