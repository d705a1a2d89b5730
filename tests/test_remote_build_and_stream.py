"""Remote end to end: build to S3 with only the AWS variables, stream back over S3 and HTTP, through cuts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import loaders
from tests.sources import ego4d_json, index_clips, write_source

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--split", "train,val", "--clip-seconds", "1", "--shard-clips", "3", "--no-progress", "--workers", "2"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote_src")
    vids = {f"v{i}": 75 + 15 * i for i in range(4)}
    ann = ego4d_json({v: {"1": [(f, 4, 4, 30, 30) for f in range(5, 60)]} for v in vids},
                     {v: {"1": [(10, 40)]} for v in vids})
    return write_source(root / "src", vids, splits={"train": ["v0", "v1", "v2"], "val": ["v3"]},
                        annotations=ann, size=(160, 90))


@pytest.fixture(scope="module")
def local_build(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("remote_local") / "out"
    subprocess.run([sys.executable, "-m", "shardgen", "build", "--data", str(source), "--out", str(out), *ARGS],
                   check=True, cwd=ROOT, capture_output=True)
    return out


@pytest.fixture(scope="module")
def s3_build(source, local_build, s3_server, tmp_path_factory):
    """``shardgen build --out s3://bucket/prefix`` with nothing but the AWS variables set."""
    bucket = s3_server.new_bucket("build")
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": s3_server.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_DEFAULT_REGION": s3_server.region}
    staging = tmp_path_factory.mktemp("staging")
    cmd = [sys.executable, "-m", "shardgen", "build", "--data", str(source), "--out", f"s3://{bucket}/ds/v1", *ARGS]
    res = subprocess.run(cmd, cwd=ROOT, env={**env, "TMPDIR": str(staging)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert not [p for p in staging.rglob("*.tar")]  # uploaded shards leave the staging directory
    return bucket, env


def _clip_keys(local_build: Path, split: str) -> list[str]:
    return [c["key"] for c in index_clips(local_build / split)]


def test_s3_build_writes_the_local_bytes(s3_build, local_build, s3_server):
    bucket, _ = s3_build
    client = s3_server.client()
    for split in ("train", "val"):
        local = sorted(p.name for p in (local_build / split).glob("*.tar")) + ["clips.idx", "manifest.json"]
        assert len(local) > 3
        for name in local:
            body = client.get_object(Bucket=bucket, Key=f"ds/v1/{split}/{name}")["Body"].read()
            assert body == (local_build / split / name).read_bytes(), name


def test_s3_build_uploads_the_clip_index_before_the_manifest(source, local_build, s3_server, tmp_path, monkeypatch):
    """A reader that sees a split's manifest.json in the bucket finds the clips.idx it names: at the moment the
    manifest is put, the index is already there, whole (asked of the bucket itself, not of the builder)."""
    from shardgen.build.pipeline import build
    from shardgen.core.storage import S3Store
    from shardgen.build.plan import BuildParams

    bucket = s3_server.new_bucket("order")
    seen: list[tuple[str, int | None]] = []  # (name put, size of that split's clips.idx in the bucket just before)
    put_bytes = S3Store.put_bytes

    def recording(self, data, name):
        if name.endswith(("/manifest.json", "/clips.idx")):
            seen.append((name, self.size(f"{name.rsplit('/', 1)[0]}/clips.idx")))
        return put_bytes(self, data, name)

    monkeypatch.setattr(S3Store, "put_bytes", recording)
    build(source, f"s3://{bucket}/ds", ["train", "val"], BuildParams(clip_seconds=1.0, shard_clips=3), workers=1,
          progress=False, staging=tmp_path / "staging", s3_options=s3_server.options())
    assert [n for n, _ in seen] == ["train/clips.idx", "train/manifest.json", "val/clips.idx", "val/manifest.json"]
    client = s3_server.client()
    for split in ("train", "val"):
        index = (local_build / split / "clips.idx").read_bytes()
        assert dict(seen)[f"{split}/clips.idx"] is None  # a fresh prefix: nothing there before the index went up
        assert dict(seen)[f"{split}/manifest.json"] == len(index) == json.loads(
            (local_build / split / "manifest.json").read_text())["index"]["bytes"]
        names = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"ds/{split}/")["Contents"]]
        assert f"ds/{split}/clips.idx" in names and f"ds/{split}/manifest.json" in names  # side by side
        assert client.get_object(Bucket=bucket, Key=f"ds/{split}/clips.idx")["Body"].read() == index


def test_s3_build_resumes_and_refuses_other_params(s3_build, source, s3_server):
    bucket, env = s3_build
    cmd = [sys.executable, "-m", "shardgen", "build", "--data", str(source), "--out", f"s3://{bucket}/ds/v1", *ARGS]
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    report = s3_server.client().get_object(Bucket=bucket, Key="ds/v1/build-report.json")["Body"].read()
    assert json.loads(report)["timing"]["clips_written_now"] == 0  # everything was already there
    other = subprocess.run(cmd[:-len(ARGS)] + [a if a != "1" else "2" for a in ARGS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert other.returncode == 2 and "--overwrite" in other.stderr


def _epoch_keys(source, **kw) -> list[str]:
    ld = loaders.make_loader(source, batch_size=2, with_meta=True, seed=5, **kw)
    return [m["key"] for _, _, _, meta in ld for m in meta]


def test_loader_streams_s3_and_http_every_clip_once(s3_build, local_build, s3_server, http_server):
    bucket, _ = s3_build
    opts = {"s3_options": s3_server.options()}
    expected = sorted(_clip_keys(local_build, "train"))
    local = _epoch_keys(local_build / "train")
    over_s3 = _epoch_keys(f"s3://{bucket}/ds/v1/train", remote_options=opts)
    http = http_server(local_build)
    over_http = _epoch_keys(f"{http.url}/train")
    assert sorted(local) == expected and over_s3 == local and over_http == local


def test_cut_connections_resume_without_loss(s3_build, local_build, s3_server, http_server, cutting_proxy):
    bucket, _ = s3_build
    local = _epoch_keys(local_build / "train")
    size = max(p.stat().st_size for p in (local_build / "train").glob("*.tar"))
    http = http_server(local_build)
    proxy = cutting_proxy(http.port, cut_every=size // 5)
    ref = list(loaders.make_loader(local_build / "train", batch_size=2, seed=5))
    got = list(loaders.make_loader(f"{proxy.url}/train", batch_size=2, seed=5, remote_options={"backoff": 0.01}))
    assert len(got) == len(ref) and all(all((a == b).all() for a, b in zip(x, y)) for x, y in zip(got, ref))
    assert proxy.cuts >= 3
    s3_proxy = cutting_proxy(s3_server.port, cut_every=size // 4)
    opts = {"s3_options": s3_server.options(endpoint_url=s3_proxy.url), "backoff": 0.01}
    assert _epoch_keys(f"s3://{bucket}/ds/v1/train", remote_options=opts) == local
    assert s3_proxy.cuts >= 3


def test_cache_serves_the_second_epoch(s3_build, local_build, s3_server, tmp_path):
    bucket, _ = s3_build
    opts = {"s3_options": s3_server.options()}
    ld = loaders.make_loader(f"s3://{bucket}/ds/v1/train", batch_size=2, seed=5, with_meta=True, remote_options=opts,
                             cache_dir=tmp_path / "cache", cache_bytes=1 << 30)
    first = [m["key"] for *_, meta in ld for m in meta]
    shards = sorted(p.name for p in (local_build / "train").glob("*.tar"))
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tar"))  # not the .tar.sha256 side files
    assert len(shards) > 1 and len(cached) == len(shards) and all(c.endswith(tuple(shards)) for c in cached)
    assert all((tmp_path / "cache" / f"{c}.sha256").is_file() for c in cached)
    from shardgen.core import sources

    cache = next(c for k, c in sources._caches.items() if k[0] == str(tmp_path / "cache"))
    misses = cache.misses
    ld.set_epoch(0)
    assert [m["key"] for *_, meta in ld for m in meta] == first
    assert cache.misses == misses and cache.hits > 0  # second pass read from disk


def test_loader_with_only_the_aws_variables(s3_build, local_build, monkeypatch):
    """No remote_options at all: endpoint and credentials come from the environment, as for the build."""
    bucket, env = s3_build
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(k, env[k])
    keys = _epoch_keys(f"s3://{bucket}/ds/v1/train", num_workers=2)
    assert len(keys) == len(set(keys)) and set(keys) <= set(_clip_keys(local_build, "train"))
    assert len(keys) == len(_clip_keys(local_build, "train")) - len(_clip_keys(local_build, "train")) % 2
