"""Hostile shards for the tests: a tar writer that can lie, a real build to start from, the hostile clips.

Shards are written byte by byte here (an own ustar writer, not ``tarfile``), from the members of a real
build, so any field can lie. Used by the loader's suite (``test_hostile_shards.py``), every other reader
of shard bytes (``test_hostile_shards_tools.py``) and the sparse tar walk (``test_tar_walk.py``): the same
cases for all of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams
from shardgen.core.clip_index import INDEX_NAME, ClipIndexWriter, encode_index
from shardgen.core.manifest import MANIFEST_VERSION
from tests.sources import ego4d_json, index_clips, write_source

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



class Endless(io.RawIOBase):
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



# ----------------------------------------------------------------------------- the hostile clips and tar lies


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
    "boxes 9e4 wide": {"replace": {"boxes.npy": npy_bytes(np.tile(np.float32([10, 10, 9e4, 9e4]), (1, 15, 1)))},
                       "only": "asd-tracks"},  # a 64,000 px crop window: refused, never allocated
}


def hostile_clip(base, spec) -> list[Clip]:
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



TAR_LIES = ["checksum", "symlink", "device", "duplicate", "split clip", "garbage header", "unsafe name"]


def lie(case: str, body: list[bytes], members: list, key: str, other: str, at: int) -> None:
    """Put the lie ``case`` into clip ``key``'s member list ``body`` at member ``at``."""
    if case == "checksum":
        body[at] = body[at][:10] + bytes([body[at][10] ^ 1]) + body[at][11:]
    elif case in ("symlink", "hardlink"):
        body.insert(at, header(f"{key}.lnk".encode(), 0, kind=b"2" if case == "symlink" else b"1", linkname=b"/etc/passwd"))
    elif case == "device":
        body.insert(at, header(f"{key}.dev".encode(), 0, kind=b"3"))
    elif case == "duplicate":  # the same member twice (a reader passing over the first still sees the second's name)
        body.insert(at + 1, body[at])
    elif case == "split clip":  # another clip's member in the middle of this one
        body.insert(at, member(f"{other}.json", members[0][1]))
    elif case == "unsafe name":
        body[at] = member(f"../{key}.{members[at][0]}", members[at][1])
    elif case == "garbage header":  # a header that is no header
        body.insert(at, b"\x01" * 512)
    else:
        raise ValueError(f"no tar lie {case!r}")


def lying_shard(base, directory: Path, case: str, at: int | str) -> Path:
    """The build's first three clips as one shard, clip 1 carrying the tar lie ``case`` at member ``at`` (an index,
    or ``"labels"`` / ``"frames"``: its first label array / frame); ``"other clip inside"``: the byte range the
    index gives clip 1 holds another clip altogether. Returns the manifest."""
    clips = with_clip(base, 1)
    key, members = clips[1]
    other = base["clips"][4][0]
    body = [member(f"{key}.{e}", d) for e, d in members]
    if case == "other clip inside":
        body = [member(f"{other}.{e}", d) for e, d in members]
    else:
        exts = [e for e, _ in members]
        if at == "labels":
            at = exts.index("visible.npy")
        elif at == "frames":
            at = next(i for i, e in enumerate(exts) if e.startswith("f"))
        lie(case, body, members, key, other, at)
    return write_shard_and_manifest(directory, clips, tracks=base["tracks"], raw_members={1: b"".join(body)})
