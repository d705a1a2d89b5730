"""`shardgen verify` / `inspect` / `report`: damage is named down to the clip, on disk and remote alike.

Locally: a flipped bit anywhere in a shard is traced to the clip whose byte range holds it.
Remotely: a build is made locally, copied to a bucket (Swift s3api) and served by nginx; then one
byte inside a clip is flipped in a second copy (uploaded / served the same way). Over every
transport the clean build verifies (exit 0) and the damaged one fails (exit 1) naming the shard
and the clip — with exactly the lines a local verify of the same bytes prints.

The clip index (``clips.idx``) is checked too: verify compares it with the size and sha256 the
manifest records and names it when it is missing, cut or altered (the shards are still checked),
and every reader refuses a missing or unreadable one naming the file.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shardgen.build.pipeline import build
from shardgen.core.format import FormatError
from shardgen.core.sources import resolve
from shardgen.core.storage import S3Store
from shardgen.build.plan import BuildParams
from shardgen.tools.verify import verify_manifest
from tests.sources import ego4d_json, index_clips, write_source

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--split", "train", "--clip-seconds", "1", "--shard-clips", "2", "--no-progress", "--workers", "1"]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """``clean`` and ``damaged`` copies of one local build; in ``damaged`` one byte of a clip in shard 1 is flipped."""
    root = tmp_path_factory.mktemp("tools_remote")
    vids = {"v0": 75, "v1": 60}
    ann = ego4d_json({v: {"1": [(f, 4, 4, 30, 30) for f in range(5, 50)]} for v in vids}, {v: {"1": [(10, 40)]} for v in vids})
    src = write_source(root / "src", vids, splits={"train": list(vids)}, annotations=ann, size=(160, 90))
    clean = root / "clean"
    subprocess.run([sys.executable, "-m", "shardgen", "build", "--data", str(src), "--out", str(clean), *ARGS],
                   check=True, cwd=ROOT, capture_output=True)
    damaged = root / "damaged"
    shutil.copytree(clean, damaged)
    m = json.loads((clean / "train" / "manifest.json").read_text())
    assert len(m["shards"]) >= 2
    clip = next(c for c in index_clips(clean / "train") if c["shard"] == 1)
    shard = damaged / "train" / m["shards"][1]["name"]
    data = bytearray(shard.read_bytes())
    data[clip["offset"] + clip["bytes"] // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    return {"clean": clean, "damaged": damaged, "clip": clip["key"], "shard": shard.name}


def test_verify_names_the_damaged_shard_and_clip(real_build, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(real_build, copy)
    manifest = copy / "train" / "manifest.json"
    assert verify_manifest(manifest).ok
    m = json.loads(manifest.read_text())
    clip = index_clips(manifest)[1]
    shard = copy / "train" / m["shards"][clip["shard"]]["name"]
    data = bytearray(shard.read_bytes())
    data[clip["offset"] + 5000] ^= 0x01
    shard.write_bytes(bytes(data))
    res = verify_manifest(manifest)
    assert not res.ok
    assert any(shard.name in p and clip["key"] in p for p in res.problems), res.problems
    cli = subprocess.run([sys.executable, "-m", "shardgen", "verify", str(manifest)], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 1 and clip["key"] in cli.stdout and shard.name in cli.stdout


def test_verify_names_the_shard_and_clip_of_any_flipped_byte(tmp_path):
    """One flipped bit anywhere — member data, a tar header (name, size, checksum fields), the padding,
    the end-of-archive blocks — is reported by ``shardgen verify`` naming the shard and the clip whose
    byte range holds it, or saying it lies outside every clip."""
    src = write_source(tmp_path / "s", {"a": 45, "b": 45}, annotations=ego4d_json({"a": {"1": [(3, 1, 1, 9, 9)]}}, {}))
    out = tmp_path / "o"
    build(src, out, ["train"], BuildParams(clip_seconds=0.5, shard_clips=2, allow_unannotated=True), progress=False)
    mpath = out / "train" / "manifest.json"
    m = json.loads(mpath.read_text())
    rows = index_clips(mpath)
    assert len(m["shards"]) == 3 and verify_manifest(mpath).ok
    rng = random.Random(6)
    checked = 0
    for index, shard in enumerate(m["shards"]):
        path = out / "train" / shard["name"]
        original = path.read_bytes()
        clips = [c for c in rows if c["shard"] == index]
        end = clips[-1]["offset"] + clips[-1]["bytes"]
        second = clips[-1]["offset"]
        positions = {0, 100, 124 + 5, 148 + 2,  # first header: name, size field, checksum field
                     second, second + 130, second + 512 + 7,  # the last clip's first header and data
                     end - 1, end + 3, len(original) - 1,  # its last byte, the end-of-archive blocks, the tail padding
                     *(rng.randrange(len(original)) for _ in range(4))}
        for pos in sorted(positions):
            damaged = bytearray(original)
            damaged[pos] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(damaged))
            res = verify_manifest(mpath)
            owner = [c["key"] for c in clips if c["offset"] <= pos < c["offset"] + c["bytes"]]
            sha = [p for p in res.problems if "sha256 mismatch" in p]
            assert len(sha) == 1 and sha[0].startswith(shard["name"]), (pos, res.problems)
            if owner:
                assert f"damaged: clip {owner[0]} (bytes " in sha[0] and sha[0].count("clip ") == 1, (pos, sha)
            else:
                assert "outside every clip" in sha[0], (pos, sha)
            checked += 1
        path.write_bytes(original)
    assert checked >= 30 and verify_manifest(mpath).ok
    # and from the command line: exit 1, the shard and clip named
    path = out / "train" / m["shards"][1]["name"]
    clip = [c for c in rows if c["shard"] == 1][0]
    damaged = bytearray(path.read_bytes())
    damaged[clip["offset"] + 700] ^= 0x10
    path.write_bytes(bytes(damaged))
    cli = subprocess.run([sys.executable, "-m", "shardgen", "verify", str(mpath)], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 1 and f"FAIL {path.name}: sha256 mismatch; damaged: clip {clip['key']}" in cli.stdout


def _sha_byte(d: bytes, split: Path) -> int:
    """Where the first clip's sha256 sits in ``clips.idx`` (a byte no structural check can vouch for)."""
    at = d.find(bytes.fromhex(index_clips(split)[0]["sha256"]))
    assert at > 0
    return at + 7


INDEX_DAMAGE = {  # name → (bytes of clips.idx → damaged bytes); every one is caught by verify
    "cut in half": lambda d, split: d[:len(d) // 2],
    "cut inside the header": lambda d, split: d[:40],
    "empty": lambda d, split: b"",
    "a flipped bit in the magic": lambda d, split: bytes([d[0] ^ 1]) + d[1:],
    "a flipped bit in a clip's sha256": lambda d, split: d[:_sha_byte(d, split)] + bytes([d[_sha_byte(d, split)] ^ 4])
    + d[_sha_byte(d, split) + 1:],
    "a byte appended": lambda d, split: d + b"\0",
}
# what a local reader (mapping the file, not reading it) is sure to notice: everything but a flipped sha256 bit
STRUCTURAL = [k for k in INDEX_DAMAGE if "sha256" not in k]


@pytest.fixture
def copy(builds, tmp_path) -> Path:
    """A fresh copy of the clean build's train split."""
    shutil.copytree(builds["clean"], tmp_path / "copy")
    return tmp_path / "copy" / "train"


@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
def test_a_damaged_clip_index_is_named_by_verify_and_the_shards_are_still_checked(copy, damage, capsys):
    from shardgen.cli import main

    index = copy / "clips.idx"
    index.write_bytes(INDEX_DAMAGE[damage](index.read_bytes(), copy))
    res = verify_manifest(copy)
    assert len(res.problems) == 1 and res.problems[0].startswith("clips.idx: "), res.problems
    assert res.shards == 2 and res.clips == 4  # every shard still hashed and every clip decoded
    if "sha256" in damage:
        assert "sha256" in res.problems[0] and "differs from the manifest" in res.problems[0]
    if damage in STRUCTURAL:
        with pytest.raises(FormatError, match=re.escape(str(index))):
            resolve(str(copy))
        with pytest.raises(FormatError, match=re.escape(str(index))):  # a shard named beside its manifest, too
            resolve(str(copy / builds_shard(copy)))
    capsys.readouterr()
    assert main(["verify", str(copy)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL clips.idx: ") and "FAILED: 2 shards, 4 clips decoded" in out
    assert main(["inspect", str(copy)]) == 0  # inspect says so and still lists the shards' clips
    out = capsys.readouterr().out
    if damage in STRUCTURAL:
        assert "index: clips.idx is unusable: " in out and "4 clips, " in out


def builds_shard(split: Path) -> str:
    return sorted(p.name for p in split.glob("*.tar"))[0]


def test_a_missing_clip_index_is_named(copy, builds, capsys):
    from shardgen.cli import main

    (copy / "clips.idx").unlink()
    for source in (copy, copy / "manifest.json", copy / builds_shard(copy)):
        with pytest.raises(FileNotFoundError, match=re.escape(str(copy / "clips.idx")) + ": the clip index that .* is missing"):
            resolve(str(source))
    res = verify_manifest(copy)
    assert res.problems == ["clips.idx: missing (the manifest names it: copy it with the manifest, or rebuild the split)"]
    assert res.shards == 2 and res.clips == 4
    assert main(["verify", str(copy)]) == 1 and "FAIL clips.idx: missing" in capsys.readouterr().out
    assert main(["inspect", str(copy)]) == 0 and "index: clips.idx is missing" in capsys.readouterr().out


def test_a_damaged_shard_beside_a_damaged_index_is_still_reported(builds, tmp_path):
    """Without a usable index the shard's hash still fails; the clip cannot be named, and the line says why."""
    shutil.copytree(builds["damaged"], tmp_path / "d")
    split = tmp_path / "d" / "train"
    (split / "clips.idx").write_bytes((split / "clips.idx").read_bytes()[:100])
    res = verify_manifest(split)
    assert res.problems[0].startswith("clips.idx: ")
    assert f"{builds['shard']}: sha256 mismatch; damaged: unknown (no usable clips.idx to trace it to a clip)" in res.problems


def test_inspect_shows_the_clip_index(copy, capsys):
    from shardgen.cli import main

    assert main(["inspect", str(copy)]) == 0
    lines = capsys.readouterr().out.splitlines()
    size = (copy / "clips.idx").stat().st_size
    tracks = sum(len(c["tracks"]) for c in index_clips(copy))
    assert tracks >= 4 and "2 shards, 4 clips" in lines[0]
    assert lines[1] == f"index: clips.idx, 4 clips, {tracks} face tracks, 2 videos, {size} bytes", lines


def _upload(store: S3Store, out: Path) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file())
    for p in sorted(files, key=lambda p: p.name == "manifest.json"):  # manifests last, as the builder does
        store.put_file(p, p.relative_to(out).as_posix())


@pytest.fixture(scope="module")
def remote(builds, s3_server, http_server):
    """Base URLs of both copies over S3 and HTTP, and the environment that reaches the S3 server."""
    bucket = s3_server.new_bucket("tools")
    opts = s3_server.options()
    for name in ("clean", "damaged"):
        _upload(S3Store(f"s3://{bucket}/{name}", opts), builds[name])
    http = http_server(builds["clean"].parent)
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": s3_server.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_DEFAULT_REGION": s3_server.region}
    return {"s3": f"s3://{bucket}", "http": http.url, "env": env}


def _shardgen(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardgen", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def _problems(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(("FAIL", "OK", "FAILED"))]


@pytest.mark.parametrize("transport", ["s3", "http"])
def test_verify_a_remote_build_clean_and_damaged_as_locally(builds, remote, transport):
    base = remote[transport]
    clean = _shardgen("verify", f"{base}/clean/train/manifest.json", env=remote["env"])
    assert clean.returncode == 0, clean.stdout + clean.stderr
    local_clean = _shardgen("verify", str(builds["clean"] / "train" / "manifest.json"))
    assert _problems(clean.stdout) == _problems(local_clean.stdout) and clean.stdout.startswith("OK")

    damaged = _shardgen("verify", f"{base}/damaged/train", env=remote["env"])  # the split prefix works too
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    fails = [line for line in damaged.stdout.splitlines() if line.startswith("FAIL ")]
    assert fails and all(builds["shard"] in line for line in fails), damaged.stdout
    assert any(builds["clip"] in line and "sha256 mismatch" in line for line in fails), damaged.stdout
    local = _shardgen("verify", str(builds["damaged"] / "train" / "manifest.json"))
    assert local.returncode == 1 and _problems(damaged.stdout) == _problems(local.stdout)


@pytest.mark.parametrize("transport", ["s3", "http"])
def test_inspect_a_remote_split_and_shard_as_locally(builds, remote, transport):
    base = remote[transport]
    local_dir = builds["clean"] / "train"
    for remote_arg, local_arg in ((f"{base}/clean/train", local_dir), (f"{base}/clean/train/{builds['shard']}", local_dir / builds["shard"])):
        got = _shardgen("inspect", remote_arg, env=remote["env"])
        want = _shardgen("inspect", str(local_arg))
        assert got.returncode == 0 and want.returncode == 0, got.stderr
        # everything after the first line (which names the location) is the same
        assert got.stdout.splitlines()[1:] == want.stdout.splitlines()[1:] and "clips:" in got.stdout
        assert got.stdout.splitlines()[0].startswith(remote_arg)


def test_a_missing_remote_shard_is_named_and_exits_1(builds, remote, s3_server):
    store = S3Store(f"{remote['s3']}/gone", s3_server.options())
    _upload(store, builds["clean"])
    store.delete(f"train/{builds['shard']}")
    res = _shardgen("verify", f"{remote['s3']}/gone/train/manifest.json", env=remote["env"])
    assert res.returncode == 1 and f"FAIL {builds['shard']}: missing" in res.stdout, res.stdout + res.stderr


def test_report_reads_a_remote_build_and_its_build_report(builds, remote, tmp_path):
    """The report of a build over HTTP is the report of the same build on disk: every number, chart and skipped
    clip — its build-report.json read from beside the split prefix — with only the location differing."""
    pytest.importorskip("matplotlib")
    url = f"{remote['http']}/clean/train/manifest.json"
    local = builds["clean"] / "train" / "manifest.json"
    res = _shardgen("report", url, "-o", str(tmp_path / "r.html"), env=remote["env"])
    ref = _shardgen("report", str(local), "-o", str(tmp_path / "l.html"))
    assert res.returncode == ref.returncode == 0, res.stderr + ref.stderr
    page, want = (tmp_path / "r.html").read_text(), (tmp_path / "l.html").read_text()
    skipped = json.loads((builds["clean"] / "build-report.json").read_text())["skipped"]
    assert skipped and all(s["key"] in want for s in skipped if s.get("key"))  # the local page lists the skips
    assert "no build-report.json" not in page and url in page
    assert page.replace(url, "<manifest>") == want.replace(str(local), "<manifest>")


@pytest.mark.parametrize("transport", ["s3", "http"])
def test_preview_draws_a_remote_clip_as_locally(builds, remote, transport, tmp_path):
    pytest.importorskip("matplotlib")
    local = _shardgen("preview", str(builds["clean"] / "train"), "--clip", builds["clip"], "-o", str(tmp_path / "l.png"))
    got = _shardgen("preview", f"{remote[transport]}/clean/train", "--clip", builds["clip"], "-o", str(tmp_path / "r.png"),
                    env=remote["env"])
    assert local.returncode == 0 and got.returncode == 0, got.stderr
    assert (tmp_path / "r.png").read_bytes() == (tmp_path / "l.png").read_bytes()  # the same clip, drawn the same


@pytest.fixture(scope="module")
def bad_indexes(builds, remote, s3_server):
    """Copies of the clean build with ``clips.idx`` altered (``badindex``: a bit of a clip's sha256) and removed
    (``noindex``), beside the others: on disk (served by nginx) and in the bucket."""
    root = builds["clean"].parent
    for name in ("badindex", "noindex"):
        shutil.copytree(builds["clean"], root / name)
        index = root / name / "train" / "clips.idx"
        if name == "noindex":
            index.unlink()
        else:
            index.write_bytes(INDEX_DAMAGE["a flipped bit in a clip's sha256"](index.read_bytes(), root / name / "train"))
        _upload(S3Store(f"{remote['s3']}/{name}", s3_server.options()), root / name)
    return root


@pytest.mark.parametrize("transport", ["s3", "http"])
def test_a_damaged_or_missing_remote_clip_index_is_named_as_locally(bad_indexes, remote, s3_server, transport):
    opts = {"s3_options": s3_server.options()} if transport == "s3" else None
    for name in ("badindex", "noindex"):
        base = f"{remote[transport]}/{name}/train"
        res = _shardgen("verify", base, env=remote["env"])
        local = _shardgen("verify", str(bad_indexes / name / "train"))
        assert res.returncode == local.returncode == 1, res.stdout + res.stderr
        assert _problems(res.stdout) == _problems(local.stdout) and res.stdout.startswith("FAIL clips.idx: ")
        # the loader's side: a fetched index is checked against the manifest's sha256 (one request, whole)
        error = FileNotFoundError if name == "noindex" else FormatError
        with pytest.raises(error, match=re.escape(f"{base}/clips.idx: ")) as err:
            resolve(base, remote_options=opts)
        assert ("is missing" if name == "noindex" else "differs from the manifest") in str(err.value)
