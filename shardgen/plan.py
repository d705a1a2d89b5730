"""Videos + parameters → clips → shards: the whole build decided up front.

Everything that fixes the output bytes is decided here, before a single shard is written:
which clips exist, which are skipped and why, and which shard each clip goes to. Executors
(local processes, Ray) only carry the plan out, so the bytes cannot depend on how many
workers ran or in which order they finished.

Shard cutting uses each clip's planned size, which is exact for the frames (their file sizes)
and the WAV audio, and an upper estimate for metadata, FLAC and derived members.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from . import format as fmt
from .annotations import VideoAnnotations, annotation_digest
from .source import SourceError, check_jpeg_file, jpeg_size, scan_frames, wav_path

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


def plan_spans(n_frames: int, clip: int, stride: int, tail: str, min_tail: int) -> tuple[list[Span], list[tuple[Span, str]]]:
    """Cut ``n_frames`` into clips: full clips every ``stride`` frames, then the tail by policy.

    Returns (clips, skipped) where skipped tails carry the reason. With stride == clip every
    frame belongs to exactly one clip (or to a skipped tail); with stride < clip clips overlap.
    """
    spans: list[Span] = []
    skipped: list[tuple[Span, str]] = []
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
                skipped.append((span, f"tail of {rest} frames shorter than a clip (tail policy 'drop')"))
            elif rest < min_tail:
                skipped.append((span, f"tail of {rest} frames shorter than --min-clip-seconds ({min_tail} frames)"))
            elif tail == "pad":
                spans.append(Span(tail_start, rest, clip - rest))
            else:
                spans.append(span)
    return spans, skipped


@dataclass
class ClipPlan:
    key: str
    split: str
    video_id: str
    start: int
    n_real: int
    pad: int
    frame_size: tuple[int, int]
    frame_bytes: tuple[int, ...]  # size of each source JPEG, for exact planning and change detection
    planned_bytes: int
    source_digest: str = ""  # fingerprint of the clip's sources: frames, wav, annotations (for resume)
    video: object = None  # a video.VideoSource when the clip is decoded from a video file
    frame_pts: tuple[int, ...] = ()  # video files: the input frame timestamp each clip frame shows
    audio_from: str = "wav"  # "wav" (wav/<id>.wav), "stream" (the file's audio stream), "none" (zeros)

    @property
    def n_frames(self) -> int:
        return self.n_real + self.pad


@dataclass
class Skip:
    split: str
    video_id: str
    reason: str
    key: str | None = None  # None: the whole video (no clips could be planned)
    start_frame: int | None = None
    n_frames: int | None = None


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
    audio = fmt.wav_size(b - a)
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


def probe_video(
    data_dir: Path, split: str, video_id: str, params: BuildParams,
    annotations: dict[str, VideoAnnotations] | None,
) -> VideoPlan:
    """Look at one video on disk and plan its clips; every clip is planned or skipped with a reason."""
    frames = scan_frames(data_dir, video_id)
    if frames is None:
        return VideoPlan(split, video_id, found=False,
                         skips=[Skip(split, video_id, f"frames directory video_imgs/{video_id} is missing")])
    vp = VideoPlan(split, video_id, found=True, n_frames=frames.n_frames)
    if frames.n_frames == 0:
        vp.skips.append(Skip(split, video_id, f"no img_NNNNN.jpg frames in video_imgs/{video_id}"))
        return vp
    spans, tails = plan_spans(frames.n_frames, params.clip_frames, params.stride_frames, params.tail, params.min_tail_frames)

    def skip(span: Span, reason: str) -> None:
        vp.skips.append(Skip(split, video_id, reason, fmt.clip_key(video_id, span.start), span.start, span.n_real))

    for span, reason in tails:
        skip(span, reason)

    video_reason = None
    wav = wav_path(data_dir, video_id)
    if not wav.is_file():
        video_reason = f"missing wav: wav/{video_id}.wav"
    else:
        video_reason = _check_wav(wav, frames.n_frames, params.fps, vp.warnings)
    ann = annotations.get(video_id) if annotations is not None else None
    past = [f for p in ann.persons for f in p.boxes if f >= frames.n_frames] if ann else []
    past += [e for p in ann.persons for _, e in p.voice if e >= frames.n_frames] if ann else []
    if past:  # labels exist only for frames with an image: say so rather than drop them unseen
        vp.warnings.append(f"annotations reach frame {max(past)} but video_imgs/{video_id} ends at frame {frames.n_frames - 1} "
                           f"(0-based): {len(past)} box(es)/voice segment end(s) past the last image are unused "
                           "(wrong --fps, or frames missing at the end?)")
    if video_reason is None and annotations is not None and ann is None and not params.allow_unannotated:
        video_reason = "no annotations for this video in the split's annotation file (--allow-unannotated builds it unlabelled)"
    if video_reason:
        for span in spans:
            skip(span, video_reason)
        return vp

    frame_size = None
    n_persons = len(ann.persons) if ann else 0
    wav_st = wav.stat()
    video_digest = f"{wav_st.st_size}:{wav_st.st_mtime_ns}|{params.fps}"
    for span in spans:
        sizes, mtimes = [], []
        problem = None
        for f in range(span.start, span.start + span.n_real):
            check = check_jpeg_file(frames.path(f))
            problem = check.problem
            if problem:
                break
            sizes.append(check.size)
            mtimes.append(check.mtime_ns)
        if problem:
            skip(span, problem)
            continue
        if frame_size is None:
            try:
                frame_size = jpeg_size(frames.path(span.start))
            except SourceError as exc:
                skip(span, str(exc).split(": ", 1)[-1] + f" ({frames.path(span.start).name})")
                continue
        key = fmt.clip_key(video_id, span.start)
        vp.clips.append(ClipPlan(
            key=key, split=split, video_id=video_id, start=span.start, n_real=span.n_real, pad=span.pad,
            frame_size=frame_size, frame_bytes=tuple(sizes),
            planned_bytes=estimate_clip_bytes(params, tuple(sizes), span.n_real + span.pad, n_persons, len(key) + 20),
            source_digest=hashlib.sha256(
                f"{span}|{sizes}|{mtimes}|{video_digest}|{annotation_digest(ann, span.start, span.start + span.n_real)}".encode()
            ).hexdigest(),
        ))
    return vp


def _check_wav(path: Path, n_frames: int, fps: float, warnings: list[str]) -> str | None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:
        return f"unreadable wav wav/{path.name} ({exc})"
    if info.frames == 0:
        return f"empty wav wav/{path.name}"
    video_s = n_frames / float(fps)
    audio_s = info.frames / info.samplerate
    if abs(audio_s - video_s) > 1.0 / float(fps):
        what = "shorter" if audio_s < video_s else "longer"
        warnings.append(
            f"wav/{path.name} is {audio_s:.3f} s, {what} than the {video_s:.3f} s of frames"
            + (": clips past its end are zero-padded and flagged" if what == "shorter" else ": the extra audio is unused")
        )
    return None


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
