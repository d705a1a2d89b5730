"""The fast asd-tracks input path gives the tensors the track-by-track path gave.

The reference here is the loader's per-track face path as it was before the fast path (kept in this
file, independent of the package): for each track, its scale (the smallest DCT scale keeping its
smallest face >= 112 px), each of its frames decoded at that scale, cut with TalkNet's window from a
110-padded patch by Pillow's resize, then Pillow's augmentation frame by frame — on members read with
Python's tarfile. The fast path (each frame decoded once for all the tracks of a batch, augmentation
once per item, uint8 faces through the worker queue) must give exactly those crops, and for the same
augmentation draw the same pixels within test_augment's bounds (rotation: 1 gray level).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

import loaders
import loaders.augment as augment_module
import loaders.loader as loader_module
from loaders.faces import batch_faces
from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams
from shardgen.core.sample import ClipSample
from shardgen.demo.corpus import make_demo_corpus
from tests.sources import npy, read_clips
from tests.test_augment import reference_crop, reference_rotate

BUDGET = 120  # frames: a few 2 s tracks a batch, persons of one clip together


# ---------------------------------------------------------------- reference: the per-track path, frozen here


def reference_scale(boxes: np.ndarray) -> int:
    """k of k/8: the smallest DCT scale at which 0.7 * max(w, h) of the track's smallest box spans >= 112 px."""
    need = 112 / (0.7 * np.maximum(boxes[:, 2], boxes[:, 3]).min())
    return next((k for k in range(1, 9) if k / 8 >= need), 8)


def reference_crop_of(gray: np.ndarray, box, scale: float) -> np.ndarray:
    """TalkNet's window (the demo's int() truncations in padded coordinates), its central half resampled to
    112x112 by Pillow from a patch holding the 110 padding."""
    x, y, w, h = (float(v) for v in box)
    bs = max(w, h) / 2
    bsi = int(bs * 1.8)
    my, mx = y + h / 2 + bsi, x + w / 2 + bsi
    r0, r1 = int(my - bs), int(my + bs * 1.8)
    c0, c1 = int(mx - bs * 1.4), int(mx + bs * 1.4)
    top, left, height, width = r0 - bsi, c0 - bsi, r1 - r0, c1 - c0
    y0, y1 = (top + height / 4) * scale, (top + 3 * height / 4) * scale
    x0, x1 = (left + width / 4) * scale, (left + 3 * width / 4) * scale
    margin = math.ceil(max(1.0, (y1 - y0) / 112, (x1 - x0) / 112)) + 1
    py0, py1, px0, px1 = math.floor(y0) - margin, math.ceil(y1) + margin, math.floor(x0) - margin, math.ceil(x1) + margin
    patch = np.full((py1 - py0, px1 - px0), 110, np.uint8)
    fy0, fy1, fx0, fx1 = max(py0, 0), min(py1, gray.shape[0]), max(px0, 0), min(px1, gray.shape[1])
    if fy0 < fy1 and fx0 < fx1:
        patch[fy0 - py0:fy1 - py0, fx0 - px0:fx1 - px0] = gray[fy0:fy1, fx0:fx1]
    box = (x0 - px0, y0 - py0, x1 - px0, y1 - py0)
    return np.asarray(Image.fromarray(patch).resize((112, 112), Image.Resampling.BILINEAR, box=box))


def filled_boxes(boxes: np.ndarray) -> np.ndarray:
    """Gaps inside a track filled linearly, per coordinate."""
    rows = np.arange(len(boxes))
    ok = np.isfinite(boxes).all(axis=1)
    return np.stack([np.interp(rows, rows[ok], boxes[ok, c]) for c in range(4)], axis=1)


def reference_track_faces(fields: dict, track: tuple, kept: int, stored: bool = False) -> np.ndarray:
    p, first, n = track
    if stored:
        return np.stack([simplejpeg.decode_jpeg(fields[f"c{p:02d}.{first + i + 1:06d}.jpg"], colorspace="GRAY")[..., 0]
                         for i in range(kept)])
    meta = json.loads(fields["json"])
    W, H = meta["frame_size"]
    boxes = filled_boxes(npy(fields["boxes.npy"])[p, first:first + n].astype(np.float64))
    k = reference_scale(boxes)
    faces = []
    for i in range(kept):
        gray = simplejpeg.decode_jpeg(fields[f"f{first + i + 1:06d}.jpg"], colorspace="GRAY", min_height=math.ceil(H * k / 8),
                                      min_width=math.ceil(W * k / 8))[..., 0]
        faces.append(reference_crop_of(gray, boxes[i], gray.shape[1] / W))
    return np.stack(faces)


# ---------------------------------------------------------------- builds


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """The demo corpus at 1280x720 (faces of 170-250 px: tracks decode at 6/8, 7/8 and 8/8), 2 s clips,
    built plain and with --derive crops."""
    root = tmp_path_factory.mktemp("fast_input")
    src = make_demo_corpus(root / "src", seconds=4.0, width=1280, height=720, n_train=2, n_val=0, n_test=0)
    out = {}
    for kind, derive in (("plain", ()), ("crops", ("crops",))):
        build(src, root / kind, ["train"], BuildParams(clip_seconds=2.0, derive=derive), workers=2, progress=False)
        out[kind] = root / kind / "train"
    return out


@pytest.fixture(scope="module")
def members(builds) -> dict[str, dict]:
    return {kind: read_clips(*sorted(split.glob("*.tar"))) for kind, split in builds.items()}


def all_tracks(fields_by_key: dict) -> list[tuple[str, tuple]]:
    from shardgen.core.format import person_tracks

    return [(key, t) for key, f in sorted(fields_by_key.items()) for t in person_tracks(npy(f["boxes.npy"]))]


# ---------------------------------------------------------------- batch_faces


def test_the_build_has_tracks_sharing_frames_at_several_scales(members):
    tracks = all_tracks(members["plain"])
    scales = {reference_scale(filled_boxes(npy(members["plain"][k]["boxes.npy"])[p, f:f + n].astype(np.float64)))
              for k, (p, f, n) in tracks}
    assert len(scales) >= 2, scales
    per_clip = {}
    for k, (p, f, n) in tracks:
        per_clip.setdefault(k, []).append(set(range(f, f + n)))
    assert any(len(s) > 1 and set.intersection(*s) for s in per_clip.values())


@pytest.mark.parametrize("keep", [None, 7])
def test_batch_faces_are_the_track_by_track_crops(members, keep):
    fields = members["plain"]
    tracks = all_tracks(fields)
    samples = {k: ClipSample(k, f) for k, f in fields.items()}  # one object per clip: its tracks share decodes
    got = batch_faces([samples[k] for k, _ in tracks], [t for _, t in tracks], keep=keep, use_derived=True, smooth=False)
    assert len(got) == len(tracks) > 4
    for (key, track), faces in zip(tracks, got):
        kept = track[2] if keep is None else min(keep, track[2])
        assert isinstance(faces, np.ndarray) and faces.dtype == np.uint8 and faces.shape == (kept, 112, 112)
        np.testing.assert_array_equal(faces, reference_track_faces(fields[key], track, kept), err_msg=f"{key} {track}")


def test_stored_crops_are_decoded_as_stored(members):
    fields = members["crops"]
    tracks = all_tracks(fields)
    samples = {k: ClipSample(k, f) for k, f in fields.items()}
    got = batch_faces([samples[k] for k, _ in tracks], [t for _, t in tracks], keep=None, use_derived=True, smooth=False)
    assert len(got) == len(tracks) > 4
    for (key, track), faces in zip(tracks, got):
        np.testing.assert_array_equal(faces, reference_track_faces(fields[key], track, track[2], stored=True))
    # use_derived=False and smooth_boxes cut from the frames: the plain build's crops
    got = batch_faces([samples[k] for k, _ in tracks], [t for _, t in tracks], keep=None, use_derived=False, smooth=False)
    for (key, track), faces in zip(tracks, got):
        np.testing.assert_array_equal(faces, reference_track_faces(members["plain"][key], track, track[2]))


def test_a_frame_that_does_not_decode_fails_only_the_tracks_that_use_it(members):
    fields = members["plain"]
    # a clip with a frame that one of its tracks uses and another does not
    candidates = [(key, [t for _, t in all_tracks({key: f})]) for key, f in sorted(fields.items())]
    key, tracks, bad_frame = next((key, ts, f) for key, ts in candidates for f in range(60)
                                  if 0 < sum(t[1] <= f < t[1] + t[2] for t in ts) < len(ts))
    damaged = dict(fields[key])
    damaged[f"f{bad_frame + 1:06d}.jpg"] = b"\xff\xd8 not a jpeg"
    got = batch_faces([ClipSample(key, damaged)] * len(tracks), tracks, keep=None, use_derived=True, smooth=False)
    assert len(got) == len(tracks)
    failed = 0
    for (p, first, n), faces in zip(tracks, got):
        if first <= bad_frame < first + n:
            assert isinstance(faces, Exception) and f"{key} frame {bad_frame + 1}" in str(faces)
            failed += 1
        else:
            np.testing.assert_array_equal(faces, reference_track_faces(fields[key], (p, first, n), n))
    assert 0 < failed < len(tracks)


# ---------------------------------------------------------------- the loader


#: the two kinds of asd-tracks batches: TalkNet's frame budget (read sparsely, cut before reading) and a
#: number of tracks (whole clips read front to back, cut by collation)
BATCHINGS = {"batch_frames": {"batch_frames": BUDGET}, "batch_size": {"batch_size": 3}}


def loader_batches(split, monkeypatch, batching: str = "batch_frames", **kw) -> tuple[list, list, list]:
    """One epoch of asd-tracks batches (one reader), the tracks of each batch, and the augmentation draws
    in the order the loader made them."""
    draws = []
    real = augment_module.draw_visual

    def recording(rng, side):
        d = real(rng, side)
        draws.append(d)
        return d

    monkeypatch.setattr(augment_module, "draw_visual", recording)
    ld = loaders.make_loader(split, mode="asd-tracks", seed=3, **BATCHINGS[batching], **kw)
    batches = list(ld)
    plan = ld.stream.epoch_batches(0, 0, epoch=0)
    assert len(plan) == len(batches) > 2
    return batches, [[(u.clip.key, u.track) for u in b] for b in plan], draws


@pytest.mark.parametrize("batching", sorted(BATCHINGS))
@pytest.mark.parametrize("kind", ["plain", "crops"])
def test_loader_faces_equal_the_reference(builds, members, monkeypatch, kind, batching):
    batches, plan, draws = loader_batches(builds[kind], monkeypatch, batching)
    assert draws == []
    n = 0
    for (audio, faces, labels), tracks in zip(batches, plan):
        T = faces.shape[1]
        assert faces.dtype == torch.float32 and faces.shape[0] == len(tracks)
        for j, (key, track) in enumerate(tracks):
            ref = reference_track_faces(members[kind][key], track, T, stored=kind == "crops")
            np.testing.assert_array_equal(faces[j].numpy(), ref.astype(np.float32))
            n += 1
    assert n == sum(len(t) for t in plan)


@pytest.mark.parametrize("batching", sorted(BATCHINGS))
def test_augmented_faces_are_the_reference_augmentation_of_the_same_draw(builds, members, monkeypatch, batching):
    batches, plan, draws = loader_batches(builds["plain"], monkeypatch, batching, augment=True)
    assert len(draws) == sum(len(t) for t in plan)
    draw = iter(draws)
    kinds = set()
    for (audio, faces, labels), tracks in zip(batches, plan):
        T = faces.shape[1]
        for j, (key, track) in enumerate(tracks):
            d = next(draw)
            kinds.add(d.kind)
            clean = reference_track_faces(members["plain"][key], track, T)
            if d.kind == "orig":
                ref = clean
            elif d.kind == "flip":
                ref = clean[:, :, ::-1]
            elif d.kind == "crop":
                ref = reference_crop(clean, *d.crop)
            else:
                ref = reference_rotate(clean, d.angle)
            diff = np.abs(faces[j].numpy() - ref.astype(np.float32))
            assert diff.max() <= (1 if d.kind == "rotate" else 0), (key, track, d)
    assert len(kinds) >= 3, kinds


def counted_decodes(monkeypatch) -> list:
    """The names of the frames the loader decodes for its crops from now on, in order."""
    import shardgen.core.track_crops as faces_module  # where the crops are cut, for the loader and the builder alike

    decoded = []
    real, real_region = faces_module.decode_gray, faces_module.decode_gray_region

    def counting(data, min_height, min_width, name):
        decoded.append(name)
        return real(data, min_height, min_width, name=name)

    def counting_region(data, rows, cols, name):  # a full-scale frame: only the faces' part is decoded
        decoded.append(name)
        return real_region(data, rows, cols, name=name)

    monkeypatch.setattr(faces_module, "decode_gray", counting)
    monkeypatch.setattr(faces_module, "decode_gray_region", counting_region)
    return decoded


def distinct_decodes(fields: dict, batch: list[tuple[str, tuple]], cut: int | None) -> set:
    """The (clip, frame, DCT scale) triples a batch of tracks needs decoded: each once."""
    needed = set()
    for key, (p, first, n) in batch:
        boxes = filled_boxes(npy(fields[key]["boxes.npy"])[p, first:first + n].astype(np.float64))
        needed |= {(key, f, reference_scale(boxes)) for f in range(first, first + (n if cut is None else min(n, cut)))}
    return needed


def test_batch_size_batches_decode_each_frame_once_per_batch_and_scale(builds, members, monkeypatch):
    """Tracks of one clip in one batch_size batch share its frames' decodes: the decodes are exactly the
    batches' distinct (clip, frame, DCT scale) triples — fewer than the tracks' frames."""
    decoded = counted_decodes(monkeypatch)
    ld = loaders.make_loader(builds["plain"], mode="asd-tracks", shuffle=False, batch_size=3)  # a clip's tracks together
    batches = list(ld)
    plan = [[(it.clip.key, it.track) for it in b] for b in ld.stream.epoch_batches(0, 0)]
    assert len(plan) == len(batches) > 2
    distinct = sum(len(distinct_decodes(members["plain"], b, None)) for b in plan)
    assert len(decoded) == distinct < sum(t[2] for b in plan for _, t in b)


def test_frame_budget_batches_decode_each_frame_once_per_batch_and_scale(builds, members, monkeypatch):
    """A frame-budget batch's tracks of one clip are one sparse read, and share its frames' decodes. (Its
    packing sorts tracks by length, and two persons of the demo's clips never have the same: the batch is
    made here from overlapping tracks, then read and made as the loader's one path does.)"""
    from loaders.dataset import _TrackReads
    from loaders.schedule import ScheduledBatch

    ld = loaders.make_loader(builds["plain"], mode="asd-tracks", batch_frames=BUDGET)
    stream = ld.stream
    ids = range(stream.n_items)
    by_clip: dict = {}
    for i in ids:
        by_clip.setdefault(stream.items.item(i).clip.key, []).append(i)
    overlapping = next(g for g in by_clip.values() if len(g) > 1 and len(distinct_decodes(
        members["plain"], [(stream.items.item(i).clip.key, stream.items.item(i).track) for i in g], None))
        < sum(stream.items.item(i).track[2] for i in g))
    items = [stream.items.item(i) for i in overlapping]
    cut = min(it.track[2] for it in items)
    batch = ScheduledBatch(np.array(overlapping), cut)
    decoded = counted_decodes(monkeypatch)
    samples = _TrackReads(stream.reader, use_crops=True).take(0, batch, items)
    assert all(s is samples[0] for s in samples)  # one read for the clip's tracks

    def failed(exc, item):
        raise exc

    made, _ = stream.make_batch(batch, items, samples, 0, failed)
    plan = [(it.clip.key, it.track) for it in items]
    assert len(decoded) == len(distinct_decodes(members["plain"], plan, cut)) < cut * len(items)
    for (key, track), item in zip(plan, made):
        np.testing.assert_array_equal(item[1].numpy(), reference_track_faces(members["plain"][key], track, cut))


def test_worker_batches_cross_as_uint8_and_arrive_as_asked(builds, monkeypatch):
    wire = []
    real = loader_module.faces_as

    def recording(batch, dtype, *args):
        wire.append(batch[1].dtype)
        return real(batch, dtype, *args)

    monkeypatch.setattr(loader_module, "faces_as", recording)
    kw = dict(mode="asd-tracks", batch_frames=BUDGET, seed=5, augment=True)
    in_process = list(loaders.make_loader(builds["plain"], num_workers=0, **kw))
    assert set(wire) == {torch.float32}
    wire.clear()
    for dtype in (torch.float32, torch.uint8):
        worker = list(loaders.make_loader(builds["plain"], num_workers=1, faces_dtype=dtype, **kw))
        assert set(wire) == {torch.uint8} and len(wire) == len(worker) == len(in_process) > 2
        wire.clear()
        for a, b in zip(in_process, worker):
            assert b[1].dtype == dtype
            assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
            assert torch.equal(a[1], b[1].float())


# ---------------------------------------------------------------- the crop cache


def cold_then_warm(split, cache_dir, kw: dict, reference: list, used: list) -> int:
    """Two loaders sharing ``cache_dir``, both giving ``reference``'s batches: the first (cold) writes every
    track's crops and ``used`` gets entries (frames read, decodes...), the second (warm) only hits and ``used``
    stays empty of them. Returns the tracks an epoch delivers."""
    for cold in (True, False):
        used.clear()
        ld = loaders.make_loader(split, crop_cache_dir=cache_dir, **kw)
        got = list(ld)
        assert len(got) == len(reference) > 2
        for a, b in zip(reference, got):
            assert all(torch.equal(x, y) for x, y in zip(a, b))
        n_tracks = sum(b[1].shape[0] for b in got)
        cache = ld.stream.crop_cache
        assert (cache.hits, cache.writes) == ((0, n_tracks) if cold else (n_tracks, 0))
        assert any(used) if cold else not any(used)
    return n_tracks


def test_crop_cache_gives_the_same_batches_and_reads_no_frames_once_warm(builds, tmp_path, monkeypatch):
    import loaders.reader as reader_module

    kw = dict(mode="asd-tracks", batch_frames=BUDGET, seed=2, augment=True)
    plain = list(loaders.make_loader(builds["plain"], **kw))
    frame_reads = []
    real = reader_module.ClipReader.read_tracks

    def counting(self, units, **k):
        sample = real(self, units, **k)
        frame_reads.append(sum(1 for ext in sample.fields if ext.startswith("f")))
        return sample

    monkeypatch.setattr(reader_module.ClipReader, "read_tracks", counting)
    n_tracks = cold_then_warm(builds["plain"], tmp_path / "crops", kw, plain, frame_reads)
    # another recipe is another entry, never the cached crops
    smooth = loaders.make_loader(builds["plain"], crop_cache_dir=tmp_path / "crops", smooth_boxes=True, **kw)
    list(smooth)
    assert smooth.stream.crop_cache.hits == 0 and smooth.stream.crop_cache.writes == n_tracks


def test_crop_cache_stays_within_its_bound_and_drops_damaged_entries(builds, tmp_path):
    from loaders.crop_cache import CropCache

    kw = dict(mode="asd-tracks", batch_frames=BUDGET, seed=2)
    bound = 600_000  # a few tracks' crops (12.5 KB a frame)
    ld = loaders.make_loader(builds["plain"], crop_cache_dir=tmp_path / "small", crop_cache_bytes=bound, **kw)
    list(ld)
    sizes = [p.stat().st_size for p in (tmp_path / "small").iterdir() if not p.name.startswith(".")]
    assert ld.stream.crop_cache.writes > len(sizes) > 0 and sum(sizes) <= bound
    # a damaged entry (cut short) is a miss, removed and rewritten
    cache = CropCache(tmp_path / "unit", 10 << 20)
    faces = np.arange(3 * 112 * 112, dtype=np.uint64).astype(np.uint8).reshape(3, 112, 112)
    key = cache.key("ab" * 32, 1024, (1, 5, 9), 3, False, True)
    cache.save(key, faces)
    np.testing.assert_array_equal(cache.load(key, 3), faces)
    path = cache.files.path_for(key)
    path.write_bytes(path.read_bytes()[:-1])
    assert cache.load(key, 3) is None and not path.exists()
    assert cache.key(None, 1024, (1, 5, 9), 3, False, True) is None  # a shard without a recorded sha256 is not cached
    assert len({cache.key("ab" * 32, 1024, (1, 5, 9), 3, s, d) for s in (False, True) for d in (False, True)} |
               {cache.key("cd" * 32, 1024, (1, 5, 9), 3, False, True),
                cache.key("ab" * 32, 1024, (1, 5, 9), 2, False, True)}) == 6


def test_crop_cache_with_batch_size_batches_decodes_no_frame_once_warm(builds, tmp_path, monkeypatch):
    """batch_size batches read whole clips front to back (the frames are still read) but, warm, decode none."""
    decoded = counted_decodes(monkeypatch)
    kw = dict(mode="asd-tracks", batch_size=3, seed=6, augment=True)
    uncached = list(loaders.make_loader(builds["plain"], **kw))
    cold_then_warm(builds["plain"], tmp_path / "crops", kw, uncached, decoded)


def test_crop_cache_options_are_checked(builds, tmp_path):
    with pytest.raises(ValueError, match="asd-tracks"):
        loaders.make_loader(builds["plain"], mode="talknet", crop_cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cannot hold one crop"):
        loaders.make_loader(builds["plain"], mode="asd-tracks", batch_frames=BUDGET, crop_cache_dir=tmp_path,
                            crop_cache_bytes=100)


def test_crop_cache_shared_by_two_workers(builds, tmp_path):
    kw = dict(mode="asd-tracks", batch_frames=BUDGET, seed=4, num_workers=2, crop_cache_dir=tmp_path / "crops")
    uncached = list(loaders.make_loader(builds["plain"], **{k: v for k, v in kw.items() if k != "crop_cache_dir"}))
    cold = list(loaders.make_loader(builds["plain"], **kw))

    def entries() -> dict[str, int]:  # name → inode: an entry written again (a miss) is a new file
        return {p.name: p.stat().st_ino for p in (tmp_path / "crops").iterdir() if not p.name.startswith(".")}

    after_cold = entries()
    warm = list(loaders.make_loader(builds["plain"], **kw))
    assert len(uncached) == len(cold) == len(warm) > 2
    assert len(after_cold) == sum(b[1].shape[0] for b in cold)  # one entry per track, whichever worker cut it
    for a, b, c in zip(uncached, cold, warm):
        assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c))
    assert entries() == after_cold  # the warm workers' counters stay in them: that no entry was rewritten shows they hit


def test_a_loader_preferring_stored_crops_is_never_handed_frame_cut_ones(builds, tmp_path):
    """Crops cut from the frames (use_derived=False) of a --derive crops build, cached, must not be what a later
    loader that reads the stored crops (the default) gets from the same cache directory."""
    kw = dict(mode="asd-tracks", batch_frames=BUDGET, seed=1)
    stored = list(loaders.make_loader(builds["crops"], **kw))
    cut = list(loaders.make_loader(builds["crops"], use_derived=False, **kw))
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(stored, cut))  # the two differ: the case is real
    cache = tmp_path / "crops"
    assert [torch.equal(a[1], b[1]) for a, b in zip(cut, loaders.make_loader(builds["crops"], use_derived=False,
                                                                             crop_cache_dir=cache, **kw))] == [True] * len(cut)
    assert any(cache.iterdir())
    again = list(loaders.make_loader(builds["crops"], crop_cache_dir=cache, **kw))
    assert len(again) == len(stored)
    for a, b in zip(stored, again):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
