"""A clip whose bytes changed after the build is refused where it is read whole, not trained on.

The clip index records each clip's sha256. Here one byte of one frame's JPEG quantisation table is
changed in a built shard: the JPEG still decodes — to other pixels — and the tar and the sample
format are intact, so nothing but the digest can tell. The loader's whole-clip reads (talknet mode)
and ``read_clip`` must name the shard, the clip and the sha256; ``on_error="skip"`` must lose that
clip only. Sparse reads (frame-budget batches) do not read every byte and cannot check it: that
limit is stated in ``loaders/reader.py`` and checked here too, so a change to it is seen.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import loaders
from loaders import ShardReadError
from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams
from shardgen.core.format import frame_ext
from shardgen.core.sources import read_clip, resolve
from shardgen.core.tario import TarError
from tests.sources import write_source


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> tuple[Path, Path, str]:
    """An intact build and a copy whose clip (the second of the shard) has one frame's JPEG changed."""
    root = tmp_path_factory.mktemp("digests")
    src = write_source(root / "src", {"a": 30, "b": 30}, size=(96, 72))
    build(src, root / "good", ["train"], BuildParams(clip_seconds=0.5, allow_unannotated=True), workers=1, progress=False)
    shutil.copytree(root / "good", root / "bad")
    [shard] = sorted((root / "bad" / "train").glob("*.tar"))
    with tarfile.open(shard) as tf:  # the test locates the member with tarfile; the package never parses with it
        members = tf.getmembers()
    key = sorted({m.name.split(".")[0] for m in members})[1]
    member = next(m for m in members if m.name == f"{key}.{frame_ext(2)}")
    data = bytearray(shard.read_bytes())
    jpeg = bytes(data[member.offset_data:member.offset_data + member.size])
    dqt = jpeg.index(b"\xff\xdb") + 5 + 8  # a quantisation value of the first table (marker, length, Pq/Tq)
    data[member.offset_data + dqt] = data[member.offset_data + dqt] % 200 + 20
    shard.write_bytes(bytes(data))
    changed = bytes(data[member.offset_data:member.offset_data + member.size])
    before, after = (np.asarray(Image.open(io.BytesIO(b)).convert("L"), dtype=np.int16) for b in (jpeg, changed))
    assert before.shape == after.shape and np.abs(before - after).max() > 0  # still decodes, to other pixels
    return root / "good" / "train", root / "bad" / "train", key


def epoch(split: Path, **kw) -> tuple[list[tuple[str, np.ndarray]], dict]:
    loader = loaders.make_loader(str(split), mode="talknet", batch_size=1, shuffle=False, with_meta=True,
                                 allow_unlabelled=True, **kw)
    got = [(meta[0]["key"], faces[0].numpy()) for faces, _, _, meta in loader]
    return got, dict(loader.stats)


def test_the_loader_refuses_a_changed_clip_and_skip_loses_only_it(builds):
    good, bad, key = builds
    reference, _ = epoch(good)
    assert key in [k for k, _ in reference]
    with pytest.raises(ShardReadError) as err:
        epoch(bad)
    message = str(err.value)
    assert "train-000000.tar" in message and key in message and "differs from the sha256 its clip index records" in message
    got, stats = epoch(bad, on_error="skip")
    assert stats["skipped"] == 1 and stats["filler_batches"] == 1 and len(got) == len(reference)
    for (k, f), (k2, f2) in zip(got, reference):  # every batch in its place; the lost clip's is a filler
        if k2 == key:
            assert k != key
        else:
            assert k == k2
            np.testing.assert_array_equal(f, f2, err_msg=k)


def test_read_clip_refuses_a_changed_clip_when_it_reads_it_whole(builds):
    good, bad, key = builds
    assert read_clip(resolve(str(good)), key).key == key
    with pytest.raises(TarError, match=rf"clip {key} \(bytes \d+-\d+\) differs from the sha256 its clip index records"):
        read_clip(resolve(str(bad)), key)


def test_a_sparse_read_does_not_check_the_digest(builds):
    """The stated limit: a sparse read passes over most bytes, so the changed JPEG is read as it is."""
    from shardgen.core.sample import Members, frame_members

    good, bad, key = builds
    sparse = Members(frames=frame_members([1]))
    changed, intact = (read_clip(resolve(str(s)), key, members=sparse).frame(1) for s in (bad, good))
    assert changed != intact


def _damaged_copy(good: Path, tmp_path: Path, damage) -> tuple[Path, list]:
    """A copy of the build whose shard bytes ``damage(bytearray, members)`` changes (index and manifest kept)."""
    bad = tmp_path / "train"
    shutil.copytree(good, bad)
    [shard] = sorted(bad.glob("*.tar"))
    with tarfile.open(shard) as tf:
        members = tf.getmembers()
    data = bytearray(shard.read_bytes())
    shard.write_bytes(bytes(damage(data, members)))
    return bad, members


def test_an_empty_header_inside_a_clip_is_a_named_error_that_costs_that_clip_only(builds, tmp_path):
    """A zeroed tar header in the middle of a clip used to read as the end of the archive: the clip was handed
    over short (and the loader crashed checking its digest) and the rest of the window went missing."""
    good, _, key = builds

    def zero_a_header(data, members):
        m = next(m for m in members if m.name == f"{key}.{frame_ext(3)}")
        data[m.offset:m.offset + 512] = bytes(512)
        return data

    bad, _ = _damaged_copy(good, tmp_path, zero_a_header)
    reference, _ = epoch(good)
    with pytest.raises(ShardReadError, match=rf"train-000000\.tar.*empty \(end-of-archive\) header inside the clips"):
        epoch(bad)
    got, stats = epoch(bad, on_error="skip")
    assert stats["skipped"] == 1 and stats["filler_batches"] == 1 and len(got) == len(reference)
    for (k, f), (k2, f2) in zip(got, reference):  # the rest of the window is read: every other batch in its place
        if k2 != key:
            assert k == k2
            np.testing.assert_array_equal(f, f2, err_msg=k)
    with pytest.raises(TarError, match="empty \\(end-of-archive\\) header"):
        read_clip(resolve(str(bad)), key)


def test_a_clip_shorter_than_its_index_says_is_named(builds, tmp_path):
    """A member cut out of the first clip, the index left as it was: the clip ends before its recorded range."""
    good, _, _ = builds

    def cut_a_member(data, members):
        first = members[0].name.split(".")[0]
        m = [m for m in members if m.name.startswith(first + ".")][-1]
        end = m.offset_data + (m.size + 511) // 512 * 512
        return data[:m.offset] + data[end:]

    bad, members = _damaged_copy(good, tmp_path, cut_a_member)
    first = members[0].name.split(".")[0]
    with pytest.raises(ShardReadError, match=rf"clip {first} ends before the \d+ bytes its clip index records"):
        epoch(bad)
