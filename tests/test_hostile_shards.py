"""The loader against hostile and damaged shards (the cases: :mod:`tests.hostile`).

The promise under test, for every case:

* default ``on_error="raise"``: a :class:`loaders.ShardReadError` whose message names the shard
  (and the clip, when one is known) — never an exception from deep inside numpy, PIL or json;
* ``on_error="skip"``: the damaged clip is skipped and counted in ``loader.stats["skipped"]``,
  every intact clip is still yielded, and every rank/worker still gets its full batch count;
* nothing is ever unpickled, and no declared size makes the reader allocate or read more than
  the bytes that are really there (``max_member_bytes`` caps a member).
"""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import loaders
from loaders import ShardReadError
from shardgen.core.tario import TarError, iter_tar
from tests.hostile import (HOSTILE_CLIPS, Endless, base, header, hostile_clip, lying_shard, member,  # noqa: F401 (base: a fixture)
                           npy_bytes, with_clip, write_shard_and_manifest)

ROOT = Path(__file__).resolve().parents[1]
MODES = ("talknet", "asd-tracks", "raw", "qwen-omni")


def run(source, on_error="raise", mode="talknet", num_workers=0, **kw):
    """Iterate one epoch; returns (keys in order, stats, batches, len(loader))."""
    ld = loaders.make_loader(source, mode=mode, shuffle=False, on_error=on_error, with_meta=mode != "raw",
                             num_workers=num_workers, allow_unlabelled=True, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the end-of-epoch "N clips skipped" warning
        batches = list(ld)
    keys = [b[0]["key"] if mode == "raw" else b["meta"][0]["key"] if mode == "qwen-omni" else b[3][0]["key"]
            for b in batches]
    return keys, ld.stats, len(batches), len(ld)



# ----------------------------------------------------------------------------- truncation


CUTS = {
    # where the shard is cut, relative to clip 3 (of 6); every cut loses clips 3, 4 and 5
    "inside a member's data": lambda c: c["offset"] + 512 * 6 + 700,
    "inside the clip's first member": lambda c: c["offset"] + 600,  # clip 2 ends only when clip 3's first member is read
    "at a clip boundary": lambda c: c["offset"],
}


@pytest.fixture
def truncated(base, tmp_path, request):
    d = tmp_path / "t"
    shutil.copytree(base["out"], d)
    shard = d / base["manifest"]["shards"][0]["name"]
    cut = CUTS[request.param](base["manifest"]["clips"][3])
    shard.write_bytes(shard.read_bytes()[:cut])
    return d, shard


@pytest.mark.parametrize("truncated", list(CUTS), indirect=True)
def test_truncated_shard_raises_naming_it_and_skip_yields_every_intact_clip(base, truncated):
    d, shard = truncated
    keys = [c["key"] for c in base["manifest"]["clips"]]
    with pytest.raises(ShardReadError) as err:
        run(d)
    assert str(shard) in str(err.value) and keys[3] in str(err.value)
    assert "archive ends" in str(err.value)

    got, stats, n_batches, n_len = run(d, on_error="skip")
    assert got[:3] == keys[:3]  # every clip before the damage, in order
    assert stats["items"] == 3 and stats["skipped"] == 3
    assert n_batches == n_len == 6 and stats["filler_batches"] == 3  # the step count stays what len() promised

    # a shard named without its manifest: the cut is found while indexing, naming the shard
    lone = d.parent / "lone"
    lone.mkdir()
    shutil.copy(shard, lone / shard.name)
    with pytest.raises(ValueError, match=rf"{lone / shard.name}: cannot index shard \(at byte \d+: archive ends (inside a member|without its end-of-archive marker)"):
        loaders.make_loader(str(lone / shard.name))

    from shardgen.tools.verify import verify_manifest

    res = verify_manifest(d / "manifest.json", decode=False)
    assert any(shard.name in p and "manifest says" in p for p in res.problems), res.problems


def test_truncated_shard_skip_counts_across_workers(base, tmp_path):
    """Two workers read clips 0-2 and 3-5; the cut is in clip 4. The counters are shared across processes.
    A reader whose whole run is damaged has nothing to fill its batches with: a clear error naming the
    first failure, never a short epoch (that would hang DDP)."""
    d = tmp_path / "t"
    shutil.copytree(base["out"], d)
    shard = d / base["manifest"]["shards"][0]["name"]
    clips = base["manifest"]["clips"]
    data = shard.read_bytes()
    shard.write_bytes(data[:clips[4]["offset"] + 100])
    keys, stats, n_batches, n_len = run(d, on_error="skip", num_workers=2)
    assert set(keys) == {c["key"] for c in clips[:4]}
    assert stats["items"] == 4 and stats["skipped"] == 2 and n_batches == n_len == 6
    shard.write_bytes(data[:clips[3]["offset"]])
    with pytest.raises(ShardReadError, match=rf"every clip of this reader's run failed.*first: {shard}: .*clip {clips[3]['key']}"):
        run(d, on_error="skip", num_workers=2)


def test_damage_in_the_middle_costs_only_that_clip(base, tmp_path):
    """The reader resumes at the next clip's manifest offset: one bad clip is one skip."""
    clips = base["clips"]
    bad = (clips[2][0], [("../../../../tmp/evil.json" if e == "json" else e, d) for e, d in clips[2][1]])
    mpath = write_shard_and_manifest(tmp_path / "h", clips[:2] + [bad] + clips[3:], tracks=base["tracks"])
    keys, stats, _, _ = run(mpath, on_error="skip")
    good = [c[0] for c in clips[:2] + clips[3:]]
    # the lost clip's batch is a filler in its place (repeating the last good clip), so batch k still
    # covers the k-th planned clips and a resume after k batches stays exact
    assert keys == good[:2] + [good[1]] + good[2:]
    assert stats["items"] == 5 and stats["skipped"] == 1 and stats["filler_batches"] == 1
    with pytest.raises(ShardReadError, match=r"h-000000\.tar.*unsafe member name '\.\./\.\./\.\./\.\./tmp/evil\.json'"):
        run(mpath)


# ----------------------------------------------------------------------------- names, sizes, tar structure


@pytest.mark.parametrize("name", [
    "../../etc/passwd.json", "/abs/clip_f000000.json", "v/../clip_f000000.json", "v\\clip_f000000.json",
    "v/clip_f000000", "a/b/clip_f000000.json", "./v/clip_f000000.json", "v/notaclip.json"])
def test_member_names_that_could_escape_are_refused(base, tmp_path, name):
    clips = with_clip(base, 1)
    key, members = clips[1]
    clips[1] = (key, [(name if e == "json" else e, d) for e, d in members])
    mpath = write_shard_and_manifest(tmp_path / "h", clips, tracks=base["tracks"])
    with pytest.raises(ShardReadError, match=r"h-000000\.tar at byte \d+: .*(unsafe member name|no extension|not a clip key)"):
        run(mpath)
    keys, stats, _, _ = run(mpath, on_error="skip")
    assert keys[0] == clips[0][0] and clips[2][0] in keys and stats["skipped"] == 1 and stats["items"] == 2
    # the same shard named directly (no manifest): refused while indexing, naming the shard
    (tmp_path / "h" / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"h-000000\.tar: cannot index shard"):
        loaders.make_loader(str(tmp_path / "h" / "h-000000.tar"))


@pytest.mark.parametrize("kind,size_field,limit", [
    (b"0", b"\x80" + (1 << 40).to_bytes(11, "big"), "268435456"),  # 1 TiB, GNU base-256
    (b"0", b"77777777777\0", "268435456"),  # 8 GiB - 1, the largest octal size
    (b"x", f"{100 << 20:011o}\0".encode(), "1048576"),  # a 100 MiB PAX header
    (b"L", f"{10 << 20:011o}\0".encode(), "1048576"),  # a 10 MiB GNU long name
])
def test_huge_declared_sizes_are_refused_before_reading(kind, size_field, limit):
    stream = Endless(header(b"v/clip_f000000.json", 0, kind=kind, size_field=size_field))
    with pytest.raises(TarError, match=rf"shard\.tar at byte 0: member declares \d+ bytes, over the {limit}-byte limit"):
        list(iter_tar(stream, source="shard.tar"))
    assert stream.pos == 512  # the header, not one byte of the declared data


def test_huge_declared_size_through_the_loader(base, tmp_path):
    clips = with_clip(base, 1)
    key, members = clips[1]
    lie = b"".join(member(f"{key}.{e}", d) if e != "wav" else
                   header(f"{key}.wav".encode(), 0, size_field=b"\x80" + (1 << 40).to_bytes(11, "big")) + d
                   + b"\0" * (-len(d) % 512) for e, d in members)
    mpath = write_shard_and_manifest(tmp_path / "h", clips, tracks=base["tracks"], raw_members={1: lie})
    with pytest.raises(ShardReadError, match=r"h-000000\.tar at byte \d+: member declares 1099511627776 bytes, over the"):
        run(mpath)
    keys, stats, _, _ = run(mpath, on_error="skip")
    # the lost clip's batch is a filler in its place (repeating clip 0), so the batches keep their positions
    assert stats["skipped"] == 1 and stats["items"] == 2 and keys == [clips[0][0], clips[0][0], clips[2][0]]


def test_memory_stays_bounded_on_hostile_sizes(tmp_path):
    """In a fresh interpreter: headers declaring terabytes (tar members, .npy shapes), oversized and
    deeply nested metadata — every one refused, and the peak RSS grows by less than 64 MB."""
    script = r"""
import io, json, resource, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
import numpy as np
from shardgen.core.codecs import decode_npy
from shardgen.core.format import FormatError, decode_metadata
from shardgen.core.tario import TarError, iter_tar
from tests.hostile import Endless, header, npy_header_only
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refused = 0
for descr, shape in (("|u1", (1 << 40,)), ("<f4", (1 << 20, 1 << 20, 4)), ("<f8", (2_000_000_000,))):
    try:
        decode_npy(npy_header_only(descr, shape), name="x.npy", dtype="uint8", ndim=1)
    except FormatError:
        refused += 1
for size_field in (b"\x80" + (1 << 50).to_bytes(11, "big"), b"77777777777\0"):
    try:
        list(iter_tar(Endless(header(b"v/clip_f000000.json", 0, size_field=size_field))))
    except TarError:
        refused += 1
for data in (b" " * (17 << 20), b"[" * 200000 + b"]" * 200000):
    try:
        decode_metadata(data)
    except FormatError:
        refused += 1
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"refused": refused, "grew_kb": after - before}))
"""
    out = subprocess.run([sys.executable, "-c", script, str(ROOT), str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["refused"] == 7
    assert res["grew_kb"] < 64 * 1024 - 17 * 1024 - 2 * 1024, res  # less the 17 MB + 0.4 MB inputs themselves


@pytest.mark.parametrize("case,at", [("checksum", 2), ("symlink", 1), ("hardlink", 1), ("device", 1), ("duplicate", 1),
                                     ("split clip", 3), ("other clip inside", None), ("garbage header", 1)])
def test_tar_structure_lies(base, tmp_path, case, at):
    mpath = lying_shard(base, tmp_path / "h", case, at)
    with pytest.raises(ShardReadError, match=r"h-000000\.tar"):
        run(mpath)
    _, stats, _, _ = run(mpath, on_error="skip")
    assert stats["skipped"] == 1 and stats["items"] == 2


# ----------------------------------------------------------------------------- metadata and members


def test_wrong_schema_version(base, tmp_path):
    mpath = write_shard_and_manifest(tmp_path / "h", with_clip(base, 1, meta={"schema_version": 2}), tracks=base["tracks"])
    with pytest.raises(ShardReadError, match=r"h-000000\.tar: v/clip_f000015\.json: schema_version 2 is not supported "
                                             r"\(this avshards reads version 1\); rebuild the shards or upgrade avshards"):
        run(mpath)
    keys, stats, _, _ = run(mpath, on_error="skip")
    assert stats["skipped"] == 1 and stats["items"] == 2
    m = json.loads(mpath.read_text())
    m["schema_version"] = 3
    mpath.write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"manifest\.json: manifest schema_version 3 is not supported"):
        loaders.make_loader(mpath)


class _Creates:
    """Unpickling this calls ``open(path, "w")``: the file appears if anything ever unpickles it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_members_are_never_unpickled(base, tmp_path):
    probe = tmp_path / "probe_created"
    pickle.loads(pickle.dumps(_Creates(probe)))  # the payload is live: unpickling does create a file
    assert probe.exists()
    markers = [tmp_path / f"unpickled_{i}" for i in range(4)]
    obj_boxes = np.empty((1, 15, 4), dtype=object)
    obj_boxes[...] = _Creates(markers[2])
    clips = with_clip(base, 0, members=base["clips"][0][1] + [("pyd", pickle.dumps(_Creates(markers[0]))),
                                                           ("pickle", pickle.dumps(_Creates(markers[1])))])
    clips = with_clip({"clips": clips}, 1, replace={"boxes.npy": npy_bytes(obj_boxes, allow_pickle=True)})
    clips = with_clip({"clips": clips}, 2, replace={"visible.npy": npy_bytes(np.array([_Creates(markers[3])] * 15, dtype=object),
                                                                             allow_pickle=True)})
    mpath = write_shard_and_manifest(tmp_path / "h", clips, tracks=base["tracks"])
    for mode in MODES:
        keys, stats, _, _ = run(mpath, on_error="skip", mode=mode)
        assert keys[0] == clips[0][0]  # extra .pyd/.pickle members are ignored: never decoded
        assert stats["skipped"] == 2 and stats["items"] == 1
    with pytest.raises(ShardReadError, match=r"v/clip_f000015\.boxes\.npy: not a valid \.npy array \(Object arrays cannot be loaded"):
        run(mpath)
    from shardgen.tools.inspection import inspect_path
    from shardgen.tools.verify import verify_manifest

    res = verify_manifest(mpath)
    assert sum("does not decode" in p for p in res.problems) == 2
    with pytest.raises(Exception, match="Object arrays cannot be loaded"):
        inspect_path(tmp_path / "h" / "h-000000.tar")
    assert not any(m.exists() for m in markers)


@pytest.mark.parametrize("case", list(HOSTILE_CLIPS))
def test_hostile_clip_is_a_named_error_or_a_counted_skip(base, tmp_path, case):
    spec = HOSTILE_CLIPS[case]
    mpath = write_shard_and_manifest(tmp_path / "h", hostile_clip(base, spec), tracks=base["tracks"])
    key = base["clips"][1][0]
    for mode in MODES:
        fails = spec.get("only", mode) == mode and spec.get("spares") != mode
        if fails:
            with pytest.raises(ShardReadError) as err:
                run(mpath, mode=mode)
            assert "h-000000.tar" in str(err.value) and key in str(err.value), (mode, str(err.value))
        keys, stats, n_batches, n_len = run(mpath, on_error="skip", mode=mode)
        assert (stats["skipped"], stats["items"]) == ((1, 2) if fails else (0, 3)), (mode, stats)
        assert n_batches == n_len


#: the hostile cases a frame-budget batch's sparse track read never meets: the damage lies in members it does not read
UNREAD_BY_TRACKS = {"derived g without members": "the whole-frame gray members: a track reads its frames or crops"}


@pytest.mark.parametrize("case", list(HOSTILE_CLIPS))
def test_hostile_clip_in_frame_budget_batches_is_named_or_counted(base, tmp_path, case):
    """Frame-budget batches read a track's members sparsely: a hostile clip is still a named error — every case
    but those whose damage lies in members no track reads (:data:`UNREAD_BY_TRACKS`) — and with skip the step
    count holds."""
    spec = HOSTILE_CLIPS[case]
    mpath = write_shard_and_manifest(tmp_path / "h", hostile_clip(base, spec), tracks=base["tracks"])
    key = base["clips"][1][0]
    try:
        run(mpath, mode="asd-tracks", batch_frames=1)
    except ShardReadError as err:
        assert "h-000000.tar" in str(err) and key in str(err), str(err)
        raised = True
    else:
        raised = False
    assert raised == (case not in UNREAD_BY_TRACKS), UNREAD_BY_TRACKS.get(case, "a track read meets this damage")
    keys, stats, n_batches, n_len = run(mpath, on_error="skip", mode="asd-tracks", batch_frames=1)
    assert n_batches == n_len == 3 and stats["skipped"] == (1 if raised else 0), stats
    assert stats["items"] == 3 - stats["skipped"] and len(keys) == n_batches


def test_hostile_clip_error_crosses_the_worker_boundary_named(base, tmp_path):
    clips = with_clip(base, 1, meta={"fps": float("inf")}, n=4)  # worker 0 reads clips 0-1, worker 1 clips 2-3
    mpath = write_shard_and_manifest(tmp_path / "h", clips, tracks=base["tracks"])
    from tests.test_loader_bounded_resources import _children

    try:  # as a training script would: catch, log, go on
        run(mpath, num_workers=2)
    except ShardReadError as exc:
        assert re.search(r"h-000000\.tar: v/clip_f000015\.json: fps inf or sample_rate 16000 out of range", str(exc))
    else:
        raise AssertionError("no error")
    # the workers were shut down with the error, not left to a garbage collection (which then waits 5 s for each)
    assert not _children()
    _, stats, n_batches, n_len = run(mpath, on_error="skip", num_workers=2)
    assert stats["skipped"] == 1 and stats["items"] == 3 and n_batches == n_len == 4


# ----------------------------------------------------------------------------- PAX headers


def test_pax_header_with_a_non_numeric_size_is_a_tar_error():
    def block(name: bytes, size: int, kind: bytes) -> bytes:
        h = bytearray(512)
        h[0:len(name)] = name
        h[100:108] = b"0000444\0"
        h[124:136] = b"%011o\0" % size
        h[136:148] = b"00000000000\0"
        h[156:157] = kind
        h[257:263] = b"ustar\0"
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\0 " % sum(h)
        return bytes(h)

    record = b"13 size=abcd\n"
    data = block(b"pax", len(record), b"x") + record.ljust(512, b"\0") + block(b"v/clip_f000000.json", 0, b"0") + bytes(1024)
    with pytest.raises(TarError, match="PAX size 'abcd' disagrees"):
        list(iter_tar(io.BytesIO(data), source="s.tar"))


def test_a_deeply_nested_document_runs_no_finalizer_at_the_recursion_limit():
    """json's C parser meets a 200k-deep document at the recursion limit; a garbage collection there would run
    finalizers with no recursion left (the 'unraisable' RecursionError a CI run failed on). The parse holds
    the collector off: no collection happens during it, whatever the collector's threshold."""
    import gc
    import sys

    from shardgen.core.format import FormatError, decode_metadata, untrusted_json

    runs = []

    def during_parse(phase, info):  # a collection started while untrusted_json was on the stack
        frame = sys._getframe()
        while frame is not None:
            if frame.f_code is untrusted_json.__code__:
                runs.append(phase)
                return
            frame = frame.f_back

    gc.callbacks.append(during_parse)
    old = gc.get_threshold()
    try:
        gc.set_threshold(1)  # a collection at every allocation, were it allowed
        runs.clear()
        with pytest.raises(RecursionError):
            untrusted_json(b"[" * 200000 + b"]" * 200000)
        assert runs == []
        with pytest.raises(FormatError, match="is not JSON"):
            decode_metadata(b"[" * 200000 + b"]" * 200000, name="x.json")
        assert gc.isenabled()
    finally:
        gc.set_threshold(*old)
        gc.callbacks.pop()
