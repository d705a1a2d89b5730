"""The loader on real shards: tensors against independent computations, ranks, resume, a training step."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import wavfile

import loaders
from shardgen.build.pipeline import build
from shardgen.demo.corpus import make_demo_corpus
from shardgen.build.plan import BuildParams
from tests.sources import index_clips, npy, read_clips


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory) -> Path:
    """Demo corpus (3 train + 2 val videos of 8 s, 320x180) in 2 s clips, 5 clips a shard: shards of 5, 5, 2."""
    root = tmp_path_factory.mktemp("demo")
    src = make_demo_corpus(root / "src", seconds=8.0, width=320, height=180)
    out = root / "out"
    build(src, out, ["train", "val"], BuildParams(clip_seconds=2.0, shard_clips=5), workers=2, progress=False)
    return out


def shard_clips(out: Path, split: str = "train") -> dict[str, dict[str, bytes]]:
    return read_clips(*sorted((out / split).glob("*.tar")))


def reference_mfcc(wav_bytes: bytes, n_frames: int, fps: float) -> np.ndarray:
    """TalkNet's own recipe with python_speech_features, on int16 read by scipy.io.wavfile."""
    import python_speech_features

    sr, audio = wavfile.read(io.BytesIO(wav_bytes))
    mfcc = python_speech_features.mfcc(audio, sr, numcep=13, winlen=0.025 * 25 / fps, winstep=0.010 * 25 / fps)
    max_audio = int(n_frames * 4)
    if mfcc.shape[0] < max_audio:
        mfcc = np.pad(mfcc, ((0, max_audio - mfcc.shape[0]), (0, 0)), "wrap")
    return mfcc[: int(round(n_frames * 4)), :]


def test_talknet_tensors_match_independent_computation(demo_build):
    clips = shard_clips(demo_build)
    ld = loaders.make_loader(demo_build / "train", batch_size=1, labels="visible", shuffle=False, with_meta=True)
    n = 0
    for audio, faces, labels, meta in ld:
        assert audio.dtype == faces.dtype == torch.float32 and labels.dtype == torch.int64
        m = meta[0]
        fields = clips[m["key"]]
        T = json.loads(fields["json"])["n_frames"]
        assert audio.shape == (1, 4 * T, 13) and faces.shape == (1, T, 112, 112) and labels.shape == (1, T)
        np.testing.assert_array_equal(labels[0].numpy(), npy(fields["visible.npy"]))
        np.testing.assert_allclose(audio[0].numpy(), reference_mfcc(fields["wav"], T, 30.0), atol=1e-3)
        start = m["meta"]["start_frame"]
        np.testing.assert_array_equal(m["frame_t"], (start + np.arange(T)) / 30.0)
        assert m["audio_feat_t"].shape == (4 * T,) and m["audio_feat_t"][0] == pytest.approx(start / 30.0, abs=1 / 16000)
        # faces: the whole frame as 112x112 gray, 0-255 — against a plain full PIL decode + resize
        for i in (0, T // 2, T - 1):
            ref = np.asarray(Image.open(io.BytesIO(fields[f"f{i + 1:06d}.jpg"])).convert("L").resize((112, 112), Image.BILINEAR), np.float32)
            assert np.abs(faces[0, i].numpy() - ref).mean() < 4.0
        assert 0 <= faces.min() and faces.max() <= 255 and faces.max() > 100
        n += 1
    assert n == len(ld) == len(clips)


def test_voice_and_speaking_labels(demo_build):
    clips = shard_clips(demo_build)
    for labels, pick in (("voice", lambda f: npy(f["voice.npy"])), ("speaking", lambda f: npy(f["speaking.npy"])[1])):
        ld = loaders.make_loader(demo_build / "train", labels=labels, person="2", shuffle=False, with_meta=True)
        seen = []
        for _, _, lab, meta in ld:
            np.testing.assert_array_equal(lab[0].numpy(), pick(clips[meta[0]["key"]]))
            seen.append(meta[0]["key"])
        assert sorted(seen) == sorted(clips), labels  # every clip checked, once


def test_two_ranks_two_workers_uneven_shards(demo_build):
    manifest = json.loads((demo_build / "train" / "manifest.json").read_text())
    assert [s["clips"] for s in manifest["shards"]] == [5, 5, 2]  # uneven on purpose
    counts, seen = [], []
    for rank in (0, 1):
        ld = loaders.make_loader(demo_build / "train", batch_size=2, num_workers=2, rank=rank, world_size=2,
                                 seed=7, with_meta=True)
        batches = list(ld)
        counts.append(len(batches))
        assert len(batches) == len(ld)
        seen += [m["key"] for b in batches for m in b[3]]
    assert counts[0] == counts[1] > 0
    assert len(seen) == len(set(seen)) == 12 - 12 % 4  # each clip at most once; 12 clips over 4 readers
    # another epoch reshuffles but keeps the guarantee
    ld = loaders.make_loader(demo_build / "train", batch_size=2, num_workers=2, rank=0, world_size=2, seed=7, with_meta=True)
    ld.set_epoch(1)
    keys = [m["key"] for b in ld for m in b[3]]
    assert len(keys) == len(set(keys)) == 6


def test_resume_mid_epoch_gives_the_remaining_batches(demo_build):
    def run(loader, stop=None):
        out = []
        for i, (a, f, l, m) in enumerate(loader):
            out.append(([x["key"] for x in m], a.sum().item(), f.sum().item()))
            if stop is not None and i + 1 == stop:
                break
        return out

    kw = dict(batch_size=2, num_workers=2, seed=3, with_meta=True, shuffle_buffer=4)
    full = run(loaders.make_loader(demo_build / "train", **kw))
    first = loaders.make_loader(demo_build / "train", **kw)
    head = run(first, stop=3)
    state = first.state_dict()
    assert state["batches_done"] == 3 and head == full[:3]
    resumed = loaders.make_loader(demo_build / "train", **kw)
    resumed.load_state_dict(state)
    assert run(resumed) == full[3:]
    with pytest.raises(ValueError, match="seed"):
        loaders.make_loader(demo_build / "train", **{**kw, "seed": 4}).load_state_dict(state)


def test_a_batch_trains_a_tiny_talknet(demo_build):
    class TinyTalkNet(torch.nn.Module):
        """Same input contract as TalkNet: forward_audio_frontend([B,4T,13]), forward_visual_frontend([B,T,112,112])."""

        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv1d(13, 16, 4, stride=4)
            self.v = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 8, stride=8), torch.nn.AdaptiveAvgPool2d(1))
            self.head = torch.nn.Linear(20, 2)

        def forward_audio_frontend(self, x):
            return self.a(x.transpose(1, 2)).transpose(1, 2)  # [B,T,16]

        def forward_visual_frontend(self, x):
            B, T = x.shape[:2]
            x = (x / 255 - 0.4161) / 0.1688
            return self.v(x.reshape(B * T, 1, 112, 112)).reshape(B, T, 4)

        def forward(self, audio, faces):
            return self.head(torch.cat([self.forward_audio_frontend(audio), self.forward_visual_frontend(faces)], -1))

    model = TinyTalkNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    audio, faces, labels = next(iter(loaders.make_loader(demo_build / "train", batch_size=2)))
    assert audio.shape[0] == faces.shape[0] == labels.shape[0] == 2
    assert audio.shape[1] == 4 * faces.shape[1] and labels.shape[1] == faces.shape[1]
    before = [p.detach().clone() for p in model.parameters()]
    logits = model(audio, faces)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_sources_brace_list_and_bare_shards(demo_build):
    names = sorted(p.name for p in (demo_build / "train").glob("*.tar"))
    brace = str(demo_build / "train" / "train-{000000..000002}.tar")
    by_brace = loaders.resolve(brace)
    by_list = loaders.resolve([str(demo_build / "train" / n) for n in names])
    by_manifest = loaders.resolve(demo_build / "train" / "manifest.json")
    assert [s.name for s in by_brace.shards] == names == [s.name for s in by_manifest.shards]
    def rows(source, shard=None):  # (shard, key, byte range, tracks, members, frames) of every clip, or of one shard's
        c, out = source.clips.columns, []
        for i in range(len(source.clips)) if shard is None else source.shard_rows(shard):
            r = source.clips.ref(i)
            out.append((r.shard, r.key, r.offset, r.bytes, r.tracks, int(c["members"][i]), int(c["n_frames"][i]),
                        int(c["pad_frames"][i])))
        return out

    assert len(rows(by_manifest)) == 12 and rows(by_brace) == rows(by_list) == rows(by_manifest)
    # a shard with no manifest beside it is indexed from the shard itself: byte ranges, members, frames, tracks
    import shutil

    lone = demo_build.parent / "lone"
    lone.mkdir(exist_ok=True)
    shutil.copy(demo_build / "train" / names[0], lone / names[0])
    scanned = loaders.resolve(str(lone / names[0]))
    assert len(rows(scanned)) == 5 and rows(scanned) == rows(by_manifest, 0)


def test_asd_tracks_on_the_real_clip(real_build, realdata):
    """Crops sit on the face (vs the recipe applied to the source JPEGs) and audio rows line up with frames."""
    import python_speech_features

    from tests.test_crops import rgb_to_gray, talknet_reference

    def reference_crop(path, box):
        return talknet_reference(rgb_to_gray(np.asarray(Image.open(path).convert("RGB"))), box).astype(np.float32)

    ann = json.loads((realdata / "json" / "av_train.json").read_text())
    track = {p["frame"]: (p["x"], p["y"], p["width"], p["height"])
             for p in ann["videos"][0]["clips"][0]["persons"][0]["tracking_paths"][0]["track"]}
    _, wav = wavfile.read(realdata / "wav" / "short_hamilton_clip.wav")
    ld = loaders.make_loader(real_build / "train", mode="asd-tracks", shuffle=False, with_meta=True)
    items = list(ld)
    spans = [(m[0]["meta"]["start_frame"] + round(m[0]["start_time"] * 30 - m[0]["meta"]["start_frame"]), f.shape[1]) for _, f, _, m in items]
    assert spans == [(82, 38), (120, 91)]  # frames 82..119 in clip 0, 120..210 in clip 1
    for audio, faces, labels, meta in items:
        m = meta[0]
        first = round(m["start_time"] * 30)
        n = faces.shape[1]
        assert m["frame_t"][0] == pytest.approx(first / 30) and m["audio_feat_t"][0] == pytest.approx(round(first / 30 * 16000) / 16000)
        for i in (0, n // 2, n - 1):
            src = realdata / "video_imgs" / "short_hamilton_clip" / f"img_{first + i + 1:05d}.jpg"
            ref = reference_crop(src, track[first + i])
            got = faces[0, i].numpy()
            assert np.abs(got - ref).mean() < 2.0
            assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98
        a, b = round(first / 30 * 16000), round((first + n) / 30 * 16000)
        ref_mfcc = python_speech_features.mfcc(wav[a:b], 16000, numcep=13, winlen=0.025 * 25 / 30, winstep=0.010 * 25 / 30)
        ref_mfcc = np.pad(ref_mfcc, ((0, max(0, 4 * n - len(ref_mfcc))), (0, 0)), "wrap")[: 4 * n]
        np.testing.assert_allclose(audio[0].numpy(), ref_mfcc, atol=1e-3)
        assert labels[0].tolist() == [1] * n  # he talks throughout


def test_raw_mode_frames_waveform_and_timing(demo_build):
    clips = shard_clips(demo_build, "val")
    ld = loaders.make_loader(demo_build / "val", mode="raw", batch_size=2, shuffle=False)
    n = 0
    for batch in ld:
        assert isinstance(batch, list) and 1 <= len(batch) <= 2
        for d in batch:
            fields = clips[d["key"]]
            meta = json.loads(fields["json"])
            T = meta["n_frames"]
            frames = np.asarray(d["frames"])
            assert frames.shape == (T, 180, 320, 3) and frames.dtype == np.uint8
            ref = np.asarray(Image.open(io.BytesIO(fields["f000001.jpg"])).convert("RGB"), np.int16)
            assert np.abs(frames[0].astype(np.int16) - ref).mean() < 1.5  # libjpeg-turbo vs Pillow IDCT
            _, wav = wavfile.read(io.BytesIO(fields["wav"]))
            np.testing.assert_array_equal(np.asarray(d["waveform"]), wav.astype(np.float32) / 32768)
            np.testing.assert_array_equal(np.asarray(d["voice"]), npy(fields["voice.npy"]))
            np.testing.assert_array_equal(np.asarray(d["frame_t"]), (meta["start_frame"] + np.arange(T)) / 30)
            assert np.asarray(d["audio_t"])[0] == meta["audio_start_sample"] / 16000
            n += 1
    assert n == len(clips)
    small = next(iter(loaders.make_loader(demo_build / "val", mode="raw", raw_size=(90, 160), shuffle=False)))
    assert np.asarray(small[0]["frames"]).shape[1:] == (90, 160, 3)


def test_augmentation_is_seeded_and_keeps_the_contract(demo_build):
    def first(**kw):
        return next(iter(loaders.make_loader(demo_build / "train", shuffle=False, **kw)))

    plain = first()
    aug_a, aug_b = first(augment=True, seed=1), first(augment=True, seed=1)
    for x, y in zip(aug_a, aug_b):
        assert torch.equal(x, y)  # same seed, same augmentation
    assert aug_a[1].shape == plain[1].shape and aug_a[0].shape == plain[0].shape
    assert torch.equal(aug_a[2], plain[2])  # labels untouched
    changed = [not torch.equal(first(augment=True, seed=s)[1], plain[1]) for s in range(6)]
    assert any(changed)  # some seeds flip / crop / rotate ("orig" is one of the four choices)


def test_augment_is_refused_where_it_would_do_nothing(demo_build):
    """TalkNet's augmentation exists for the talknet and asd-tracks tensors: raw and qwen-omni say so."""
    for mode, extra in (("raw", {}), ("qwen-omni", {"omni": {}})):
        with pytest.raises(ValueError, match=rf"augment is TalkNet's augmentation.*mode='{mode}' does not apply it"):
            loaders.make_loader(demo_build / "val", mode=mode, augment=True, **extra)


def test_max_member_bytes_reaches_the_reader(demo_build):
    """The member cap is the caller's: a cap below the demo's JPEG frames refuses them, named, unread."""
    sizes = [len(v) for fields in shard_clips(demo_build, "val").values() for k, v in fields.items() if k.endswith(".jpg")]
    with pytest.raises(loaders.ShardReadError, match=rf"member declares \d+ bytes, over the {min(sizes) - 1}-byte limit"):
        next(iter(loaders.make_loader(demo_build / "val", shuffle=False, max_member_bytes=min(sizes) - 1)))
    assert next(iter(loaders.make_loader(demo_build / "val", shuffle=False, max_member_bytes=max(sizes) + 10**6)))


def test_derived_members_are_used_and_match(tmp_path_factory, demo_build):
    """--derive small,crops: the loader reads the stored 112x112 members; they match on-the-fly decoding."""
    src = demo_build.parent / "src"
    out = tmp_path_factory.mktemp("derived")
    build(src, out, ["val"], BuildParams(clip_seconds=2.0, derive=("crops", "small"), originals=False), progress=False)
    members = shard_clips(out, "val")
    some = next(iter(members.values()))
    assert "g000001.jpg" in some and not any(k.startswith("f0") for k in some)  # --no-originals
    for mode in ("talknet", "asd-tracks"):
        ref = {(m[0]["key"], m[0]["track_id"]): f for _, f, _, m in
               loaders.make_loader(demo_build / "val", mode=mode, shuffle=False, with_meta=True)}
        got = list(loaders.make_loader(out / "val", mode=mode, shuffle=False, with_meta=True))
        assert len(got) == len(ref) > 0
        for _, f, _, m in got:
            assert (f - ref[(m[0]["key"], m[0]["track_id"])]).abs().mean() < 1.5  # one JPEG re-encode at q95


@pytest.mark.parametrize("mode,kw", [("talknet", {}), ("talknet", {"batch_size": 2}), ("asd-tracks", {"batch_size": 2}),
                                     ("asd-tracks", {})])
def test_stored_members_are_read_sparsely_with_the_same_tensors(tmp_path_factory, demo_build, monkeypatch, mode, kw):
    """A build with stored 112x112 members (and the originals): talknet takes the stored gray frames and
    asd-tracks its tracks' stored crops in one sparse read a clip — the original frames' data is seeked past,
    never hashed or parsed — and every batch equals the same loader reading whole clips."""
    from loaders.dataset import ShardStream
    from loaders.reader import ClipReader

    out = demo_build.parent / "derived_with_originals"
    if not out.exists():
        build(demo_build.parent / "src", out, ["val"], BuildParams(clip_seconds=2.0, derive=("crops", "small")), progress=False)

    def epoch():
        ld = loaders.make_loader(out / "val", mode=mode, shuffle=True, seed=5, with_meta=True, **kw)
        return [(a, f, lab, [m["key"] for m in meta]) for a, f, lab, meta in ld]

    sparse: list[frozenset] = []
    real = ClipReader.read_members

    def recording(self, clip, members):
        sample = real(self, clip, members)
        sparse.append(frozenset(sample.fields))
        return sample

    monkeypatch.setattr(ClipReader, "read_members", recording)
    got = epoch()
    n_clips = len(read_clips(*sorted((out / "val").glob("*.tar"))))
    assert len(sparse) == n_clips  # one sparse read a clip
    picture = "g" if mode == "talknet" else "c"
    for fields in sparse:
        assert not any(k.startswith("f0") and k.endswith(".jpg") for k in fields), sorted(fields)[:5]  # no originals
        assert any(k.startswith(picture) for k in fields)
    monkeypatch.setattr(ShardStream, "_stored_members", lambda self: None)  # whole clips, as before
    whole = epoch()
    assert len(got) == len(whole) > 0
    for (a, f, lab, keys), (a2, f2, lab2, keys2) in zip(got, whole):
        assert keys == keys2
        assert torch.equal(a, a2) and torch.equal(f, f2) and torch.equal(lab, lab2)


@pytest.mark.parametrize("shuffle", [True, False])
def test_left_over_clips_take_turns_across_epochs(demo_build, shuffle):
    """12 clips over 5 ranks: 2 sit out each epoch, never the same ones for ever."""
    all_keys = {c["key"] for c in index_clips(demo_build / "train")}
    seen_over_epochs: set[str] = set()
    for epoch in range(4):
        epoch_keys = []
        counts = set()
        for rank in range(5):
            ld = loaders.make_loader(demo_build / "train", rank=rank, world_size=5, shuffle=shuffle, with_meta=True, seed=1)
            ld.set_epoch(epoch)
            batches = list(ld)
            counts.add(len(batches))
            epoch_keys += [m["key"] for *_, meta in batches for m in meta]
        assert counts == {2} and len(epoch_keys) == len(set(epoch_keys)) == 10
        seen_over_epochs |= set(epoch_keys)
    assert seen_over_epochs == all_keys


def test_remainder_pad_reads_every_clip(demo_build):
    keys, counts = [], set()
    for rank in range(5):
        batches = list(loaders.make_loader(demo_build / "train", rank=rank, world_size=5, shuffle=False,
                                           with_meta=True, remainder="pad"))
        counts.add(len(batches))
        keys += [m["key"] for *_, meta in batches for m in meta]
    assert counts == {3} and len(keys) == 15 and len(set(keys)) == 12  # every clip, 3 of them twice


def test_resume_refuses_a_changed_order(demo_build):
    kw = dict(batch_size=2, num_workers=0, seed=3)
    state = loaders.make_loader(demo_build / "train", **kw).state_dict()
    with pytest.raises(ValueError, match="shuffle_buffer"):
        loaders.make_loader(demo_build / "train", shuffle_buffer=2, **kw).load_state_dict(state)
    with pytest.raises(ValueError, match="drop_last"):
        loaders.make_loader(demo_build / "train", drop_last=True, **kw).load_state_dict(state)
    shards = sorted(str(p) for p in (demo_build / "train").glob("*.tar"))
    with pytest.raises(ValueError, match="source"):
        loaders.make_loader(shards[::-1], **kw).load_state_dict(state)  # same clips, another shard order
    loaders.make_loader(shards, **kw).load_state_dict(state)  # the same shards named one by one: fine


def test_remainder_pad_with_fewer_clips_than_readers():
    from loaders.schedule import Layout, ScheduleConfig, UnitSpace, epoch_schedule

    plan = epoch_schedule(UnitSpace.of_items(np.array([0, 2])), ScheduleConfig(shuffle=False, remainder="pad"), 0,
                          Layout(world_size=3, num_workers=2))
    runs = [plan.slot(k).run for k in range(6)]
    assert [len(r) for r in runs] == [1] * 6 and {int(r[0]) for r in runs} == {0, 1}
