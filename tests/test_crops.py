"""shardgen.core.crops against a literal reimplementation of TalkNet's crop on the real hamilton frames.

Tolerances. With the same gray frame as input, our crop and the literal recipe differ only by
rounding (Pillow's fixed-point bilinear vs float bilinear + rint): at most 1 gray level anywhere.
From the JPEG's stored luma (simplejpeg GRAY, what the loader decodes) against TalkNet's gray
(cvtColor of the decoded RGB), the decoder adds < 0.01 mean on these frames; we allow a mean of 1.0
gray level (observed 0.15-0.24) and require correlation > 0.99 with the reference crop.
"""

import json
import math
import warnings

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from shardgen.core.crops import (
    PAD_VALUE,
    crop_scale_for,
    interpolate_boxes,
    smooth_boxes,
    talknet_crop,
)

from tests.sources import REALDATA as HAMILTON  # ../shared/realdata/hamilton beside the checkout


# ---------------------------------------------------------------- literal TalkNet reference


def talknet_window(box) -> tuple[int, int, int, int]:
    """TalkNet's crop window for one box, as ``(top, left, height, width)`` in frame pixels — the per-box
    reference crop_geometry is held to (kept here, independent of the package).

    Same arithmetic as the demo, including its ``int()`` truncations in padded coordinates, so the
    window lands on the same pixels. ``top``/``left`` may be negative and the window may extend
    past the frame: that part is TalkNet's 110 padding.
    """
    x, y, w, h = (float(v) for v in box)
    if not (math.isfinite(x) and math.isfinite(y) and w > 0 and h > 0 and math.isfinite(w + h)):
        # The Ego4D port drops such boxes (its check() skips w <= 0 or h <= 0); so must the caller.
        raise ValueError(f"box needs finite x, y and positive w, h; got {box}")
    cs = 0.4  # TalkNet's cs
    bs = max(w, h) / 2
    bsi = int(bs * (1 + 2 * cs))
    my, mx = y + h / 2 + bsi, x + w / 2 + bsi  # centre in padded-frame coordinates
    r0, r1 = int(my - bs), int(my + bs * (1 + 2 * cs))
    c0, c1 = int(mx - bs * (1 + cs)), int(mx + bs * (1 + cs))
    return r0 - bsi, c0 - bsi, r1 - r0, c1 - c0



def bilinear_resize(img, out_h, out_w):
    """cv2.resize(..., INTER_LINEAR) semantics in float: half-pixel centres, edge clamp, no antialias."""

    def axis(n_in, n_out):
        f = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(f).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), f - i0

    r0, r1, wr = axis(img.shape[0], out_h)
    c0, c1, wc = axis(img.shape[1], out_w)
    img = img.astype(np.float64)
    top = img[r0][:, c0] * (1 - wc) + img[r0][:, c1] * wc
    bottom = img[r1][:, c0] * (1 - wc) + img[r1][:, c1] * wc
    return np.rint(top * (1 - wr[:, None]) + bottom * wr[:, None]).astype(np.uint8)


def talknet_reference(gray, box):
    """The Ego4D TalkNet port's load_visual for one frame, with boxes as x, y, w, h (top-left)."""
    x, y, w, h = box
    cs = 0.4
    bs = max(w, h) / 2
    bsi = int(bs * (1 + 2 * cs))
    frame = np.pad(gray, ((bsi, bsi), (bsi, bsi)), "constant", constant_values=(110, 110))
    my = y + h / 2 + bsi
    mx = x + w / 2 + bsi
    face = frame[int(my - bs) : int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)) : int(mx + bs * (1 + cs))]
    face = bilinear_resize(face, 224, 224)
    return face[int(112 - (112 / 2)) : int(112 + (112 / 2)), int(112 - (112 / 2)) : int(112 + (112 / 2))]


def rgb_to_gray(rgb):
    """cv2.cvtColor(BGR2GRAY) / ITU-R 601 luma."""
    return np.rint(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)


def mean_abs(a, b):
    return np.abs(a.astype(np.int32) - b.astype(np.int32)).mean()


def corr(a, b):
    return np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1]


# ---------------------------------------------------------------- real frames


@pytest.fixture(scope="module")
def track():
    path = HAMILTON / "json" / "av_train.json"
    if not path.exists():
        pytest.skip(f"../shared/realdata is absent ({path}): the real-clip tests need the shared folder")
    clip = json.loads(path.read_text())["videos"][0]["clips"][0]
    boxes = clip["persons"][0]["tracking_paths"][0]["track"]
    return clip["clip_uid"], boxes


def frame_bytes(clip_uid, frame):
    # Ego4D frames are 0-based; ffmpeg's img_%05d.jpg is 1-based.
    return (HAMILTON / "video_imgs" / clip_uid / f"img_{frame + 1:05d}.jpg").read_bytes()


def test_matches_talknet_on_real_frames(track):
    clip_uid, boxes = track
    for t in boxes[::8]:
        jpg = frame_bytes(clip_uid, t["frame"])
        box = (t["x"], t["y"], t["width"], t["height"])
        talknet_gray = rgb_to_gray(simplejpeg.decode_jpeg(jpg, colorspace="RGB"))
        ref = talknet_reference(talknet_gray, box)

        same_input = talknet_crop(talknet_gray, box)
        assert same_input.shape == (112, 112) and same_input.dtype == np.uint8
        assert np.abs(same_input.astype(int) - ref).max() <= 1, t["frame"]

        ours = talknet_crop(simplejpeg.decode_jpeg(jpg, colorspace="GRAY"), box)  # [H, W, 1] input
        assert mean_abs(ours, ref) < 1.0, t["frame"]
        assert corr(ours, ref) > 0.99, t["frame"]


def test_box_over_frame_edge_shows_pad_value(track):
    clip_uid, boxes = track
    gray = rgb_to_gray(simplejpeg.decode_jpeg(frame_bytes(clip_uid, boxes[0]["frame"]), colorspace="RGB"))
    height, width = gray.shape
    for box in [(-40.0, 100.0, 100.0, 100.0), (width - 60.0, height - 50.0, 100.0, 100.0)]:
        ours = talknet_crop(gray, box)
        ref = talknet_reference(gray, box)
        assert np.abs(ours.astype(int) - ref).max() <= 1
        assert (ours == PAD_VALUE).mean() > 0.2  # a band of TalkNet's padding is in view
    # Entirely outside the frame: TalkNet's slicing breaks down there; we give a flat 110 crop.
    assert (talknet_crop(gray, (-1000.0, -1000.0, 50.0, 50.0)) == PAD_VALUE).all()


def test_scaled_decode_matches_full_scale(track):
    """Decode at the DCT scale crop_scale_for picks; the crop must match the full-scale one.

    The 640x360 frames are upscaled 3x (a 1080p frame with ~330 px faces) so that a reduced
    scale is actually chosen.
    """
    clip_uid, boxes = track
    for t in boxes[::40]:
        rgb = simplejpeg.decode_jpeg(frame_bytes(clip_uid, t["frame"]), colorspace="RGB")
        big = np.asarray(Image.fromarray(rgb).resize((1920, 1080), Image.Resampling.BICUBIC))
        jpg = simplejpeg.encode_jpeg(big, quality=92, colorsubsampling="420")
        box = np.array([t["x"], t["y"], t["width"], t["height"]]) * 3

        dct = crop_scale_for([box], (1080, 1920))
        assert dct.scale < 1
        small = simplejpeg.decode_jpeg(jpg, colorspace="GRAY", min_height=dct.min_height, min_width=dct.min_width)
        assert small.shape[:2] == (dct.min_height, dct.min_width)  # exactly scale k/8, no larger

        full = talknet_crop(simplejpeg.decode_jpeg(jpg, colorspace="GRAY"), box)
        scaled = talknet_crop(small, box, scale=dct.scale)
        assert mean_abs(scaled, full) < 1.5
        assert corr(scaled, full) > 0.995
        ref = talknet_reference(rgb_to_gray(simplejpeg.decode_jpeg(jpg, colorspace="RGB")), box)
        assert mean_abs(scaled, ref) < 2.0


# ---------------------------------------------------------------- crop_scale_for


@pytest.mark.parametrize(
    "side,k",
    [
        (50, 8),  # small face: never go below full scale
        (160, 8),  # 0.7*160 = 112 px exactly at full scale
        (161, 8),  # needs 112/112.7 = 0.9938 > 7/8
        (183, 7),  # 0.7*183*7/8 = 112.09
        (320, 4),  # 0.7*320*4/8 = 112
        (1000, 2),  # 1/8 would leave 87.5 px
    ],
)
def test_crop_scale_for_hand_values(side, k):
    dct = crop_scale_for([side, 2 * side, np.nan], (1080, 1920))  # smallest finite box decides
    assert dct.scale == k / 8
    assert (dct.min_height, dct.min_width) == (math.ceil(1080 * k / 8), math.ceil(1920 * k / 8))


def test_crop_scale_for_accepts_boxes_and_pairs():
    boxes = np.array([[10.0, 20.0, 300.0, 320.0], [0.0, 0.0, 400.0, 100.0]])
    assert crop_scale_for(boxes, (720, 1280)) == crop_scale_for([320.0, 400.0], (720, 1280))
    assert crop_scale_for(boxes[:, 2:], (720, 1280)) == crop_scale_for([320.0, 400.0], (720, 1280))


def test_window_is_talknets_slice():
    box = (121.0, 6.0, 113.0, 113.0)
    top, left, height, width = talknet_window(box)
    bs, bsi = 56.5, int(56.5 * 1.8)
    assert (top + bsi, top + bsi + height) == (int(62.5 + bsi - bs), int(62.5 + bsi + bs * 1.8))
    assert (left + bsi, left + bsi + width) == (int(177.5 + bsi - bs * 1.4), int(177.5 + bsi + bs * 1.4))


@pytest.mark.parametrize("box", [(10, 10, 0, 0), (10, 10, -5, 8), (np.nan, 10, 20, 20), (10, 10, np.inf, 20)])
def test_degenerate_boxes_are_rejected(box):
    with pytest.raises(ValueError):
        talknet_crop(np.zeros((100, 100), np.uint8), box)


# ---------------------------------------------------------------- boxes


def test_interpolate_boxes_matches_corner_interpolation():
    scipy_interp = pytest.importorskip("scipy.interpolate")
    nan = np.nan
    boxes = np.array(
        [
            [nan, nan, nan, nan],
            [10, 20, 30, 40],
            [nan, nan, nan, nan],
            [nan, 5, nan, nan],  # partial row: counts as missing
            [22, 26, 34, 44],
            [24, 27, 30, 40],
            [nan, nan, nan, nan],
        ],
        dtype=float,
    )
    filled, span = interpolate_boxes(boxes)
    assert span == (1, 5)
    assert np.isnan(filled[[0, 6]]).all()
    np.testing.assert_array_equal(filled[[1, 4, 5]], boxes[[1, 4, 5]])

    # TalkNet interpolates corners (x1, y1, x2, y2) with interp1d over the present frames.
    frames = np.array([1, 4, 5])
    corners = np.c_[boxes[frames, :2], boxes[frames, :2] + boxes[frames, 2:]]
    want = scipy_interp.interp1d(frames, corners, axis=0)(np.arange(1, 6))
    got = np.c_[filled[1:6, :2], filled[1:6, :2] + filled[1:6, 2:]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)

    empty, none = interpolate_boxes(np.full((3, 4), np.nan))
    assert none is None and np.isnan(empty).all()


@pytest.mark.parametrize("length", [5, 13, 40])
def test_smooth_boxes_is_talknets_medfilt(length):
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(length)
    xy = 100 + np.cumsum(rng.normal(0, 4, (length, 2)), axis=0)
    wh = rng.uniform(60, 90, (length, 2))
    boxes = np.c_[xy, wh]
    out = smooth_boxes(boxes)

    with warnings.catch_warnings():  # medfilt warns when the kernel exceeds the input
        warnings.simplefilter("ignore", UserWarning)
        s = signal.medfilt(np.maximum(wh[:, 0], wh[:, 1]) / 2, kernel_size=13)
        cx = signal.medfilt(xy[:, 0] + wh[:, 0] / 2, kernel_size=13)
        cy = signal.medfilt(xy[:, 1] + wh[:, 1] / 2, kernel_size=13)
    np.testing.assert_allclose(out, np.c_[cx - s, cy - s, 2 * s, 2 * s], atol=1e-9)
    # The square box gives talknet_crop exactly the smoothed centre and half size.
    np.testing.assert_allclose(out[:, 0] + out[:, 2] / 2, cx, atol=1e-9)
    np.testing.assert_allclose(np.maximum(out[:, 2], out[:, 3]) / 2, s, atol=1e-9)


def test_smooth_boxes_rejects_gaps_and_even_kernels():
    with pytest.raises(ValueError):
        smooth_boxes(np.array([[0, 0, 10, 10], [np.nan] * 4]))
    with pytest.raises(ValueError):
        smooth_boxes(np.zeros((5, 4)), kernel=4)


# ---------------------------------------------------------------- many boxes at once


def _scalar_geometry(box, scale, out_size=112):
    """The per-box arithmetic crop_geometry vectorizes: talknet_window, its central half, the filter's margin."""
    top, left, height, width = talknet_window(box)
    y0, y1 = (top + height / 4) * scale, (top + 3 * height / 4) * scale
    x0, x1 = (left + width / 4) * scale, (left + 3 * width / 4) * scale
    margin = math.ceil(max(1.0, (y1 - y0) / out_size, (x1 - x0) / out_size)) + 1
    return (x0, y0, x1, y1), (math.floor(y0) - margin, math.ceil(y1) + margin, math.floor(x0) - margin, math.ceil(x1) + margin)


def test_crop_geometry_is_the_per_box_arithmetic_exactly():
    """A track's windows computed at once are, number for number, the ones each box gives alone — across
    fractional, negative, huge-frame and sub-pixel boxes and every DCT scale (a different float would move a
    crop by a pixel or change its resample weights)."""
    from shardgen.core.crops import crop_geometry

    rng = np.random.default_rng(7)
    n = 4000
    boxes = np.stack([rng.uniform(-300, 4000, n), rng.uniform(-300, 2200, n),
                      np.exp(rng.uniform(np.log(0.3), np.log(3000), n)), np.exp(rng.uniform(np.log(0.3), np.log(3000), n))], 1)
    boxes[:50, :2] = np.round(boxes[:50, :2])  # integer corners: the int() truncations sit exactly on their edges
    boxes[50:100, 2] = boxes[50:100, 3]  # square boxes (max(w, h) ties)
    for scale in (1.0, 0.125, 0.375, 513 / 1366):
        g = crop_geometry(boxes, scale)
        for i, box in enumerate(boxes):
            src, patch = _scalar_geometry(box, scale)
            assert tuple(g.src[i]) == src and tuple(g.patch[i]) == patch, (box, scale)


@pytest.mark.parametrize("box", [(10, 10, 0, 0), (10, 10, -5, 8), (np.nan, 10, 20, 20), (10, 10, np.inf, 20),
                                 (3e38, 3e38, 3e38, 3e38), (10.0, 10.0, 1e6, 1e6), (10.0, 10.0, 9e4, 9e4)])
def test_crop_geometry_names_the_bad_box(box):
    from shardgen.core.crops import crop_geometry

    with pytest.raises(ValueError, match="box"):
        crop_geometry([(1.0, 2.0, 30.0, 30.0), box])


def _frozen_talknet_crop(gray: np.ndarray, box, scale: float = 1.0, out_size: int = 112) -> np.ndarray:
    """The one-box crop as it was written before crop_geometry (kept here, independent of the package)."""
    (x0, y0, x1, y1), (py0, py1, px0, px1) = _scalar_geometry(box, scale, out_size)
    patch = np.full((py1 - py0, px1 - px0), PAD_VALUE, dtype=np.uint8)
    fy0, fy1 = max(py0, 0), min(py1, gray.shape[0])
    fx0, fx1 = max(px0, 0), min(px1, gray.shape[1])
    if fy0 < fy1 and fx0 < fx1:
        patch[fy0 - py0:fy1 - py0, fx0 - px0:fx1 - px0] = gray[fy0:fy1, fx0:fx1]
    src = (x0 - px0, y0 - py0, x1 - px0, y1 - py0)
    return np.asarray(Image.fromarray(patch).resize((out_size, out_size), Image.Resampling.BILINEAR, box=src))


def test_a_crop_from_a_decoded_region_is_the_crop_from_the_whole_frame():
    """resample_crop on part of a frame (origin, frame size) gives the whole frame's crop, 110 padding included;
    a region that misses part of the footprint is refused, not cropped from the wrong pixels."""
    from shardgen.core.crops import crop_geometry, resample_crop, talknet_footprint

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (360, 640), np.uint8)
    boxes = [(300.4, 100.2, 80.0, 90.5), (-30.0, -20.0, 70.0, 60.0), (600.0, 330.0, 90.0, 90.0), (-900.0, 5.0, 50.0, 50.0),
             (-3e7, 40.0, 60.0, 60.0)]  # far outside (a corrupt tracker's box): all padding, as before
    g = crop_geometry(boxes)
    for i, (y0, y1, x0, x1) in enumerate(talknet_footprint(g, frame.shape).tolist()):
        whole = resample_crop(frame, g.src[i].tolist(), g.patch[i].tolist())
        assert np.array_equal(whole, _frozen_talknet_crop(frame, boxes[i]))
        assert np.array_equal(talknet_crop(frame, boxes[i]), whole)
        part = frame[y0:y1, x0:x1]
        assert np.array_equal(resample_crop(part, g.src[i].tolist(), g.patch[i].tolist(), origin=(y0, x0),
                                            frame_shape=frame.shape), whole)
        if y1 - y0 > 1 and x1 > x0:
            with pytest.raises(ValueError, match="does not cover"):
                resample_crop(frame[y0 + 1:y1, x0:x1], g.src[i].tolist(), g.patch[i].tolist(), origin=(y0 + 1, x0),
                              frame_shape=frame.shape)
    y0, y1, x0, x1 = talknet_footprint(g, frame.shape)[3]  # wholly left of the frame: no column to decode
    assert x0 == x1 == 0 and (resample_crop(frame, g.src[3].tolist(), g.patch[3].tolist()) == PAD_VALUE).all()
