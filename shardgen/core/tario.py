"""A streaming tar reader that trusts nothing in the archive.

Why not ``tarfile``: we need to read from any byte stream (a socket, an S3 body) once, front
to back, with hard limits, and to fail loudly on damage. This reader:

* parses ustar/PAX/GNU-longname headers and verifies every header checksum;
* yields regular files only; links, devices and directories are refused or skipped;
* refuses a member that declares more than ``max_member_bytes`` before reading it (no
  unbounded allocation from a hostile size field);
* raises :class:`TruncatedTarError` (with the shard name and byte offset) when the stream ends
  inside a member or before the end-of-archive marker — a short shard is never a short epoch;
* leaves names and grouping into clips to :mod:`shardgen.core.clip_reader` (absolute paths,
  ``..``, the key pattern, repeated or scattered members).

This is the only tar parser that reads shard bytes in avshards (the builder writes shards with
``tarfile``; nothing parses them with it).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

from .storage.stream import discard

BLOCK = 512
DEFAULT_MAX_MEMBER = 256 << 20
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")  # regular file types: old-style, ustar, contiguous


class TarError(ValueError):
    """The archive is damaged or hostile; the message names the shard and the byte offset."""


class TruncatedTarError(TarError):
    pass


@dataclass(slots=True)
class TarMember:
    name: str
    data: bytes | None  # None: passed over (``want`` declined it)
    offset: int  # of the member's (first) header: a PAX or long-name header before it counts
    end: int  # just past its padded data: the next member's header, or the end-of-archive marker


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks = []
    got = 0
    while got < n:
        b = stream.read(n - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def header_checksum(hdr: bytes) -> int:
    """The ustar checksum of a 512-byte header: the sum of its bytes with the checksum field (148:156) read as
    spaces. Summed by ``zlib.adler32`` over pieces of at most 256 bytes — whose low 16 bits are then 1 + the
    exact sum (at most 256 x 255 < 65521, the modulus): the same number as ``sum()``, ~5x faster, which
    matters for a sparse read that walks a header per frame."""
    return ((zlib.adler32(hdr[:148]) & 0xFFFF) + (zlib.adler32(hdr[156:412]) & 0xFFFF)
            + (zlib.adler32(hdr[412:BLOCK]) & 0xFFFF) - 3 + 8 * 32)


def plain_member(hdr: bytes, max_member_bytes: int) -> tuple[bytes, int] | None:
    """The name and size of a plain header — one :func:`iter_tar` yields as is: a regular file, a valid
    checksum, octal fields, its size within ``max_member_bytes``, no ustar prefix, no PAX or GNU extension —
    or None for anything else (the zero block too), which only :func:`iter_tar` handles and names.

    What a clip's sparse read (:func:`~.clip_reader.read_selected`) accepts without iter_tar: the same
    checks, and whatever is not plain goes to iter_tar."""
    if len(hdr) != BLOCK or hdr[156:157] not in _REGULAR or hdr[124] & 0x80 or hdr[148] & 0x80:
        return None
    try:
        chk, size = _plain_octal(hdr[148:156]), _plain_octal(hdr[124:136])
    except ValueError:
        return None
    if chk != header_checksum(hdr) or not 0 <= size <= max_member_bytes:
        return None
    if hdr[257:262] == b"ustar" and hdr[345:500].split(b"\0", 1)[0]:
        return None
    return hdr[0:100].split(b"\0", 1)[0], size


def _plain_octal(field: bytes) -> int:
    """:func:`_octal` of a field without the base-256 mark (checked by the caller); ValueError where _octal raises."""
    s = field.split(b"\0", 1)[0].strip(b" ")
    return int(s, 8) if s else 0


def _octal(field: bytes, what: str, source: str, pos: int) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU) for large numbers
        return int.from_bytes(field[1:], "big")
    try:
        return _plain_octal(field)
    except ValueError:
        raise TarError(f"{source} at byte {pos}: bad {what} field {field!r}") from None


def _pax_records(data: bytes, where: str) -> dict[str, str]:
    out = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        if sp < 0:
            break
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise TarError(f"{where}: malformed PAX header") from None
        if length <= 0 or pos + length > len(data):
            raise TarError(f"{where}: malformed PAX header length")
        rec = data[sp + 1: pos + length - 1]
        k, _, v = rec.partition(b"=")
        out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
        pos += length
    return out


def _skip(stream: BinaryIO, n: int) -> int:
    """Pass over ``n`` bytes: the stream's own ``skip`` (a seek on a local file), else read and discard."""
    skip = getattr(stream, "skip", None)
    return skip(n) if skip is not None else discard(stream.read, n)


def iter_tar(
    stream: BinaryIO, *, source: str = "<stream>", max_member_bytes: int = DEFAULT_MAX_MEMBER,
    length: int | None = None, base_offset: int = 0, want: Callable[[str], bool] | None = None,
) -> Iterator[TarMember]:
    """Yield the regular-file members of a tar stream, front to back.

    ``length``: the stream is a window of a shard holding whole clips (no end-of-archive
    marker): stop cleanly after exactly that many bytes. ``base_offset``: where the window
    starts in the shard, so offsets in members and errors are shard offsets. ``want``: called
    with each regular member's name before its data is read; a member it declines is passed
    over (seeked past on a local file) and yielded with ``data=None`` — how a face track's few
    frames are read out of a 450-frame clip. Headers are always read and checked.
    """
    pos = base_offset
    if length is not None:
        length += base_offset
    pax: dict[str, str] = {}
    longname: str | None = None
    header_start: int | None = None
    read = stream.read
    while True:
        if length is not None and pos >= length and header_start is None:
            return
        hdr = read(BLOCK)
        if 0 < len(hdr) < BLOCK:  # a short read that is not the end: read the rest
            hdr += _read_exact(stream, BLOCK - len(hdr))
        if len(hdr) < BLOCK:
            raise TruncatedTarError(f"{source} at byte {pos}: archive ends without its end-of-archive marker (truncated shard?)")
        if hdr == _ZERO_BLOCK:
            if length is not None:  # a window of whole clips holds no end-of-archive marker: its bytes are damaged
                raise TarError(f"{source} at byte {pos}: an empty (end-of-archive) header inside the clips' byte range "
                               "the clip index gives (damaged shard, or an index that does not belong to it)")
            return  # end of archive (a second zero block may follow; we need not read it)
        if _octal(hdr[148:156], "checksum", source, pos) != header_checksum(hdr):
            raise TarError(f"{source} at byte {pos}: header checksum mismatch (corrupt shard)")
        if header_start is None:
            header_start = pos
        size = _octal(hdr[124:136], "size", source, pos)
        kind = hdr[156:157]
        name = hdr[0:100].split(b"\0", 1)[0]
        if hdr[257:262] == b"ustar":
            prefix = hdr[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        where = pos  # this header's offset, for errors
        pos += BLOCK
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        regular = kind in _REGULAR
        limit = max_member_bytes if regular else (1 << 20)
        if size > limit:
            raise TarError(f"{source} at byte {where}: member declares {size} bytes, over the {limit}-byte limit")
        member_name = None
        if want is not None and regular:
            member_name = pax.get("path") or longname or name.decode("utf-8", "replace")
            if "size" in pax and pax["size"] != str(size):
                raise TarError(f"{source} at byte {where}: PAX size {pax['size']!r} disagrees with the header's {size}")
            if not want(member_name):
                if _skip(stream, padded) < padded:
                    raise TruncatedTarError(f"{source} at byte {where}: archive ends inside a member")
                pos += padded
                start, pax, longname, header_start = header_start, {}, None, None
                yield TarMember(member_name, None, start, pos)
                continue
        data = _read_exact(stream, padded)
        if len(data) < padded:
            raise TruncatedTarError(f"{source} at byte {where}: archive ends inside a member ({len(data)} of {size} bytes)")
        pos += padded
        data = data[:size]
        if kind == b"x":
            pax = _pax_records(data, f"{source} at byte {where}")
            continue
        if kind == b"g":
            continue
        if kind == b"L":
            longname = data.split(b"\0", 1)[0].decode("utf-8", "replace")
            continue
        if member_name is None:  # (a regular member's name, checked above when want saw it, is the same object)
            member_name = pax.get("path") or longname or name.decode("utf-8", "replace")
            if "size" in pax and pax["size"] != str(size):
                raise TarError(f"{source} at byte {where}: PAX size {pax['size']!r} disagrees with the header's {size}")
        start, pax, longname, header_start = header_start, {}, None, None
        if kind == b"5":
            continue  # directories carry no data
        if not regular:
            raise TarError(f"{source} at byte {where}: member {member_name!r} is not a regular file (type {kind!r}); refusing it")
        yield TarMember(member_name, data, start, pos)
