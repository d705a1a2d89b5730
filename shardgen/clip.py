"""One planned clip → its tar members (name, bytes), in the format's member order.

This is the only place source bytes are read during a build. Frames are stored as the
original JPEG bytes; a frame whose size differs from the size seen at planning time means the
source changed under a running build, which would make the output depend on timing, so it is
an error rather than a skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .core import format as fmt
from .annotations import VideoAnnotations
from .audio import cut_clip_audio, load_video_audio
from .derive import derived_members
from .labels import clip_labels
from .plan import BuildParams, ClipPlan
from .source import SourceError, frame_filename, wav_path


@dataclass
class BuildContext:
    """What every worker needs to turn plans into bytes (shipped once per worker)."""

    data_dir: Path
    params: BuildParams
    annotations: dict[str, VideoAnnotations] | None


def clip_entry(clip: ClipPlan, ctx: BuildContext) -> tuple[str, list[tuple[str, bytes]], dict]:
    """``(key, members, info)``: what the writer stores, plus what the manifest records of the clip."""
    members, labels = _members_and_labels(clip, ctx)
    return clip.key, members, {"tracks": [list(t) for t in fmt.person_tracks(labels.boxes)]}


def _members_and_labels(clip: ClipPlan, ctx: BuildContext):
    params = ctx.params
    frames_dir = ctx.data_dir / "video_imgs" / clip.video_id
    jpegs: list[bytes] = []
    for i, expected in enumerate(clip.frame_bytes):
        path = frames_dir / frame_filename(clip.start + i)
        data = path.read_bytes()  # an OSError (names the file) stays one: executors may retry it
        if len(data) != expected:
            raise SourceError(f"{path}: {len(data)} bytes now, {expected} when planned: the source changed during the build")
        jpegs.append(data)
    jpegs.extend([jpegs[-1]] * clip.pad)

    audio = load_video_audio(wav_path(ctx.data_dir, clip.video_id))
    samples, audio_start, padded = cut_clip_audio(audio, clip.start, clip.n_real, params.fps, clip.pad)

    ann = ctx.annotations.get(clip.video_id) if ctx.annotations is not None else None
    labels = clip_labels(ann, clip.start, clip.n_real, clip.pad, clip.frame_size)

    derived: list[tuple[str, bytes]] = []
    if params.derive:
        derived = derived_members(jpegs, labels.boxes, clip.frame_size, params.derive)

    meta = fmt.make_metadata(
        key=clip.key, video_id=clip.video_id, split=clip.split, start_frame=clip.start,
        n_frames=clip.n_frames, fps=params.fps, frame_size=clip.frame_size,
        audio_ext=params.audio_format, audio_start_sample=audio_start, audio_samples=len(samples),
        audio_padded_samples=padded, audio_source=audio.info,
        labels={**labels.provenance, "dropped": dict(sorted(labels.dropped.items()))},
        persons=labels.persons, pad_frames=clip.pad,
        derived=sorted({"small": "g", "crops": "c"}[d] for d in params.derive),
    )
    meta["originals"] = params.originals
    members = [
        (fmt.META_EXT, fmt.encode_metadata(meta)),
        (params.audio_format, fmt.encode_audio(samples, params.audio_format)),
        (fmt.VISIBLE_EXT, fmt.encode_npy(labels.visible)),
        (fmt.VOICE_EXT, fmt.encode_npy(labels.voice)),
        (fmt.BOXES_EXT, fmt.encode_npy(labels.boxes)),
        (fmt.SPEAKING_EXT, fmt.encode_npy(labels.speaking)),
    ]
    if params.originals:
        members.extend((fmt.frame_ext(i + 1), data) for i, data in enumerate(jpegs))
    members.extend(derived)
    members.sort(key=lambda m: fmt.member_order(m[0]))
    return [(f"{clip.key}.{ext}", data) for ext, data in members], labels
