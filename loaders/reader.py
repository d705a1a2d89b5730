"""Reading a worker's clips: as few sequential range reads as possible, and damage contained.

A worker's run is a list of clips in shard order. Consecutive clips of one shard whose byte
ranges touch are read through one range request; each clip is parsed by the safe tar reader and
checked against the sample format. When a window breaks (a truncated shard, a corrupt header),
only the damaged clip is lost: the reader resumes at the next clip's offset in the clip index, and a clip
whose first part held the damage is re-read alone to tell whose it was. Errors are *yielded* in
place of the lost clips, never raised here, so the caller decides: raise, or skip and count.

Frame-budget batches span many clips and use one face track of each, so they read *sparsely*
(:meth:`ClipReader.read_tracks`): the clip's metadata, audio and label members, then only that
track's frames (or stored crops); every other member's header is read and checked, its data
seeked past on a local file.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

from shardgen.core.format import AUDIO_EXTS, LABEL_EXTS, META_EXT, FormatError, crop_ext, decode_metadata, frame_ext
from shardgen.core.sample import ClipSample
from shardgen.core.sources import ResolvedSource, open_clips, read_clip_members
from shardgen.core.storage import TransportOptions
from shardgen.core.tario import DEFAULT_MAX_MEMBER, TarError, iter_samples, iter_tar

from .sharding import Unit


class ShardReadError(RuntimeError):
    """A shard or clip could not be read; names the shard (and clip, when known)."""


class ClipReader:
    """Reads the clips of a run: ``read(run, needed)`` yields ``(run indices, ClipSample | error)``."""

    def __init__(self, index: ResolvedSource, remote_options: TransportOptions | None = None, max_member_bytes: int = DEFAULT_MAX_MEMBER):
        self.index = index
        self.remote_options = remote_options
        self.max_member_bytes = max_member_bytes

    def read_tracks(self, units: list[Unit], *, use_crops: bool, frames: int | None = None,
                    cached: frozenset = frozenset()) -> object:
        """Face tracks' part of their clip (all ``units`` of one clip), in one read: a partial
        :class:`ClipSample` holding what every one of them needs, or the error in its place.

        ``use_crops``: take the stored TalkNet crops when the clip has them (else the frames).
        ``frames``: only each track's first this many frames are needed. ``cached``: units whose crops are
        at hand (the crop cache): their frames are not read.
        """
        clip = units[0].clip
        if any(u.clip != clip for u in units):
            raise ValueError("read_tracks reads the tracks of one clip")
        shard = self.index.shards[clip.shard]
        spans = []
        for u in units:
            p, first, n = (int(v) for v in u.track)
            if u not in cached:
                spans.append((p, first, n if frames is None else max(1, min(n, int(frames)))))
        always = {META_EXT, *AUDIO_EXTS, *LABEL_EXTS}
        plan: dict = {}  # "needed": the frame members, known once the metadata (the first member) is read

        def needed(fields: dict) -> set[str] | None:
            if "needed" not in plan and META_EXT in fields:
                meta = decode_metadata(fields[META_EXT], name=f"{clip.key}.json")
                crops = use_crops and "c" in meta.get("derived", ())
                plan["needed"] = {crop_ext(p, first + i + 1) if crops else frame_ext(first + i + 1)
                                  for p, first, n in spans for i in range(n)}
            return plan.get("needed")

        def wanted(ext: str, fields: dict) -> bool:
            frames = needed(fields)
            return frames is None or ext in always or ext in frames

        def complete(fields: dict) -> bool:  # frames come after metadata, audio and labels (which cached tracks need too)
            frames = needed(fields)
            return (frames is not None and frames.issubset(fields) and all(e in fields for e in LABEL_EXTS)
                    and any(e in fields for e in AUDIO_EXTS))

        try:
            fields = read_clip_members(shard, clip, self.remote_options, wanted=wanted, complete=complete,
                                       max_member_bytes=self.max_member_bytes)
            frames = needed(fields)
            if frames is None:
                raise FormatError(f"{clip.key}: no .json metadata member")
            sample = ClipSample(clip.key, fields, partial=True)
            missing = sorted(frames.difference(fields))
            if missing:
                raise FormatError(f"{clip.key}: member .{missing[0]} missing (tracks {[u.track for u in units]})")
            return sample
        except (TarError, OSError) as exc:
            return ShardReadError(f"{shard.url}: {exc}")
        except FormatError as exc:
            return FormatError(f"{shard.url}: {exc}")
        except Exception as exc:  # a hostile clip must never escape un-named
            return ShardReadError(f"{shard.url}: clip {clip.key}: {type(exc).__name__}: {exc}")

    def read(self, run: Sequence[Unit], needed: Iterable[int]) -> Iterator[tuple[list[int], object]]:
        """Read the needed clips in run order, each once (units of one clip share it).

        Lazy: clips are gathered only up to the end of the current contiguous byte range (at most a
        shard), read, and let go, so a run of a million clips never holds a million references.
        """
        segment: list[tuple] = []  # (clip, [run indices]) whose byte ranges touch, in one shard
        for i in needed:
            i = int(i)
            clip = run[i].clip
            if segment and segment[-1][0] == clip:
                segment[-1][1].append(i)
                continue
            if segment:
                last = segment[-1][0]
                if clip.shard != last.shard or clip.offset != last.offset + last.bytes:
                    yield from self._segment(segment)
                    segment = []
            segment.append((clip, [i]))
        if segment:
            yield from self._segment(segment)

    def _segment(self, groups: list[tuple]) -> Iterator[tuple[list[int], object]]:
        while groups:
            failed_at, err = yield from self._window(groups)
            if failed_at is None:
                return
            if len(groups) > 1:  # a clip ends only at the next clip's first member: re-read it alone to tell whose damage
                again, err = yield from self._window(groups[failed_at:failed_at + 1])
                if again is None:
                    groups = groups[failed_at + 1:]
                    continue
            yield groups[failed_at][1], err
            groups = groups[failed_at + 1:]  # only that clip is lost: resume at the next clip's offset in the clip index

    def _window(self, groups: list[tuple]):
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
        try:
            members = iter_tar(stream, source=shard.url, length=length, base_offset=first.offset,
                               max_member_bytes=self.max_member_bytes)
            for key, fields, offset in iter_samples(members, source=shard.url):
                clip, idxs = groups[done]
                if key != clip.key or offset != clip.offset:
                    raise TarError(f"{shard.url} at byte {offset}: found clip {key}, the clip index expects {clip.key} "
                                   f"at byte {clip.offset} (shard and clip index disagree)")
                try:
                    sample: object = ClipSample(key, fields)
                except FormatError as exc:
                    sample = FormatError(f"{shard.url}: {exc}")
                done += 1
                yield idxs, sample
        except (TarError, OSError, ValueError) as exc:  # ValueError: a FormatError from a member name
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

