"""Shard bytes → clips: the one reader that groups tar members into clips and checks them.

Every reader of shard bytes in avshards — the loader, ``shardgen verify``, ``inspect``, ``preview``,
``report``, ``eval-gt`` and the scan of a shard that has no clip index — goes through
:func:`iter_clips` (most through :func:`shardgen.core.sources.read_clip`, which finds one clip's
byte range in the clip index), so a hostile shard meets the same checks everywhere:

* the tar structure, by the hostile-safe parser (:mod:`.tario`): header checksums, declared sizes
  capped before anything is read, no links or devices, a cut shard named with its byte offset;
* every member name is ``<video_id>/clip_fNNNNNN.<ext>`` (:func:`.format.split_member_name`): no
  absolute path, no ``..``, nothing else;
* a clip's members are consecutive and each extension appears once: a clip that comes back later
  in the stream, or a repeated member, is an error, never a silently merged or split sample;
* where the clip index says which clip starts at which byte (``expect``), the clip found there must
  be that one — the same check for a member that is passed over as for one that is read.

A read may take only some members (:class:`~.sample.Members`): the metadata, then what it selects;
the rest are passed over (seeked past on a local file) with their headers still checked. One clip's
such read from a local file goes first through :func:`read_selected`, which reads headers by offset
and accepts only what :func:`iter_clips` would accept unchanged; at anything else it stops and the
clip is read again by :func:`iter_clips`, which names what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Sequence

from .format import META_EXT, FormatError, decode_metadata, split_member_name
from .sample import ClipSample, Members
from .tario import BLOCK, DEFAULT_MAX_MEMBER, TarError, iter_tar, plain_member

MAX_MEMBERS = 100_000  # members of one clip: a 15 s clip at 30 fps with crops of several persons stays far below


@dataclass
class ClipMembers:
    """One clip as found in a stream: its members (``{ext: bytes}``, only those read), where it lies, how many
    members it has (read or passed over), and the selection it was read with."""

    key: str
    fields: dict[str, bytes]
    offset: int  # of its first member's header
    end: int  # just past its last member: the next clip's first header, or the end-of-archive marker
    count: int
    members: Members | None = None

    @property
    def bytes(self) -> int:
        return self.end - self.offset

    def sample(self) -> ClipSample:
        """The clip checked against the format (a :class:`FormatError` naming the clip if it is not one)."""
        return ClipSample(self.key, self.fields, members=self.members)


def iter_clips(stream: BinaryIO, *, source: str, length: int | None = None, base_offset: int = 0,
               members: Members | None = None, expect: Sequence[tuple[str, int]] | None = None,
               max_member_bytes: int = DEFAULT_MAX_MEMBER) -> Iterator[ClipMembers]:
    """The clips of a tar stream, front to back, each checked as the module says (errors: :class:`TarError`
    naming ``source`` and the byte offset).

    ``length`` / ``base_offset``: the stream is a byte range of a shard holding whole clips (see
    :func:`~.tario.iter_tar`); without ``length`` it must end with the end-of-archive marker. ``members``:
    take only these members of each clip (None: all). ``expect``: the ``(key, offset)`` of the clips the
    clip index places in the stream, in order; another clip in their place is an error, and the read
    stops once the last one is complete (with ``members``, as soon as it has every selected member).
    """
    expected = iter(expect) if expect is not None else None
    left = len(expect) if expect is not None else -1  # expected clips not yet started
    clip: ClipMembers | None = None
    wanted: frozenset[str] | None = None  # the current clip's selection, known once its metadata is read
    found = 0  # how many of the selection the current clip has read
    exts: set[str] = set()  # the current clip's members so far, read or passed over
    finished: set[str] = set()
    split: list = [None, None]  # the last name want() split and its (key, ext): the loop below takes it as is

    def want(name: str) -> bool:
        if members is None or clip is None or wanted is None:
            return True  # every member, or a clip's first member (its metadata) — read to be checked below
        try:
            key, ext = split_member_name(name, clip.key)
        except FormatError:
            return True  # read it, so that the check below names it
        split[0], split[1] = name, (key, ext)
        return key != clip.key or ext in wanted  # another clip's member is read: it is named below, or starts its clip

    def selection(meta_bytes: bytes, key: str) -> frozenset[str]:
        try:
            return members.wanted(decode_metadata(meta_bytes, name=f"{key}.json"))
        except FormatError:
            return frozenset()  # nothing more is read: ClipSample names the bad metadata

    for m in iter_tar(stream, source=source, length=length, base_offset=base_offset,
                      max_member_bytes=max_member_bytes, want=want):
        try:
            key, ext = split[1] if split[0] is m.name else split_member_name(m.name, clip.key if clip else None)
        except FormatError as exc:
            raise TarError(f"{source} at byte {m.offset}: {exc}") from None
        if clip is None or key != clip.key:
            if clip is not None:
                finished.add(clip.key)
                yield clip
            if key in finished:
                raise TarError(f"{source} at byte {m.offset}: clip {key} appears twice (members not consecutive)")
            if expected is not None:
                want_key, want_offset = next(expected, (None, None))
                if want_key is None:
                    raise TarError(f"{source} at byte {m.offset}: found clip {key} past the clips the clip index "
                                   f"places in this byte range (shard and clip index disagree)")
                if key != want_key or m.offset != want_offset:
                    raise TarError(f"{source} at byte {m.offset}: found clip {key}, the clip index expects {want_key} "
                                   f"at byte {want_offset} (shard and clip index disagree)")
                left -= 1
            clip, wanted, exts = ClipMembers(key, {}, m.offset, m.end, 0, members), None, set()
        if ext in exts:
            raise TarError(f"{source} at byte {m.offset}: clip {key} has two .{ext} members")
        exts.add(ext)
        clip.count += 1
        clip.end = m.end
        if clip.count > MAX_MEMBERS:
            raise TarError(f"{source}: clip {key} has more than {MAX_MEMBERS} members")
        if m.data is None:
            continue
        clip.fields[ext] = m.data
        if members is None:
            continue
        if wanted is None:
            wanted = selection(m.data, key) if ext == META_EXT else None
            if wanted is None:
                continue  # members before the metadata: all read (ClipSample says the metadata is missing)
            found = len(wanted.intersection(clip.fields))
        elif ext in wanted:
            found += 1  # (each extension is read once: a second one is refused above)
        if left == 0 and found == len(wanted):
            break  # the last clip expected has what the read needs: its other members stay unread
    if clip is not None:
        yield clip


READ_AHEAD = 64 << 10  # bytes read at once over a run of small selected members (a track's derived crops)
SMALL_MEMBER = 16 << 10


def read_selected(pread: Callable[[int, int], bytes], *, key: str, offset: int, length: int, members: Members,
                  max_member_bytes: int = DEFAULT_MAX_MEMBER) -> ClipMembers | None:
    """Clip ``key``'s selected members, its bytes ``[offset, offset + length)`` of a local shard read by
    ``pread(n, at)``; or None, and then the caller reads the clip with :func:`iter_clips`.

    Why: a face track's read walks every member header of its clip up to the track's crops — a few
    hundred, most of them passed over — and :func:`iter_clips` over :func:`~.tario.iter_tar` costs
    ~8 us of Python a member; this loop ~3 (no stream object, no generator or object per member, one
    64 KB read for a run of small selected members, one header read by offset after any other).

    The same checks, not fewer: every header up to the last selected member is read, and it goes on
    only while each is what :func:`iter_clips` accepts without a word — a plain regular-file header
    (:func:`~.tario.plain_member`: checksum, octal size within ``max_member_bytes``, no extension
    headers), the clip index's clip at ``offset`` with the metadata first, every name ``<key>.<ext>`` as
    :func:`~.format.split_member_name` accepts it, each extension once, at most :data:`MAX_MEMBERS`,
    the selection complete inside the byte range. At the first thing that is not, it returns None:
    what is wrong is named by :func:`iter_clips`, the one reader that names it."""
    end = offset + length
    buf, buf_at, ahead = b"", offset, False  # bytes read and where they start; read ahead over small members

    def get(at: int, n: int, through: int = 0) -> bytes:
        """``n`` bytes at ``at``; a read that must go to the file takes everything up to ``through`` with them."""
        nonlocal buf, buf_at
        if not (buf_at <= at and at + n <= buf_at + len(buf)):
            buf, buf_at = pread(min(max(n, READ_AHEAD if ahead else 0, through - at), end - at), at), at
        return buf[at - buf_at:at - buf_at + n]

    fields: dict[str, bytes] = {}
    exts: set[str] = set()
    wanted: frozenset[str] | None = None
    found = 0
    pos = offset
    while pos + BLOCK <= end and len(exts) < MAX_MEMBERS:
        plain = plain_member(get(pos, BLOCK), max_member_bytes)
        if plain is None:
            return None
        try:
            name_key, ext = split_member_name(plain[0].decode("utf-8", "replace"), key)  # iter_tar's decoding
        except FormatError:
            return None
        if name_key != key or ext in exts:
            return None
        size = plain[1]
        data_at, pos = pos + BLOCK, pos + BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK
        if pos > end:
            return None
        exts.add(ext)
        ahead = False
        if wanted is None or ext in wanted:
            ahead = size < SMALL_MEMBER  # a run of small selected members (a track's crops): read on in one go
            data = get(data_at, size, through=pos + BLOCK)  # with the next member's header: one read, not two
            if len(data) != size:
                return None
            fields[ext] = data
            if wanted is None:  # the first member: the metadata, which says what else the read takes
                if ext != META_EXT:
                    return None
                try:
                    wanted = members.wanted(decode_metadata(data, name=f"{key}.json"))
                except Exception:
                    return None
                found = len(wanted.intersection(fields))
            else:
                found += 1
        if found == len(wanted):
            return ClipMembers(key, fields, offset, pos, len(exts), members)
    return None
