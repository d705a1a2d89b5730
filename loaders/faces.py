"""A batch's face tracks → their 112x112 uint8 crops: cut from the frames, or the stored ones.

``asd-tracks`` reads a batch's face tracks clip by clip (the tracks of one clip share one read,
:meth:`~loaders.reader.ClipReader.read_tracks`); :func:`batch_faces` then hands each clip's tracks to
:func:`shardgen.core.track_crops.cut_crops`, which decodes each frame once for all of them (per DCT scale;
at full scale only around the faces) — or decodes the clip's stored crops (``--derive crops``), or takes the
crop cache's (:mod:`loaders.crop_cache`). The crops are exactly :func:`~shardgen.core.crops.talknet_crop`
of the frame decoded at the track's scale — the same numbers the loader produced track by track; only the
work is shared."""

from __future__ import annotations

import numpy as np

from shardgen.core.decode import FACE, gray_small
from shardgen.core.format import FormatError
from shardgen.core.sample import ClipSample
from shardgen.core.track_crops import TrackCrops, cut_crops, track_crops_of


def track_boxes(sample: ClipSample, track: tuple, kept: int, smooth: bool) -> TrackCrops:
    """A track's boxes and decode scale (:func:`~shardgen.core.track_crops.track_crops_of`); a track whose ends
    have no box is an error naming the clip."""
    p, first, n = (int(v) for v in track)
    try:
        return track_crops_of(sample.boxes[p, first:first + n], p, first, kept, sample.meta["frame_size"], smooth=smooth)
    except ValueError:
        raise FormatError(f"{sample.key}: track {track} has no box at its ends (clip index and shard disagree)") from None


def kept_frames(track: tuple, keep: int | None) -> int:
    """How many of a track's frames are read: all, or its first ``keep`` (at least one)."""
    n = int(track[2])
    return n if keep is None else max(1, min(n, int(keep)))


def has_stored_crops(sample: ClipSample) -> bool:
    """Whether the clip was built with ``--derive crops`` (a crop member for every frame of every face track)."""
    return "c" in sample.meta.get("derived", ())


def stored_crops(sample: ClipSample, track: tuple, kept: int) -> np.ndarray:
    """A track's first ``kept`` crops from its clip's ``--derive crops`` members."""
    p, first = int(track[0]), int(track[1])
    faces = np.empty((kept, FACE, FACE), np.uint8)

    def name(i: int) -> str:  # made only for an error: a name made for every crop costs more than its decode's setup
        return f"{sample.key} crop {p}/{first + i + 1}"

    for i in range(kept):
        data = sample.crop(p, first + i)
        if data is None:
            raise FormatError(f"{name(i)}: member missing (the clip was built with --derive crops)")
        try:
            crop = gray_small(data)
        except FormatError:
            crop = gray_small(data, name=name(i))  # raises again, naming the member
        if crop.shape != (FACE, FACE):
            raise FormatError(f"{name(i)}: stored crop is {crop.shape[1]}x{crop.shape[0]}, not {FACE}x{FACE}")
        faces[i] = crop
    return faces


def cuts_from_frames(sample: ClipSample, use_derived: bool, smooth: bool) -> bool:
    """Whether a clip's crops are cut from its frames (else decoded from its stored crops)."""
    return not (use_derived and not smooth and has_stored_crops(sample))


def batch_faces(samples: list, tracks: list[tuple], *, keep: int | None, use_derived: bool, smooth: bool,
                known: list | None = None) -> list[np.ndarray | Exception | None]:
    """The crops of a batch's tracks (``tracks[j]`` of ``samples[j]``; tracks of one clip share its sample object).

    Per track: ``uint8 [kept, 112, 112]``, the error that stopped it (named; the caller raises or skips), or
    None where its sample is itself an error. ``use_derived``: stored crops where the clip has them (not with
    ``smooth``, whose boxes differ from the stored ones). ``known[j]``: track ``j``'s crops are at hand (the
    crop cache, :mod:`loaders.crop_cache`): its frames were not read and are not decoded."""
    known = known or [None] * len(tracks)
    out: list = [None] * len(tracks)
    groups: dict[int, list[int]] = {}
    for j, s in enumerate(samples):
        if isinstance(s, ClipSample):
            groups.setdefault(id(s), []).append(j)
    for js in groups.values():
        sample = samples[js[0]]
        cut: list[tuple[int, TrackCrops]] = []
        for j in js:
            try:
                crops = track_boxes(sample, tracks[j], kept_frames(tracks[j], keep), smooth)  # checks the track too
                if known[j] is not None:
                    out[j] = known[j]
                elif not cuts_from_frames(sample, use_derived, smooth):
                    out[j] = stored_crops(sample, tracks[j], crops.kept)
                else:
                    cut.append((j, crops))
            except Exception as exc:
                out[j] = exc
        crops = cut_crops(sample.frame, sample.meta["frame_size"], [t for _, t in cut], key=sample.key)
        for (j, _), faces in zip(cut, crops):
            out[j] = faces
    return out
