"""S3 client configuration, shared by every S3 read and write, and what an S3 error means.

:class:`S3Options` holds endpoint, region, profile, addressing style, credentials, timeouts and
retries. Fields left at ``None`` fall back to boto3's usual resolution chain
(``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION`` / ``AWS_REGION``, ``AWS_PROFILE``,
``~/.aws/config``, instance metadata ...). Clients are created with
``request_checksum_calculation="when_required"`` and ``response_checksum_validation="when_required"``
so that S3-compatible services that do not implement the newer flexible checksums (OpenStack
Swift s3api, older MinIO/Ceph RGW, R2 ...) accept the requests, and a handler adds
``Content-MD5`` to ``DeleteObjects`` requests (which those services require instead of CRC32).

:func:`classify_client_error` is the one place that decides whether an S3 error means "not
there", "past the end", "try again" or "give up".

boto3 is the optional ``[s3]`` extra and slow to import (~0.15 s), so it is imported on first S3
use only (:func:`boto`), like matplotlib and Ray elsewhere: a local build or a loader reading
disk never pays for it, and S3 use without it says what to install.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import functools
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

MiB = 1 << 20

_ADDRESSING_STYLES = ("auto", "path", "virtual")


@functools.cache
def boto() -> SimpleNamespace:
    """boto3 and the botocore pieces we use, imported on first S3 use (the optional [s3] extra)."""
    try:
        import boto3
        import botocore.exceptions
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("S3 support needs boto3: pip install 'avshards[s3]' (or pip install boto3)") from e
    return SimpleNamespace(boto3=boto3, errors=botocore.exceptions, Config=Config, TransferConfig=TransferConfig)


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
        Config = boto().Config
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
        session = boto().boto3.session.Session(profile_name=self.profile)
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
        return boto().TransferConfig(
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


NOT_FOUND, PAST_END, TRANSIENT, FATAL = "not found", "past the end", "transient", "fatal"
_NOT_FOUND_CODES = ("404", "NoSuchKey", "NoSuchBucket", "NotFound")
_TRANSIENT_CODES = ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
                    "ThrottlingException", "RequestTimeTooSkewed")


def classify_client_error(exc: Exception) -> tuple[str, str]:
    """A botocore ``ClientError`` → (``NOT_FOUND`` | ``PAST_END`` | ``TRANSIENT`` | ``FATAL``, message).

    ``PAST_END`` is a 416 / InvalidRange: a range starting at or after the object's end.
    """
    response = getattr(exc, "response", None) or {}
    err = response.get("Error", {}) or {}
    code = str(err.get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = f"S3 {code or status}: {err.get('Message', '')}".rstrip(": ")
    if status == 416 or code == "InvalidRange":
        return PAST_END, message
    if status == 404 or code in _NOT_FOUND_CODES:
        return NOT_FOUND, message
    if status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES:
        return TRANSIENT, message
    return FATAL, message


def actual_object_size(exc: Exception) -> int | None:
    """The object size an InvalidRange error reports, when it does."""
    size = ((getattr(exc, "response", None) or {}).get("Error", {}) or {}).get("ActualObjectSize")
    return int(size) if size and str(size).isdigit() else None


@functools.cache
def transient_s3_errors() -> tuple[type, ...]:
    """Exceptions from a botocore call or body read worth a retry."""
    names = ("ConnectionError", "HTTPClientError", "IncompleteReadError", "ResponseStreamingError", "ReadTimeoutError",
             "ConnectTimeoutError", "EndpointConnectionError", "ConnectionClosedError")
    return tuple(t for t in (getattr(boto().errors, n, None) for n in names) if t is not None)


def client_error() -> type:
    """botocore's ClientError (an S3 error response), for ``except client_error() as e``."""
    return boto().errors.ClientError
