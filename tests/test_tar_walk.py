"""The sparse tar walk's shortcuts decide exactly what the plain computations decide.

A face track's read walks every member header of its clip up to the track's crops (hundreds a
clip), so the walk takes shortcuts; each is checked here against what it replaces, on real builds
and on adversarial inputs:

* a header's checksum summed with ``zlib.adler32`` over pieces of at most 256 bytes (against the
  plain sum of its bytes, checksum field as spaces);
* a member name of the clip being read split by a prefix comparison (against the full
  :func:`~shardgen.core.format.split_member_name` on the name alone — its result or its refusal);
* a local clip's selected members read by :func:`~shardgen.core.clip_reader.read_selected` (against
  :func:`~shardgen.core.clip_reader.iter_clips` over the same bytes: the same members, and on every
  hostile shard of tests/hostile.py the same sample or the same error from
  :func:`~shardgen.core.sources.read_clip`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardgen.core.sources as sources
from loaders.reader import track_members
from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams
from shardgen.core.clip_reader import iter_clips, read_selected
from shardgen.core.format import FormatError, split_member_name
from shardgen.core.sample import LABELS, Members, frame_members
from shardgen.core.storage import SparseWindow
from shardgen.core.tario import BLOCK, header_checksum
from shardgen.demo.corpus import make_demo_corpus
from tests import hostile
from tests.hostile import base  # noqa: F401  (the hostile suite's build, a module fixture)


def plain_checksum(hdr: bytes) -> int:
    return sum(hdr[:148]) + 8 * ord(" ") + sum(hdr[156:512])


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=BLOCK, max_size=BLOCK), st.sampled_from([None, 0x00, 0xFF, 0x80]))
def test_header_checksum_is_the_sum_of_the_bytes(hdr, fill):
    if fill is not None:  # the extremes: every byte 0 or 255 (the largest sums), or 128
        hdr = bytes([fill]) * BLOCK
    assert header_checksum(hdr) == plain_checksum(hdr)


def test_header_checksum_on_the_largest_header():
    hdr = b"\xff" * BLOCK
    assert header_checksum(hdr) == plain_checksum(hdr) == 504 * 255 + 256 > 65521  # past adler32's modulus


KEY = "vid_01-a.b/clip_f000120"
PIECES = [KEY, "other/clip_f000001", "vid_01-a.b/clip_f00012", ".", "..", "/", "\\", "\x00", "json", "f000001.jpg",
          "c01.000034.jpg", "clip_f000120", "vid_01-a.b", "", " ", "é", "./", "/../", "wav"]


def outcome(fn):
    try:
        return fn()
    except FormatError as exc:
        return ("refused", str(exc))


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=5))
def test_a_name_split_with_the_clips_key_is_split_as_without(parts):
    name = "".join(parts)
    assert outcome(lambda: split_member_name(name, KEY)) == outcome(lambda: split_member_name(name))


@pytest.mark.parametrize("name, expected", [
    (f"{KEY}.json", (KEY, "json")), (f"{KEY}.c01.000034.jpg", (KEY, "c01.000034.jpg")), (f"{KEY}..json", (KEY, ".json")),
    (f"{KEY}0.json", ("vid_01-a.b/clip_f0001200", "json")),  # another clip's member: not the shortcut's to accept
    ("other/clip_f000001.json", ("other/clip_f000001", "json")),
    (f"{KEY}.", None), (f"{KEY}.a/b", None), (f"{KEY}.a\\b", None), (f"{KEY}.a\x00", None), (f"{KEY}json", None),
    (f"/{KEY}.json", None), (f"{KEY}/x.json", None)])
def test_a_name_split_with_the_clips_key_on_chosen_names(name, expected):
    got = outcome(lambda: split_member_name(name, KEY))
    assert got == outcome(lambda: split_member_name(name))
    assert got == expected if expected is not None else got[0] == "refused"


def test_pread_gives_the_files_bytes_inside_its_window(tmp_path):
    path = tmp_path / "data"
    data = os.urandom(10_000)
    path.write_bytes(data)
    with open(path, "rb", buffering=0) as raw:
        raw.seek(1000)
        window = SparseWindow(raw, 5000)
        assert window.pread(100, 1000) == data[1000:1100] and window.pread(10_000, 5900) == data[5900:6000]
        assert window.pread(10, 6000) == b"" and window.read(7) == data[1000:1007]  # pread leaves the position
        for outside in (999, 6001):
            with pytest.raises(ValueError, match="outside the window"):
                window.pread(1, outside)


# ---------------------------------------------------------------- read_selected against iter_clips


@pytest.fixture(scope="module")
def derived_build(tmp_path_factory) -> Path:
    """A small demo build with every kind of member: frames, derived gray frames and crops; 1 s clips."""
    root = tmp_path_factory.mktemp("tar_walk")
    src = make_demo_corpus(root / "src", seconds=3.0, width=320, height=180, n_train=2, n_val=0, n_test=0)
    build(src, root / "out", ["train"], BuildParams(clip_seconds=1.0, derive=("crops", "small")), workers=2,
          progress=False)
    return root / "out" / "train"


def selections(tracks) -> list[Members]:
    out = [LABELS, Members(), Members(audio=False, labels=False, frames=frame_members([0, 5, 9]))]
    for use_crops in (True, False):
        out.append(track_members([(p, f, n) for p, f, n in tracks], use_crops=use_crops))
        out += [track_members([(p, f, min(n, cut))], use_crops=use_crops) for p, f, n in tracks for cut in (1, 4)]
    return out


def both_ways(source, row: int, members: Members):
    """A clip read by read_selected and by iter_clips, from the same open byte range."""
    ref = source.clips.ref(row)
    shard = source.shards[ref.shard]
    stream = sources.open_clips(shard, ref.offset, ref.bytes, sparse=True)
    try:
        assert isinstance(stream, SparseWindow)
        quick = read_selected(stream.pread, key=ref.key, offset=ref.offset, length=ref.bytes, members=members)
        plain = list(iter_clips(stream, source=shard.url, length=ref.bytes, base_offset=ref.offset, members=members,
                                expect=[(ref.key, ref.offset)]))
    finally:
        stream.close()
    return quick, plain


def test_read_selected_takes_what_iter_clips_takes(derived_build):
    source = sources.resolve(str(derived_build))
    compared = 0
    for row in range(len(source.clips)):
        for members in selections(source.clips.tracks(row)):
            quick, plain = both_ways(source, row, members)
            assert quick is not None and len(plain) == 1, (row, members)
            p = plain[0]
            assert (quick.key, quick.offset, quick.end, quick.count) == (p.key, p.offset, p.end, p.count)
            assert quick.fields == p.fields and quick.fields  # the same members, byte for byte
            quick.sample()
            compared += 1
    assert compared > 50


def read_outcome(source, row: int, members: Members, fast: bool, monkeypatch, taken: list):
    """read_clip's sample fields, or its error's type and message; ``fast=False``: without read_selected."""
    real = sources.read_selected

    def spy(*a, **kw):
        got = real(*a, **kw) if fast else None
        taken.append(got is not None)
        return got

    monkeypatch.setattr(sources, "read_selected", spy)
    try:
        sample = sources.read_clip(source, row, members=members)
        return ("sample", dict(sample.fields))
    except Exception as exc:
        return (type(exc).__name__, str(exc))
    finally:
        monkeypatch.setattr(sources, "read_selected", real)


def hostile_shards(base, tmp_path) -> dict[str, Path]:
    """Every hostile clip and every tar lie (among the labels and among the frames) of the hostile suite."""
    out = {}
    for i, (case, spec) in enumerate(hostile.HOSTILE_CLIPS.items()):
        out[case] = hostile.write_shard_and_manifest(tmp_path / f"c{i}", hostile.hostile_clip(base, spec),
                                                     tracks=base["tracks"])
    for where in ("labels", "frames"):
        for i, case in enumerate(hostile.TAR_LIES + ["other clip inside"]):
            out[f"{case} among the {where}"] = hostile.lying_shard(base, tmp_path / f"l{where}{i}", case, where)
    return out


def test_read_clip_with_and_without_read_selected_on_every_hostile_shard(base, tmp_path, monkeypatch):  # noqa: F811
    taken, refused = [], 0
    for case, manifest in hostile_shards(base, tmp_path).items():
        source = sources.resolve(str(manifest))
        for row in range(len(source.clips)):
            tracks = source.clips.tracks(row)
            for members in [LABELS, Members(), track_members(tracks, use_crops=True),
                            track_members([(p, f, 1) for p, f, _ in tracks], use_crops=False)]:
                quick = read_outcome(source, row, members, True, monkeypatch, taken)
                plain = read_outcome(source, row, members, False, monkeypatch, [])
                assert quick == plain, (case, row, members)
                refused += quick[0] != "sample"
    assert refused > 100 and taken.count(True) > 100 and taken.count(False) > 50  # both paths really ran
