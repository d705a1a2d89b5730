"""An epoch as the loader delivers it, on real shards of tracks and clips of varied length.

* Every per-frame field of every item's metadata has exactly the batch's ``T`` rows (``4T`` per MFCC
  row), in every mode: whole epochs of ``batch_frames``, ``asd-tracks`` and ``talknet`` batches that
  cut their items, and ``raw`` items; the values against the clip index and the shards' own arrays.
* A pass is planned from what it is given: ``len()`` changes nothing, nothing is set on the shared
  stream, a pass left with ``break`` is not continued by the next ``iter()`` (only
  ``load_state_dict`` resumes mid-epoch).
* Augmentation is seeded by (seed, epoch, item): an item gets the same augmented tensors read by one
  process or by 2 ranks × 2 workers.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

import loaders
from shardgen.build.pipeline import build
from shardgen.build.plan import BuildParams
from shardgen.core.clip_index import open_index
from shardgen.demo.corpus import make_demo_corpus
from tests.sources import npy, read_clips

BUDGET = 300  # frames: a few tracks a batch, cut to the shortest


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """5 demo videos of 17 s (160x90) in 5 s clips: clips of 150 and 60 frames, face tracks of 10-149 frames."""
    root = tmp_path_factory.mktemp("epochs")
    src = make_demo_corpus(root / "src", seconds=17.0, width=160, height=90, n_train=5, n_val=0, n_test=0)
    build(src, root / "out", ["train"], BuildParams(clip_seconds=5.0, shard_clips=2), workers=2, progress=False)
    return root / "out" / "train"


def index_tracks(split: Path) -> dict[tuple, int]:
    """Every face track the clip index lists: (clip key, person row, first frame) → its length."""
    index = open_index(split / "clips.idx")
    return {(index.key(i), p, first): n for i in range(len(index)) for p, first, n in index.tracks(i)}


def track_of(m: dict) -> tuple:
    return m["key"], m["person_row"], m["source_frame"] - m["meta"]["start_frame"]


def test_the_corpus_has_tracks_and_clips_of_varied_length(split):
    lengths = list(index_tracks(split).values())
    clips = [json.loads(c["json"])["n_frames"] for c in read_clips(*sorted(split.glob("*.tar"))).values()]
    assert min(lengths) <= 10 and max(lengths) >= 140 and len(set(lengths)) >= 10
    assert sorted(set(clips)) == [60, 150]


PER_FRAME = {"talknet": {"frame_t", "audio_feat_t"}, "asd-tracks": {"frame_t", "audio_feat_t", "boxes"}}


@pytest.mark.parametrize("mode,kw", [("asd-tracks", {"batch_frames": BUDGET}), ("asd-tracks", {"batch_size": 4}),
                                     ("talknet", {"batch_size": 3})])
def test_every_per_frame_meta_field_has_the_batch_rows(split, mode, kw):
    """A whole epoch: each item's array-valued metadata is exactly the per-frame set of its mode (a new one must
    be classified here), each with T rows (audio_feat_t 4T), equal to the times and boxes of the frames delivered."""
    clips = read_clips(*sorted(split.glob("*.tar")))
    tracks = index_tracks(split)
    ld = loaders.make_loader(split, mode=mode, seed=1, with_meta=True, **kw)
    items = fields = cut_items = 0
    for audio, faces, labels, meta in ld:
        B, T = faces.shape[:2]
        assert audio.shape[:2] == (B, 4 * T) and labels.shape == (B, T) and len(meta) == B
        for m in meta:
            arrays = {k for k, v in m.items() if isinstance(v, (np.ndarray, torch.Tensor, list, tuple))}
            assert arrays == PER_FRAME[mode], m.keys()
            clip_meta = json.loads(clips[m["key"]]["json"])
            fps = clip_meta["fps"]
            if mode == "asd-tracks":
                key, p, first = track_of(m)
                length = tracks[(key, p, first)]
                assert m["track_frames"] == length  # the whole track's length: what the cut left out is known
                boxes = npy(clips[key]["boxes.npy"])[p, first:first + T]
                assert m["boxes"].shape == (T, 4)
                known = ~np.isnan(boxes[:, 0])  # gaps are interpolated by the loader; annotated rows are kept
                np.testing.assert_array_equal(m["boxes"][known], boxes[known])
            else:
                first, length = 0, clip_meta["n_frames"]
            start = clip_meta["start_frame"] + first
            np.testing.assert_array_equal(m["frame_t"], (start + np.arange(T)) / fps)
            assert len(m["audio_feat_t"]) == 4 * T
            assert m["audio_feat_t"][0] == pytest.approx(round(start / fps * 16000) / 16000, abs=1 / 16000)
            items += 1
            fields += len(arrays)
            cut_items += length > T
    assert items == ld.stats["items"] and fields == items * len(PER_FRAME[mode])
    expected = len(tracks) if mode == "asd-tracks" else len(clips)
    assert items == expected  # one reader: every item of the epoch
    assert cut_items > 0, "the epoch should cut some items (else it proves nothing)"
    print(f"\n{mode} {kw}: {items} items, {fields} per-frame fields checked, {cut_items} items cut")


def test_raw_items_keep_their_own_frames_in_every_per_frame_field(split):
    clips = read_clips(*sorted(split.glob("*.tar")))
    per_frame = {"frames": 0, "visible": 0, "voice": 0, "frame_t": 0, "boxes": 1, "speaking": 1}
    n = checked = 0
    for batch in loaders.make_loader(split, mode="raw", batch_size=2, seed=1):
        for d in batch:
            T = json.loads(clips[d["key"]]["json"])["n_frames"]
            for k, axis in per_frame.items():
                assert np.asarray(d[k]).shape[axis] == T, k
                checked += 1
            assert len(d["audio_feat_t"]) == 4 * T
            n += 1
    assert n == len(clips) and checked == n * len(per_frame)


# ----------------------------------------------------------------------------- passes


def keys(batch) -> tuple:
    return tuple(m["key"] for m in batch[3])


def test_len_is_pure_and_a_broken_off_pass_starts_its_epoch_again(split):
    kw = dict(batch_size=2, num_workers=2, seed=3, with_meta=True)
    full = [keys(b) for b in loaders.make_loader(split, **kw)]
    ld = loaders.make_loader(split, **kw)
    before = ld.state_dict()
    assert [len(ld) for _ in range(3)] == [len(full)] * 3 and ld.state_dict() == before
    head = [keys(b) for b in islice(ld, 2)]  # a training loop's `break` after 2 batches
    assert head == full[:2] and ld.state_dict()["batches_done"] == 2 and ld.epoch == 0
    state = ld.state_dict()
    assert len(ld) == len(full)
    assert [keys(b) for b in ld] == full, "the next pass reads the epoch from its start"
    assert ld.epoch == 1 and ld.state_dict()["batches_done"] == 0
    resumed = loaders.make_loader(split, **kw)
    resumed.load_state_dict(state)  # only this resumes mid-epoch
    assert [keys(b) for b in islice(resumed, 1)] == full[2:3]
    assert [keys(b) for b in resumed] == full, "a resumed pass left early is not resumed again"


def state_of(obj, path: str = "stream", depth: int = 4, seen: set | None = None) -> dict:
    """Everything reachable from ``obj``'s attributes (a few levels down), by value where it is data: each
    attribute's identity and type, a container's length and members, an array's bytes. Assigning an
    attribute anywhere in it, or appending to a list, changes the result; ids alone would miss the latter."""
    seen = set() if seen is None else seen
    out = {path: (type(obj).__name__, id(obj))}
    if depth == 0 or id(obj) in seen:
        return out
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        out[path] += (obj.shape, str(obj.dtype), hash(np.ascontiguousarray(obj).tobytes()))
    elif isinstance(obj, (list, tuple)):
        out[path] += (len(obj),)
        for i, v in enumerate(obj[:50]):
            out.update(state_of(v, f"{path}[{i}]", depth - 1, seen))
    elif isinstance(obj, dict):
        out[path] += (len(obj),)
        for k, v in list(obj.items())[:50]:
            out.update(state_of(v, f"{path}[{k!r}]", depth - 1, seen))
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for k, v in vars(obj).items():
            out.update(state_of(v, f"{path}.{k}", depth - 1, seen))
    return out


def test_nothing_is_set_on_the_stream(split):
    """Resuming, len() and passes with forked workers leave the shared stream as it was — no attribute set or
    container grown, at any depth: each pass gets its schedule and position in the reader object handed to the
    DataLoader. The one thing kept between calls is the schedule memo, which holds pure values (asking again
    gives equal schedules)."""
    ld = loaders.make_loader(split, batch_size=2, num_workers=2, seed=3, with_meta=True)
    stream = ld.stream
    memo = stream._schedule
    before = state_of(stream)
    assert len(before) > 20  # it does look inside
    head = list(islice(ld, 1))
    ld.load_state_dict(ld.state_dict())
    n = len(ld)
    rest = list(ld)
    assert len(head) == 1 and len(rest) == n - 1 > 0
    after = state_of(stream)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))[:5]
    assert stream._schedule is memo and memo.cache_info().currsize <= 2
    remembered = stream.schedule(0, 2)
    memo.cache_clear()
    fresh = stream.schedule(0, 2)
    assert fresh is not remembered and [fresh.slot(s).order.tolist() for s in range(2)] == \
        [remembered.slot(s).order.tolist() for s in range(2)]


def item_tensors(ld, mode: str) -> dict:
    """Each item's (audio, faces, labels) rows, by track (asd-tracks) or clip key (talknet)."""
    out = {}
    for audio, faces, labels, meta in ld:
        for i, m in enumerate(meta):
            out[track_of(m) if mode == "asd-tracks" else m["key"]] = (audio[i], faces[i], labels[i])
    return out


@pytest.mark.parametrize("mode,kw,same_noise", [("asd-tracks", {"batch_frames": BUDGET}, True),
                                                ("talknet", {"batch_size": 1}, True),
                                                ("asd-tracks", {"batch_size": 2}, False)])
def test_augmentation_is_the_same_item_for_item_under_any_layout(split, mode, kw, same_noise):
    """1 process vs 2 ranks × 2 workers (``remainder="pad"``: every item read): the same flips, crops, rotations
    and noise levels. The noise is another item of the same batch (TalkNet's overlap): with frame-budget batches
    (fixed) and one-item batches (no noise) the whole item is equal; with batches dealt by the layout, the faces
    and labels are (their common first frames: a batch is cut to its shortest)."""
    opts = dict(mode=mode, augment=True, seed=5, with_meta=True, remainder="pad", **kw)
    one = item_tensors(loaders.make_loader(split, **opts), mode)
    many: dict = {}
    for rank in range(2):
        many |= item_tensors(loaders.make_loader(split, rank=rank, world_size=2, num_workers=2, **opts), mode)
    plain = item_tensors(loaders.make_loader(split, **{**opts, "augment": False}), mode)
    assert set(many) == set(one) == set(plain) and len(one) >= 9
    changed = 0
    for item, (a1, f1, l1) in one.items():
        a2, f2, l2 = many[item]
        T = min(f1.shape[0], f2.shape[0])
        torch.testing.assert_close(f1[:T], f2[:T], rtol=0, atol=0)
        torch.testing.assert_close(l1[:T], l2[:T], rtol=0, atol=0)
        if same_noise:
            torch.testing.assert_close(a1, a2, rtol=0, atol=0)
        changed += not torch.equal(f1[:T], plain[item][1][:T])
    assert changed > len(one) // 2, "most items should be flipped, cropped or rotated"
    other_epoch = loaders.make_loader(split, **opts)
    other_epoch.set_epoch(1)
    again = item_tensors(other_epoch, mode)
    redrawn = 0
    for i, (_, f1, _) in one.items():
        T = min(f1.shape[0], again[i][1].shape[0])
        redrawn += not torch.equal(again[i][1][:T], f1[:T])
    assert redrawn > 0, "a new epoch draws anew"
