"""loaders.augment's warps against the Pillow path they replace, held here as the reference.

The reference below is the per-frame Pillow code the loader ran before (``Image.rotate(angle,
BILINEAR)``, ``Image.resize`` of the crop box), with its own draws. For the same draw the fast path
must give the same pixels: original, flip and crop exactly; rotation up to rounding — at most 1 gray
level apart on real faces, on at most 2 % of the pixels (Pillow truncates a float64 value, the warp
uses 8-bit fixed-point weights), at most 2 on random noise (the steepest possible gradients).
"""

import json

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from loaders.augment import KINDS, VisualDraw, apply_visual, draw_visual, resize_crop, rotation_warp, visual
from shardgen.core.crops import interpolate_boxes, talknet_crop
from tests.sources import REALDATA

H = 112


# ---------------------------------------------------------------- reference: the Pillow path, frame by frame


def reference_visual(faces, rng):
    """The loader's augmentation before the warps: its draws and Pillow per frame. Returns (draw, output)."""
    kind = rng.choice(["orig", "flip", "crop", "rotate"])
    if kind == "orig":
        return ("orig",), faces.copy()
    if kind == "flip":
        return ("flip",), np.ascontiguousarray(faces[:, :, ::-1])
    if kind == "crop":
        new = int(H * rng.uniform(0.7, 1.0))
        x, y = int(rng.integers(0, H - new + 1)), int(rng.integers(0, H - new + 1))
        return ("crop", new, x, y), reference_crop(faces, new, x, y)
    angle = float(rng.uniform(-15, 15))
    return ("rotate", angle), reference_rotate(faces, angle)


def reference_crop(faces, new, x, y):
    return np.stack([np.asarray(Image.fromarray(f[y:y + new, x:x + new]).resize((H, H), Image.Resampling.BILINEAR))
                     for f in faces])


def reference_rotate(faces, angle):
    return np.stack([np.asarray(Image.fromarray(f).rotate(angle, resample=Image.Resampling.BILINEAR)) for f in faces])


# ---------------------------------------------------------------- faces


def _real_faces() -> np.ndarray:
    """24 TalkNet crops of the real hamilton clip's face track (what the loader augments)."""
    path = REALDATA / "json" / "av_train.json"
    if not path.exists():
        pytest.skip(f"../shared/realdata is absent ({path}): the real-clip tests need the shared folder")
    clip = json.loads(path.read_text())["videos"][0]["clips"][0]
    track = clip["persons"][0]["tracking_paths"][0]["track"][:24]
    faces = []
    for t in track:
        jpg = (REALDATA / "video_imgs" / clip["clip_uid"] / f"img_{t['frame'] + 1:05d}.jpg").read_bytes()
        gray = simplejpeg.decode_jpeg(jpg, colorspace="GRAY")
        faces.append(talknet_crop(gray, (t["x"], t["y"], t["width"], t["height"])))
    assert len(faces) == 24
    return np.stack(faces)


def _drawn_faces() -> np.ndarray:
    """24 smooth face-like pictures (a shaded oval with eyes and a mouth, drifting): what the tests use where
    the real clip is absent, so every check runs on a user's clone too."""
    yy, xx = np.mgrid[0:H, 0:H].astype(np.float64)
    faces = []
    for k in range(24):
        cx, cy = 56 + 6 * np.sin(k / 4), 58 + 4 * np.cos(k / 5)
        face = 60 + 120 * np.exp(-(((xx - cx) / 34) ** 2 + ((yy - cy) / 44) ** 2)) + 0.3 * xx
        for ex in (-14, 14):
            face -= 70 * np.exp(-(((xx - cx - ex) / 5) ** 2 + ((yy - cy + 12) / 3) ** 2))
        face -= 60 * np.exp(-(((xx - cx) / 12) ** 2 + ((yy - cy - 20) / 3) ** 2)) * (1 + 0.5 * np.sin(k))
        faces.append(np.clip(np.rint(face), 0, 255).astype(np.uint8))
    return np.stack(faces)


@pytest.fixture(scope="module", params=["real clip", "drawn"])
def real_faces(request):
    """Faces to augment: the real clip's crops (skipped without ../shared) and drawn ones (always)."""
    return _real_faces() if request.param == "real clip" else _drawn_faces()


@pytest.fixture(scope="module")
def noise_faces():
    return np.random.default_rng(7).integers(0, 256, (8, H, H), dtype=np.uint8)


def differing(a, b):
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return int(d.max()), float((d > 0).mean())


# ---------------------------------------------------------------- tests


def test_draws_are_the_reference_draws():
    """The same generator state gives the same augmentation as the reference's draws."""
    kinds = set()
    for seed in range(200):
        ref, _ = reference_visual(np.zeros((1, H, H), np.uint8), np.random.default_rng(seed))
        d = draw_visual(np.random.default_rng(seed), H)
        kinds.add(d.kind)
        assert d.kind == ref[0]
        if d.kind == "crop":
            assert d.crop == ref[1:]
        if d.kind == "rotate":
            assert d.angle == ref[1]
    assert kinds == set(KINDS)


def test_same_draw_same_pixels_within_rounding(real_faces):
    seen = {k: 0 for k in KINDS}
    for seed in range(40):
        draw, ref = reference_visual(real_faces, np.random.default_rng(seed))
        ours = visual(real_faces, np.random.default_rng(seed))
        assert ours.dtype == np.uint8 and ours.shape == real_faces.shape
        worst, share = differing(ours, ref)
        seen[draw[0]] += 1
        if draw[0] == "rotate":
            assert worst <= 1 and share <= 0.02, (draw, worst, share)
        else:
            assert worst == 0, draw
    assert all(seen.values()), seen


@pytest.mark.parametrize("angle", [-15.0, -9.7, -0.4, 0.0, 3.3, 14.99, 15.0])
def test_rotation_matches_pillow(real_faces, noise_faces, angle):
    ours = rotation_warp(angle, H).apply(real_faces, np.empty_like(real_faces))
    worst, share = differing(ours, reference_rotate(real_faces, angle))
    assert worst <= 1 and share <= 0.02
    ours = rotation_warp(angle, H).apply(noise_faces, np.empty_like(noise_faces))
    assert differing(ours, reference_rotate(noise_faces, angle))[0] <= 2
    # what comes in from outside the frame is black exactly where Pillow leaves it black
    white = np.full((1, H, H), 255, np.uint8)
    ours = rotation_warp(angle, H).apply(white, np.empty_like(white))
    assert np.array_equal(ours, reference_rotate(white, angle))
    assert (ours == 0).any() == (abs(angle) >= 3)  # a visible turn brings black corners in; none at 0


@pytest.mark.parametrize("box", [(78, 0, 0), (78, 34, 34), (90, 3, 17), (105, 7, 0), (111, 1, 1), (112, 0, 0)])
def test_crop_is_pillows_exactly(real_faces, noise_faces, box):
    for faces in (real_faces, noise_faces):
        ours = resize_crop(faces, *box, np.empty_like(faces))
        assert np.array_equal(ours, reference_crop(faces, *box)), box


def test_apply_fills_out_and_leaves_the_input(real_faces):
    before = real_faces.copy()
    for draw in (VisualDraw("orig"), VisualDraw("flip"), VisualDraw("crop", crop=(80, 5, 9)), VisualDraw("rotate", angle=4.0)):
        out = np.full_like(real_faces, 7)
        got = apply_visual(real_faces, draw, out=out)
        assert got is out and not np.array_equal(out, np.full_like(out, 7))
        assert np.array_equal(real_faces, before)
    with pytest.raises(ValueError, match="unknown augmentation"):
        apply_visual(real_faces, VisualDraw("shear"))
    with pytest.raises(ValueError, match="not inside"):
        resize_crop(real_faces, 100, 13, 0, np.empty_like(real_faces))
