"""Videos + parameters → clips → shards: the whole build decided up front.

Everything that fixes the output bytes is decided here, before a single shard is written:
which clips exist, which are skipped and why, and which shard each clip goes to. Executors
(local processes, Ray) only carry the plan out, so the bytes cannot depend on how many
workers ran or in which order they finished.

Shard cutting uses each clip's planned size, which is exact for the frames (their file sizes)
and the WAV audio, and an upper estimate for metadata, FLAC and derived members.

Everything here is pure arithmetic on what the probe found; looking at the disk (frames, wav,
annotations of one video) is :mod:`shardgen.build.probe`.
"""

from __future__ import annotations

import hashlib
from array import array
import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from ..core import codecs
from ..core import format as fmt
from .skips import Reason, Skip, SkipCode

TAILS = ("keep-short", "drop", "pad")
TAR_BLOCK = 512
#: ``--fps native``: each video file is cut at its own stream's frame rate
NATIVE = "native"
#: the highest frame rate the sample format accepts (core.format's metadata check): anything above is a typo
MAX_FPS = 1000


@dataclass(frozen=True)
class BuildParams:
    """The parameters that change the output bytes (and nothing else: no paths, no worker counts)."""

    clip_seconds: float = 15.0
    stride_seconds: float | None = None  # None: = clip_seconds (no overlap)
    fps: float | str = 30.0  # frames per second, or "native" (video files: each at its stream's rate)
    tail: str = "keep-short"
    min_clip_seconds: float = 1.0
    audio_format: str = "wav"
    shard_bytes: int = 1_000_000_000
    shard_clips: int = 0  # 0: no limit
    derive: tuple[str, ...] = ()
    originals: bool = True
    allow_unannotated: bool = False
    ava_time_offset: float = 0.0
    jpeg_quality: int = 90  # video files only: JPEG quality of decoded frames (= video.DEFAULT_JPEG_QUALITY)
    max_side: int = 0  # video files only: downscale so the longer side is at most this (0: full resolution)

    def __post_init__(self):
        """Refuse values that cannot be meant, naming the flag (the CLI passes them through unchanged)."""
        check_fps(self.fps)
        for flag, value, least in (("--clip-seconds", self.clip_seconds, 0), ("--stride-seconds", self.stride_seconds, 0),
                                   ("--min-clip-seconds", self.min_clip_seconds, None),
                                   ("--ava-time-offset", self.ava_time_offset, None)):
            if value is None:
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or (least is not None and value <= least):
                raise ValueError(f"{flag} {value!r}: expected a finite number of seconds"
                                 + (" above 0" if least is not None else ""))
        if self.tail not in TAILS:
            raise ValueError(f"--tail {self.tail!r}: choose one of {', '.join(TAILS)}")
        if self.audio_format not in fmt.AUDIO_EXTS:
            raise ValueError(f"--audio-format {self.audio_format!r}: choose one of {', '.join(fmt.AUDIO_EXTS)}")
        if not self.native:
            self.check_frames(self.frame_rate)
        if self.shard_bytes <= 0 or self.shard_clips < 0:
            raise ValueError("--shard-bytes must be positive and --shard-clips non-negative")
        if not self.originals and "small" not in self.derive:
            raise ValueError("--no-originals needs --derive small (a clip must keep some frames)")
        if not 1 <= self.jpeg_quality <= 100 or self.max_side < 0:
            raise ValueError("--jpeg-quality must be 1..100 and --max-side non-negative")
        bad = set(self.derive) - {"small", "crops"}
        if bad:
            raise ValueError(f"--derive: unknown derived members {sorted(bad)}: choose from small, crops")

    @property
    def native(self) -> bool:
        """``--fps native``: no one rate; each video file's own (the planner is given it per video)."""
        return self.fps == NATIVE

    @property
    def frame_rate(self) -> Fraction | None:
        """The build's exact frame rate (None with ``--fps native``)."""
        return None if self.native else fmt.fps_fraction(self.fps)

    def fps_key(self, fps: Fraction) -> str:
        """How a clip's frame rate enters its resume fingerprint: ``--fps`` as given (what builds have
        always recorded), or with ``--fps native`` the video's own rate."""
        return f"native={fps}" if self.native else f"{self.fps}"

    def check_frames(self, fps: Fraction) -> None:
        """Refuse a clip or stride shorter than one frame at ``fps``, naming the flags."""
        stride = self.clip_seconds if self.stride_seconds is None else self.stride_seconds
        for flag, seconds, n in (("--clip-seconds", self.clip_seconds, self.clip_frames_at(fps)),
                                 ("--stride-seconds", stride, self.stride_frames_at(fps))):
            if n < 1:
                raise ValueError(f"{flag} {seconds:g} is {n} frames at {fmt_fps(fps)} fps: clips and strides must be "
                                 "at least one frame long")

    def clip_frames_at(self, fps) -> int:
        return fmt.round_half_up(Fraction(str(self.clip_seconds)) * fmt.fps_fraction(fps))

    def stride_frames_at(self, fps) -> int:
        s = self.clip_seconds if self.stride_seconds is None else self.stride_seconds
        return fmt.round_half_up(Fraction(str(s)) * fmt.fps_fraction(fps))

    def min_tail_frames_at(self, fps) -> int:
        return max(1, fmt.round_half_up(Fraction(str(self.min_clip_seconds)) * fmt.fps_fraction(fps)))

    @property
    def clip_frames(self) -> int | None:
        return None if self.native else self.clip_frames_at(self.frame_rate)

    @property
    def stride_frames(self) -> int | None:
        return None if self.native else self.stride_frames_at(self.frame_rate)

    @property
    def min_tail_frames(self) -> int | None:
        return None if self.native else self.min_tail_frames_at(self.frame_rate)

    def to_json(self) -> dict:
        d = asdict(self)
        d["derive"] = list(self.derive)
        for name, default in (("jpeg_quality", 90), ("max_side", 0)):  # only video files use them: left out
            if d[name] == default:  # at their defaults, so frame-directory builds record what they always did
                del d[name]
        d["clip_frames"], d["stride_frames"] = self.clip_frames, self.stride_frames  # None with --fps native
        return d


def check_fps(fps) -> None:
    """``--fps``: a finite rate above 0 and at most :data:`MAX_FPS`, or ``native``; anything else names the flag."""
    if fps == NATIVE:
        return
    try:
        value = fmt.fps_fraction(fps)  # nan and inf have no exact value: refused here too
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"--fps {fps!r}: expected frames per second (e.g. 30, 25, 29.97, 30000/1001) or 'native'") from None
    if not 0 < value <= MAX_FPS:
        raise ValueError(f"--fps {fps!r}: expected a frame rate above 0 and at most {MAX_FPS} (or 'native')")


def fmt_fps(fps) -> str:
    """A frame rate as people write it: 30, 25, 29.97, 30000/1001 → "29.97"."""
    f = fmt.fps_fraction(fps)
    return str(f.numerator) if f.denominator == 1 else f"{float(f):.6g}"


@dataclass(frozen=True)
class Span:
    start: int  # 0-based first source frame
    n_real: int  # frames taken from the source
    pad: int = 0  # frames added at the end (tail policy 'pad')

    @property
    def n_frames(self) -> int:
        return self.n_real + self.pad


def plan_spans(n_frames: int, clip: int, stride: int, tail: str, min_tail: int) -> tuple[list[Span], list[tuple[Span, Reason]]]:
    """Cut ``n_frames`` into clips: full clips every ``stride`` frames, then the tail by policy.

    Returns (clips, skipped) where skipped tails carry the reason. With stride == clip every
    frame belongs to exactly one clip (or to a skipped tail); with stride < clip clips overlap.
    """
    spans: list[Span] = []
    skipped: list[tuple[Span, Reason]] = []
    start = 0
    while start + clip <= n_frames:
        spans.append(Span(start, clip))
        start += stride
    covered = spans[-1].start + clip if spans else 0
    if covered < n_frames:
        # the tail: frames after the last full clip, starting at the next stride position
        tail_start = start
        rest = n_frames - tail_start
        if rest > 0:
            span = Span(tail_start, rest)
            if tail == "drop":
                skipped.append((span, Reason(SkipCode.SHORT_TAIL, f"tail of {rest} frames shorter than a clip (tail policy 'drop')")))
            elif rest < min_tail:
                skipped.append((span, Reason(SkipCode.SHORT_TAIL, f"tail of {rest} frames shorter than --min-clip-seconds ({min_tail} frames)")))
            elif tail == "pad":
                spans.append(Span(tail_start, rest, clip - rest))
            else:
                spans.append(span)
    return spans, skipped


def frame_sizes_digest(sizes) -> str:
    """A clip's source JPEG sizes as 16 hex digits: what the plan keeps of them (not a tuple of ints per frame:
    a driver planning a million 15 s clips would hold 450 million)."""
    return hashlib.blake2b(array("q", sizes).tobytes(), digest_size=8).hexdigest()


class AudioChoice(NamedTuple):
    """Where a video's clip audio comes from, as the planner decided it (the same for all its clips)."""

    origin: str  # "wav" (wav/<id>.wav), "stream" (a video file's audio stream), "none" (zeros, flagged)
    wav_size: int = 0  # the wav's size and mtime, for the resume fingerprint ("wav" only)
    wav_mtime_ns: int = 0


class PlannedFrames(NamedTuple):
    """What a source kind's adapter says about one clip's frames; the planner builds the ClipPlan from it."""

    frame_size: tuple[int, int]
    sizes: tuple[int, ...]  # each frame's stored JPEG bytes: exact (frame directories) or estimated (video files)
    frame_sizes: str  # frame_sizes_digest of exact sizes, checked again when writing ("" when estimated)
    digest: str  # the source part of the clip's resume fingerprint (frames, audio, fps, encoding)
    extra: dict | None = None  # further ClipPlan fields of this kind (video files: video, frame_pts, audio_from)


@dataclass(slots=True)  # a driver holds one per clip of the source: no per-instance __dict__
class ClipPlan:
    key: str
    split: str
    video_id: str
    start: int
    n_real: int
    pad: int
    frame_size: tuple[int, int]
    frame_sizes: str  # digest of the source JPEGs' sizes (frame_sizes_digest): the writer checks they did not change
    planned_bytes: int
    source_digest: str = ""  # fingerprint of the clip's sources: frames, wav, annotations (for resume)
    video: object = None  # a video.VideoSource when the clip is decoded from a video file
    frame_pts: array | tuple = ()  # video files: array("q") of the input frame timestamp each clip frame shows
    audio_from: str = "wav"  # "wav" (wav/<id>.wav), "stream" (the file's audio stream), "none" (zeros)
    fps: Fraction = Fraction(30)  # the clip's frame rate: --fps, or with --fps native its video's own

    @property
    def n_frames(self) -> int:
        return self.n_real + self.pad


class ClipTable(Sequence):
    """Planned clips in columns: what a driver holds per clip between planning and writing.

    A :class:`ClipPlan` with its strings costs a driver ~600 bytes; a million-clip plan held as objects
    is ~600 MB. The table keeps the same facts in numpy columns (~90 bytes a clip) — the per-video ones
    (split, id, video file, audio source) once per video — and makes a :class:`ClipPlan` only when one is
    asked for: a worker iterating its shard, one shard's keys compared with a written shard's. Each probed
    video's clips come back from the probe as a table (:meth:`from_plans`), so no process ever holds a
    ClipPlan object per clip of a split. A table is a ``Sequence[ClipPlan]``; a slice is a table.
    """

    _COLUMNS = ("video", "start", "n_real", "pad", "frame_size", "frame_sizes", "planned_bytes", "source_digest")

    def __init__(self, videos: list[tuple], columns: dict[str, np.ndarray], pts_start: np.ndarray, pts: np.ndarray):
        self.videos = videos  # (split, video_id, video source or None, audio_from, fps) per video
        self.columns = columns
        self.pts_start = pts_start  # [N+1]: clip i's frame timestamps (video files) are pts[pts_start[i]:pts_start[i+1]]
        self.pts = pts

    @classmethod
    def from_plans(cls, plans: Iterable[ClipPlan]) -> "ClipTable":
        plans = list(plans)
        videos: dict[tuple, int] = {}
        video = np.empty(len(plans), np.int32)
        pts: list = []
        lengths = np.zeros(len(plans) + 1, np.int64)
        for i, c in enumerate(plans):
            if c.key != fmt.clip_key(c.video_id, c.start):
                raise ValueError(f"clip plan {c.key!r} is not the clip of {c.video_id} at frame {c.start}")
            video[i] = videos.setdefault((c.split, c.video_id, id(c.video), c.audio_from, c.fps), len(videos))
            if c.video is not None:
                pts.append(np.frombuffer(array("q", c.frame_pts), np.int64))
                lengths[i + 1] = len(c.frame_pts)
        by_number = {n: key for key, n in videos.items()}
        sources = {id(c.video): c.video for c in plans}
        table = [(split, vid, sources[ident], audio, fps)
                 for split, vid, ident, audio, fps in (by_number[n] for n in range(len(by_number)))]
        columns = {
            "video": video,
            "start": np.fromiter((c.start for c in plans), np.int64, len(plans)),
            "n_real": np.fromiter((c.n_real for c in plans), np.int64, len(plans)),
            "pad": np.fromiter((c.pad for c in plans), np.int64, len(plans)),  # a padded tail can be any length
            "frame_size": np.array([c.frame_size for c in plans], np.int32).reshape(len(plans), 2),
            "frame_sizes": np.array([c.frame_sizes.encode("ascii") for c in plans], "S16").reshape(len(plans)),
            "planned_bytes": np.fromiter((c.planned_bytes for c in plans), np.int64, len(plans)),
            "source_digest": np.frombuffer(b"".join(_digest_bytes(c) for c in plans), np.uint8).reshape(len(plans), 32),
        }
        return cls(table, columns, np.cumsum(lengths), np.concatenate(pts) if pts else np.zeros(0, np.int64))

    @classmethod
    def concat(cls, tables: Sequence["ClipTable"]) -> "ClipTable":
        """Several tables as one, in order (each keeps its own videos)."""
        tables = [t for t in tables if len(t)]
        if not tables:
            return cls.from_plans([])
        videos, columns, pts_lengths = [], {k: [] for k in cls._COLUMNS}, [np.zeros(1, np.int64)]
        for t in tables:
            for k in cls._COLUMNS:
                columns[k].append(t.columns[k] + len(videos) if k == "video" else t.columns[k])
            videos += t.videos
            pts_lengths.append(np.diff(t.pts_start))
        return cls(videos, {k: np.concatenate(v) for k, v in columns.items()}, np.cumsum(np.concatenate(pts_lengths)),
                   np.concatenate([t.pts[int(t.pts_start[0]):int(t.pts_start[-1])] for t in tables]))

    def __len__(self) -> int:
        return len(self.columns["start"])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        i = range(len(self))[i]
        c = self.columns
        split, video_id, video, audio_from, fps = self.videos[int(c["video"][i])]
        start = int(c["start"][i])
        return ClipPlan(
            key=fmt.clip_key(video_id, start), split=split, video_id=video_id, start=start,
            n_real=int(c["n_real"][i]), pad=int(c["pad"][i]), frame_size=tuple(int(v) for v in c["frame_size"][i]),
            frame_sizes=c["frame_sizes"][i].decode("ascii"), planned_bytes=int(c["planned_bytes"][i]),
            source_digest=c["source_digest"][i].tobytes().hex(), video=video,
            frame_pts=array("q", self.pts[int(self.pts_start[i]):int(self.pts_start[i + 1])].tolist()) if video is not None else (),
            audio_from=audio_from, fps=fps)

    def take(self, rows: np.ndarray) -> "ClipTable":
        """These rows, in this order, as a table holding only their videos (what a worker is sent for one shard)."""
        rows = np.asarray(rows, dtype=np.int64)
        used, video = np.unique(self.columns["video"][rows], return_inverse=True)
        columns = {k: self.columns[k][rows] for k in self._COLUMNS if k != "video"}
        columns["video"] = video.astype(np.int32).reshape(len(rows))
        lengths = (self.pts_start[1:] - self.pts_start[:-1])[rows]
        pts = [self.pts[int(a):int(b)] for a, b in zip(self.pts_start[rows], self.pts_start[rows + 1]) if b > a] \
            if len(self.pts) else []  # frame directories have none: no loop over the rows
        return ClipTable([self.videos[int(v)] for v in used], columns,
                         np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                         np.concatenate(pts) if pts else np.zeros(0, np.int64))

    def keys(self) -> list[str]:
        return [fmt.clip_key(self.videos[int(v)][1], int(s)) for v, s in zip(self.columns["video"], self.columns["start"])]

    @property
    def n_frames(self) -> np.ndarray:
        return self.columns["n_real"].astype(np.int64) + self.columns["pad"]

    def seconds(self) -> Fraction:
        """The clips' duration: each video's frames at its own rate (``--fps native``: rates differ by video)."""
        frames = np.bincount(self.columns["video"], weights=self.n_frames, minlength=len(self.videos)).astype(np.int64)
        return sum((Fraction(int(n)) / v[4] for n, v in zip(frames.tolist(), self.videos) if n), Fraction(0))

    def key_order(self) -> np.ndarray:
        """Row order by (video id, start frame): the order clips are cut into shards."""
        ids = [v[1] for v in self.videos]
        rank = np.empty(len(ids), np.int64)
        rank[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))
        return np.lexsort((self.columns["start"], rank[self.columns["video"]]))


def _digest_bytes(c: ClipPlan) -> bytes:
    raw = bytes.fromhex(c.source_digest) if len(c.source_digest) == 64 else b""
    if len(raw) != 32:
        raise ValueError(f"clip plan {c.key}: source digest {c.source_digest!r} is not a sha256 hex digest")
    return raw


@dataclass
class VideoPlan:
    split: str
    video_id: str
    found: bool
    n_frames: int = 0
    clips: Sequence[ClipPlan] = field(default_factory=list)  # a ClipTable once probed (executors.probe_one)
    skips: list[Skip] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    strict_problems: list[str] = field(default_factory=list)  # built anyway, but --strict refuses them
    source: str = "frames"  # or "video_file"
    findings: list = field(default_factory=list)  # build.findings.Finding: built, but the labels may be wrong
    fps: Fraction | None = None  # the rate its clips are cut at (None: not planned)
    ffmpeg_log: list[str] = field(default_factory=list)  # FFmpeg's own log lines while probing (for the report)
    annotated: bool | None = None  # in the split's annotation files (None: the split has none)


def tar_member_bytes(size: int, name_len: int = 60) -> int:
    """Bytes a member takes in a tar: a header block, the data padded to 512 (+ a PAX header for long names)."""
    extra = 3 * TAR_BLOCK if name_len > 99 else 0
    return TAR_BLOCK + math.ceil(size / TAR_BLOCK) * TAR_BLOCK + extra


def estimate_clip_bytes(params: BuildParams, frame_bytes: tuple[int, ...], n_frames: int, n_persons: int, name_len: int,
                        fps) -> int:
    a, b = fmt.audio_sample_range(0, n_frames, fps)
    audio = codecs.wav_size(b - a)
    total = tar_member_bytes(4096 + 400 * n_persons, name_len) + tar_member_bytes(audio, name_len)
    total += 2 * tar_member_bytes(128 + n_frames, name_len)
    total += tar_member_bytes(128 + 16 * n_persons * n_frames, name_len) + tar_member_bytes(128 + n_persons * n_frames, name_len)
    if params.originals:
        total += sum(tar_member_bytes(s, name_len) for s in frame_bytes)
        total += (n_frames - len(frame_bytes)) * tar_member_bytes(frame_bytes[-1], name_len)
    if "small" in params.derive:
        total += n_frames * tar_member_bytes(4096, name_len)
    if "crops" in params.derive:
        total += n_frames * n_persons * tar_member_bytes(4096, name_len)
    return total


@dataclass
class ShardPlan:
    split: str
    index: int
    clips: ClipTable  # a list of ClipPlans is made into one

    def __post_init__(self):
        if not isinstance(self.clips, ClipTable):
            self.clips = ClipTable.from_plans(self.clips)

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}.tar"

    @property
    def planned_bytes(self) -> int:
        return int(self.clips.columns["planned_bytes"].sum()) + 2 * TAR_BLOCK

    @property
    def source_digest(self) -> str:
        """Fingerprint of every source file and annotation the shard is made from."""
        return hashlib.sha256(self.clips.columns["source_digest"].tobytes().hex().encode()).hexdigest()


def assign_shards(split: str, clips: Sequence[ClipPlan], shard_bytes: int, shard_clips: int = 0) -> list[ShardPlan]:
    """Cut the split's clips, in (video id, start frame) order, into shards by size and count."""
    table = clips if isinstance(clips, ClipTable) else ClipTable.from_plans(clips)
    order = table.key_order()
    bounds = [0]
    size = 0
    for i, planned in enumerate(table.columns["planned_bytes"][order].tolist()):
        current = i - bounds[-1]
        if (shard_clips and current >= shard_clips) or (current and size + planned > shard_bytes):
            bounds.append(i)
            size = 0
        size += planned
    bounds.append(len(table))
    return [ShardPlan(split, n, table.take(order[lo:hi])) for n, (lo, hi) in enumerate(zip(bounds, bounds[1:])) if hi > lo]
