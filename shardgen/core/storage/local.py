"""A local directory as a store. Every write goes through :func:`.atomic.atomic_file` (temp file in
the target directory, fsync, rename), so a reader sees the old file or the whole new one."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .atomic import atomic_file, is_temp_name
from .base import WritableStore
from .options import TransportOptions

MiB = 1 << 20


class LocalStore(WritableStore):
    """``root`` is created when ``create`` (the builder's output); readers pass ``create=False``."""

    def __init__(self, root: str | os.PathLike, options: TransportOptions | None = None, *, create: bool = True) -> None:
        super().__init__(options)
        self.root = Path(root).expanduser().absolute()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*self.clean(name).split("/"))

    def url(self, name):
        return str(self._path(name))

    # -- read -----------------------------------------------------------------
    def open_range(self, name, start=0, end=None, *, sparse=False):
        """A local file seeked to ``start`` (``end`` is not enforced: read ``end - start`` bytes);
        buffered (1 MiB) unless ``sparse``, where a skip is one seek and a header one 512-byte read."""
        f = open(self._path(name), "rb", buffering=0 if sparse else MiB)
        if start:
            f.seek(start)
        return f

    def size(self, name):
        try:
            st = self._path(name).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return None if stat.S_ISDIR(st.st_mode) else st.st_size

    def read_bytes(self, name):
        return self._path(name).read_bytes()

    # -- write ----------------------------------------------------------------
    def _atomic_write(self, target: Path, write) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target) as f:
            write(f)

    def put_file(self, local_path, relative_name):
        def write(f):
            with open(local_path, "rb") as src:
                shutil.copyfileobj(src, f, 4 * MiB)

        self._atomic_write(self._path(relative_name), write)

    def put_bytes(self, data, relative_name):
        self._atomic_write(self._path(relative_name), lambda f: f.write(data))

    def list(self, prefix=""):
        """Files under ``root`` whose relative name starts with ``prefix`` (only the prefix's directory is walked)."""
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / head if head else self.root
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for fn in filenames:
                if is_temp_name(fn):  # an unfinished write
                    continue
                rel = fn if rel_dir == "." else f"{rel_dir}/{fn}".replace(os.sep, "/")
                if rel.startswith(prefix):
                    out.append(rel)
        return sorted(out)

    def delete(self, name):
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass
