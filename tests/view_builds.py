"""The builds the viewer tests watch: a small source whose every frame differs, labels known here, three damaged clips.

The frames are random noise seeded by the source frame number (``tests.sources.tiny_jpeg``), so
frame ``f`` decoded is unlike frames ``f - 1`` and ``f + 1``: a picture shows exactly which frame it
is. The labels come from :data:`TRACKS` and :data:`VOICE` below, the reference the tests check the
pages against (not the build's own arrays). After the build, three clips are damaged in place:

* ``d1/clip_f000000``: its ``boxes.npy`` no longer starts with the .npy magic (a format error
  naming that member);
* ``d2/clip_f000000``: one byte of a frame's JPEG data flipped (the tar and the format still
  parse; the bytes differ from the clip index's sha256);
* ``d3/clip_f000000``: one byte of its ``.json`` member's tar header flipped (the tar reader
  names the shard and the byte).
"""

from __future__ import annotations

import functools
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shardgen.build.pipeline import build
from shardgen.core.storage import S3Store
from shardgen.build.plan import BuildParams
from tests.sources import ego4d_json, tiny_jpeg, write_source

FPS = 30
SIZE = (160, 96)  # width, height of every frame
#: {video: {person: [(frame, x, y, w, h)]}}: face boxes in source pixels
TRACKS = {
    "v0": {"1": [(f, 10.5, 8.25, 48.0, 40.0) for f in range(0, 60)],
           "2": [(f, 96.0, 30.0, 40.0, 44.0) for f in range(30, 60)]},
    "v1": {"4": [(f, 60.0, 20.0, 36.0, 36.0) for f in range(30, 60)]},
    "v2": {"5": [(f, 20.0, 20.0, 30.0, 30.0) for f in range(0, 60)]},
    **{d: {"6": [(f, 30.0, 10.0, 40.0, 40.0) for f in range(0, 30)]} for d in ("d1", "d2", "d3")},
}
#: {video: {person: [(first, last)]}}: voice segments, inclusive frame ranges ("3" has no box: the camera wearer)
VOICE = {"v0": {"1": [(10, 40)]}, "v1": {"3": [(5, 20)]}, "v2": {"5": [(0, 59)]}}
VIDEOS = {"v0": 60, "v1": 60, "v2": 60, "d1": 30, "d2": 30, "d3": 30}
SPLITS = {"train": ["v0", "v1", "d1", "d2", "d3"], "val": ["v2"]}
DAMAGED = {"d1/clip_f000000": "boxes.npy", "d2/clip_f000000": "f000005.jpg", "d3/clip_f000000": "json"}


def speaking(video: str, person: str, frame: int) -> bool:
    """The reference speaking label: a voice segment of that person covers the frame."""
    return any(a <= frame <= b for a, b in VOICE.get(video, {}).get(person, []))


def box(video: str, person: str, frame: int) -> tuple[float, float, float, float] | None:
    return next((tuple(b[1:]) for b in TRACKS.get(video, {}).get(person, []) if b[0] == frame), None)


@functools.lru_cache(maxsize=None)
def source_frame(frame: int) -> np.ndarray:
    """Source frame ``frame`` (0-based) as written into the source, decoded by Pillow: ``uint8 [H, W, 3]``."""
    rgb = np.asarray(Image.open(io.BytesIO(tiny_jpeg(frame, SIZE))).convert("RGB"))
    rgb.setflags(write=False)
    return rgb


def write_view_source(root: Path) -> Path:
    voice = {v: dict(p) for v, p in VOICE.items()}
    return write_source(root, VIDEOS, splits=SPLITS, annotations=ego4d_json(TRACKS, voice), size=SIZE,
                        wav_seconds={"v2": 1.5})  # v2's second clip: its audio's last half second is zeros


def member_span(shard: Path, name: str) -> tuple[int, int, int]:
    """(header offset, data offset, size) of the member ``name`` of a shard (Python's tarfile: independent)."""
    with tarfile.open(shard) as tar:
        for m in tar:
            if m.name == name:
                return m.offset, m.offset_data, m.size
    raise AssertionError(f"{shard} has no member {name}")


def shard_of(split_dir: Path, name: str) -> Path:
    for shard in sorted(split_dir.glob("*.tar")):
        with tarfile.open(shard) as tar:
            if name in tar.getnames():
                return shard
    raise AssertionError(f"no shard of {split_dir} holds {name}")


def damage(split_dir: Path) -> dict[str, tuple[str, int]]:
    """Damage the three clips of :data:`DAMAGED` in place; returns the shard holding each and the offset of
    the damaged member's header (found before any damage, while Python's tarfile can still read the shard)."""
    where = {key: (shard_of(split_dir, f"{key}.{ext}"), member_span(shard_of(split_dir, f"{key}.{ext}"), f"{key}.{ext}"))
             for key, ext in DAMAGED.items()}
    for key, ext in DAMAGED.items():
        shard, (header, data, size) = where[key]
        with open(shard, "r+b") as fh:
            if ext == "boxes.npy":
                fh.seek(data)
                fh.write(b"NOTNPY")
            elif ext == "json":
                fh.seek(header + 20)  # inside the name field: the header checksum no longer matches
                fh.write(b"#")
            else:
                fh.seek(data + size // 2)
                byte = fh.read(1)
                fh.seek(data + size // 2)
                fh.write(bytes([byte[0] ^ 0xFF]))
    return {key: (str(shard), span[0]) for key, (shard, span) in where.items()}


def damaged(build: Path) -> dict[str, tuple[str, int]]:
    """What :func:`damage` did to ``build`` (recorded beside it by the fixture)."""
    return {k: tuple(v) for k, v in json.loads((build.parent / "damaged.json").read_text()).items()}


@pytest.fixture(scope="module")
def view_build(tmp_path_factory) -> Path:
    """The build (train: v0, v1 and the three damaged clips; val: v2) in 1 s clips, 3 clips a shard."""
    root = tmp_path_factory.mktemp("view")
    src = write_view_source(root / "src")
    out = root / "out"
    build(src, out, ["train", "val"], BuildParams(clip_seconds=1.0, shard_clips=3), workers=1, progress=False)
    (root / "damaged.json").write_text(json.dumps(damage(out / "train")))
    return out


@pytest.fixture(scope="module")
def view_build_s3(view_build, s3_server) -> tuple[str, object]:
    """The same build's files in a bucket (``s3://bucket/build``), and the S3 options that reach it."""
    bucket = s3_server.new_bucket("view")
    store = S3Store(f"s3://{bucket}/build", s3_server.options())
    files = sorted(p for p in view_build.rglob("*") if p.is_file())
    for p in sorted(files, key=lambda p: p.name == "manifest.json"):  # manifests last, as the builder puts them
        store.put_file(p, p.relative_to(view_build).as_posix())
    return f"s3://{bucket}/build", s3_server.options()


@pytest.fixture(scope="module")
def gray_build(tmp_path_factory) -> Path:
    """v0 alone, built with the 112x112 gray frames and crops and without the original JPEGs."""
    root = tmp_path_factory.mktemp("view_gray")
    src = write_view_source(root / "src")
    shutil.rmtree(src / "video_imgs" / "v1")
    (src / "split" / "train.list").write_text("v0\n")
    (src / "split" / "val.list").write_text("")
    out = root / "out"
    build(src, out, ["train"], BuildParams(clip_seconds=1.0, derive=("crops", "small"), originals=False),
          workers=1, progress=False)
    return out
