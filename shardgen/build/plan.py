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
from typing import NamedTuple

from ..core import codecs
from ..core import format as fmt
from .skips import Reason, Skip, SkipCode

TAILS = ("keep-short", "drop", "pad")
TAR_BLOCK = 512


@dataclass(frozen=True)
class BuildParams:
    """The parameters that change the output bytes (and nothing else: no paths, no worker counts)."""

    clip_seconds: float = 15.0
    stride_seconds: float | None = None  # None: = clip_seconds (no overlap)
    fps: float = 30.0
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
        if self.tail not in TAILS:
            raise ValueError(f"tail policy {self.tail!r}: choose one of {TAILS}")
        if self.audio_format not in fmt.AUDIO_EXTS:
            raise ValueError(f"audio format {self.audio_format!r}: choose one of {fmt.AUDIO_EXTS}")
        if self.clip_frames < 1 or self.stride_frames < 1:
            raise ValueError("clip and stride must be at least one frame long")
        if self.shard_bytes <= 0 or self.shard_clips < 0:
            raise ValueError("--shard-bytes must be positive and --shard-clips non-negative")
        if not self.originals and "small" not in self.derive:
            raise ValueError("--no-originals needs --derive small (a clip must keep some frames)")
        if not 1 <= self.jpeg_quality <= 100 or self.max_side < 0:
            raise ValueError("--jpeg-quality must be 1..100 and --max-side non-negative")
        bad = set(self.derive) - {"small", "crops"}
        if bad:
            raise ValueError(f"unknown derived members {sorted(bad)}: choose from small, crops")

    @property
    def clip_frames(self) -> int:
        return fmt.round_half_up(Fraction(str(self.clip_seconds)) * fmt.fps_fraction(self.fps))

    @property
    def stride_frames(self) -> int:
        s = self.clip_seconds if self.stride_seconds is None else self.stride_seconds
        return fmt.round_half_up(Fraction(str(s)) * fmt.fps_fraction(self.fps))

    @property
    def min_tail_frames(self) -> int:
        return max(1, fmt.round_half_up(Fraction(str(self.min_clip_seconds)) * fmt.fps_fraction(self.fps)))

    def to_json(self) -> dict:
        d = asdict(self)
        d["derive"] = list(self.derive)
        for name, default in (("jpeg_quality", 90), ("max_side", 0)):  # only video files use them: left out
            if d[name] == default:  # at their defaults, so frame-directory builds record what they always did
                del d[name]
        d["clip_frames"], d["stride_frames"] = self.clip_frames, self.stride_frames
        return d


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

    @property
    def n_frames(self) -> int:
        return self.n_real + self.pad


@dataclass
class VideoPlan:
    split: str
    video_id: str
    found: bool
    n_frames: int = 0
    clips: list[ClipPlan] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    strict_problems: list[str] = field(default_factory=list)  # built anyway, but --strict refuses them
    source: str = "frames"  # or "video_file"


def tar_member_bytes(size: int, name_len: int = 60) -> int:
    """Bytes a member takes in a tar: a header block, the data padded to 512 (+ a PAX header for long names)."""
    extra = 3 * TAR_BLOCK if name_len > 99 else 0
    return TAR_BLOCK + math.ceil(size / TAR_BLOCK) * TAR_BLOCK + extra


def estimate_clip_bytes(params: BuildParams, frame_bytes: tuple[int, ...], n_frames: int, n_persons: int, name_len: int) -> int:
    a, b = fmt.audio_sample_range(0, n_frames, params.fps)
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
    clips: list[ClipPlan]

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}.tar"

    @property
    def planned_bytes(self) -> int:
        return sum(c.planned_bytes for c in self.clips) + 2 * TAR_BLOCK

    @property
    def source_digest(self) -> str:
        """Fingerprint of every source file and annotation the shard is made from."""
        return hashlib.sha256("".join(c.source_digest for c in self.clips).encode()).hexdigest()


def assign_shards(split: str, clips: list[ClipPlan], shard_bytes: int, shard_clips: int = 0) -> list[ShardPlan]:
    """Cut the split's clips, in (video id, start frame) order, into shards by size and count."""
    ordered = sorted(clips, key=lambda c: (c.video_id, c.start))
    shards: list[ShardPlan] = []
    current: list[ClipPlan] = []
    size = 0
    for clip in ordered:
        full = (shard_clips and len(current) >= shard_clips) or (current and size + clip.planned_bytes > shard_bytes)
        if full:
            shards.append(ShardPlan(split, len(shards), current))
            current, size = [], 0
        current.append(clip)
        size += clip.planned_bytes
    if current:
        shards.append(ShardPlan(split, len(shards), current))
    return shards
