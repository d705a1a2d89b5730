"""TalkNet's training augmentations (off unless asked for), applied to a whole sequence at once.

Visual (TalkNet ``load_visual``): one of original / horizontal flip / random crop of 70-100 %
resized back / rotation by -15..15 degrees, the same for every frame of the item. Audio
(TalkNet ``load_audio`` with ``audioAug``): mix in another clip's audio at a random SNR of
-5..5 dB. The other clip is another item of the same batch (TalkNet draws from its mini-batch).

The pixels are Pillow's, as when this module ran ``Image.rotate(angle, BILINEAR)`` and
``Image.resize(BILINEAR)`` of the crop box frame by frame — but that cost ~100-400 us a frame on a
busy 2-core machine, more than decoding a stored crop, so each is now done once per item:

* **crop**: Pillow's resize is two separable passes, so it runs as two calls over the whole item —
  the widths of every frame's box stacked in one tall image, then the heights in one wide image.
  The same passes on the same rows and columns: the same pixels, exactly.
* **rotate**: one :class:`Warp` — for each output pixel its four source pixels and bilinear weights,
  computed once per item in float64 with Pillow's coordinates — applied to every frame at once in
  uint16 fixed point (8-bit weights), ~4x faster than Pillow. Pillow truncates a float64 bilinear
  value, so the two differ by at most 1 gray level, on ~1 % of the pixels (at most 2 on random
  noise, the steepest gradients there are).
* **flip**, **orig**: exact.

tests/test_augment.py holds the per-frame Pillow path as the reference and checks these bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

KINDS = ("orig", "flip", "crop", "rotate")
WEIGHT_BITS = 8  # 4 weights summing to 256 times 255 fit uint16: the whole warp runs in 2-byte lanes
_CHUNK = 16  # frames warped together: their uint16 temporaries stay in cache


@dataclass(frozen=True)
class VisualDraw:
    """One item's visual augmentation: ``kind`` and its parameters (``crop``: side, x, y; ``angle``: degrees)."""

    kind: str
    crop: tuple[int, int, int] | None = None
    angle: float = 0.0


def draw_visual(rng: np.random.Generator, side: int) -> VisualDraw:
    """Draw an item's augmentation: the kind, then its crop box or angle (this order of draws is the contract:
    the same generator state gives the same augmentation)."""
    kind = str(rng.choice(list(KINDS)))
    if kind == "crop":
        new = int(side * rng.uniform(0.7, 1.0))
        x, y = int(rng.integers(0, side - new + 1)), int(rng.integers(0, side - new + 1))
        return VisualDraw(kind, crop=(new, x, y))
    if kind == "rotate":
        return VisualDraw(kind, angle=float(rng.uniform(-15, 15)))
    return VisualDraw(kind)


class Warp:
    """A resampling of ``side x side`` frames: output pixel ``p`` = ``sum_k weights[k, p] * src[index[k, p]]``
    (flat source indices; integer weights summing to ``2**WEIGHT_BITS``, or all 0 for a pixel left black),
    truncated to an integer as Pillow's ``(UINT8)`` cast of its float64 value is."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray, side: int, inside: np.ndarray):
        """Bilinear samples at source positions ``(xs, ys)`` (pixel-index coordinates: centres at integers),
        neighbours clamped to the frame; pixels not ``inside`` are 0."""
        x0, y0 = np.floor(xs), np.floor(ys)
        dx, dy = (xs - x0).ravel(), (ys - y0).ravel()
        x0, y0 = x0.astype(np.int64).ravel(), y0.astype(np.int64).ravel()
        xa, xb = np.clip(x0, 0, side - 1), np.clip(x0 + 1, 0, side - 1)
        ya, yb = np.clip(y0, 0, side - 1), np.clip(y0 + 1, 0, side - 1)
        self.index = np.stack([ya * side + xa, ya * side + xb, yb * side + xa, yb * side + xb])
        one = 1 << WEIGHT_BITS
        w = np.stack([(1 - dx) * (1 - dy), dx * (1 - dy), (1 - dx) * dy, dx * dy])
        weights = np.floor(w * one + 0.5).astype(np.int64)
        weights[np.argmax(weights, axis=0), np.arange(weights.shape[1])] += one - weights.sum(axis=0)  # sum exactly 1
        weights[:, ~inside.ravel()] = 0
        self.weights = weights.astype(np.uint16)

    def apply(self, frames: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Warp ``frames`` (uint8 ``[T, side, side]``) into ``out`` (same shape; not ``frames`` itself)."""
        flat_in = frames.reshape(len(frames), -1)
        flat_out = out.reshape(len(out), -1)
        for s in range(0, len(flat_in), _CHUNK):
            block = flat_in[s:s + _CHUNK]
            acc = np.take(block, self.index[0], axis=1).astype(np.uint16)
            acc *= self.weights[0]
            for k in range(1, 4):
                acc += np.take(block, self.index[k], axis=1) * self.weights[k]
            acc >>= WEIGHT_BITS
            flat_out[s:s + _CHUNK] = acc
        return out


def rotation_warp(angle: float, side: int) -> Warp:
    """Pillow's ``rotate(angle, BILINEAR)`` of a square: centre ``side/2``, counter-clockwise, 0 where the
    source position falls outside the frame, neighbours clamped at its edge."""
    a = -math.radians(angle)
    m = [round(math.cos(a), 15), round(math.sin(a), 15), 0.0, round(-math.sin(a), 15), round(math.cos(a), 15), 0.0]
    c = side / 2
    m[2], m[5] = m[0] * -c + m[1] * -c + m[2] + c, m[3] * -c + m[4] * -c + m[5] + c
    centres = np.arange(side) + 0.5
    X, Y = np.meshgrid(centres, centres)
    xin = m[0] * X + m[1] * Y + m[2]  # the output pixel's centre in the source, Pillow's arithmetic
    yin = m[3] * X + m[4] * Y + m[5]
    inside = (xin >= 0) & (xin < side) & (yin >= 0) & (yin < side)
    return Warp(xin - 0.5, yin - 0.5, side, inside)


def resize_crop(faces: np.ndarray, new: int, x: int, y: int, out: np.ndarray) -> np.ndarray:
    """Every frame's ``new x new`` box at ``(x, y)`` resized back to the frame's side with Pillow's BILINEAR, into
    ``out``: Pillow's horizontal pass on all boxes stacked vertically, then its vertical pass on them side by side."""
    T, side = len(faces), faces.shape[1]
    if not 0 < new <= side or not (0 <= x <= side - new and 0 <= y <= side - new):
        raise ValueError(f"crop box {new}x{new} at ({x}, {y}) is not inside {side}x{side}")
    if new == side:
        out[...] = faces
        return out
    boxes = np.ascontiguousarray(faces[:, y:y + new, x:x + new]).reshape(T * new, new)
    wide = np.asarray(Image.fromarray(boxes).resize((side, T * new), Image.Resampling.BILINEAR))
    columns = np.ascontiguousarray(wide.reshape(T, new, side).transpose(1, 0, 2)).reshape(new, T * side)
    tall = np.asarray(Image.fromarray(columns).resize((T * side, side), Image.Resampling.BILINEAR))
    out[...] = tall.reshape(side, T, side).transpose(1, 0, 2)
    return out


def apply_visual(faces: np.ndarray, draw: VisualDraw, out: np.ndarray | None = None) -> np.ndarray:
    """``faces`` (uint8 ``[T, H, H]``) with ``draw`` applied: a new array, or ``out`` filled (never ``faces`` itself)."""
    if out is None:
        out = np.empty_like(faces)
    if draw.kind == "orig":
        out[...] = faces
    elif draw.kind == "flip":
        out[...] = faces[:, :, ::-1]
    elif draw.kind == "crop":
        resize_crop(faces, *draw.crop, out)
    elif draw.kind == "rotate":
        rotation_warp(draw.angle, faces.shape[1]).apply(faces, out)
    else:
        raise ValueError(f"unknown augmentation {draw.kind!r}: choose one of {KINDS}")
    return out


def visual(faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw an augmentation and apply it to every frame of ``faces`` (uint8 ``[T, H, H]``)."""
    draw = draw_visual(rng, faces.shape[1])
    return faces if draw.kind == "orig" else apply_visual(faces, draw)


def mix_noise(samples: np.ndarray, noise: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    if noise is None or len(noise) == 0 or len(samples) == 0:
        return samples
    noise = np.resize(noise.astype(np.float64), len(samples))
    clean = samples.astype(np.float64)
    snr = rng.uniform(-5, 5)
    clean_db = 10 * np.log10(np.mean(clean ** 2) + 1e-4)
    noise_db = 10 * np.log10(np.mean(noise ** 2) + 1e-4)
    noise = np.sqrt(10 ** ((clean_db - noise_db - snr) / 10)) * noise
    return np.clip(clean + noise, -32768, 32767).astype(np.int16)
