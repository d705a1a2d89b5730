"""The sparse tar walk's shortcuts decide exactly what the plain computations decide.

A face track's read walks every member header of its clip up to the track's crops (hundreds a
clip), so the walk takes three shortcuts; each is checked here against the computation it replaces,
written out independently, on adversarial inputs:

* a header's checksum summed with ``zlib.adler32`` over pieces of at most 256 bytes (the plain sum
  of its bytes, checksum field as spaces);
* a member name of the clip being read split by a prefix comparison (the full
  :func:`~shardgen.core.format.split_member_name` on the name alone — its result or its refusal);
* the local file read ahead over runs of small members (the same bytes as the unbuffered file, for
  any sequence of reads and skips).

The hostile-shard suites (tests/test_hostile_shards.py, tests/test_hostile_index.py) run every
damaged and lying shard through the walk as it now is.
"""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardgen.core.format import FormatError, split_member_name
from shardgen.core.storage import SparseWindow, Window
from shardgen.core.tario import BLOCK, header_checksum


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


OPS = st.lists(st.tuples(st.sampled_from(["read", "skip"]), st.integers(0, 70_000)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPS, st.integers(0, 3000), st.integers(1, 200_000))
def test_the_read_ahead_window_gives_the_files_bytes(tmp_path_factory, ops, start, length):
    path = tmp_path_factory.mktemp("sparse") / "data"
    data = os.urandom(250_000)
    path.write_bytes(data)
    end = min(len(data), start + length)
    with open(path, "rb", buffering=0) as raw_a, open(path, "rb", buffering=0) as raw_b:
        raw_a.seek(start)
        raw_b.seek(start)
        fast, plain = SparseWindow(raw_a, length, ahead=4096, small=2048), Window(raw_b, length, local=True)
        pos = start
        for op, n in ops:
            if op == "read":
                got = fast.read(n)
                assert got == plain.read(n) == data[pos:min(pos + n, end)]
                pos += len(got)
            else:
                done = fast.skip(n)
                assert done == plain.skip(n) == min(n, end - pos)
                pos += done
        assert fast.read() == plain.read() == data[pos:end]


def test_the_read_ahead_window_reads_ahead_only_over_small_requests(tmp_path):
    """Over small members it takes few system calls; over large skips it reads nothing it skips."""
    path = tmp_path / "data"
    path.write_bytes(os.urandom(1 << 20))

    class Counting(io.FileIO):
        reads: list = []

        def read(self, n=-1):
            out = super().read(n)
            Counting.reads.append(len(out))
            return out

    with Counting(path, "rb") as raw:
        window = SparseWindow(raw, 1 << 20, ahead=64 << 10, small=16 << 10)
        for _ in range(100):  # headers and skips of ~3 KB members: a 64 KB read every ~18 members
            assert len(window.read(BLOCK)) == BLOCK
            assert window.skip(3072) == 3072
        assert len(Counting.reads) <= 100 * (BLOCK + 3072) // (64 << 10) + 2
        Counting.reads.clear()
        for _ in range(2):  # headers and skips of 200 KB frames: a header read each, nothing else
            window.read(BLOCK)
            window.skip(200_000)
        window.read(BLOCK)
        assert Counting.reads[-2:] == [BLOCK, BLOCK] and max(Counting.reads) <= 64 << 10
