"""JPEG bytes → the small grayscale pictures the models take, decoding as little as possible.

libjpeg-turbo can decode at 1/8, 2/8, ... 8/8 of the stored size by dropping DCT
coefficients: a 1080p frame needed at 112x112 is decoded at 1/8 (240x135) for a fraction of the
cost of a full decode. simplejpeg exposes that as ``min_height``/``min_width`` (the smallest
scale at least that big) and decodes straight to luma (``colorspace="GRAY"``), skipping the
colour conversion. Pillow's ``draft("L", size)`` does the same (``make bench`` compares them: simplejpeg is faster).
"""

from __future__ import annotations

import numpy as np
import simplejpeg
from PIL import Image

from .format import FormatError

FACE = 112


def decode_gray(data: bytes, min_height: int = 0, min_width: int = 0, *, name: str = "frame") -> np.ndarray:
    """Luma ``uint8 [h, w]`` at the smallest DCT scale with h >= min_height and w >= min_width."""
    try:
        out = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_height=min_height, min_width=min_width)
    except Exception as exc:  # simplejpeg raises ValueError for corrupt data
        raise FormatError(f"{name}: JPEG does not decode ({exc})") from None
    return out[..., 0]


def gray_frame(data: bytes, size: int = FACE, *, name: str = "frame") -> np.ndarray:
    """A whole frame as ``uint8 [size, size]`` gray: DCT-scaled decode, then one bilinear resize.

    The frame is stretched to a square (every pixel kept), as ``cv2.resize(frame, (112, 112))``
    would; crop-based modes use :func:`shardgen.core.crops.talknet_crop` instead.
    """
    small = decode_gray(data, size, size, name=name)
    if small.shape == (size, size):
        return small
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR))


def gray_small(data: bytes, *, name: str = "frame") -> np.ndarray:
    """A stored derived member (already 112x112 gray): decode only."""
    return decode_gray(data, name=name)


def rgb_frame(data: bytes, size: tuple[int, int] | None = None, *, name: str = "frame") -> np.ndarray:
    """``uint8 [H, W, 3]``; with ``size=(h, w)`` the smallest DCT scale ≥ size, then a resize to exactly it."""
    h, w = size if size else (0, 0)
    try:
        out = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=h, min_width=w)
    except Exception as exc:
        raise FormatError(f"{name}: JPEG does not decode ({exc})") from None
    if size and out.shape[:2] != (h, w):
        out = np.asarray(Image.fromarray(out).resize((w, h), Image.Resampling.BILINEAR))
    return out

