"""asd-tracks batches as TalkNet-ASD trains: frame budgets, first frames kept, batches dealt to ranks x workers.

The reference is TalkNet's own rule (``dataLoader.train_loader`` of TaoRuijie/TalkNet-ASD), ported
here on its own from the clip index's face tracks, and compared batch by batch with what the loader
yields; the tensors are compared with the loader's one-track-a-batch items, which the other test
files compare with independent computations.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import loaders
import shardgen.core.sources as core_sources
from loaders.sharding import frame_budget_batches
from shardgen.core.clip_index import open_index
from shardgen.build.pipeline import build
from shardgen.demo.corpus import make_demo_corpus
from shardgen.build.plan import BuildParams
from tests.sources import index_clips, npy, read_clips

BUDGET = 200  # frames: 2-4 tracks of 2 s clips a batch


def talknet_minibatches(lines: list[tuple], batch_size: int) -> list[list[tuple]]:
    """TalkNet's ``train_loader.__init__`` on ``(track, length)`` lines: sorted longest first (ties by clip
    key, then the track as zero-padded ``person.first`` text), then ``max(batchSize // length, 1)`` lines
    from the longest unpacked one."""
    mix = sorted(lines, key=lambda ln: (-ln[1], ln[0][0], f"{ln[0][1]:02d}.{ln[0][2]:06d}"))
    mini, start = [], 0
    while True:
        length = mix[start][1]
        end = min(len(mix), start + max(int(batch_size / length), 1))
        mini.append(mix[start:end])
        if end == len(mix):
            break
        start = end
    return mini


def index_tracks(split_dir: Path) -> list[tuple]:
    """Every face track the build's clip index lists, as TalkNet's ``(track, length)`` lines."""
    index = open_index(split_dir / "clips.idx")
    return [((index.key(i), p, first), n) for i in range(len(index)) for p, first, n in index.tracks(i)]


def reference_batches(split_dir: Path, budget: int = BUDGET) -> list[tuple]:
    return [tuple(t for t, _ in b) for b in talknet_minibatches(index_tracks(split_dir), budget)]


def batch_tracks(meta: list[dict]) -> tuple:
    return tuple((m["key"], m["person_row"], m["source_frame"] - m["meta"]["start_frame"]) for m in meta)


@pytest.fixture(scope="session")
def varied_build(tmp_path_factory) -> Path:
    """The demo corpus (3 train videos of 12 s, 320x180) in 2 s clips, 3 a shard: 32 face tracks of 10-60 frames."""
    root = tmp_path_factory.mktemp("varied")
    src = make_demo_corpus(root / "src", seconds=12.0, width=320, height=180, n_val=1, n_test=0)
    out = root / "out"
    build(src, out, ["train"], BuildParams(clip_seconds=2.0, shard_clips=3), workers=2, progress=False)
    crops = root / "crops"
    build(src, crops, ["train"], BuildParams(clip_seconds=2.0, shard_clips=3, derive=("crops",)), workers=2, progress=False)
    return root


def one_track_items(split_dir: Path) -> dict:
    ld = loaders.make_loader(split_dir, mode="asd-tracks", shuffle=False, with_meta=True)
    return {batch_tracks(meta)[0]: (a[0], f[0], lab[0]) for a, f, lab, meta in ld}


def test_the_track_lengths_vary(varied_build):
    lengths = [n for _, n in index_tracks(varied_build / "out" / "train")]
    assert len(lengths) >= 24 and min(lengths) <= 20 and max(lengths) == 60 and len(set(lengths)) >= 8


@pytest.mark.parametrize("corpus", ["out", "crops"])
def test_batches_are_talknets_in_order_and_tensors_cut_to_the_shortest(varied_build, corpus):
    split = varied_build / corpus / "train"
    ref = reference_batches(split)
    lengths = dict(index_tracks(split))
    singles = one_track_items(split)
    ld = loaders.make_loader(split, mode="asd-tracks", batch_frames=BUDGET, shuffle=False, with_meta=True)
    assert len(ld) == len(ref)
    got = []
    for audio, faces, labels, meta in ld:
        tracks = batch_tracks(meta)
        got.append(tracks)
        T = min(lengths[t] for t in tracks)
        assert faces.shape == (len(tracks), T, 112, 112) and audio.shape == (len(tracks), 4 * T, 13)
        assert labels.shape == (len(tracks), T) and faces.dtype == torch.float32
        assert sum(lengths[t] for t in tracks) <= max(BUDGET, max(lengths[t] for t in tracks))
        for i, t in enumerate(tracks):  # the first T frames of the track's own item, its own MFCC
            a1, f1, l1 = singles[t]
            torch.testing.assert_close(faces[i], f1[:T], rtol=0, atol=0)
            torch.testing.assert_close(audio[i], a1[: 4 * T], rtol=0, atol=0)
            torch.testing.assert_close(labels[i], l1[:T], rtol=0, atol=0)
    assert got == ref


def test_labels_are_the_annotated_speaking_frames(varied_build):
    split = varied_build / "out" / "train"
    clips = read_clips(*sorted(split.glob("*.tar")))
    ld = loaders.make_loader(split, mode="asd-tracks", batch_frames=BUDGET, shuffle=False, with_meta=True)
    n = 0
    for _, _, labels, meta in ld:
        for i, (key, p, first) in enumerate(batch_tracks(meta)):
            T = labels.shape[1]
            np.testing.assert_array_equal(labels[i].numpy(), npy(clips[key]["speaking.npy"])[p, first:first + T])
            n += 1
    assert n == len(index_tracks(split))


def test_shuffled_epochs_reorder_the_same_batches(varied_build):
    split = varied_build / "out" / "train"
    ref = reference_batches(split)
    ld = loaders.make_loader(split, mode="asd-tracks", batch_frames=BUDGET, seed=3, with_meta=True)
    epochs = [[batch_tracks(b[3]) for b in ld] for _ in range(2)]
    for e in epochs:
        assert sorted(e) == sorted(ref)
    assert epochs[0] != epochs[1] and epochs[0] != ref


def test_two_ranks_two_workers_equal_counts_none_twice_and_the_sit_outs_rotate(varied_build):
    split = varied_build / "out" / "train"
    ref = reference_batches(split)
    slots = 4
    assert len(ref) % slots, "the corpus should leave a remainder to sit out"
    sat_out = []
    for epoch in range(2):
        per_rank = []
        for rank in range(2):
            ld = loaders.make_loader(split, mode="asd-tracks", batch_frames=BUDGET, seed=1, rank=rank, world_size=2,
                                     num_workers=2, with_meta=True)
            ld.set_epoch(epoch)
            got = [batch_tracks(b[3]) for b in ld]
            assert len(got) == len(ld) == len(ref) // slots * 2
            per_rank.append(got)
        seen = per_rank[0] + per_rank[1]
        assert len(set(seen)) == len(seen) and set(seen) <= set(ref)
        assert len(seen) == len(ref) - len(ref) % slots
        sat_out.append(set(ref) - set(seen))
    assert sat_out[0] != sat_out[1]
    pad = [batch_tracks(b[3]) for r in range(2) for b in loaders.make_loader(
        split, mode="asd-tracks", batch_frames=BUDGET, rank=r, world_size=2, num_workers=2, remainder="pad", with_meta=True)]
    assert set(pad) == set(ref) and len(pad) == -(-len(ref) // slots) * slots


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_gives_the_remaining_batches(varied_build, workers):
    split = varied_build / "out" / "train"
    kw = dict(mode="asd-tracks", batch_frames=BUDGET, seed=5, num_workers=workers, with_meta=True)
    full = [batch_tracks(b[3]) for b in loaders.make_loader(split, **kw)]
    ld = loaders.make_loader(split, **kw)
    it = iter(ld)
    head = [batch_tracks(next(it)[3]) for _ in range(3)]
    state = ld.state_dict()
    del it
    again = loaders.make_loader(split, **kw)
    again.load_state_dict(state)
    assert head + [batch_tracks(b[3]) for b in again] == full
    other = loaders.make_loader(split, **{**kw, "batch_frames": BUDGET + 1})
    with pytest.raises(ValueError, match="batch_frames"):
        other.load_state_dict(state)


def test_stats_count_frames_delivered_against_track_frames(varied_build):
    split = varied_build / "out" / "train"
    lengths = dict(index_tracks(split))
    kept = {}
    for kw in ({"batch_frames": BUDGET}, {"batch_size": 4}):
        ld = loaders.make_loader(split, mode="asd-tracks", shuffle=False, with_meta=True, **kw)
        delivered = seen = 0
        for _, faces, _, meta in ld:
            delivered += faces.shape[0] * faces.shape[1]
            seen += sum(lengths[t] for t in batch_tracks(meta))
        assert ld.stats["frames_delivered"] == delivered > 0 and ld.stats["item_frames"] == seen
        kept[next(iter(kw))] = delivered / sum(lengths.values())
    # cut to the shortest of similar lengths, a batch keeps far more than one of arbitrary lengths
    assert kept["batch_frames"] > 0.85 and kept["batch_frames"] > kept["batch_size"] + 0.1


def test_sparse_reads_take_only_what_a_track_needs(varied_build, monkeypatch):
    split = varied_build / "crops" / "train"
    read = {"bytes": 0}
    real_open = core_sources.open_clips  # what the sparse member read opens its byte range with

    def counting(*a, **kw):
        stream = real_open(*a, **kw)
        raw_read = stream.read

        def read_and_count(n=-1):
            b = raw_read(n)
            read["bytes"] += len(b)
            return b
        stream.read = read_and_count
        if hasattr(stream, "pread"):  # a local file's sparse read takes its headers and members by offset
            raw_pread = stream.pread

            def pread_and_count(n, at):
                b = raw_pread(n, at)
                read["bytes"] += len(b)
                return b
            stream.pread = pread_and_count
        return stream

    monkeypatch.setattr(core_sources, "open_clips", counting)
    clip_bytes = sum(c["bytes"] for c in index_clips(split) for _ in c["tracks"])
    n = sum(1 for _ in loaders.make_loader(split, mode="asd-tracks", batch_frames=BUDGET, shuffle=False))
    assert n > 0 and 0 < read["bytes"] < 0.4 * clip_bytes


def test_augmented_batches_mix_noise_from_their_own_batch_deterministically(varied_build):
    split = varied_build / "out" / "train"
    kw = dict(mode="asd-tracks", batch_frames=BUDGET, shuffle=False)
    plain = list(loaders.make_loader(split, **kw))
    aug = [list(loaders.make_loader(split, augment=True, seed=2, **kw)) for _ in range(2)]
    assert len(aug[0]) == len(aug[1]) == len(plain) > 0
    for a, b, p in zip(aug[0], aug[1], plain):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
        assert a[0].shape == p[0].shape and a[1].shape == p[1].shape
        torch.testing.assert_close(a[2], p[2], rtol=0, atol=0)  # labels untouched
    multi = [i for i, p in enumerate(plain) if p[0].shape[0] > 1]
    assert multi and any(not torch.equal(aug[0][i][0], plain[i][0]) for i in multi)


@pytest.mark.parametrize("mode", ["talknet", "asd-tracks"])
def test_uint8_faces_equal_the_float_faces(varied_build, mode):
    split = varied_build / "out" / "train"
    f32 = [b[1] for b in loaders.make_loader(split, mode=mode, batch_size=2, shuffle=False)]
    u8 = [b[1] for b in loaders.make_loader(split, mode=mode, batch_size=2, shuffle=False, faces_dtype=torch.uint8)]
    assert len(f32) == len(u8) > 0
    for a, b in zip(f32, u8):
        assert b.dtype == torch.uint8 and a.dtype == torch.float32
        torch.testing.assert_close(b.float(), a, rtol=0, atol=0)


def test_option_errors(varied_build):
    split = varied_build / "out" / "train"
    with pytest.raises(ValueError, match="exclusive"):
        loaders.make_loader(split, mode="asd-tracks", batch_size=2, batch_frames=BUDGET)
    with pytest.raises(ValueError, match="asd-tracks"):
        loaders.make_loader(split, mode="talknet", batch_frames=BUDGET)
    with pytest.raises(ValueError, match="faces_dtype"):
        loaders.make_loader(split, mode="talknet", faces_dtype=torch.float16)
    with pytest.raises(ValueError, match="samples_per_epoch"):
        loaders.make_loader(split, mode="asd-tracks", batch_frames=BUDGET, samples_per_epoch=4)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=80), st.integers(1, 3000), st.randoms(use_true_random=False))
def test_packing_equals_talknets_rule_for_any_lengths(lengths, budget, rnd):
    tracks, lines = [], []
    for i, n in enumerate(lengths):
        key, p, first = f"v{rnd.randrange(3)}/clip_f{rnd.randrange(4) * 60:06d}", rnd.randrange(12), i
        tracks.append((key, p, first))
        lines.append(((key, p, first), n))
    keys = sorted({k for k, _, _ in tracks})
    tiebreak = [np.array([keys.index(k) for k, _, _ in tracks]), np.array([p for _, p, _ in tracks]),
                np.array([f for _, _, f in tracks])]
    ours = [[tracks[i] for i in b] for b in frame_budget_batches(np.array(lengths), tiebreak, budget)]
    assert ours == [[t for t, _ in b] for b in talknet_minibatches(lines, budget)]


def test_a_truncated_shard_is_named_or_its_lost_tracks_counted(varied_build, tmp_path):
    import shutil

    d = tmp_path / "cut"
    shutil.copytree(varied_build / "out" / "train", d)
    m = json.loads((d / "manifest.json").read_text())
    shard = d / m["shards"][0]["name"]
    last = [c for c in index_clips(d) if c["shard"] == 0][-1]
    shard.write_bytes(shard.read_bytes()[: last["offset"] + 4096])  # the shard's last clip loses its frames
    kw = dict(mode="asd-tracks", batch_frames=BUDGET, shuffle=False)
    with pytest.raises(loaders.ShardReadError) as err:
        list(loaders.make_loader(d, **kw))
    assert str(shard) in str(err.value) and last["key"] in str(err.value)
    ld = loaders.make_loader(d, on_error="skip", **kw)
    with pytest.warns(RuntimeWarning, match="skipped"):
        n = sum(1 for _ in ld)
    assert n == len(ld) and ld.stats["skipped"] == len(last["tracks"])


@pytest.mark.parametrize("kw", [{"batch_frames": BUDGET}, {"batch_size": 3}, {"batch_size": 2, "drop_last": True}])
def test_epoch_batches_plans_what_the_loader_yields(varied_build, kw):
    """``epoch_batches`` (no data read) against the batches the loader reads, for one reader and for 2 ranks × 2
    workers; and on its own against the clip index: TalkNet's batches, or every track once in batches of B."""
    split = varied_build / "out" / "train"
    tracks = [t for t, _ in index_tracks(split)]

    def planned(stream, slot, workers):
        return [tuple((u.clip.key, u.track[0], u.track[1]) for u in b) for b in stream.epoch_batches(slot, workers, epoch=1)]

    ld = loaders.make_loader(split, mode="asd-tracks", seed=4, with_meta=True, **kw)
    ld.set_epoch(1)
    plan = planned(ld.stream, 0, 0)
    yielded = [batch_tracks(b[3]) for b in ld]
    assert plan == yielded and len(plan) == len(ld) > 1
    flat = [t for b in plan for t in b]
    if "batch_frames" in kw:
        assert sorted(plan) == sorted(reference_batches(split))
    else:
        B = kw["batch_size"]
        full = len(tracks) // B * B if kw.get("drop_last") else len(tracks)
        assert len(flat) == len(set(flat)) == full and set(flat) <= set(tracks)
        assert [len(b) for b in plan] == [B] * (full // B) + ([full % B] if full % B else [])
    n = 0
    for rank in range(2):  # a DataLoader takes its workers' batches in turn: slot rank*2 + 0, then rank*2 + 1
        ranked = loaders.make_loader(split, mode="asd-tracks", seed=4, with_meta=True, rank=rank, world_size=2,
                                     num_workers=2, **kw)
        ranked.set_epoch(1)
        per_worker = [planned(ranked.stream, rank * 2 + w, 2) for w in range(2)]
        assert len(per_worker[0]) == len(per_worker[1]) > 0
        interleaved = [b for pair in zip(*per_worker) for b in pair]
        got = [batch_tracks(b[3]) for b in ranked]
        assert got == interleaved and len(got) == len(ranked)
        n += len(got)
    assert n == len(ranked) * 2


@pytest.mark.parametrize("kw", [{"mode": "asd-tracks", "batch_frames": 1}, {"mode": "asd-tracks", "batch_frames": BUDGET},
                                {"mode": "asd-tracks", "batch_size": 3},
                                {"mode": "talknet", "batch_size": 2}])
def test_resume_after_skipped_damage_yields_exactly_the_rest(varied_build, tmp_path, kw):
    """Every planned batch yields once, in its place (its good items, or a filler), so a resume after k
    batches of a damaged source gives exactly the uninterrupted run's batches k, k+1, ... (none twice)."""
    import shutil

    d = tmp_path / "damaged"
    shutil.copytree(varied_build / "out" / "train", d)
    m = json.loads((d / "manifest.json").read_text())
    victim = index_clips(d)[1]  # shard 0's second clip: corrupt the header of its metadata member
    shard = d / m["shards"][victim["shard"]]["name"]
    data = bytearray(shard.read_bytes())
    data[victim["offset"] + 10] ^= 0xFF
    shard.write_bytes(bytes(data))
    opts = dict(kw, seed=2, with_meta=True, on_error="skip", shuffle_buffer=3)

    def key(b):
        return tuple((m["key"], m.get("person_row"), m.get("source_frame")) for m in b[3])

    with pytest.warns(RuntimeWarning, match="skipped"):
        ld = loaders.make_loader(d, **opts)
        full = [key(b) for b in ld]
    assert len(full) == len(ld) and ld.stats["skipped"] > 0
    assert not any(victim["key"] == k[0] for b in full for k in b)
    for k in (1, 2, len(full) // 2, len(full) - 1):
        head_loader = loaders.make_loader(d, **opts)
        it = iter(head_loader)
        head = [key(next(it)) for _ in range(k)]
        state = head_loader.state_dict()
        del it
        again = loaders.make_loader(d, **opts)
        again.load_state_dict(state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rest = [key(b) for b in again]
        assert head + rest == full, k


def test_sparse_reads_over_http_use_one_request_per_track(varied_build, http_server, monkeypatch):
    """Over HTTP a skip reads past the unwanted bytes on the open connection: a seek would cost a new
    ranged request per skipped member."""
    from shardgen.core.storage.stream import ResumableReader

    srv = http_server(varied_build / "crops")
    opened = {"n": 0}
    real_open = ResumableReader._open

    def counting(self):
        opened["n"] += 1
        return real_open(self)

    monkeypatch.setattr(ResumableReader, "_open", counting)
    local = [b[1] for b in loaders.make_loader(varied_build / "crops" / "train", mode="asd-tracks", batch_frames=BUDGET,
                                                shuffle=False)]
    remote = [b[1] for b in loaders.make_loader(srv.url_for("train"), mode="asd-tracks", batch_frames=BUDGET,
                                                 shuffle=False)]
    assert len(remote) == len(local) and all(torch.equal(a, b) for a, b in zip(local, remote))
    n_tracks = len(index_tracks(varied_build / "crops" / "train"))
    assert 0 < opened["n"] <= n_tracks + 2  # one ranged GET per track (+ the manifest)
