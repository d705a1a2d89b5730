"""How remote objects are read: one typed options object and one retry/backoff policy.

:class:`TransportOptions` replaces the free ``remote_options`` dict inside the package: it is
built once where a user's dict comes in (:meth:`TransportOptions.coerce`, which names any unknown
key instead of letting it travel to a transport as a TypeError) and passed down typed.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from typing import Any, Mapping

from .s3config import S3Options

DEFAULT_HTTP_TIMEOUT = (10.0, 30.0)  # connect, read (seconds)
DEFAULT_CACHE_BYTES = 10 << 30


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` consecutive failed attempts without progress are allowed; the n-th waits
    ``backoff * 2**(n-1)`` seconds (capped at ``max_backoff``, up to 25 % jitter)."""

    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, failures: int) -> float:
        return min(self.max_backoff, self.backoff * (2 ** (failures - 1)))

    def wait(self, failures: int) -> None:
        delay = self.delay(failures)
        if delay > 0:
            time.sleep(delay * (1.0 + 0.25 * random.random()))


@dataclass(frozen=True)
class TransportOptions:
    """Options for reading ``http(s)://`` and ``s3://`` objects (local files ignore them).

    ``timeout``: seconds, or ``(connect, read)``; ``None`` → :data:`DEFAULT_HTTP_TIMEOUT` for HTTP,
    the :class:`S3Options` timeouts for S3. ``retries`` / ``backoff`` / ``max_backoff``: the
    :class:`RetryPolicy`. ``chunk_size``: bytes per read from a response body. ``s3_options``:
    endpoint, region, addressing style, credentials (default: from the AWS environment variables).
    ``cache_dir`` / ``cache_bytes``: keep whole remote shards in a verified LRU cache
    (:class:`~shardgen.core.storage.cache.ShardCache`) so later epochs read from disk.
    """

    timeout: float | tuple[float, float] | None = None
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    chunk_size: int = 1 << 20
    s3_options: S3Options | None = None
    cache_dir: str | None = None
    cache_bytes: int = DEFAULT_CACHE_BYTES

    @classmethod
    def coerce(cls, value: "TransportOptions | S3Options | Mapping[str, Any] | None") -> "TransportOptions":
        """The options from what a caller passed: None (defaults), an S3Options, a dict of fields, or options."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, S3Options):
            return cls(s3_options=value)
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - names)
            if unknown:
                raise TypeError(f"unknown transport option(s) {unknown}; known: {sorted(names)}")
            return cls(**{k: v for k, v in value.items() if v is not None})
        raise TypeError(f"transport options must be a TransportOptions or a dict, not {type(value).__name__}")

    def replace(self, **changes: Any) -> "TransportOptions":
        return dataclasses.replace(self, **changes)

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(int(self.retries), float(self.backoff), float(self.max_backoff))

    def timeouts(self, default: tuple[float, float]) -> tuple[float, float]:
        t = default if self.timeout is None else self.timeout
        return (float(t[0]), float(t[1])) if isinstance(t, (tuple, list)) else (float(t), float(t))

    def s3(self) -> S3Options:
        """The S3 client options, with ``timeout`` applied when given."""
        opts = self.s3_options or S3Options.from_env()
        if self.timeout is None:
            return opts
        connect, read = self.timeouts(DEFAULT_HTTP_TIMEOUT)
        return opts.replace(connect_timeout=connect, read_timeout=read)
