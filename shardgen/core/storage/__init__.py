"""Storage: every byte avshards reads or writes outside a tar member, in one layer.

Read and write sit side by side (as MosaicML streaming keeps ``storage/upload`` and ``download``
together), one module per job:

* :mod:`.url` — the one address parser (local path, ``file://``, ``http(s)://``, ``s3://``);
* :mod:`.options` — :class:`TransportOptions` (typed) and the one :class:`RetryPolicy`;
* :mod:`.stream` — :class:`ResumableReader`, the retry core every remote read goes through;
* :mod:`.base` — the backend interface: ``open_range`` / ``read_bytes`` / ``size``, plus
  ``put_file`` / ``put_bytes`` / ``list`` / ``delete`` where writable;
* :mod:`.local`, :mod:`.http` (read-only), :mod:`.s3` — the backends; :mod:`.s3config` — the
  one S3 client configuration and error classification;
* :mod:`.atomic` — the one atomic file write; :mod:`.cache` — the sha256-verified LRU shard cache;
* :mod:`.locate` — address → backend (:func:`open_store`, :func:`open_range`, :func:`read_bytes`).
"""

from .atomic import TMP_MARK, atomic_file, remove_stale_temps
from .base import Store, WritableStore
from .cache import ShardCache
from .errors import CacheVerificationError, RemoteNotFoundError, RemoteReadError, StorageError
from .http import HttpStore
from .local import LocalStore
from .locate import locate, object_size, open_range, open_store, open_writable, read_bytes
from .options import RetryPolicy, TransportOptions
from .s3 import S3Store
from .s3config import S3Options
from .stream import ResumableReader, SparseWindow, Window
from .url import Location, is_remote, join, parent, parse_location

__all__ = [
    "TMP_MARK", "atomic_file", "remove_stale_temps", "Store", "WritableStore", "ShardCache", "CacheVerificationError",
    "RemoteNotFoundError", "RemoteReadError", "StorageError", "HttpStore", "LocalStore", "locate", "object_size",
    "open_range", "open_store", "open_writable", "read_bytes", "RetryPolicy", "TransportOptions", "S3Store", "S3Options",
    "ResumableReader", "SparseWindow", "Window", "Location", "is_remote", "join", "parent", "parse_location",
]
