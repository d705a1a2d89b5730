"""Reading a worker's clips: as few sequential range reads as possible, bounded, and damage contained.

A worker's run is a sequence of items (clips, or face tracks of clips) in shard order. Consecutive clips of one shard whose byte
ranges touch are read through one range request — a *window* of at most ``window_clips`` clips
and ``window_bytes`` bytes (one clip at least), so the reader never gathers a whole shard of
many small clips before it starts. Each window goes through the core's one clip reader
(:func:`shardgen.core.clip_reader.iter_clips`: the safe tar parser, member names and grouping,
the clip index's placement), each clip's bytes are hashed against the sha256 its index row records
(about 1.7 GB/s here: a few per cent of a clip's decode), and each clip is checked against the
sample format. When a window breaks (a truncated shard, a corrupt header), only the damaged clip is
lost: the reader resumes at the next clip's offset in the clip index, and a clip whose first part
held the damage is re-read alone to tell whose it was. Errors are *yielded* in place of the lost clips, never
raised here, so the caller decides: raise, or skip and count.

Frame-budget batches span many clips and use one face track of each, so they read *sparsely*
(:meth:`ClipReader.read_tracks`, through :func:`shardgen.core.sources.read_clip`): the clip's
metadata, audio and label members, then only that track's frames (or stored crops); every other
member's header is read and checked, its data seeked past on a local file. A sparse read cannot check
the clip's sha256 (it does not read every byte): ``shardgen verify`` does, and a remote shard fetched
into ``cache_dir`` is checked whole against the manifest's sha256.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

from shardgen.core.clip_index import ClipRef
from shardgen.core.clip_reader import iter_clips
from shardgen.core.format import FormatError, crop_ext, frame_ext, gray_ext
from shardgen.core.sample import Members
from shardgen.core.sources import ClipDigests, ResolvedSource, open_clips, read_clip
from shardgen.core.storage import TransportOptions, is_remote
from shardgen.core.tario import DEFAULT_MAX_MEMBER, TarError

from .faces import kept_frames
from .items import Item

WINDOW_CLIPS = 256  # clips of one range read at most: the reader holds a reference to each until it is read
WINDOW_BYTES = 256 << 20  # bytes of one range read at most (a single larger clip is read alone)


class ShardReadError(RuntimeError):
    """A shard or clip could not be read; names the shard (and clip, when known)."""


def track_members(tracks: Iterable[tuple[int, int, int]], *, use_crops: bool) -> Members:
    """What face tracks ``(person, first frame, frames)`` of one clip need: the metadata, audio and labels, and
    each track's frames — its stored TalkNet crops when ``use_crops`` and the clip has them, else the frames."""
    spans = tuple(tracks)

    def pictures(meta: dict) -> set[str]:
        crops = use_crops and "c" in meta.get("derived", ())
        return {crop_ext(p, first + i + 1) if crops else frame_ext(first + i + 1) for p, first, n in spans for i in range(n)}

    return Members(frames=pictures)


def stored_gray_members() -> Members:
    """What a talknet item takes of a clip built with ``--derive small``: the metadata, audio and labels and
    its stored 112x112 gray frames (its original frames where it has none), never both."""

    def pictures(meta: dict) -> set[str]:
        name = gray_ext if "g" in meta.get("derived", ()) else frame_ext
        return {name(i + 1) for i in range(int(meta["n_frames"]))}

    return Members(frames=pictures)


class ClipReader:
    """Reads the clips of a run: ``read(run, needed)`` yields ``(run indices, ClipSample | error)``."""

    def __init__(self, index: ResolvedSource, remote_options: TransportOptions | None = None,
                 max_member_bytes: int = DEFAULT_MAX_MEMBER, *, window_clips: int = WINDOW_CLIPS,
                 window_bytes: int = WINDOW_BYTES):
        if window_clips < 1 or window_bytes < 1:
            raise ValueError("window_clips and window_bytes must be positive")
        self.index = index
        self.remote_options = remote_options
        self.max_member_bytes = max_member_bytes
        self.window_clips = int(window_clips)
        self.window_bytes = int(window_bytes)

    def read_tracks(self, items: list[Item], *, use_crops: bool, frames: int | None = None,
                    cached: frozenset = frozenset()) -> object:
        """Face tracks' part of their clip (all ``items`` of one clip), in one read: a partial
        :class:`ClipSample` holding what every one of them needs, or the error in its place.

        ``use_crops``: take the stored TalkNet crops when the clip has them (else the frames).
        ``frames``: only each track's first this many frames are needed. ``cached``: items whose crops are
        at hand (the crop cache, :mod:`loaders.crop_cache`): their metadata, audio and labels are read, not
        their frames.
        """
        clip = items[0].clip
        if any(u.clip != clip for u in items):
            raise ValueError("read_tracks reads the tracks of one clip")
        spans = [(int(u.track[0]), int(u.track[1]), kept_frames(u.track, frames)) for u in items if u not in cached]
        return self.read_members(clip, track_members(spans, use_crops=use_crops))

    def read_members(self, clip: ClipRef, members: Members) -> object:
        """One clip's metadata, audio, labels and the ``members`` it selects, in one sparse read: a partial
        :class:`ClipSample`, or the error (naming the shard and clip) in its place."""
        shard = self.index.shards[clip.shard]
        try:
            return read_clip(self.index, clip, members=members, options=self.remote_options,
                             max_member_bytes=self.max_member_bytes)
        except (TarError, OSError) as exc:
            return ShardReadError(f"{shard.url}: {exc}")
        except FormatError as exc:  # names the shard and the clip already
            return exc
        except Exception as exc:  # a hostile clip must never escape un-named
            return ShardReadError(f"{shard.url}: clip {clip.key}: {type(exc).__name__}: {exc}")

    def read(self, run: Sequence[Item], needed: Iterable[int],
             members_for: Callable[[list[Item]], Members | None] | None = None) -> Iterator[tuple[list[int], object]]:
        """Read the clips of the ``needed`` run positions in run order, each clip once (the items of one clip —
        its face tracks — share its sample).

        Lazy: clips are gathered only up to the end of the current window (clips of one shard whose byte
        ranges touch, at most ``window_clips`` of them and ``window_bytes`` bytes), read, and let go, so a
        run of a million clips never holds a million references, nor a shard of small clips at once.

        ``members_for(items of one clip)``: what of the clip its items use, when that is less than the whole
        clip (stored 112x112 members in place of the original frames, a track's own frames). A clip of a
        local shard is then read sparsely (:meth:`read_members`: the other members' headers checked, their
        data seeked past); a remote clip is still read whole in its window (a seek there costs a request).
        """
        if members_for is not None:
            yield from self._read_sparse(run, needed, members_for)
            return
        window: list[tuple] = []  # (clip, [run indices]) whose byte ranges touch, in one shard
        size = 0
        for i in needed:
            i = int(i)
            clip = run[i].clip
            if window and window[-1][0] == clip:
                window[-1][1].append(i)
                continue
            if window and self._window_ends(window, size, clip):
                yield from self._read_window(window)
                window, size = [], 0
            window.append((clip, [i]))
            size += clip.bytes
        if window:
            yield from self._read_window(window)

    def _read_sparse(self, run: Sequence[Item], needed: Iterable[int],
                     members_for: Callable[[list[Item]], Members | None]) -> Iterator[tuple[list[int], object]]:
        """:meth:`read` with ``members_for``: a clip's items are gathered (one look-ahead) before it is read."""
        window: list[tuple] = []
        size = 0
        for clip, idxs in _by_clip(run, needed):
            members = None
            if not is_remote(self.index.shards[clip.shard].url):
                members = members_for([run[i] for i in idxs])
            if window and (members is not None or self._window_ends(window, size, clip)):
                yield from self._read_window(window)
                window, size = [], 0
            if members is not None:
                yield idxs, self.read_members(clip, members)
                continue
            window.append((clip, idxs))
            size += clip.bytes
        if window:
            yield from self._read_window(window)

    def _window_ends(self, window: list[tuple], size: int, clip: ClipRef) -> bool:
        """Whether ``clip`` starts a new window: another shard, a gap, or the window's bounds reached."""
        last = window[-1][0]
        return (clip.shard != last.shard or clip.offset != last.offset + last.bytes
                or len(window) >= self.window_clips or size + clip.bytes > self.window_bytes)

    def _read_window(self, groups: list[tuple]) -> Iterator[tuple[list[int], object]]:
        while groups:
            failed_at, err = yield from self._read_range(groups)
            if failed_at is None:
                return
            if len(groups) > 1:  # a clip ends only at the next clip's first member: re-read it alone to tell whose damage
                again, err = yield from self._read_range(groups[failed_at:failed_at + 1])
                if again is None:
                    groups = groups[failed_at + 1:]
                    continue
            yield groups[failed_at][1], err
            groups = groups[failed_at + 1:]  # only that clip is lost: resume at the next clip's offset in the clip index

    def _read_range(self, groups: list[tuple]):
        first = groups[0][0]
        shard = self.index.shards[first.shard]
        length = sum(c.bytes for c, _ in groups)
        done = 0
        try:
            stream = open_clips(shard, first.offset, length, self.remote_options)
        except Exception as exc:
            err = ShardReadError(f"{shard.url}: cannot open ({exc})")
            for _, idxs in groups:
                yield idxs, err
            return None, None
        digests = ClipDigests(stream, [c for c, _ in groups])  # each whole clip against its index's sha256
        try:
            for found in iter_clips(digests, source=shard.url, length=length, base_offset=first.offset,
                                    expect=[(c.key, c.offset) for c, _ in groups], max_member_bytes=self.max_member_bytes):
                try:
                    digests.check(done, shard.url)
                    sample: object = found.sample()
                except FormatError as exc:
                    sample = FormatError(f"{shard.url}: {exc}")
                except TarError as exc:  # the clip's bytes are not the ones built: this clip is lost, not the window
                    sample = ShardReadError(str(exc))
                done += 1
                yield groups[done - 1][1], sample
        except (OSError, ValueError) as exc:  # TarError and FormatError (a bad member name) are ValueErrors
            failed = ShardReadError(f"{shard.url}: {exc}")
        else:
            failed = None
        finally:
            stream.close()
        if failed is not None and done < len(groups):
            return done, failed  # the caller yields the error (or re-reads the clip alone)
        for clip, idxs in groups[done:]:  # the window ended early without a tar error
            yield idxs, ShardReadError(f"{shard.url}: clip {clip.key} missing from the shard")
        return None, None


def _by_clip(run: Sequence[Item], needed: Iterable[int]) -> Iterator[tuple[ClipRef, list[int]]]:
    """The needed run positions grouped by clip, in run order (a clip's items are consecutive in a run)."""
    clip, idxs = None, []
    for i in needed:
        i = int(i)
        c = run[i].clip
        if idxs and c == clip:
            idxs.append(i)
            continue
        if idxs:
            yield clip, idxs
        clip, idxs = c, [i]
    if idxs:
        yield clip, idxs
