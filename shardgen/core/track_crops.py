"""A clip's face tracks → their 112x112 uint8 TalkNet crops, each frame decoded once per DCT scale.

Two persons visible together are two tracks over the same frames, and the frame's decode is most of a
crop's cost (a 1080p frame is ~275 KB of entropy-coded data, a 112x112 crop ~3 KB): :func:`cut_crops`
walks the frames once and cuts every track's crop from the one decode — per DCT scale (a track decodes
at the smallest scale that keeps its smallest face >= 112 px, :func:`~.crops.crop_scale_for`, so tracks
of different scales keep their pixels). A full-scale frame is decoded only around the faces
(:func:`~.decode.decode_gray_region`). The loader (:mod:`loaders.faces`) and the builder's
``--derive crops`` (:mod:`shardgen.build.derive`) both cut their crops here: a stored crop is the crop the
loader would cut, up to its JPEG re-encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .crops import (CropGeometry, DctScale, crop_geometry, crop_scale_for, interpolate_boxes, resample_crop,
                    smooth_boxes, talknet_footprint)
from .decode import FACE, FrameRegion, decode_gray, decode_gray_region
from .format import FormatError


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


def track_crops_of(rows: np.ndarray, person: int, first: int, kept: int, frame_size: tuple[int, int], *,
                   smooth: bool = False) -> TrackCrops:
    """A face track's :class:`TrackCrops` from its box rows (``[n, 4]`` x, y, w, h, NaN where a frame has no
    box): gaps filled linearly (the annotated boxes), TalkNet's smoothing if asked (the boxes cropped with),
    and the DCT scale its frames decode at (``frame_size``: the clip's ``(W, H)``). A ValueError where either
    end of the track has no box. The loader and ``--derive crops`` both plan a track's crops here."""
    boxes, span = interpolate_boxes(np.asarray(rows, dtype=np.float64))
    if span is None or span != (0, len(boxes) - 1):
        raise ValueError("no box at its ends")
    annotated = boxes  # the evaluation's boxes (gaps filled, never smoothed): what eval-gt writes
    if smooth:
        boxes = smooth_boxes(boxes)
    W, H = frame_size
    return TrackCrops(person, first, kept, annotated, boxes, crop_scale_for(boxes, (H, W)))


def cut_crops(frame: Callable[[int], bytes], frame_size: tuple[int, int], tracks: list[TrackCrops], *,
              key: str, strict: bool = False) -> list[np.ndarray | Exception]:
    """Every track's crops cut from one clip's frames (``frame(i)``: frame ``i``'s JPEG bytes; ``frame_size``:
    ``(W, H)`` as the clip says; ``key`` names the clip in errors, ``""`` where the caller names it), each
    frame decoded once per DCT scale it is needed at.

    At full scale only the part of the frame the faces need is decoded (:func:`decode_gray_region`: one
    box around the tracks' crop footprints there) — unless ``strict``: then every frame is decoded whole and
    any damage libjpeg notices is an error (the builder's choice: what it stores, it has checked; a region
    decode is lenient, see :func:`decode_gray_region`). At a reduced DCT scale the whole frame is decoded.
    Returns, per track, its ``uint8 [kept, 112, 112]`` crops or the error (a frame that does not decode, or a
    box that cannot be cropped, fails only the tracks that use it)."""
    W, H = frame_size
    out: list = [np.empty((t.kept, FACE, FACE), np.uint8) for t in tracks]
    geometries = _Geometries(tracks)

    def named(j: int, exc: Exception) -> Exception:
        if isinstance(exc, FormatError):
            return exc
        t = tracks[j]
        return FormatError(f"{key + ': ' if key else ''}person {t.person}'s track from frame {t.first + 1}: {exc}")

    for j in range(len(tracks)):
        try:
            geometries.geometry(j, 1.0)  # a box no crop can be cut from fails its own track here, named
        except ValueError as exc:
            out[j] = named(j, exc)
    users: dict[tuple, list[int]] = {}  # (frame, scale) -> the tracks that crop it
    for j, t in enumerate(tracks):
        if not isinstance(out[j], Exception):
            for f in range(t.first, t.first + t.kept):
                users.setdefault((f, t.scale), []).append(j)
    for (f, scale), js in sorted(users.items(), key=lambda kv: kv[0][0]):
        js = [j for j in js if not isinstance(out[j], Exception)]
        if not js:
            continue
        name = f"{key} frame {f + 1}" if key else f"frame {f + 1}"
        try:
            region = None
            if scale.scale == 1.0 and not strict:
                rows, cols = geometries.footprint(js, f, (H, W))
                region = decode_gray_region(frame(f), rows, cols, name=name)
                if region.frame_shape != (H, W):  # the frame is not the size the clip says: crop from all of it
                    region = None
            if region is None:
                gray = decode_gray(frame(f), scale.min_height, scale.min_width, name=name)
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
                out[j] = named(j, exc)
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
