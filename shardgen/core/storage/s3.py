"""``s3://bucket/prefix`` as a store: ranged ``GetObject`` reads (resumed by
:class:`.stream.ResumableReader`), uploads (multipart above ``S3Options.multipart_threshold``),
listing and deletes. Works with AWS S3, MinIO, Ceph RGW, R2 and OpenStack Swift's s3api
(client configuration and error meanings in :mod:`.s3config`)."""

from __future__ import annotations

import os
from typing import Iterable

from .base import WritableStore
from .errors import StorageError
from .options import TransportOptions
from .s3config import (NOT_FOUND, PAST_END, TRANSIENT, S3Options, actual_object_size, classify_client_error,
                       client_error, shared_client, transient_s3_errors)
from .stream import TRANSIENT_ERRORS, Fatal, Opened, PastEnd, ResumableReader, Transient, parse_content_range, \
    range_header, skip_body, with_retries
from .url import parse_location

class S3Store(WritableStore):
    """``s3://bucket/prefix``; ``options`` may be :class:`TransportOptions` or just :class:`S3Options`."""

    def __init__(self, url: str, options: TransportOptions | S3Options | None = None, *, client=None) -> None:
        super().__init__(TransportOptions.coerce(options))
        loc = parse_location(url if "://" in url else f"s3://{url}")
        if loc.kind != "s3":
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        self.bucket, self.prefix = loc.bucket, loc.key.strip("/")
        self.s3_options = self.options.s3()
        self._client = client
        self._transient = TRANSIENT_ERRORS + transient_s3_errors()

    def __repr__(self) -> str:
        return f"S3Store({self.base_url!r})"

    @property
    def base_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def client(self):
        if self._client is None:
            self._client = shared_client(self.s3_options)
        return self._client

    def key(self, name: str) -> str:
        n = self.clean(name)
        return f"{self.prefix}/{n}" if self.prefix else n

    def url(self, name):
        return f"s3://{self.bucket}/{self.key(name)}"

    def _err(self, what: str, name: str, e: Exception) -> StorageError:
        return StorageError(f"S3 {what} failed for {self.url(name)}: {e}")

    # -- read -----------------------------------------------------------------
    def open_range(self, name, start=0, end=None, *, sparse=False):
        return ResumableReader(self.url(name), self._opener(self.key(name)), policy=self.options.retry,
                               transient=self._transient, chunk_size=self.options.chunk_size, start=start, end=end)

    def size(self, name):
        def head() -> int | None:
            try:
                return int(self.client.head_object(Bucket=self.bucket, Key=self.key(name))["ContentLength"])
            except client_error() as e:
                kind, message = classify_client_error(e)
                if kind == NOT_FOUND:
                    return None
                raise (Transient if kind == TRANSIENT else Fatal)(message) from None

        return with_retries(self.options.retry, head, url=self.url(name), transient=self._transient)

    def _opener(self, key: str):
        client, bucket, chunk_size = self.client, self.bucket, self.options.chunk_size

        def opener(pos: int, end: int | None) -> Opened:
            kw = {"Bucket": bucket, "Key": key}
            if pos > 0 or end is not None:
                kw["Range"] = range_header(pos, end)
            try:
                r = client.get_object(**kw)
            except client_error() as e:
                kind, message = classify_client_error(e)
                if kind == PAST_END:
                    raise PastEnd(actual_object_size(e)) from None
                if kind == TRANSIENT:
                    raise Transient(message) from None
                raise Fatal(message, not_found=kind == NOT_FOUND) from None
            body, length = r["Body"], r.get("ContentLength")
            cr = parse_content_range(r.get("ContentRange"))
            skipped = 0
            if cr is not None:
                first, last, total = cr
                length = last - first + 1
            elif pos > 0:  # Range ignored: skip to pos
                try:
                    skip_body(body.read, pos, chunk_size)
                except Transient:
                    body.close()
                    raise
                first, total, skipped = pos, (None if length is None else int(length)), pos
                length = None if length is None else int(length) - pos
            else:
                first, total = 0, (None if length is None else int(length))
            opened = Opened(body, first, total, r.get("ETag"), length=length, release=lambda ok, body=body: body.close())
            opened.skipped = skipped
            return opened

        return opener

    # -- write ----------------------------------------------------------------
    def put_file(self, local_path, relative_name):
        try:
            self.client.upload_file(os.fspath(local_path), self.bucket, self.key(relative_name),
                                    Config=self.s3_options.transfer_config())
        except Exception as e:
            raise self._err("upload", relative_name, e) from e

    def put_bytes(self, data, relative_name):
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(relative_name), Body=bytes(data))
        except Exception as e:
            raise self._err("put", relative_name, e) from e

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
            r = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errs = r.get("Errors") or []
            if errs:
                raise StorageError(f"S3 delete failed in {self.base_url}: {errs[:3]}")


__all__ = ["S3Store"]
