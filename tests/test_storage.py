"""The storage layer (shardgen.core.storage): stores (LocalStore / S3Store / HttpStore), ranged
resumable reads (open_range / read_bytes) and the ShardCache, against real servers on 127.0.0.1.

Servers come from tests.servers (Swift+s3api or moto, nginx, a cutting TCP
proxy); install them with scripts/install_test_services.sh.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading

import pytest

from shardgen.core import storage
from shardgen.core.storage.options import RetryPolicy
from shardgen.core.storage import (
    CacheVerificationError,
    LocalStore,
    RemoteNotFoundError,
    RemoteReadError,
    ResumableReader,
    S3Options,
    S3Store,
    ShardCache,
    TransportOptions,
    open_store,
)

MiB = 1 << 20
FAST = dict(retries=3, backoff=0.01, max_backoff=0.05, timeout=(3, 5))


def open_shard(url, *, start=0, end=None, **options):
    """``storage.open_range`` with the transport options given as keyword fields (keeps the calls below short)."""
    return storage.open_range(url, TransportOptions(**options), start=start, end=end)


def read_bytes(url, **options):
    return storage.read_bytes(url, TransportOptions(**options))


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A directory with random files of a few MB and a small real tar."""
    d = tmp_path_factory.mktemp("shards")
    rng = __import__("random").Random(1234)
    files = {
        "shard-000000.bin": rng.randbytes(3 * MiB + 12345),
        "shard-000001.bin": rng.randbytes(2 * MiB + 1),
        "small.bin": rng.randbytes(1000),
        "empty.bin": b"",
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    # a small real tar with webdataset-style members
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(5):
            for ext, payload in (("json", b'{"i": %d}' % i), ("wav", rng.randbytes(50_000 + i))):
                ti = tarfile.TarInfo(f"clip{i:03d}.{ext}")
                ti.size = len(payload)
                ti.mtime = 0
                tf.addfile(ti, io.BytesIO(payload))
    (d / "real-000000.tar").write_bytes(buf.getvalue())
    return d


def _read_all(f, sizes=(1, 7, 4096, 65536, 300_000)) -> bytes:
    """Read with a variety of request sizes (exercises partial reads)."""
    out = bytearray()
    i = 0
    while True:
        chunk = f.read(sizes[i % len(sizes)])
        i += 1
        if not chunk:
            return bytes(out)
        out += chunk


@pytest.fixture(scope="module")
def nginx(http_server, data_dir):
    return http_server(data_dir)


@pytest.fixture(scope="module")
def s3_data(s3_server, data_dir):
    """A bucket holding every file of data_dir under prefix 'ds/'."""
    bucket = s3_server.new_bucket("data")
    store = S3Store(f"s3://{bucket}/ds", s3_server.options())
    for p in sorted(data_dir.iterdir()):
        store.put_file(p, p.name)
    return store


# --------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------

def test_s3_options_from_env(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    o = S3Options.from_env(addressing_style="path", read_timeout=7)
    assert (o.endpoint_url, o.region, o.addressing_style, o.read_timeout) == \
        ("http://127.0.0.1:1", "eu-west-3", "path", 7)
    assert o.access_key is None
    assert "s3cr3t" not in repr(S3Options(access_key="AK", secret_key="s3cr3t"))
    with pytest.raises(ValueError):
        S3Options(addressing_style="sideways")
    with pytest.raises(TypeError):
        S3Options.from_env(nope=1)


def test_open_store_dispatch(tmp_path):
    assert isinstance(open_store(tmp_path / "a"), LocalStore)
    assert isinstance(open_store(f"file://{tmp_path}/b"), LocalStore)
    s = open_store("s3://bucket/some/prefix/", S3Options(region="us-east-1"))
    assert isinstance(s, S3Store) and s.url("x.tar") == "s3://bucket/some/prefix/x.tar"
    with pytest.raises(ValueError):
        open_store("gs://bucket/x")


def test_local_store_atomic_put(tmp_path, data_dir):
    store = LocalStore(tmp_path / "out")
    src = data_dir / "shard-000000.bin"
    store.put_file(src, "train/shard-000000.bin")
    store.put_bytes(b'{"n": 1}', "manifest.json")
    assert store.read_bytes("train/shard-000000.bin") == src.read_bytes()
    assert store.size("train/shard-000000.bin") == src.stat().st_size
    assert store.size("missing") is None and store.size("train") is None
    assert store.list() == ["manifest.json", "train/shard-000000.bin"]
    assert store.list("train/") == ["train/shard-000000.bin"]
    with open_shard(store.url("manifest.json")) as f:
        assert f.read() == b'{"n": 1}'
    with pytest.raises(ValueError):
        store.put_bytes(b"x", "../escape")

    # a failing write leaves neither a partial target nor a temp file behind
    class Boom(Exception):
        pass

    class BadSrc(os.PathLike):
        def __fspath__(self):
            raise Boom()

    with pytest.raises(Boom):
        store.put_file(BadSrc(), "train/shard-000001.bin")
    assert store.size("train/shard-000001.bin") is None
    assert sorted(os.listdir(tmp_path / "out" / "train")) == ["shard-000000.bin"]

    # a concurrent reader only ever sees the old or the new complete content
    old, new = b"a" * (4 * MiB), b"b" * (4 * MiB)
    store.put_bytes(old, "x.bin")
    seen, stop = set(), threading.Event()

    def reader():
        while not stop.is_set():
            with open(store.url("x.bin"), "rb") as f:
                seen.add(hashlib.sha256(f.read()).hexdigest())

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(6):
            store.put_bytes(new if i % 2 == 0 else old, "x.bin")
    finally:
        stop.set()
        t.join(10)
    assert seen <= {hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()}


def test_s3_store_roundtrip_multipart(s3_server, cutting_proxy, tmp_path):
    bucket = s3_server.new_bucket("rt")
    opts = s3_server.options(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB,
                             max_concurrency=2)
    store = open_store(f"s3://{bucket}/run1", opts)
    assert isinstance(store, S3Store)
    big = os.urandom(12 * MiB + 777)  # 3 parts of >= 5 MiB (S3 minimum part size)
    (tmp_path / "big.bin").write_bytes(big)
    store.put_file(tmp_path / "big.bin", "shards/big-000000.bin")
    store.put_file(tmp_path / "big.bin", "shards/big-000001.bin")
    store.put_bytes(b'{"shards": 2}', "manifest.json")  # manifest last

    assert store.size("shards/big-000000.bin") == len(big)
    assert store.size("shards/nope.bin") is None
    assert store.read_bytes("shards/big-000001.bin") == big
    assert store.read_bytes("manifest.json") == b'{"shards": 2}'
    assert store.list() == ["manifest.json", "shards/big-000000.bin", "shards/big-000001.bin"]
    assert store.list("shards/") == ["shards/big-000000.bin", "shards/big-000001.bin"]
    # multipart objects have an ETag of the form "<md5 of part md5s>-<parts>"
    head = store.client.head_object(Bucket=bucket, Key="run1/shards/big-000000.bin")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
    assert read_bytes(store.url("manifest.json"), s3_options=opts) == b'{"shards": 2}'
    # ranged resumes across part boundaries of a multipart object
    proxy = cutting_proxy(s3_server.port, cut_every=3 * MiB + 1)
    popts = opts.replace(endpoint_url=proxy.url, max_retries=0)
    with open_shard(store.url("shards/big-000000.bin"), s3_options=popts, **FAST) as f:
        assert f.read() == big
        assert f.reconnects >= 3

    store.delete("shards/big-000001.bin")
    store.delete_many(["manifest.json"])  # DeleteObjects needs Content-MD5 on Swift
    assert store.list() == ["shards/big-000000.bin"]
    with pytest.raises(FileNotFoundError):
        store.read_bytes("manifest.json")


# --------------------------------------------------------------------------
# open_range: plain reads
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["shard-000000.bin", "small.bin", "empty.bin", "real-000000.tar"])
def test_open_shard_http_exact_bytes(nginx, data_dir, name):
    want = (data_dir / name).read_bytes()
    with open_shard(nginx.url_for(name), chunk_size=256 * 1024, **FAST) as f:
        assert isinstance(f, ResumableReader)
        assert _read_all(f) == want
        assert f.reconnects == 0 and f.tell() == len(want) and f.size == len(want)


@pytest.mark.parametrize("name", ["shard-000000.bin", "small.bin", "empty.bin", "real-000000.tar"])
def test_open_shard_s3_exact_bytes(s3_server, s3_data, data_dir, name):
    want = (data_dir / name).read_bytes()
    with open_shard(s3_data.url(name), s3_options=s3_server.options(), **FAST) as f:
        assert _read_all(f) == want
        assert f.reconnects == 0 and f.tell() == len(want)


def test_open_shard_local_and_file_url(data_dir):
    p = data_dir / "small.bin"
    with open_shard(str(p)) as f:
        assert f.read() == p.read_bytes()
    with open_shard(p.as_uri()) as f:
        assert f.read() == p.read_bytes()


def test_real_tar_streams_through_tarfile(nginx, data_dir):
    with tarfile.open(data_dir / "real-000000.tar") as ref:
        want = {m.name: ref.extractfile(m).read() for m in ref.getmembers()}
    got = {}
    with open_shard(nginx.url_for("real-000000.tar"), **FAST) as f:
        with tarfile.open(fileobj=f, mode="r|") as tf:  # pure streaming, no seeks
            for m in tf:
                got[m.name] = tf.extractfile(m).read()
    assert got == want


def test_seek_uses_ranges(nginx, data_dir):
    want = (data_dir / "shard-000001.bin").read_bytes()
    with open_shard(nginx.url_for("shard-000001.bin"), **FAST) as f:
        f.seek(-100, io.SEEK_END)
        assert f.read() == want[-100:]
        f.seek(1000)
        assert f.read(10) == want[1000:1010]
        assert f.reconnects == 0


def test_not_found_is_immediate(nginx, s3_server, s3_data, monkeypatch):
    waits = []  # every retry waits through RetryPolicy.wait: a 404 must never get there
    monkeypatch.setattr(RetryPolicy, "wait", lambda self, failures: waits.append(failures))
    with pytest.raises(RemoteNotFoundError, match="missing.bin"):
        read_bytes(nginx.url_for("missing.bin"), retries=5, backoff=1.0)
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        read_bytes(s3_data.url("missing.bin"), s3_options=s3_server.options(), retries=5,
                   backoff=1.0)
    assert waits == []  # no retry, no backoff on 404


# --------------------------------------------------------------------------
# resume through a proxy that cuts connections
# --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["close", "reset"])
def test_http_resume_through_cutting_proxy(nginx, cutting_proxy, data_dir, mode):
    name = "shard-000000.bin"
    want = (data_dir / name).read_bytes()
    proxy = cutting_proxy(nginx.port, cut_every=700_001, mode=mode)
    with open_shard(f"{proxy.url}/{name}", chunk_size=64 * 1024, **FAST) as f:
        got = _read_all(f)
        reconnects = f.reconnects
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest()
    assert got == want
    assert proxy.cuts >= 4 and reconnects >= 4, (proxy.cuts, reconnects)


@pytest.mark.parametrize("backend", ["http", "s3"])
def test_resume_after_read_timeout(backend, request, cutting_proxy, data_dir):
    name = "shard-000001.bin"
    want = (data_dir / name).read_bytes()
    if backend == "http":
        nginx = request.getfixturevalue("nginx")
        proxy = cutting_proxy(nginx.port, cut_every=MiB, mode="stall", max_cuts=2, stall_seconds=10)
        url, kw = f"{proxy.url}/{name}", {}
    else:
        s3 = request.getfixturevalue("s3_server")
        url = request.getfixturevalue("s3_data").url(name)
        proxy = cutting_proxy(s3.port, cut_every=MiB, mode="stall", max_cuts=2, stall_seconds=10)
        kw = {"s3_options": s3.options(endpoint_url=proxy.url, max_retries=0)}
    with open_shard(url, **{**FAST, "timeout": (2, 1.0)}, **kw) as f:
        got = f.read()
        # each of the proxy's 2 stalls costs one reconnect; a slow first answer of Swift's Python proxy
        # on a busy 2-core machine may cost one more
        assert 2 <= f.reconnects <= 3 and sum("Timeout" in e for e in f.errors) == f.reconnects, f.errors
    assert got == want  # the read timeout fired at each stall (counted above) instead of waiting the 10 s out


def test_s3_resume_through_cutting_proxy(s3_server, s3_data, cutting_proxy, data_dir):
    name = "shard-000000.bin"
    want = (data_dir / name).read_bytes()
    proxy = cutting_proxy(s3_server.port, cut_every=500_000)
    opts = s3_server.options(endpoint_url=proxy.url, max_retries=0)
    with open_shard(s3_data.url(name), s3_options=opts, chunk_size=100_000, **FAST) as f:
        got = _read_all(f)
        reconnects = f.reconnects
    assert got == want
    assert proxy.cuts >= 5 and reconnects >= 5, (proxy.cuts, reconnects)


def test_retries_exhausted_names_url_and_offset(nginx, cutting_proxy, data_dir):
    name = "shard-000000.bin"
    proxy = cutting_proxy(nginx.port, cut_every=300_000, refuse_after=1)
    url = f"{proxy.url}/{name}"
    with open_shard(url, retries=3, backoff=0.01) as f:
        with pytest.raises(RemoteReadError) as ei:
            f.read()
    err = ei.value
    assert url in str(err) and "offset 300000" in str(err), str(err)
    assert err.url == url and err.offset == 300_000
    assert f.reconnects == 3 and proxy.refused == 3


def test_connection_refused_exhausts_retries():
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/x.tar"
    with pytest.raises(RemoteReadError, match=r"x\.tar.*offset 0"):
        read_bytes(url, retries=2, backoff=0.01)


def test_read_bytes_http_and_s3(nginx, s3_server, s3_data, data_dir):
    want = (data_dir / "small.bin").read_bytes()
    assert read_bytes(nginx.url_for("small.bin")) == want
    assert read_bytes(s3_data.url("small.bin"), s3_options=s3_server.options()) == want


# --------------------------------------------------------------------------
# ShardCache
# --------------------------------------------------------------------------

def test_cache_lru_eviction(nginx, data_dir, tmp_path):
    names = ["shard-000001.bin", "small.bin", "real-000000.tar"]
    sizes = {n: (data_dir / n).stat().st_size for n in names}
    urls = {n: nginx.url_for(n) for n in names}
    limit = sizes["shard-000001.bin"] + sizes["real-000000.tar"] + 500  # not room for all 3
    cache = ShardCache(tmp_path / "cache", limit, TransportOptions(**FAST))

    def get(n):
        with cache.open(urls[n]) as f:
            assert f.read() == (data_dir / n).read_bytes()
        assert cache.total_bytes() <= limit

    get("small.bin")
    get("real-000000.tar")
    get("shard-000001.bin")  # over the limit: least recently used (small) goes
    assert (cache.misses, cache.hits) == (3, 0)
    assert urls["small.bin"] not in cache
    assert urls["real-000000.tar"] in cache and urls["shard-000001.bin"] in cache

    get("real-000000.tar")  # hit: the tar is now more recent than shard 1
    assert cache.hits == 1
    get("small.bin")  # miss: LRU is now shard 1 (not the older-inserted tar)
    assert urls["shard-000001.bin"] not in cache
    assert urls["real-000000.tar"] in cache and urls["small.bin"] in cache
    assert cache.evictions == 2
    assert not [p for p in os.listdir(tmp_path / "cache") if storage.TMP_MARK in p]  # atomic_file temp names: .<name>.tmp-<pid>

    # a file larger than the whole cache is served but not kept
    tiny = ShardCache(tmp_path / "tiny", 1000, TransportOptions(**FAST))
    n = "shard-000001.bin"
    with tiny.open(urls[n], expected_size=sizes[n]) as f:
        assert f.read() == (data_dir / n).read_bytes()
    assert tiny.total_bytes() == 0


def test_cache_sha256_verification(nginx, data_dir, tmp_path):
    name = "shard-000001.bin"
    data = (data_dir / name).read_bytes()
    good = hashlib.sha256(data).hexdigest()
    cache = ShardCache(tmp_path / "c", 100 * MiB, TransportOptions(**FAST))
    url = nginx.url_for(name)
    with pytest.raises(CacheVerificationError, match="sha256 mismatch.*" + name):
        cache.open(url, expected_sha256="0" * 64)
    assert url not in cache and os.listdir(tmp_path / "c") in ([], [".lock"])
    with pytest.raises(CacheVerificationError, match="size mismatch"):
        cache.open(url, expected_size=len(data) + 1)
    assert url not in cache

    with cache.open(url, expected_sha256=good, expected_size=len(data)) as f:
        assert f.read() == data
    with cache.open(url, expected_sha256=good.upper()) as f:  # hit, verified via side file
        assert f.read() == data
    assert cache.hits == 1
    # a cached copy that changed size is re-hashed and re-downloaded
    cache.path_for(url).write_bytes(b"corrupted")
    with cache.open(url, expected_sha256=good) as f:
        assert f.read() == data
    assert cache.misses == 4  # 2 rejected downloads, 1 good, 1 after the size change
    # same-size corruption is caught with verify_on_hit
    path = cache.path_for(url)
    path.write_bytes(b"x" * len(data))
    strict = ShardCache(tmp_path / "c", 100 * MiB, TransportOptions(**FAST), verify_on_hit=True)
    with strict.open(url, expected_sha256=good) as f:
        assert f.read() == data
    assert (strict.hits, strict.misses) == (0, 1)


def test_cache_over_s3_with_resume(s3_server, s3_data, cutting_proxy, data_dir, tmp_path):
    name = "shard-000001.bin"
    data = (data_dir / name).read_bytes()
    proxy = cutting_proxy(s3_server.port, cut_every=400_000)
    opts = s3_server.options(endpoint_url=proxy.url, max_retries=0)
    cache = ShardCache(tmp_path / "s3c", 50 * MiB, TransportOptions(s3_options=opts, chunk_size=128 * 1024, **FAST))
    with cache.open(s3_data.url(name), expected_sha256=hashlib.sha256(data).hexdigest()) as f:
        assert f.read() == data
    assert proxy.cuts >= 3


# --------------------------------------------------------------------------
# byte windows (open_range(start=, end=)), as shardgen.core.sources.open_clips uses
# --------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["http", "s3"])
def test_byte_window_with_resume(backend, nginx, s3_server, s3_data, cutting_proxy, data_dir):
    name = "shard-000000.bin"
    want = (data_dir / name).read_bytes()
    if backend == "http":
        proxy = cutting_proxy(nginx.port, cut_every=200_000)
        url, kw = f"{proxy.url}/{name}", {}
    else:
        proxy = cutting_proxy(s3_server.port, cut_every=200_000)
        url = s3_data.url(name)
        kw = {"s3_options": s3_server.options(endpoint_url=proxy.url, max_retries=0)}
    start, end = 123_457, 123_457 + 1_000_003
    with open_shard(url, start=start, end=end, chunk_size=64 * 1024, **FAST, **kw) as f:
        assert f.tell() == start
        got = _read_all(f)
        assert f.tell() == end and f.reconnects >= 4
    assert got == want[start:end]
    # windows at the edges: empty, the last bytes, past the end
    with open_shard(url, start=5, end=5, **FAST, **kw) as f:
        assert f.read() == b"" and f.requests == 0
    with open_shard(url, start=len(want) - 10, end=len(want), **FAST, **kw) as f:
        assert f.read() == want[-10:]
    with open_shard(url, start=len(want) + 10, **FAST, **kw) as f:
        assert f.read() == b""
    with open_shard(url, start=len(want) - 4, end=len(want) + 100, **FAST, **kw) as f:
        assert f.read() == want[-4:]


def test_byte_window_local(data_dir):
    p = data_dir / "small.bin"
    with open_shard(str(p), start=10, end=20) as f:
        assert f.read(10) == p.read_bytes()[10:20]


# --------------------------------------------------------------------------
# one parser, typed options, sizes everywhere, read-only HTTP
# --------------------------------------------------------------------------

def test_one_parser_for_every_address(tmp_path):
    loc = storage.parse_location
    assert (loc("/a/b.tar").kind, loc("/a/b.tar").path) == ("local", "/a/b.tar")
    assert (loc("file:///a/b%20c.tar").kind, loc("file:///a/b%20c.tar").path) == ("local", "/a/b c.tar")
    assert (loc("HTTPS://h/x").kind, loc("s3://bkt/p/x.tar").bucket, loc("s3://bkt/p/x.tar").key) == ("http", "bkt", "p/x.tar")
    for bad in ("file://otherhost/a", "s3:///no-bucket", "gs://bucket/x"):
        with pytest.raises(ValueError, match="URL"):
            loc(bad)
    assert storage.join("s3://b/p/", "m.json") == "s3://b/p/m.json" and storage.parent("http://h/a/b.tar") == "http://h/a"
    assert storage.join(tmp_path, "m.json") == str(tmp_path / "m.json") and not storage.is_remote(tmp_path)


def test_transport_options_are_typed_and_unknown_keys_are_named():
    o = TransportOptions.coerce({"retries": 2, "timeout": (1, 2)})
    assert isinstance(o, TransportOptions) and o.retry.retries == 2 and o.timeouts((9, 9)) == (1.0, 2.0)
    assert TransportOptions.coerce(S3Options(region="x")).s3_options.region == "x"
    with pytest.raises(TypeError, match="cache_dri"):
        TransportOptions.coerce({"cache_dri": "/tmp/x"})
    import loaders

    with pytest.raises(TypeError, match="bogus"):
        loaders.make_loader("/nonexistent", remote_options={"bogus": 1})


def test_object_size_local_http_s3(nginx, s3_server, s3_data, data_dir):
    n = len((data_dir / "small.bin").read_bytes())
    opts = TransportOptions(s3_options=s3_server.options(), **FAST)
    for url in (str(data_dir / "small.bin"), (data_dir / "small.bin").as_uri(), nginx.url_for("small.bin"),
                s3_data.url("small.bin")):
        assert storage.object_size(url, opts) == n, url
    for url in (str(data_dir / "missing.bin"), nginx.url_for("missing.bin"), s3_data.url("missing.bin")):
        assert storage.object_size(url, opts) is None, url


def test_http_is_read_only(nginx):
    store = open_store(nginx.url)
    assert isinstance(store, storage.HttpStore) and not store.writable and not hasattr(store, "put_bytes")
    with pytest.raises(ValueError, match="read-only"):
        storage.open_writable(nginx.url)
    assert store.read_bytes("small.bin") == storage.read_bytes(nginx.url_for("small.bin"))
