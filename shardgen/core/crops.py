"""Face-track boxes to TalkNet's 112x112 gray crops, without padding or resizing whole frames.

The TalkNet demo (``crop_video``) and the Ego4D TalkNet port turn a box into a face crop like this:
centre ``(x, y)``, half size ``bs = max(w, h)/2``, ``cs = 0.4``; pad the frame by
``bsi = int(bs*(1+2cs))`` with 110; take rows ``[int(y+bsi-bs) : int(y+bsi+bs*(1+2cs))]`` and
columns ``[int(x+bsi-bs*(1+cs)) : int(x+bsi+bs*(1+cs))]``; resize that window to 224x224
(bilinear); keep the centre 112x112. Only the central half of the window survives, so
:func:`talknet_crop` computes the same integer window, then resamples just its central half
straight to 112x112 from the frame (filling out-of-frame pixels with 110). That is the same
mapping of output pixels to source positions as resize-then-crop, at a fraction of the cost,
and it works on frames decoded at a reduced JPEG DCT scale.

Boxes here are Ego4D-style ``[x, y, w, h]`` with ``(x, y)`` the top-left corner, in pixels of the
original frame, float, NaN rows where the track has no box.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from PIL import Image

__all__ = [
    "PAD_VALUE",
    "CROP_SCALE",
    "interpolate_boxes",
    "smooth_boxes",
    "talknet_crop",
    "CropGeometry",
    "crop_geometry",
    "talknet_footprint",
    "resample_crop",
    "DctScale",
    "crop_scale_for",
]

PAD_VALUE = 110  # TalkNet pads with (110, 110, 110) BGR, which is 110 in gray too
CROP_SCALE = 0.4  # TalkNet's ``cs``: context around the face, more below it (mouth, chin)
DCT_SCALES = tuple(range(1, 9))  # libjpeg-turbo decodes at k/8, k = 1..8


def interpolate_boxes(boxes: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Fill interior gaps of a track linearly; leave everything outside the track NaN.

    A row counts as present only if all four numbers are finite. Between the first and last
    present rows, missing rows are linearly interpolated per coordinate (what TalkNet does with
    ``interp1d`` on corners; interpolating x, y, w, h is the same since corners are linear in
    them). Rows before the first / after the last present row are set to NaN: we do not invent
    boxes beyond the annotation.

    Returns:
        ``(filled, span)``: a new float64 ``[T, 4]`` array and the inclusive ``(first, last)``
        row indices of the track, or ``None`` if no row is present.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    filled = np.full_like(boxes, np.nan)
    present = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    if present.size == 0:
        return filled, None
    first, last = int(present[0]), int(present[-1])
    rows = np.arange(first, last + 1)
    for c in range(boxes.shape[1]):
        filled[first : last + 1, c] = np.interp(rows, present, boxes[present, c])
    return filled, (first, last)


def _medfilt_zero_padded(values: np.ndarray, kernel: int) -> np.ndarray:
    """``scipy.signal.medfilt`` for 1-D input: odd kernel, zeros beyond both ends."""
    padded = np.pad(values, kernel // 2)
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, kernel), axis=-1)


def smooth_boxes(boxes: np.ndarray, kernel: int = 13) -> np.ndarray:
    """TalkNet demo's track smoothing: a median filter over centre x, centre y and half size.

    Reproduces ``scipy.signal.medfilt(v, kernel_size=13)`` on ``x_c``, ``y_c`` and
    ``s = max(w, h)/2`` including its zero padding, which means the first and last
    ``kernel//2`` boxes are pulled towards 0 (toward the top-left and smaller) when the
    track is short or moving; that quirk is what TalkNet trained with. Ego4D annotations are
    already smooth, so callers keep this off by default.

    Args:
        boxes: ``[T, 4]`` x, y, w, h without NaN (interpolate and slice to the span first).
        kernel: odd window length.

    Returns:
        ``[T, 4]`` square boxes ``(x_c - s, y_c - s, 2s, 2s)``: :func:`talknet_crop` on them
        sees exactly the smoothed centre and half size.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd number, got {kernel}")
    boxes = np.asarray(boxes, dtype=np.float64)
    if not np.isfinite(boxes).all():
        raise ValueError("smooth_boxes needs NaN-free boxes; use interpolate_boxes and its span first")
    x, y, w, h = boxes.T
    cx = _medfilt_zero_padded(x + w / 2, kernel)
    cy = _medfilt_zero_padded(y + h / 2, kernel)
    s = _medfilt_zero_padded(np.maximum(w, h) / 2, kernel)
    return np.stack([cx - s, cy - s, 2 * s, 2 * s], axis=1)


class CropGeometry(NamedTuple):
    """Where crops come from, per box, in decoded-frame pixels: ``src [N, 4]`` the box ``(x0, y0, x1, y1)``
    resampled to the output (the window's central half), ``patch [N, 4]`` the rows and columns
    ``(py0, py1, px0, px1)`` around it that hold the bilinear filter's whole footprint (unclipped: the
    part outside the frame is TalkNet's 110 padding)."""

    src: np.ndarray
    patch: np.ndarray


#: beyond this, float64 no longer holds every integer: the window's int() truncations would not be TalkNet's
_MAX_COORD = float(1 << 52)
#: a crop patch this many pixels on a side is no face (an absurd annotation): it is refused, not allocated
#: (a real face's patch is ~1,500 px at 4K; this one would be 64 MB, resampled for every frame of its track)
_MAX_SIDE = 8192


def crop_geometry(boxes, scale: float = 1.0, out_size: int = 112) -> CropGeometry:
    """TalkNet's crop window for each box and the part of it :func:`talknet_crop` resamples, at once.

    The demo's arithmetic, including its ``int()`` truncations in padded coordinates, so each window lands
    on the pixels TalkNet's would: centre ``(x + w/2, y + h/2)``, ``bs = max(w, h)/2``, the frame padded by
    ``bsi = int(bs*(1+2cs))``, rows ``int(cy+bsi-bs) : int(cy+bsi+bs*(1+2cs))``, columns
    ``int(cx+bsi-bs*(1+cs)) : int(cx+bsi+bs*(1+cs))`` (a window may reach past the frame: TalkNet's 110
    padding). The same IEEE operations in the same order as that per-box arithmetic (``int()`` is
    ``np.trunc``), so every number is the one a box on its own gives (tests/test_crops.py holds it to a
    per-box reference, box by box): a track's geometry costs one pass of numpy, not Python per frame.
    A box without finite x, y and positive w, h is a ValueError (the Ego4D port drops such boxes)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = b.T
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~(np.isfinite(x) & np.isfinite(y) & (w > 0) & (h > 0) & np.isfinite(w + h))
    if bad.any():
        raise ValueError(f"box needs finite x, y and positive w, h; got {b[int(np.argmax(bad))].tolist()}")
    cs = CROP_SCALE
    bs = np.maximum(w, h) / 2
    bsi = np.trunc(bs * (1 + 2 * cs))
    my, mx = y + h / 2 + bsi, x + w / 2 + bsi  # centre in padded-frame coordinates
    r0, r1 = np.trunc(my - bs), np.trunc(my + bs * (1 + 2 * cs))
    c0, c1 = np.trunc(mx - bs * (1 + cs)), np.trunc(mx + bs * (1 + cs))
    top, left, height, width = r0 - bsi, c0 - bsi, r1 - r0, c1 - c0
    # Central half of the window, as pixel-edge coordinates in the decoded frame.
    y0, y1 = (top + height / 4) * scale, (top + 3 * height / 4) * scale
    x0, x1 = (left + width / 4) * scale, (left + 3 * width / 4) * scale
    # Patch covering the bilinear filter's footprint (1 px, or the reduction factor when
    # downscaling, each side) so Pillow never clamps at a patch edge that is not a window edge.
    margin = np.ceil(np.maximum(np.maximum(1.0, (y1 - y0) / out_size), (x1 - x0) / out_size)) + 1
    patch = np.stack([np.floor(y0) - margin, np.ceil(y1) + margin, np.floor(x0) - margin, np.ceil(x1) + margin], 1)
    bad = ~(np.abs(patch) < _MAX_COORD).all(axis=1)
    bad |= (patch[:, 1] - patch[:, 0] > _MAX_SIDE) | (patch[:, 3] - patch[:, 2] > _MAX_SIDE)
    if bad.any():
        raise ValueError(f"box {b[int(np.argmax(bad))].tolist()} makes a crop window over {_MAX_SIDE} px on a side "
                         f"or {_MAX_COORD:.0f} px away: no face box")
    return CropGeometry(np.stack([x0, y0, x1, y1], 1), patch.astype(np.int64))


def talknet_footprint(geometry: CropGeometry, frame_shape: tuple[int, int]) -> np.ndarray:
    """Per crop, the frame rows and columns ``(y0, y1, x0, x1)`` (``[start, stop)``, clipped to
    ``frame_shape``) that :func:`resample_crop` reads: what a region decode must cover. A face wholly outside
    the frame gives an empty range (``y0 >= y1`` or ``x0 >= x1``)."""
    height, width = frame_shape
    py0, py1, px0, px1 = geometry.patch.T
    return np.stack([np.clip(py0, 0, height), np.clip(py1, 0, height), np.clip(px0, 0, width), np.clip(px1, 0, width)], 1)


def resample_crop(gray: np.ndarray, src, patch, out_size: int = 112, *, origin: tuple[int, int] = (0, 0),
                  frame_shape: tuple[int, int] | None = None) -> np.ndarray:
    """One crop from one row of a :class:`CropGeometry` (as Python numbers: ``geometry.src[i].tolist()``, which
    indexes faster than numpy scalars): the patch (frame pixels, 110 outside the frame)
    resampled from ``src`` to ``out_size`` square by Pillow's bilinear filter.

    ``gray`` holds the decoded frame's rows ``origin[0]..`` and columns ``origin[1]..`` of a frame
    ``frame_shape`` big (a region decode, :func:`~shardgen.core.decode.decode_gray_region`); it must cover
    the crop's :func:`talknet_footprint`. The crop is the one the whole frame gives."""
    frame = gray[..., 0] if gray.ndim == 3 else gray
    py0, py1, px0, px1 = patch
    height, width = frame_shape if frame_shape is not None else frame.shape
    oy, ox = origin
    buf = np.full((py1 - py0, px1 - px0), PAD_VALUE, dtype=np.uint8)
    fy0, fy1 = max(py0, 0), min(py1, height)
    fx0, fx1 = max(px0, 0), min(px1, width)
    if fy0 < fy1 and fx0 < fx1:
        if fy0 < oy or fx0 < ox or fy1 > oy + frame.shape[0] or fx1 > ox + frame.shape[1]:
            raise ValueError(f"decoded region {frame.shape} at {origin} does not cover the crop's rows {fy0}:{fy1}, "
                             f"columns {fx0}:{fx1}")
        buf[fy0 - py0 : fy1 - py0, fx0 - px0 : fx1 - px0] = frame[fy0 - oy : fy1 - oy, fx0 - ox : fx1 - ox]
    x0, y0, x1, y1 = src
    box = (x0 - px0, y0 - py0, x1 - px0, y1 - py0)
    out = Image.frombuffer("L", (px1 - px0, py1 - py0), buf, "raw", "L", 0, 1)
    return np.asarray(out.resize((out_size, out_size), Image.Resampling.BILINEAR, box=box))


def talknet_crop(gray: np.ndarray, box, scale: float = 1.0, out_size: int = 112) -> np.ndarray:
    """One TalkNet face crop: ``uint8 [out_size, out_size]``.

    Equivalent to TalkNet's pad/crop/resize-to-``2*out_size``/centre-crop: the output's pixel
    centres sit at the same source positions. Resize to 224 followed by the centre 112 maps
    output pixel ``j`` to window position ``(j + 56.5) * W/224``, i.e. a bilinear resample of
    the window's central half ``[W/4, 3W/4]`` to 112 px; we resample just that box with Pillow
    (sub-pixel ``box=``), from a small patch of the frame that already holds the 110 padding.
    Many boxes: :func:`crop_geometry` once, then :func:`resample_crop` for each (the same numbers).

    Args:
        gray: ``[H, W]`` or ``[H, W, 1]`` uint8 luma of the frame, possibly decoded at a reduced
            DCT scale.
        box: ``(x, y, w, h)`` top-left box in ORIGINAL frame pixels.
        scale: decoded size / original size (``k/8`` for a libjpeg scaled decode). The window is
            computed in original pixels, exactly as TalkNet would, then mapped by ``scale``.
        out_size: output side (TalkNet: 112, from a 224 resize).

    Differences from TalkNet that remain: when the central half spans more than ``out_size``
    source pixels Pillow's bilinear filter averages over the whole footprint (antialiased),
    where ``cv2.resize`` samples 2x2 neighbours; and TalkNet's gray is ``cvtColor`` of the
    decoded BGR image while a ``GRAY`` JPEG decode returns the stored luma. Both are at most a
    few gray levels on faces (see tests/test_crops.py).
    """
    geometry = crop_geometry([box], scale, out_size)
    return resample_crop(gray, geometry.src[0].tolist(), geometry.patch[0].tolist(), out_size)


class DctScale(NamedTuple):
    """A JPEG DCT decode scale and the simplejpeg arguments that select it."""

    scale: float  # k/8: decoded pixels per original pixel, pass to talknet_crop(scale=)
    min_height: int  # simplejpeg.decode_jpeg(min_height=...) that yields exactly this scale
    min_width: int


def crop_scale_for(box_sizes, frame_size: tuple[int, int], out_size: int = 112) -> DctScale:
    """Smallest JPEG DCT scale (k/8) at which every box's crop keeps >= ``out_size`` source pixels.

    The 112x112 output covers the central half of TalkNet's window, i.e. ``1.4*bs = 0.7*max(w,h)``
    original pixels. Decoding at ``k/8`` leaves ``0.7*max(w,h)*k/8`` pixels for that span; we pick
    the smallest ``k`` for which the smallest box still has ``out_size`` of them, so the final
    resize never upsamples a scaled decode (it may still upsample a small face at full scale:
    then ``k = 8``). Decoding smaller saves most of the IDCT and colour work.

    Args:
        box_sizes: the boxes' ``max(w, h)`` values, or ``[N, 2]`` ``(w, h)`` pairs, or ``[N, 4]``
            boxes, in original pixels; NaN entries are ignored.
        frame_size: ``(height, width)`` of the original frame.

    Returns:
        :class:`DctScale`. libjpeg-turbo's scaled size is ``ceil(size*k/8)``, so passing
        ``min_height``/``min_width`` to ``simplejpeg.decode_jpeg`` selects exactly ``k``.
    """
    sizes = np.asarray(box_sizes, dtype=np.float64)
    if sizes.ndim == 2:
        sizes = np.maximum(sizes[:, -2], sizes[:, -1])  # (w, h) are the last two columns
    sizes = sizes[np.isfinite(sizes)]
    k = 8
    if sizes.size:
        need = out_size / (0.7 * sizes.min())
        k = next((k for k in DCT_SCALES if k / 8 >= need), 8)
    height, width = frame_size
    return DctScale(k / 8, math.ceil(height * k / 8), math.ceil(width * k / 8))
