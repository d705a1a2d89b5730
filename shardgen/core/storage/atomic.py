"""One atomic write for every local file avshards publishes: shards, manifests, records, cache entries.

A file appears under its final name only when complete: it is written to
``.<name>.tmp-<pid>`` in the same directory, fsynced, then renamed (and the directory fsynced).
A killed writer leaves at most a temp file, which :func:`remove_stale_temps` deletes on the next
run; a file under its final name is always whole.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp-"


def is_temp_name(name: str) -> bool:
    """A name :func:`atomic_file` writes to before the rename (an unfinished write)."""
    return name.startswith(".") and TMP_MARK in name


@contextmanager
def _publishing(path: Path, durable: bool):
    """The temp name beside ``path``; renamed to ``path`` on success, removed on any failure."""
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _raise_naming(exc, path)
        raise
    if durable:
        _fsync_dir(path.parent)


@contextmanager
def atomic_file(path: Path, *, durable: bool = True):
    """Open ``.<name>.tmp-<pid>`` beside ``path`` for writing; on success fsync and rename it to ``path``.

    On any failure the temp file is removed and nothing appears under ``path``; a write error
    (disk full, file-size limit) is re-raised naming the file. ``durable=False`` skips the fsyncs
    (still atomic for readers, not across a power cut): for regenerable files such as the demo
    corpus's thousands of frames.
    """
    path = Path(path)
    with _publishing(path, durable) as tmp:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())


@contextmanager
def atomic_path(path: Path, *, durable: bool = True):
    """:func:`atomic_file` for a writer that needs a file name (PyAV's muxer): yields the temp path."""
    path = Path(path)
    with _publishing(path, durable) as tmp:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete temp files a killed build left behind (their final files were never renamed)."""
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if is_temp_name(p.name):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _raise_naming(exc: BaseException, path: Path) -> None:
    """A write error (disk full: ENOSPC, file size limit: EFBIG) names the file it hit; nothing was left under it."""
    if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
        raise OSError(exc.errno, f"{exc.strerror} while writing {path} (the temp file was removed; "
                                 "free space and re-run the same command to resume)") from exc


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
