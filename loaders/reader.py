"""Reading a worker's clips: as few sequential range reads as possible, and damage contained.

A worker's run is a list of clips in shard order. Consecutive clips of one shard whose byte
ranges touch are read through one range request; each clip is parsed by the safe tar reader and
checked against the sample format. When a window breaks (a truncated shard, a corrupt header),
only the damaged clip is lost: the reader resumes at the next clip's manifest offset, and a clip
whose first part held the damage is re-read alone to tell whose it was. Errors are *yielded* in
place of the lost clips, never raised here, so the caller decides: raise, or skip and count.
"""

from __future__ import annotations

from typing import Iterator

from shardgen.core.format import FormatError
from shardgen.core.sample import ClipSample
from shardgen.core.sources import SourceIndex, open_clips
from shardgen.core.storage import TransportOptions
from shardgen.core.tario import DEFAULT_MAX_MEMBER, TarError, iter_samples, iter_tar

from .sharding import Unit


class ShardReadError(RuntimeError):
    """A shard or clip could not be read; names the shard (and clip, when known)."""


class ClipReader:
    """Reads the clips of a run: ``read(run, needed)`` yields ``(run indices, ClipSample | error)``."""

    def __init__(self, index: SourceIndex, remote_options: TransportOptions | None = None, max_member_bytes: int = DEFAULT_MAX_MEMBER):
        self.index = index
        self.remote_options = remote_options
        self.max_member_bytes = max_member_bytes

    def read(self, run: list[Unit], needed: list[int]) -> Iterator[tuple[list[int], object]]:
        """Read the needed clips in run order, each once (units of one clip share it)."""
        groups: list[tuple] = []  # (clip, [run indices])
        for i in needed:
            clip = run[i].clip
            if groups and groups[-1][0] == clip:
                groups[-1][1].append(i)
            else:
                groups.append((clip, [i]))
        g = 0
        while g < len(groups):
            h = g + 1
            while (h < len(groups) and groups[h][0].shard == groups[h - 1][0].shard
                   and groups[h][0].offset == groups[h - 1][0].offset + groups[h - 1][0].bytes):
                h += 1
            yield from self._segment(groups[g:h])
            g = h

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
            groups = groups[failed_at + 1:]  # only that clip is lost: resume at the next clip's manifest offset

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
                    raise TarError(f"{shard.url} at byte {offset}: found clip {key}, the manifest expects {clip.key} "
                                   f"at byte {clip.offset} (shard and manifest disagree)")
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
