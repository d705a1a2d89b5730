"""A batch's face tracks → their 112x112 uint8 crops, each source frame decoded once.

``asd-tracks`` reads a batch's face tracks clip by clip (the tracks of one clip share one read,
:meth:`~loaders.reader.ClipReader.read_tracks`). Two persons visible together are two tracks over
the same frames: decoding each frame once per track decoded the same JPEG twice, and the full-frame
decode is most of the cost of a crop cut from plain shards (a 1080p frame is ~275 KB of entropy-coded
data, a 112x112 crop ~3 KB). :func:`batch_faces` walks a clip's frames once and cuts every track's crop
from the one decode — per DCT scale: a track is decoded at the smallest scale that keeps its smallest
face >= 112 px (:func:`~shardgen.core.crops.crop_scale_for`), so tracks of different scales still get
the pixels they always got. Stored crops (``--derive crops``) are decoded as they are.

The crops are exactly :func:`~shardgen.core.crops.talknet_crop` of the frame decoded at the track's
scale — the same numbers the loader produced track by track; only the work is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardgen.core.crops import (CropGeometry, DctScale, crop_geometry, crop_scale_for, interpolate_boxes, resample_crop,
                                 smooth_boxes, talknet_footprint)
from shardgen.core.decode import FACE, FrameRegion, decode_gray, decode_gray_region, gray_small
from shardgen.core.format import FormatError
from shardgen.core.sample import ClipSample


@dataclass
class TrackCrops:
    """What a track's crops are cut from: its first ``kept`` frames, its boxes (annotated: gaps filled, never
    smoothed; and the ones cropped with), and the DCT scale its frames decode at."""

    person: int
    first: int
    kept: int
    annotated: np.ndarray
    boxes: np.ndarray
    scale: DctScale


def track_boxes(sample: ClipSample, track: tuple, kept: int, smooth: bool) -> TrackCrops:
    """A track's boxes and decode scale; a track whose ends have no box is an error naming the clip."""
    p, first, n = (int(v) for v in track)
    boxes, span = interpolate_boxes(sample.boxes[p, first:first + n].astype(np.float64))
    if span is None or span != (0, n - 1):
        raise FormatError(f"{sample.key}: track {track} has no box at its ends (clip index and shard disagree)")
    annotated = boxes  # the evaluation's boxes (gaps filled, never smoothed): what eval-gt writes
    if smooth:
        boxes = smooth_boxes(boxes)
    W, H = sample.meta["frame_size"]
    return TrackCrops(p, first, kept, annotated, boxes, crop_scale_for(boxes, (H, W)))


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
    for i in range(kept):
        data = sample.crop(p, first + i)
        name = f"{sample.key} crop {p}/{first + i + 1}"
        if data is None:
            raise FormatError(f"{name}: member missing (the clip was built with --derive crops)")
        crop = gray_small(data, name=name)
        if crop.shape != (FACE, FACE):
            raise FormatError(f"{name}: stored crop is {crop.shape[1]}x{crop.shape[0]}, not {FACE}x{FACE}")
        faces[i] = crop
    return faces


def cut_crops(sample: ClipSample, tracks: list[TrackCrops]) -> list[np.ndarray | Exception]:
    """Every track's crops cut from ``sample``'s frames, each frame decoded once per DCT scale it is needed at.

    At full scale only the part of the frame the faces need is decoded (:func:`decode_gray_region`: one
    box around the tracks' crop footprints there); at a reduced DCT scale the whole frame is. Returns, per
    track, its ``uint8 [kept, 112, 112]`` crops or the error (a frame that does not decode fails only the
    tracks that use it)."""
    W, H = sample.meta["frame_size"]
    out: list = [np.empty((t.kept, FACE, FACE), np.uint8) for t in tracks]
    users: dict[tuple, list[int]] = {}  # (frame, scale) -> the tracks that crop it
    for j, t in enumerate(tracks):
        for f in range(t.first, t.first + t.kept):
            users.setdefault((f, t.scale), []).append(j)
    geometries = _Geometries(tracks)
    for (f, scale), js in sorted(users.items(), key=lambda kv: kv[0][0]):
        js = [j for j in js if not isinstance(out[j], Exception)]
        if not js:
            continue
        name = f"{sample.key} frame {f + 1}"
        try:
            region = None
            if scale.scale == 1.0:
                rows, cols = geometries.footprint(js, f, (H, W))
                region = decode_gray_region(sample.frame(f), rows, cols, name=name)
                if region.frame_shape != (H, W):  # the frame is not the size the clip says: crop from all of it
                    region = None
            if region is None:
                gray = decode_gray(sample.frame(f), scale.min_height, scale.min_width, name=name)
                region = FrameRegion(gray, (0, 0), gray.shape)
        except Exception as exc:
            for j in js:
                out[j] = exc
            continue
        for j in js:
            i = f - tracks[j].first
            try:
                src, patch = geometries.of(j, region.frame_shape[1] / W)
                out[j][i] = resample_crop(region.pixels, src[i], patch[i], FACE, origin=region.origin,
                                          frame_shape=region.frame_shape)
            except Exception as exc:
                out[j] = exc
    return out


class _Geometries:
    """Each track's :class:`~shardgen.core.crops.CropGeometry`, computed for all its kept frames at once, per
    decoded scale (the scale is the decoded frame's width over the clip's: known once a frame is decoded)."""

    def __init__(self, tracks: list[TrackCrops]):
        self.tracks = tracks
        self._memo: dict[tuple[int, float], CropGeometry] = {}
        self._lists: dict[tuple[int, float], tuple[list, list]] = {}
        self._spans: dict[int, list] = {}

    def geometry(self, j: int, scale: float) -> CropGeometry:
        key = (j, scale)
        if key not in self._memo:
            t = self.tracks[j]
            self._memo[key] = crop_geometry(t.boxes[:t.kept], scale, FACE)
        return self._memo[key]

    def of(self, j: int, scale: float) -> tuple[list, list]:
        """Track ``j``'s geometry as Python lists (``src``, ``patch``; a row per kept frame) for
        :func:`~shardgen.core.crops.resample_crop`."""
        key = (j, scale)
        if key not in self._lists:
            g = self.geometry(j, scale)
            self._lists[key] = (g.src.tolist(), g.patch.tolist())
        return self._lists[key]

    def footprint(self, js: list[int], f: int, frame_shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """The rows and columns of full-scale frame ``f`` that tracks ``js`` crop: one box around their footprints
        (empty where every face lies outside the frame)."""
        y0 = x0 = 1 << 62
        y1 = x1 = -1
        for j in js:
            if j not in self._spans:
                self._spans[j] = talknet_footprint(self.geometry(j, 1.0), frame_shape).tolist()
            a, b, c, d = self._spans[j][f - self.tracks[j].first]
            if a < b and c < d:
                y0, y1, x0, x1 = min(y0, a), max(y1, b), min(x0, c), max(x1, d)
        return ((y0, y1), (x0, x1)) if y1 >= 0 else ((0, 0), (0, 0))


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
        for (j, _), faces in zip(cut, cut_crops(sample, [t for _, t in cut])):
            out[j] = faces
    return out
