"""The loader against hostile and damaged shards.

Shards here are written byte by byte by this file (its own ustar writer, not ``tarfile``), from the
members of a real build, so any field can lie. The promise under test, for every case:

* default ``on_error="raise"``: a :class:`loaders.ShardReadError` whose message names the shard
  (and the clip, when one is known) — never an exception from deep inside numpy, PIL or json;
* ``on_error="skip"``: the damaged clip is skipped and counted in ``loader.stats["skipped"]``,
  every intact clip is still yielded, and every rank/worker still gets its full batch count;
* nothing is ever unpickled, and no declared size makes the reader allocate or read more than
  the bytes that are really there (``max_member_bytes`` caps a member).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import loaders
from loaders import ShardReadError
from shardgen.core.tario import TarError, iter_tar
from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams
from shardgen.core.clip_index import INDEX_NAME, ClipIndexWriter, encode_index
from shardgen.core.format import LABEL_EXTS
from shardgen.core.manifest import MANIFEST_VERSION
from shardgen.core.storage import TransportOptions
from tests.sources import ego4d_json, index_clips, write_source

ROOT = Path(__file__).resolve().parents[1]
MODES = ("talknet", "asd-tracks", "raw", "qwen-omni")

# ----------------------------------------------------------------------------- a tar writer that can lie


def header(name: bytes, size: int, kind: bytes = b"0", size_field: bytes | None = None, linkname: bytes = b"") -> bytes:
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000444\0"
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = size_field if size_field is not None else f"{size:011o}\0".encode()
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = kind
    h[157:157 + len(linkname)] = linkname
    h[257:263], h[263:265] = b"ustar\0", b"00"
    h[148:156] = f"{sum(h):06o}\0 ".encode()
    return bytes(h)


def member(name: str | bytes, data: bytes, **kw) -> bytes:
    name = name.encode() if isinstance(name, str) else name
    return header(name, len(data), **kw) + data + b"\0" * (-len(data) % 512)


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_header_only(descr: str, shape: tuple) -> bytes:
    """A valid .npy header that declares ``shape`` but carries no data."""
    d = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    pad = 64 - (10 + len(d) + 1) % 64
    return b"\x93NUMPY\x01\x00" + (len(d) + pad + 1).to_bytes(2, "little") + d + b" " * pad + b"\n"


Clip = tuple[str, list[tuple[str, bytes]]]  # (key, [(ext or full member name, bytes)])


def write_shard_and_manifest(directory: Path, clips: list[Clip], *, tracks: dict | None = None,
                             name: str = "h-000000.tar", raw_members: dict[int, bytes] | None = None) -> Path:
    """Write ``clips`` as one shard plus a manifest listing each clip's byte range; returns the manifest.

    ``raw_members[i]``: bytes written verbatim in place of clip i's members (any header lie at all).
    """
    directory.mkdir(parents=True, exist_ok=True)
    body, rows = b"", []
    for i, (key, members) in enumerate(clips):
        start = len(body)
        if raw_members and i in raw_members:
            body += raw_members[i]
        else:
            for ext, data in members:
                body += member(ext if "/" in ext or "\\" in ext else f"{key}.{ext}", data)
        t = [tuple(x) for x in (tracks or {}).get(key, [])]
        rows.append((key, start, len(body) - start, "", len(members), max([f + n for _, f, n in t] or [1]), 0, t))
    body += b"\0" * 1024
    (directory / name).write_bytes(body)
    writer = ClipIndexWriter()
    writer.add_shard(0, rows)
    index = encode_index(writer.index())
    (directory / INDEX_NAME).write_bytes(index)
    m = {"schema": "avshards/manifest", "schema_version": MANIFEST_VERSION, "split": "h", "params": {},
         "totals": {"shards": 1, "clips": len(rows), "frames": sum(r[5] for r in rows), "hours": 0.0,
                    "bytes": len(body), "videos": len({r[0].split("/")[0] for r in rows})},
         "index": {"name": INDEX_NAME, "bytes": len(index), "sha256": hashlib.sha256(index).hexdigest(),
                   "clips": len(rows), "tracks": sum(len(r[7]) for r in rows)},
         "shards": [{"name": name, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "clips": len(rows)}]}
    (directory / "manifest.json").write_text(json.dumps(m))
    return directory / "manifest.json"


# ----------------------------------------------------------------------------- a real build to start from


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One video of 90 frames (64x48) with a face track on every frame: 6 clips of 15 frames, one shard."""
    root = tmp_path_factory.mktemp("hostile")
    ann = ego4d_json({"v": {"1": [(f, 5, 5, 20, 20) for f in range(90)]}}, {"v": {"1": [(3, 20), (40, 70)]}})
    src = write_source(root / "src", {"v": 90}, annotations=ann)
    out = root / "out"
    build(src, out, ["train"], BuildParams(clip_seconds=0.5), progress=False)
    m = json.loads((out / "train" / "manifest.json").read_text())
    m["clips"] = index_clips(out / "train")  # the clip rows, from clips.idx, beside the manifest's shard list
    clips: list[Clip] = []
    with tarfile.open(out / "train" / m["shards"][0]["name"]) as tar:
        for info in tar:
            key, ext = info.name.split(".", 1)
            if not clips or clips[-1][0] != key:
                clips.append((key, []))
            clips[-1][1].append((ext, tar.extractfile(info).read()))
    assert len(clips) == 6
    return {"out": out / "train", "manifest": m, "clips": clips, "tracks": {c["key"]: c["tracks"] for c in m["clips"]},
            "root": root}


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


def with_clip(base, i: int, members: list[tuple[str, bytes]] | None = None, *, meta: dict | None = None,
              replace: dict[str, bytes] | None = None, n: int = 3) -> list[Clip]:
    """The first ``n`` clips of the build with clip ``i`` altered."""
    clips = [(k, list(m)) for k, m in base["clips"][:n]]
    key, mem = clips[i]
    if members is not None:
        mem = members
    if meta is not None:
        m = json.loads(dict(mem)["json"])
        for k, v in meta.items():
            m.pop(k) if v is KeyError else m.__setitem__(k, v)
        replace = {**(replace or {}), "json": json.dumps(m).encode()}
    if replace:
        mem = [(e, replace.get(e, d)) for e, d in mem]
    clips[i] = (key, mem)
    return clips


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


class _Zeros(io.RawIOBase):
    """An endless stream after a prefix, counting what the reader takes: a hostile server."""

    def __init__(self, prefix: bytes):
        self.prefix, self.pos = prefix, 0

    def readable(self):
        return True

    def read(self, n=-1):
        n = 1 << 20 if n is None or n < 0 else n
        out = self.prefix[self.pos:self.pos + n]
        out += b"\0" * (n - len(out))
        self.pos += len(out)
        return out


@pytest.mark.parametrize("kind,size_field,limit", [
    (b"0", b"\x80" + (1 << 40).to_bytes(11, "big"), "268435456"),  # 1 TiB, GNU base-256
    (b"0", b"77777777777\0", "268435456"),  # 8 GiB - 1, the largest octal size
    (b"x", f"{100 << 20:011o}\0".encode(), "1048576"),  # a 100 MiB PAX header
    (b"L", f"{10 << 20:011o}\0".encode(), "1048576"),  # a 10 MiB GNU long name
])
def test_huge_declared_sizes_are_refused_before_reading(kind, size_field, limit):
    stream = _Zeros(header(b"v/clip_f000000.json", 0, kind=kind, size_field=size_field))
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
from tests.test_hostile_shards import _Zeros, header, npy_header_only
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refused = 0
for descr, shape in (("|u1", (1 << 40,)), ("<f4", (1 << 20, 1 << 20, 4)), ("<f8", (2_000_000_000,))):
    try:
        decode_npy(npy_header_only(descr, shape), name="x.npy", dtype="uint8", ndim=1)
    except FormatError:
        refused += 1
for size_field in (b"\x80" + (1 << 50).to_bytes(11, "big"), b"77777777777\0"):
    try:
        list(iter_tar(_Zeros(header(b"v/clip_f000000.json", 0, size_field=size_field))))
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


@pytest.mark.parametrize("case", ["checksum", "symlink", "hardlink", "device", "duplicate ext", "split clip",
                                  "other clip inside", "garbage header"])
def test_tar_structure_lies(base, tmp_path, case):
    clips = with_clip(base, 1)
    key, members = clips[1]
    other = base["clips"][4][0]
    body = [member(f"{key}.{e}", d) for e, d in members]
    if case == "checksum":
        body[2] = body[2][:10] + bytes([body[2][10] ^ 1]) + body[2][11:]
    elif case == "symlink":
        body.insert(1, header(f"{key}.lnk".encode(), 0, kind=b"2", linkname=b"/etc/passwd"))
    elif case == "hardlink":
        body.insert(1, header(f"{key}.lnk".encode(), 0, kind=b"1", linkname=b"/etc/passwd"))
    elif case == "device":
        body.insert(1, header(f"{key}.dev".encode(), 0, kind=b"3"))
    elif case == "duplicate ext":
        body.insert(2, body[1])
    elif case == "split clip":  # the clip's members interleaved with another clip's
        body.insert(3, member(f"{other}.json", members[0][1]))
    elif case == "other clip inside":  # the manifest's byte range holds another clip
        body = [member(f"{other}.{e}", d) for e, d in members]
    else:
        body.insert(1, b"\x01" * 512)
    mpath = write_shard_and_manifest(tmp_path / "h", clips, tracks=base["tracks"], raw_members={1: b"".join(body)})
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


def _meta_case(**changes):
    return {"meta": changes}


HOSTILE_CLIPS = {
    # metadata: types and values a hand-written or corrupted .json could carry
    "fps NaN": _meta_case(fps=float("nan")),
    "fps inf": _meta_case(fps=float("inf")),
    "fps 1e-300": _meta_case(fps=1e-300),
    "fps 1e300": _meta_case(fps=1e300),
    "fps a string": _meta_case(fps="30"),
    "sample_rate 1e12": _meta_case(sample_rate=10**12),
    "n_frames 0": _meta_case(n_frames=0),
    "n_frames huge": _meta_case(n_frames=10**9),
    "n_frames bool": _meta_case(n_frames=True),
    "frame_size zero": _meta_case(frame_size=[0, 0]),
    "frame_size string": _meta_case(frame_size="64x48"),
    "persons not objects": _meta_case(persons=[1]),
    "derived not a list": _meta_case(derived=5),
    "derived of numbers": _meta_case(derived=[1, 2]),
    "persons missing": _meta_case(persons=KeyError),
    "key of another clip": _meta_case(key="v/clip_f000999"),
    "start_frame negative": _meta_case(start_frame=-5),
    "audio_start_sample 1e30": _meta_case(audio_start_sample=10**30),
    "audio_format unknown": _meta_case(audio_format="mp3"),
    "audio_samples wrong": _meta_case(audio_samples=3),
    "derived g without members": _meta_case(derived=["g"]),
    "schema other": _meta_case(schema="webdataset"),
    "json not an object": {"replace": {"json": b"[1, 2, 3]"}},
    "json invalid": {"replace": {"json": b"{\"schema\": "}},
    "json nested 200k deep": {"replace": {"json": b"[" * 200000 + b"]" * 200000}},
    "json NaN literal": {"json_sub": (b'"fps": 30.0', b'"fps": NaN')},
    # label arrays
    "visible float64": {"replace": {"visible.npy": npy_bytes(np.zeros(15))}},
    "boxes big-endian": {"replace": {"boxes.npy": npy_bytes(np.zeros((1, 15, 4), ">f4"))}},
    "visible structured": {"replace": {"visible.npy": npy_bytes(np.zeros(15, [("a", "u1")]))}},
    "speaking wrong rank": {"replace": {"speaking.npy": npy_bytes(np.zeros(15, np.uint8))}},
    "voice wrong length": {"replace": {"voice.npy": npy_bytes(np.zeros(16, np.uint8))}},
    "voice garbage": {"replace": {"voice.npy": b"\x93NUMPY garbage"}},
    "voice header declares 1 TB": {"replace": {"voice.npy": npy_header_only("|u1", (1 << 40,))}},
    "boxes short data": {"replace": {"boxes.npy": npy_bytes(np.zeros((1, 15, 4), np.float32))[:-7]}},
    "label member missing": {"drop": "speaking.npy"},
    # audio and frames
    "wav garbage": {"replace": {"wav": b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 40}},
    "wav cut": {"cut": ("wav", 100)},
    # qwen-omni decodes only the frames it samples (0, 3, 7, 11 of these 15 at 2 fps): frame 3 (index 2) is not one
    "frame not a JPEG": {"replace": {"f000003.jpg": b"\xff\xd8 not really \xff\xd9"}, "spares": "qwen-omni"},
    "frame cut": {"cut": ("f000003.jpg", 200), "spares": "qwen-omni"},
    "sampled frame cut": {"cut": ("f000004.jpg", 200)},
    "frame missing": {"drop": "f000015.jpg"},
    # boxes only matter where crops are cut (asd-tracks); other modes pass them through
    "boxes NaN": {"replace": {"boxes.npy": npy_bytes(np.full((1, 15, 4), np.nan, np.float32))}, "only": "asd-tracks"},
    "boxes inf": {"replace": {"boxes.npy": npy_bytes(np.full((1, 15, 4), np.inf, np.float32))}, "only": "asd-tracks"},
    "boxes 3e38": {"replace": {"boxes.npy": npy_bytes(np.full((1, 15, 4), 3e38, np.float32))}, "only": "asd-tracks"},
    "boxes negative size": {"replace": {"boxes.npy": npy_bytes(np.tile(np.float32([10, 10, -20, -20]), (1, 15, 1)))},
                            "only": "asd-tracks"},
    "boxes w NaN": {"replace": {"boxes.npy": npy_bytes(np.tile(np.float32([10, 10, np.nan, 5]), (1, 15, 1)))},
                    "only": "asd-tracks"},
}


def _hostile_clip(base, spec) -> list[Clip]:
    key, members = base["clips"][1]
    members = list(members)
    if "drop" in spec:
        members = [(e, d) for e, d in members if e != spec["drop"]]
    if "cut" in spec:
        ext, n = spec["cut"]
        members = [(e, d[:n] if e == ext else d) for e, d in members]
    if "json_sub" in spec:
        a, b = spec["json_sub"]
        members = [(e, d.replace(a, b) if e == "json" else d) for e, d in members]
        assert any(b in d for e, d in members)
    clips = with_clip(base, 1, members=members, meta=spec.get("meta"), replace=spec.get("replace"))
    return clips


@pytest.mark.parametrize("case", list(HOSTILE_CLIPS))
def test_hostile_clip_is_a_named_error_or_a_counted_skip(base, tmp_path, case):
    spec = HOSTILE_CLIPS[case]
    mpath = write_shard_and_manifest(tmp_path / "h", _hostile_clip(base, spec), tracks=base["tracks"])
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
    mpath = write_shard_and_manifest(tmp_path / "h", _hostile_clip(base, spec), tracks=base["tracks"])
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


# ----------------------------------------------------------------------------- shardgen verify


def test_pax_header_with_a_non_numeric_size_is_a_tar_error():
    import io

    from shardgen.core.tario import TarError, iter_tar

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


# ----------------------------------------------------------------------------- every tool on the same read path

# the members each case damages; a tool that reads them must refuse the clip
def _damaged(spec) -> set[str]:
    touched = set(spec.get("replace", {})) | ({"json"} if "meta" in spec or "json_sub" in spec else set())
    touched |= {spec["drop"]} if "drop" in spec else set()
    touched |= {spec["cut"][0]} if "cut" in spec else set()
    return touched


# metadata that is valid for a reader of labels (nothing it reads disagrees): only decoding the audio, or
# requiring every member, finds these
_LABELS_STILL_VALID = {"audio_samples wrong", "derived g without members"}


def _tool_errors(mpath: Path, lone: Path) -> dict[str, Exception | str | None]:
    """Run every tool that reads shard bytes on the split (``lone``: the shard alone, no manifest beside it)."""
    from shardgen.tools import eval_gt, html_report, inspection, preview
    from shardgen.tools.verify import verify_manifest

    def view_clip():  # the viewer's clip page: the whole clip (its error, unwrapped from the viewer's own)
        from shardgen.tools.view import catalog, clips

        split = next(iter(catalog.open_catalog(mpath.parent).splits.values()))
        try:
            clips.ClipStore(TransportOptions()).get(split, 1)
        except clips.ClipUnreadable as exc:
            raise exc.__cause__ from None

    def view_summary():  # the viewer's clip lists: metadata and labels (a damaged clip's summary carries its error)
        from shardgen.tools.view import catalog, summary

        split = next(iter(catalog.open_catalog(mpath.parent).splits.values()))
        error = summary.read_summary(split, 1, TransportOptions()).error
        if error is not None:
            raise ValueError(error)

    tools = {
        "report": lambda: html_report.split_stats(str(mpath)),
        "view clip": view_clip,
        "view summary": view_summary,
        "eval-gt": lambda: list(eval_gt.ground_truth(mpath.parent)),
        "inspect": lambda: inspection.inspect_path(mpath.parent),
        "preview": lambda: preview.load_clip(mpath.parent, "v/clip_f000015"),
        "index-less scan": lambda: loaders.resolve(str(lone)),
    }
    out: dict[str, Exception | str | None] = {}
    for name, fn in tools.items():
        try:
            fn()
            out[name] = None
        except Exception as exc:  # what kind, and whether it names the shard, is asserted by the caller
            out[name] = exc
    res = verify_manifest(mpath)
    out["verify"] = "; ".join(res.problems) or None
    return out


def _lone(mpath: Path, tmp_path: Path) -> Path:
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(mpath.parent / "h-000000.tar", lone / "h-000000.tar")
    return lone / "h-000000.tar"


@pytest.mark.parametrize("case", list(HOSTILE_CLIPS))
def test_every_tool_refuses_a_hostile_clip_naming_it(base, tmp_path, case):
    """verify, inspect, preview, report, eval-gt, the viewer and the index-less scan read shard bytes through the
    loader's reader: a hostile clip is a FormatError naming the shard and the clip (verify: a problem naming both),
    refused by every tool that reads the damaged member, never an exception from deep inside numpy or json."""
    spec = HOSTILE_CLIPS[case]
    mpath = write_shard_and_manifest(tmp_path / "h", _hostile_clip(base, spec), tracks=base["tracks"])
    key = base["clips"][1][0]
    errors = _tool_errors(mpath, _lone(mpath, tmp_path))
    assert len(errors) == 8
    from shardgen.core.format import FormatError

    for tool, err in errors.items():
        if isinstance(err, Exception):
            assert isinstance(err, (FormatError, TarError, ValueError)), (tool, repr(err))
            assert "h-000000.tar" in str(err) and key in str(err), (tool, str(err))
    reads_labels = bool(_damaged(spec) & {"json", *LABEL_EXTS}) and case not in _LABELS_STILL_VALID \
        and not spec.get("only")
    for tool in ("report", "eval-gt", "inspect", "preview", "index-less scan", "view clip", "view summary"):
        assert (errors[tool] is not None) >= reads_labels, (tool, case)  # metadata and labels: everyone reads them
    if not spec.get("only"):  # verify decodes everything: every damaged member is found
        assert errors["verify"] and "h-000000.tar" in errors["verify"] and key in errors["verify"], errors["verify"]
    else:  # boxes that only a crop would trip over are valid label arrays
        assert errors["verify"] is None and errors["report"] is None


TAR_LIES = ["checksum", "symlink", "device", "duplicate", "split clip", "garbage header", "unsafe name"]
SPARSE_TOOLS = ("report", "eval-gt", "view summary")  # they read each clip's metadata and labels, and stop there


def _lie(case: str, body: list[bytes], members: list, key: str, other: str, at: int) -> None:
    """Put the lie ``case`` into clip ``key``'s member list ``body`` at member ``at``."""
    if case == "checksum":
        body[at] = body[at][:10] + bytes([body[at][10] ^ 1]) + body[at][11:]
    elif case == "symlink":
        body.insert(at, header(f"{key}.lnk".encode(), 0, kind=b"2", linkname=b"/etc/passwd"))
    elif case == "device":
        body.insert(at, header(f"{key}.dev".encode(), 0, kind=b"3"))
    elif case == "duplicate":  # the same member twice (a reader passing over the first still sees the second's name)
        body.insert(at + 1, body[at])
    elif case == "split clip":  # another clip's member in the middle of this one
        body.insert(at, member(f"{other}.json", members[0][1]))
    elif case == "unsafe name":
        body[at] = member(f"../{key}.{members[at][0]}", members[at][1])
    else:  # a header that is no header
        body.insert(at, b"\x01" * 512)


@pytest.mark.parametrize("where", ["labels", "frames"])
@pytest.mark.parametrize("case", TAR_LIES + ["other clip inside"])
def test_every_tool_refuses_tar_structure_lies(base, tmp_path, case, where):
    """The loader's tar lies, met by every other reader of shard bytes: each refuses them naming the shard.
    Among the label members every tool reads them; among the frames, every tool that reads the whole clip
    (verify, inspect, preview, the index-less scan) does — report and eval-gt stop after the labels and
    never parse those bytes."""
    clips = with_clip(base, 1)
    key, members = clips[1]
    other = base["clips"][4][0]
    body = [member(f"{key}.{e}", d) for e, d in members]
    exts = [e for e, _ in members]
    at = exts.index("visible.npy") if where == "labels" else next(i for i, e in enumerate(exts) if e.startswith("f"))
    if case == "other clip inside":  # the index's byte range holds another clip altogether
        body = [member(f"{other}.{e}", d) for e, d in members]
    else:
        _lie(case, body, members, key, other, at)
    mpath = write_shard_and_manifest(tmp_path / "h", clips, tracks=base["tracks"], raw_members={1: b"".join(body)})
    errors = _tool_errors(mpath, _lone(mpath, tmp_path))
    assert len(errors) == 8
    must = [t for t in errors if where == "labels" or case == "other clip inside" or t not in SPARSE_TOOLS]
    assert len(must) >= 5
    for tool in must:
        err = errors[tool]
        assert err is not None, f"{tool} read a shard with a {case} among the {where} without noticing"
        if tool != "verify":
            assert isinstance(err, (TarError, ValueError)), (tool, repr(err))
        assert "h-000000.tar" in str(err), (tool, str(err))
