"""Where built files go: a local directory or an S3-compatible bucket.

Two halves of avshards share this module:

* the builder (``shardgen``) writes shards and the manifest through a
  :class:`Store` obtained from :func:`open_store`;
* the loader (``loaders.remote``) reads them back and uses the same
  :class:`S3Options` / :meth:`S3Options.make_client` to talk to S3.

Atomicity, from a reader's point of view
----------------------------------------
Each single object is published atomically:

* :class:`LocalStore` writes into a temporary file *in the target directory*
  and renames it into place with :func:`os.replace`, so a reader sees either
  the old file, or the complete new one, never a partial file.
* :class:`S3Store` relies on S3 semantics: a PUT (or a completed multipart
  upload) becomes visible as a whole; an interrupted upload leaves nothing.

A *data set* (many shards + one manifest) is not atomic by itself.  The
contract is: **the builder uploads every shard first and the manifest last**.
Readers only discover shards through the manifest, so a reader that sees a
manifest can rely on every shard it names being complete.  A re-build that
overwrites shards in place is therefore not safe for concurrent readers; write
to a new prefix instead and upload the new manifest last.

S3 client configuration
-----------------------
:class:`S3Options` holds endpoint, region, profile, addressing style,
credentials, timeouts and retries.  Fields left at ``None`` fall back to
boto3's usual resolution chain (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_DEFAULT_REGION`` / ``AWS_REGION``, ``AWS_PROFILE``, ``~/.aws/config``,
instance metadata ...).  Clients are created with
``request_checksum_calculation="when_required"`` and
``response_checksum_validation="when_required"`` so that S3-compatible
services that do not implement the newer flexible checksums (OpenStack Swift
s3api, older MinIO/Ceph RGW, R2 ...) accept the requests, and a handler adds
``Content-MD5`` to ``DeleteObjects`` requests (which those services require
instead of CRC32).

boto3 is imported lazily: the core package works without it, only S3 use
needs ``pip install avshards[s3]``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import shutil
import stat
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlparse

__all__ = [
    "S3Options",
    "Store",
    "LocalStore",
    "S3Store",
    "open_store",
    "parse_s3_url",
    "StorageError",
]

MiB = 1 << 20

_ADDRESSING_STYLES = ("auto", "path", "virtual")


class StorageError(IOError):
    """A store operation failed (message names the store URL / object)."""


def _require_boto3():
    try:
        import boto3  # noqa: F401
        import botocore  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "S3 support needs boto3: pip install 'avshards[s3]' (or pip install boto3)"
        ) from e
    return boto3


def _env(*names: str) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return None


@dataclass
class S3Options:
    """S3 client configuration shared by the builder and the loader.

    ``None`` means "let boto3 decide" (environment variables, profile,
    config file, instance metadata).
    """

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"  # 'auto' | 'path' | 'virtual'
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_retries: int = 5  # botocore retries (not counting the first attempt)
    max_pool_connections: int = 16
    # upload tuning (S3Store.put_file)
    multipart_threshold: int = 64 * MiB
    multipart_chunksize: int = 16 * MiB
    max_concurrency: int = 4

    def __post_init__(self) -> None:
        if self.addressing_style not in _ADDRESSING_STYLES:
            raise ValueError(
                f"addressing_style must be one of {_ADDRESSING_STYLES}, "
                f"got {self.addressing_style!r}"
            )
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key and secret_key must be given together")

    @classmethod
    def from_env(cls, **overrides: Any) -> "S3Options":
        """Options from the environment, then ``overrides`` (None values ignored).

        Reads ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
        ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_PROFILE`` and
        ``AVSHARDS_S3_ADDRESSING_STYLE``.  Credentials are not copied from the
        environment: boto3 reads ``AWS_ACCESS_KEY_ID`` etc. itself (and keeps
        them out of ``repr``); pass ``access_key=``/``secret_key=`` to force
        explicit ones.
        """
        kw: dict[str, Any] = {
            "endpoint_url": _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            "region": _env("AWS_REGION", "AWS_DEFAULT_REGION"),
            "profile": _env("AWS_PROFILE"),
        }
        style = _env("AVSHARDS_S3_ADDRESSING_STYLE")
        if style:
            kw["addressing_style"] = style
        names = {f.name for f in dataclasses.fields(cls)}
        for k, v in overrides.items():
            if k not in names:
                raise TypeError(f"unknown S3Options field {k!r}")
            if v is not None:
                kw[k] = v
        return cls(**kw)

    def replace(self, **changes: Any) -> "S3Options":
        return dataclasses.replace(self, **changes)

    # -- client -----------------------------------------------------------
    def botocore_config(self):
        from botocore.config import Config

        kw: dict[str, Any] = dict(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"max_attempts": int(self.max_retries), "mode": "standard"},
            s3={"addressing_style": self.addressing_style},
            max_pool_connections=self.max_pool_connections,
        )
        try:
            return Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                **kw,
            )
        except TypeError:  # botocore < 1.36: no flexible checksums by default anyway
            return Config(**kw)

    def make_client(self):
        """A new boto3 S3 client (thread-safe; create one per process)."""
        boto3 = _require_boto3()
        session = boto3.session.Session(profile_name=self.profile)
        kw: dict[str, Any] = {"config": self.botocore_config()}
        if self.endpoint_url:
            kw["endpoint_url"] = self.endpoint_url
        if self.region:
            kw["region_name"] = self.region
        if self.access_key is not None:
            kw["aws_access_key_id"] = self.access_key
            kw["aws_secret_access_key"] = self.secret_key
            if self.session_token:
                kw["aws_session_token"] = self.session_token
        client = session.client("s3", **kw)
        client.meta.events.register(
            "before-sign.s3.DeleteObjects", _add_content_md5_for_delete_objects
        )
        return client

    def transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=int(self.multipart_threshold),
            multipart_chunksize=int(self.multipart_chunksize),
            max_concurrency=int(self.max_concurrency),
            use_threads=self.max_concurrency > 1,
        )

    def _cache_key(self) -> tuple:
        return dataclasses.astuple(self)


def _add_content_md5_for_delete_objects(request, **_kwargs) -> None:
    """Swift s3api / older S3 clones require Content-MD5 on DeleteObjects;
    botocore >= 1.36 sends a CRC32 flexible checksum instead."""
    body = request.body or b""
    if hasattr(body, "read"):
        pos = body.tell()
        data = body.read()
        body.seek(pos)
    else:
        data = body if isinstance(body, bytes) else str(body).encode()
    for h in list(request.headers.keys()):
        if h.lower().startswith("x-amz-checksum-") or h.lower() == "x-amz-sdk-checksum-algorithm":
            del request.headers[h]
    if "Content-MD5" in request.headers:
        del request.headers["Content-MD5"]
    request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()


_client_cache: dict[tuple, Any] = {}
_client_lock = threading.Lock()


def shared_client(options: S3Options):
    """One client per (options, process): safe after fork (DataLoader workers)."""
    key = (os.getpid(), options._cache_key())
    with _client_lock:
        c = _client_cache.get(key)
        if c is None:
            c = options.make_client()
            _client_cache[key] = c
        return c


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    u = urlparse(url)
    if u.scheme != "s3" or not u.netloc:
        raise ValueError(f"not an s3://bucket/key URL: {url!r}")
    return u.netloc, u.path.lstrip("/")


def _clean_name(name: str) -> str:
    """Validate a store-relative name: forward slashes, no '..', not absolute."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid object name {name!r}")
    n = name.replace(os.sep, "/")
    if n.startswith("/"):
        raise ValueError(f"object name must be relative: {name!r}")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ValueError(f"invalid object name {name!r}")
    return "/".join(parts)


class Store(ABC):
    """Where built files go.  Names are relative, '/'-separated."""

    @abstractmethod
    def put_file(self, local_path: str | os.PathLike, relative_name: str) -> None:
        """Publish a local file under ``relative_name`` (atomically for readers)."""

    @abstractmethod
    def put_bytes(self, data: bytes, relative_name: str) -> None:
        """Publish ``data`` under ``relative_name`` (atomically for readers)."""

    @abstractmethod
    def exists(self, name: str) -> int | None:
        """Size in bytes if the object exists, else None."""

    @abstractmethod
    def get_bytes(self, name: str) -> bytes:
        """Whole object (use for small objects such as manifests)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted relative names starting with ``prefix``."""

    @abstractmethod
    def url(self, name: str) -> str:
        """A URL (or local path) that ``loaders.remote.open_shard`` can read."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove an object; missing objects are ignored."""


class LocalStore(Store):
    """A local directory. Every write is atomic (:func:`shardgen.writer.atomic_file`: temp file in
    the target directory, fsync, rename), so a reader sees the old file or the whole new one."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().absolute()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*_clean_name(name).split("/"))

    def _atomic_write(self, target: Path, write) -> None:
        from .writer import atomic_file

        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target) as f:
            write(f)

    def put_file(self, local_path, relative_name):
        target = self._path(relative_name)

        def write(f):
            with open(local_path, "rb") as src:
                shutil.copyfileobj(src, f, 4 * MiB)

        self._atomic_write(target, write)

    def put_bytes(self, data, relative_name):
        self._atomic_write(self._path(relative_name), lambda f: f.write(data))

    def exists(self, name):
        try:
            st = self._path(name).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return None if stat.S_ISDIR(st.st_mode) else st.st_size

    def get_bytes(self, name):
        return self._path(name).read_bytes()

    def list(self, prefix=""):
        """Files under ``root`` whose relative name starts with ``prefix`` (only the prefix's directory is walked)."""
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / head if head else self.root
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for fn in filenames:
                if fn.startswith(".") and ".tmp-" in fn:  # an unfinished write (see writer.TMP_MARK)
                    continue
                rel = fn if rel_dir == "." else f"{rel_dir}/{fn}".replace(os.sep, "/")
                if rel.startswith(prefix):
                    out.append(rel)
        return sorted(out)

    def url(self, name):
        return str(self._path(name))

    def delete(self, name):
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass


class S3Store(Store):
    """``s3://bucket/prefix``.  Large files use multipart upload
    (``S3Options.multipart_threshold`` / ``multipart_chunksize``)."""

    def __init__(self, url: str, s3_options: S3Options | None = None, *, client=None) -> None:
        self.bucket, prefix = parse_s3_url(url if "://" in url else f"s3://{url}")
        self.prefix = prefix.strip("/")
        self.options = s3_options or S3Options.from_env()
        self._client = client

    def __repr__(self) -> str:
        return f"S3Store({self.base_url!r})"

    @property
    def base_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def client(self):
        if self._client is None:
            self._client = shared_client(self.options)
        return self._client

    def key(self, name: str) -> str:
        n = _clean_name(name)
        return f"{self.prefix}/{n}" if self.prefix else n

    def _err(self, what: str, name: str, e: Exception) -> StorageError:
        return StorageError(f"S3 {what} failed for s3://{self.bucket}/{self.key(name)}: {e}")

    def put_file(self, local_path, relative_name):
        try:
            self.client.upload_file(
                os.fspath(local_path), self.bucket, self.key(relative_name),
                Config=self.options.transfer_config(),
            )
        except Exception as e:
            raise self._err("upload", relative_name, e) from e

    def put_bytes(self, data, relative_name):
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(relative_name), Body=bytes(data))
        except Exception as e:
            raise self._err("put", relative_name, e) from e

    def exists(self, name):
        from botocore.exceptions import ClientError

        try:
            r = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._err("head", name, e) from e
        return int(r["ContentLength"])

    def get_bytes(self, name):
        from botocore.exceptions import ClientError

        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            with r["Body"] as body:
                return body.read()
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                raise FileNotFoundError(f"s3://{self.bucket}/{self.key(name)}") from e
            raise self._err("get", name, e) from e

    def list(self, prefix=""):
        base = f"{self.prefix}/" if self.prefix else ""
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for obj in page.get("Contents", []) or []:
                    k = obj["Key"]
                    if k.startswith(base):
                        out.append(k[len(base):])
        except Exception as e:
            raise StorageError(f"S3 list failed for {self.base_url}/{prefix}: {e}") from e
        return sorted(out)

    def url(self, name):
        return f"s3://{self.bucket}/{self.key(name)}"

    def delete(self, name):
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as e:
            raise self._err("delete", name, e) from e

    def delete_many(self, names: Iterable[str]) -> None:
        """Batch delete (DeleteObjects, 1000 keys per request, with Content-MD5)."""
        keys = [self.key(n) for n in names]
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            r = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            errs = r.get("Errors") or []
            if errs:
                raise StorageError(f"S3 delete failed in {self.base_url}: {errs[:3]}")


def open_store(url_or_path: str | os.PathLike, s3_options: S3Options | None = None) -> Store:
    """``s3://bucket/prefix`` -> :class:`S3Store`; ``file:///dir`` or a path ->
    :class:`LocalStore` (the directory is created)."""
    s = os.fspath(url_or_path)
    if s.startswith("s3://"):
        return S3Store(s, s3_options)
    if s.startswith("file://"):
        u = urlparse(s)
        if u.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URL with a remote host is not supported: {s!r}")
        return LocalStore(unquote(u.path))
    if "://" in s:
        raise ValueError(f"unsupported store URL {s!r} (use s3://bucket/prefix or a local path)")
    return LocalStore(s)
