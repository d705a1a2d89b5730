"""The loader and ``shardgen verify`` against a hostile ``clips.idx``.

The clip index is read before any shard, memory-mapped, and its numbers become seeks and reads,
so each of its claims is tried here as a lie: sizes that overflow or wrap, extents that are not
integers, byte ranges past the shard, a shard beyond the manifest's list, a video id that could
escape, a face track past its clip. The manifest is kept consistent with the altered file (size
and sha256), so only the index's content is hostile. Every case must be a ``FormatError`` naming
``clips.idx`` from the loader, and a problem naming it from ``verify`` — never a traceback, a read
out of bounds or a hang. (A cut, truncated or missing index: ``test_verify_and_inspect``.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import loaders
from shardgen.build.pipeline import build
from shardgen.core.clip_index import MAGIC, ClipIndex, encode_index, open_index
from shardgen.core.format import FormatError
from shardgen.build.plan import BuildParams
from shardgen.tools.verify import verify_manifest
from tests.sources import ego4d_json, write_source


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """One video of 90 frames with a face track on every frame: 6 clips of 15 frames in one shard."""
    root = tmp_path_factory.mktemp("hostile-index")
    ann = ego4d_json({"v": {"1": [(f, 5, 5, 20, 20) for f in range(90)]}}, {"v": {"1": [(3, 20), (40, 70)]}})
    src = write_source(root / "src", {"v": 90}, annotations=ann)
    build(src, root / "out", ["train"], BuildParams(clip_seconds=0.5), progress=False)
    return root / "out" / "train"


def _rewrite_index(split: Path, *, header=None, columns=None) -> None:
    """Rewrite ``split/clips.idx``: ``header(h)`` edits its JSON header, ``columns(c)`` its columns (then
    re-encoded); the manifest's size and sha256 are updated, so only the index's own content is hostile."""
    path = split / "clips.idx"
    if columns is not None:
        cols = {k: np.array(v) for k, v in open_index(path).columns.items()}
        columns(cols)
        path.write_bytes(encode_index(ClipIndex(cols)))
    if header is not None:
        data = path.read_bytes()
        (length,) = struct.unpack("<Q", data[len(MAGIC):len(MAGIC) + 8])
        h = json.loads(data[len(MAGIC) + 8:len(MAGIC) + 8 + length])
        header(h)
        head = json.dumps(h, sort_keys=True).encode()  # column offsets count from the header's end: data moves along
        path.write_bytes(MAGIC + struct.pack("<Q", len(head)) + head + data[len(MAGIC) + 8 + length:])
    m = json.loads((split / "manifest.json").read_text())
    data = path.read_bytes()
    m["index"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (split / "manifest.json").write_text(json.dumps(m))


def _column(h: dict, name: str) -> list:
    return next(c for c in h["columns"] if c[0] == name)


HOSTILE_INDEXES = {
    "huge shape": dict(header=lambda h: _column(h, "shard").__setitem__(2, [10 ** 30])),
    "float offset": dict(header=lambda h: _column(h, "offset").__setitem__(3, 1.5)),
    "negative offset": dict(header=lambda h: _column(h, "bytes").__setitem__(3, -64)),
    "sizes that wrap": dict(columns=lambda c: c["bytes"].__setitem__(0, 2 ** 64 - 1)),
    "range past the shard": dict(columns=lambda c: c["offset"].__setitem__(-1, c["offset"][-1] + 10 ** 9)),
    "shard beyond the list": dict(columns=lambda c: c["shard"].__setitem__(-1, 7)),
    "video id with a slash": dict(columns=lambda c: c["video_names"].__setitem__(0, ord("/"))),
    "track past its clip": dict(columns=lambda c: c["track_frames"].__setitem__(0, 10 ** 6)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_INDEXES))
def test_a_hostile_clip_index_is_refused_naming_it(split, tmp_path, case):
    """Whatever a clip index claims — sizes that overflow, ranges past the shard, ids that escape — the loader
    refuses it with a FormatError naming clips.idx before reading a byte of a shard, and verify reports it
    as a problem (never a traceback)."""
    d = tmp_path / "hostile-index"
    shutil.copytree(split, d)
    _rewrite_index(d, **HOSTILE_INDEXES[case])
    with pytest.raises(FormatError, match=r"clips\.idx"):
        loaders.make_loader(d)
    res = verify_manifest(d / "manifest.json", decode=False)
    assert not res.ok and any("clips.idx" in p for p in res.problems), res.problems
