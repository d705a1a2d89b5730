"""The builder on real bytes: shards written, read back, compared with the source directly."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from shardgen.build.pipeline import BuildError, build
from shardgen.build.plan import BuildParams
from shardgen.build.source import SourceError
from tests.sources import ego4d_json, index_clips, npy, read_clips, tiny_jpeg, v1_manifest, write_source

ROOT = Path(__file__).resolve().parents[1]


def all_shards(out: Path, split: str) -> list[Path]:
    return sorted((out / split).glob(f"{split}-*.tar"))


# ----------------------------------------------------------------------------- real clip


def test_real_clip_labels_frames_audio_match_the_source(real_build, realdata):
    ann = json.loads((realdata / "json" / "av_train.json").read_text())
    person = ann["videos"][0]["clips"][0]["persons"][0]
    track = {p["frame"]: (p["x"], p["y"], p["width"], p["height"]) for p in person["tracking_paths"][0]["track"]}
    segs = [(s["start_frame"], s["end_frame"]) for s in person["voice_segments"]]
    sr, wav = wavfile.read(realdata / "wav" / "short_hamilton_clip.wav")
    assert sr == 16000 and wav.dtype == np.int16

    clips = {}
    for shard in all_shards(real_build, "train"):
        clips.update(read_clips(shard))
    assert sorted(clips) == [f"short_hamilton_clip/clip_f{s:06d}" for s in (0, 120, 240)]
    n_checked_boundary = 0
    for key, fields in clips.items():
        start = int(key.rsplit("_f", 1)[1])
        meta = json.loads(fields["json"])
        T = meta["n_frames"]
        assert T == min(120, 275 - start) and meta["start_frame"] == start
        # frames: original bytes, renumbered from 1, Ego4D frame f = img_{f+1:05d}.jpg
        for i in range(T):
            assert fields[f"f{i + 1:06d}.jpg"] == (realdata / "video_imgs" / "short_hamilton_clip" / f"img_{start + i + 1:05d}.jpg").read_bytes()
        # labels computed straight from the JSON
        visible, voice, boxes = npy(fields["visible.npy"]), npy(fields["voice.npy"]), npy(fields["boxes.npy"])
        speaking = npy(fields["speaking.npy"])
        for i in range(T):
            f = start + i
            assert visible[i] == (f in track), f
            assert voice[i] == any(s <= f <= e for s, e in segs)
            assert speaking[0, i] == voice[i]
            if f in track:
                np.testing.assert_allclose(boxes[0, i], track[f], rtol=1e-6)
            else:
                assert np.isnan(boxes[0, i]).all()
            if f in (81, 82, 210, 211):
                n_checked_boundary += 1
        # audio: exactly samples [round(s/30*16000), round(e/30*16000))
        a, b = round(start / 30 * 16000), round((start + T) / 30 * 16000)
        _, clip_audio = wavfile.read(io.BytesIO(fields["wav"]))
        assert meta["audio_start_sample"] == a and len(clip_audio) == b - a
        np.testing.assert_array_equal(clip_audio, wav[a:b])
    assert n_checked_boundary == 4  # the track's first/last frame and their neighbours were all checked
    # the track starts at frame 82: visible flips exactly between clip frame 81 and 82 of clip 0
    first = npy(clips["short_hamilton_clip/clip_f000000"]["visible.npy"])
    assert first[81] == 0 and first[82] == 1


def test_plain_webdataset_reads_every_clip(real_build):
    import webdataset as wds

    urls = [str(p) for p in all_shards(real_build, "train")]
    seen = []
    for sample in wds.WebDataset(urls, shardshuffle=False):
        frames = [k for k in sample if k.startswith("f") and k.endswith(".jpg")]
        meta = json.loads(sample["json"])
        assert len(frames) == meta["n_frames"]
        seen.append(sample["__key__"])
    assert seen == ["short_hamilton_clip/clip_f000000", "short_hamilton_clip/clip_f000120", "short_hamilton_clip/clip_f000240"]


def test_tar_layout_is_readable_and_deterministic_headers(real_build):
    out = subprocess.run(["tar", "tvf", str(all_shards(real_build, "train")[0])], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0].endswith("short_hamilton_clip/clip_f000000.json")
    assert lines[1].endswith("short_hamilton_clip/clip_f000000.wav")
    assert any(l.endswith("short_hamilton_clip/clip_f000000.f000001.jpg") for l in lines)
    assert all(l.startswith("-r--r--r-- 0/0") and "1970-01-01" in l for l in lines)


# ----------------------------------------------------------------------------- synthetic sources


@pytest.fixture
def small_source(tmp_path):
    ann = ego4d_json(
        {"vid_a": {"1": [(f, 5, 5, 20, 20) for f in range(10, 40)]}, "vid_b": {"1": [(0, 1, 1, 10, 10)]}},
        {"vid_a": {"1": [(29, 30)], "2": [(59, 61)]}, "vid_b": {}},
    )
    return write_source(tmp_path / "src", {"vid_a": 75, "vid_b": 64}, splits={"train": ["vid_a"], "val": ["vid_b"]},
                        annotations=ann)


def test_clip_boundaries_and_tail_policies(small_source, tmp_path):
    p = BuildParams(clip_seconds=1.0)  # 30 frames
    build(small_source, tmp_path / "o", ["train", "val"], p, progress=False)
    assert [(c["start_frame"], c["n_frames"]) for c in index_clips(tmp_path / "o" / "train")] == [(0, 30), (30, 30)]  # 15-frame tail < 1 s: skipped
    report = json.loads((tmp_path / "o" / "build-report.json").read_text())
    tails = [s for s in report["skipped"] if s["video_id"] == "vid_a"]
    assert len(tails) == 1 and tails[0]["start_frame"] == 60 and "shorter than --min-clip-seconds" in tails[0]["reason"]
    clips = read_clips(all_shards(tmp_path / "o", "train")[0])
    # voice segment (29, 30) inclusive straddles the clip boundary: last frame of clip 0, first of clip 1
    v0, v1 = npy(clips["vid_a/clip_f000000"]["voice.npy"]), npy(clips["vid_a/clip_f000030"]["voice.npy"])
    assert v0[28] == 0 and v0[29] == 1 and v1[0] == 1 and v1[1] == 0
    # camera-wearer "2" has voice but no boxes: counted in voice, never in visible
    sp = npy(clips["vid_a/clip_f000030"]["speaking.npy"])
    # person 2's segment (59, 61): frame 59 is the last of clip 1, frames 60-61 lie in the skipped tail
    assert sp.shape == (2, 30) and sp[1].sum() == 1 and sp[1, 29] == 1 and v1[29] == 1
    vis0 = npy(clips["vid_a/clip_f000000"]["visible.npy"])
    assert vis0[9] == 0 and vis0[10] == 1 and vis0[29] == 1

    build(small_source, tmp_path / "pad", ["train"], BuildParams(clip_seconds=1.0, tail="pad", min_clip_seconds=0.1), progress=False)
    assert [(c["start_frame"], c["n_frames"], c["pad_frames"]) for c in index_clips(tmp_path / "pad" / "train")][-1] == (60, 30, 15)
    last = read_clips(all_shards(tmp_path / "pad", "train")[0])["vid_a/clip_f000060"]
    assert last["f000030.jpg"] == last["f000015.jpg"]  # padded with the last real frame
    assert npy(last["voice.npy"])[15:].sum() == 0 and npy(last["visible.npy"])[15:].sum() == 0
    _, audio = wavfile.read(io.BytesIO(last["wav"]))
    assert len(audio) == 16000  # full clip length, zeros after the real frames
    build(small_source, tmp_path / "drop", ["train"], BuildParams(clip_seconds=1.0, tail="drop"), progress=False)
    assert json.loads((tmp_path / "drop" / "train" / "manifest.json").read_text())["totals"]["clips"] == 2


def test_same_bytes_for_any_worker_count_and_repeat(small_source, tmp_path):
    p = BuildParams(clip_seconds=1.0, shard_clips=1)
    outs = []
    for name, workers in (("w1", 1), ("w2", 2), ("w2b", 2)):
        build(small_source, tmp_path / name, ["train", "val"], p, workers=workers, progress=False)
        outs.append(tmp_path / name)
    def files(d):
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}

    for split in ("train", "val"):
        ref = files(outs[0] / split)
        assert len([n for n in ref if n.endswith(".tar")]) >= 1 and "manifest.json" in ref and "clips.idx" in ref
        for other in outs[1:]:
            assert files(other / split) == ref


def test_a_version_1_manifest_is_refused_naming_upgrade_manifest_which_converts_it_byte_identically(
        small_source, tmp_path, capsys):
    """A split built before the clip index (clips inline in manifest.json, schema_version 1, no clips.idx)
    is refused by every reader with the command that converts it; after ``shardgen upgrade-manifest``
    its manifest.json and clips.idx are the bytes a fresh build writes."""
    import shutil

    import loaders
    from shardgen.cli import main
    from shardgen.core.format import FormatError
    from shardgen.core.sources import resolve
    from shardgen.tools.verify import verify_manifest

    fresh = tmp_path / "fresh" / "train"
    build(small_source, fresh.parent, ["train"], BuildParams(clip_seconds=1.0, shard_clips=1), progress=False)
    old = tmp_path / "old" / "train"
    shutil.copytree(fresh, old)
    (old / "clips.idx").unlink()
    (old / "manifest.json").write_bytes(v1_manifest(fresh))
    v1 = json.loads((old / "manifest.json").read_text())
    assert v1["schema_version"] == 1 and "index" not in v1 and len(v1["shards"]) == 2
    assert [c["key"] for c in v1["clips"]] == ["vid_a/clip_f000000", "vid_a/clip_f000030"]
    assert v1["clips"][0]["tracks"] == [[0, 10, 20]] and v1["clips"][1]["shard"] == 1  # tracks and shards round-trip

    hint = r"manifest schema_version 1 is older than this avshards reads \(2\): .*`shardgen upgrade-manifest"
    for source in (old, old / "manifest.json", old / "train-000001.tar"):  # a shard beside it is not indexed by hand
        with pytest.raises(FormatError, match=hint):
            resolve(str(source))
    with pytest.raises(FormatError, match=hint):
        loaders.make_loader(old)
    capsys.readouterr()
    assert main(["verify", str(old)]) == 2
    err = capsys.readouterr().err
    assert "shardgen verify: error:" in err and "shardgen upgrade-manifest" in err and str(old / "manifest.json") in err
    assert main(["inspect", str(old)]) == 2 and "shardgen upgrade-manifest" in capsys.readouterr().err

    assert main(["upgrade-manifest", str(old)]) == 0
    assert f"{old / 'manifest.json'}: version 2, clip rows in clips.idx" in capsys.readouterr().out
    for name in ("manifest.json", "clips.idx"):
        assert (old / name).read_bytes() == (fresh / name).read_bytes(), name
    assert (old / "manifest.v1.json").read_bytes() == v1_manifest(fresh)  # the old one is kept beside it
    assert verify_manifest(old).ok and len(resolve(str(old)).clips) == 2
    assert main(["upgrade-manifest", str(old / "manifest.json")]) == 0  # a second run leaves a version-2 split alone
    assert (old / "manifest.json").read_bytes() == (fresh / "manifest.json").read_bytes()


def test_audio_resampled_from_44k_stereo_and_short_wav_padded(tmp_path):
    src = write_source(tmp_path / "s", {"v": 60}, sample_rate=44100, channels=2, wav_seconds={"v": 1.5})
    build(src, tmp_path / "o", ["train"], BuildParams(clip_seconds=1.0, allow_unannotated=True), progress=False)
    clips = read_clips(all_shards(tmp_path / "o", "train")[0])
    m0, m1 = (json.loads(clips[k]["json"]) for k in ("v/clip_f000000", "v/clip_f000030"))
    assert m0["audio_source"]["resampled"] and m0["audio_source"]["downmixed"]
    assert m0["audio_samples"] == 16000 and m0["audio_padded_samples"] == 0
    assert m1["audio_padded_samples"] == 8000  # the wav ends at 1.5 s: second half of clip 2 is zeros
    _, a1 = wavfile.read(io.BytesIO(clips["v/clip_f000030"]["wav"]))
    assert len(a1) == 16000 and not a1[8000:].any()
    assert m0["labels"]["present"] is False
    report = json.loads((tmp_path / "o" / "build-report.json").read_text())
    assert any("shorter than" in w for w in report["warnings"])


def test_resampler_keeps_a_tone(tmp_path):
    import soundfile as sf

    src = write_source(tmp_path / "s", {"v": 30}, sample_rate=48000)
    t = np.arange(48000) / 48000
    sf.write(src / "wav" / "v.wav", (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16), 48000)
    build(src, tmp_path / "o", ["train"], BuildParams(clip_seconds=1.0, allow_unannotated=True), progress=False)
    _, a = wavfile.read(io.BytesIO(read_clips(all_shards(tmp_path / "o", "train")[0])["v/clip_f000000"]["wav"]))
    spectrum = np.abs(np.fft.rfft(a.astype(float)))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over 1 s at 16 kHz
    assert 0.45 * 32767 < np.abs(a).max() < 0.55 * 32767


# ----------------------------------------------------------------------------- bad input


def _reasons(out: Path) -> dict[str, str]:
    report = json.loads((out / "build-report.json").read_text())
    return {(s["key"] or s["video_id"]): s["reason"] for s in report["skipped"]}


def test_bad_inputs_are_skipped_with_reasons(tmp_path):
    vids = {"ok": 60, "gap": 60, "trunc": 60, "notjpeg": 60, "zero": 60, "nowav": 60}
    src = write_source(tmp_path / "s", vids, splits={"train": list(vids) + ["absent"]})
    (src / "video_imgs" / "gap" / "img_00035.jpg").unlink()
    p = src / "video_imgs" / "trunc" / "img_00002.jpg"
    p.write_bytes(p.read_bytes()[:-300])
    (src / "video_imgs" / "notjpeg" / "img_00040.jpg").write_bytes(b"GIF89a not a jpeg at all")
    (src / "video_imgs" / "zero" / "img_00001.jpg").write_bytes(b"")
    (src / "wav" / "nowav.wav").unlink()
    out = tmp_path / "o"
    res = build(src, out, ["train"], BuildParams(clip_seconds=1.0, allow_unannotated=True), progress=False)
    r = _reasons(out)
    assert r["gap/clip_f000030"] == "missing frame img_00035.jpg"
    assert r["trunc/clip_f000000"].startswith("truncated JPEG: img_00002.jpg")
    assert r["notjpeg/clip_f000030"].startswith("not a JPEG: img_00040.jpg")
    assert r["zero/clip_f000000"] == "zero-byte frame img_00001.jpg"
    assert r["nowav/clip_f000000"] == r["nowav/clip_f000030"] == "missing wav: wav/nowav.wav"
    assert "frames directory video_imgs/absent is missing" in r["absent"]
    built = {c["key"] for c in index_clips(out / "train")}
    assert built == {"ok/clip_f000000", "ok/clip_f000030", "gap/clip_f000000", "trunc/clip_f000030",
                     "notjpeg/clip_f000000", "zero/clip_f000030"}
    # every clip of every listed video is accounted for: 6 videos × 2 clips = written + skipped
    s = res.report["splits"][0]
    assert s["clips_written"] + s["clips_skipped"] == 12 and s["videos_listed"] == 7 and s["videos_found"] == 6
    assert "skipped" in res.summary and "missing frame" in res.summary

    with pytest.raises(BuildError, match="--strict: 7 clip"):
        build(src, tmp_path / "strict", ["train"], BuildParams(clip_seconds=1.0, allow_unannotated=True), strict=True, progress=False)


def test_malformed_json_and_missing_annotations(tmp_path):
    src = write_source(tmp_path / "s", {"v": 30, "w": 30}, annotations=ego4d_json({"v": {"1": [(0, 1, 1, 5, 5)]}}, {}))
    out = tmp_path / "o"
    build(src, out, ["train"], BuildParams(clip_seconds=1.0), progress=False)
    assert _reasons(out)["w/clip_f000000"].startswith("no annotations for this video")
    (src / "json" / "av_train.json").write_text('{"videos": [ {"video_uid": "v", ')
    with pytest.raises(SourceError, match=r"av_train\.json: malformed JSON at line 1"):
        build(src, tmp_path / "o2", ["train"], BuildParams(clip_seconds=1.0), progress=False)
    cli = subprocess.run([sys.executable, "-m", "shardgen", "build", "--data", str(src), "--out", str(tmp_path / "o3"),
                          "--split", "train", "--no-progress"], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 2 and "av_train.json: malformed JSON" in cli.stderr


def test_video_in_two_splits_is_refused(tmp_path):
    src = write_source(tmp_path / "s", {"v": 30}, splits={"train": ["v"], "val": ["v"]})
    with pytest.raises(SourceError, match="listed in both split/train.list and split/val.list"):
        build(src, tmp_path / "o", ["train", "val"], BuildParams(clip_seconds=1.0), progress=False)


def test_params_change_needs_overwrite(small_source, tmp_path):
    build(small_source, tmp_path / "o", ["train"], BuildParams(clip_seconds=1.0), progress=False)
    with pytest.raises(BuildError, match="--overwrite"):
        build(small_source, tmp_path / "o", ["train"], BuildParams(clip_seconds=0.5), progress=False)
    build(small_source, tmp_path / "o", ["train"], BuildParams(clip_seconds=0.5), overwrite=True, progress=False)
    m = json.loads((tmp_path / "o" / "train" / "manifest.json").read_text())
    assert m["params"]["clip_frames"] == 15


def test_resume_after_kill_is_byte_identical(tmp_path):
    src = write_source(tmp_path / "s", {f"v{i}": 90 for i in range(6)}, size=(320, 240))
    args = ["--split", "train", "--clip-seconds", "1", "--shard-clips", "1", "--allow-unannotated", "--no-progress", "--workers", "1"]
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "shardgen", "build", "--data", str(src), "--out", str(clean), *args], check=True, cwd=ROOT, capture_output=True)
    resumed = tmp_path / "resumed"
    for kill_after in (3, 9):
        proc = subprocess.Popen([sys.executable, "-m", "shardgen", "build", "--data", str(src), "--out", str(resumed), *args],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(list((resumed / "train").glob("train-*.tar"))) < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (resumed / "train" / "manifest.json").exists()  # the kills really interrupted the build
    assert 3 <= len(list((resumed / "train").glob("train-*.tar"))) < 18
    subprocess.run([sys.executable, "-m", "shardgen", "build", "--data", str(src), "--out", str(resumed), *args], check=True, cwd=ROOT, capture_output=True)
    files = lambda d: {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name != "build-report.json"}
    assert files(resumed) == files(clean)
    assert not [p for p in resumed.rglob("*") if ".tmp-" in p.name]


def test_long_video_ids_and_offsets_agree_with_index(tmp_path):
    import hashlib

    from shardgen.core.sources import scan_local_shard

    vid = "x" * 90 + ".v1"  # member names over 100 bytes need PAX headers; a dot in the id is fine
    src = write_source(tmp_path / "s", {vid: 60})
    build(src, tmp_path / "o", ["train"], BuildParams(clip_seconds=1.0, allow_unannotated=True), progress=False)
    m = json.loads((tmp_path / "o" / "train" / "manifest.json").read_text())
    shard = tmp_path / "o" / "train" / m["shards"][0]["name"]
    data = shard.read_bytes()
    _, idx = scan_local_shard(str(shard))  # offsets re-derived from the shard by the loader's reader
    import tarfile

    with tarfile.open(shard) as tar:  # and independently by Python's tarfile: each clip's first header, in order
        firsts: dict[str, int] = {}
        for info in tar:  # <video id, dots allowed>/clip_fNNNNNN.<ext>
            firsts.setdefault(info.name.split("/")[1].split(".")[0], info.offset)
    starts = list(firsts.values())
    scanned = [(idx.key(r), int(idx.columns["offset"][r]), int(idx.columns["bytes"][r])) for r in range(len(idx))]
    assert [o for _, o, _ in scanned] == starts and len(starts) == 2
    assert [(k, o, b, hashlib.sha256(data[o:o + b]).hexdigest()) for k, o, b in scanned] \
        == [(c["key"], c["offset"], c["bytes"], c["sha256"]) for c in index_clips(tmp_path / "o" / "train")]
    import webdataset as wds

    keys = [s["__key__"] for s in wds.WebDataset(str(tmp_path / "o" / "train" / m["shards"][0]["name"]), shardshuffle=False)]
    assert keys == [f"{vid}/clip_f000000", f"{vid}/clip_f000030"]


def test_ava_csv_labels_and_frame_mapping(tmp_path):
    """AVA rows at t seconds → 0-based frame round(t*fps); normalised boxes → pixels; gaps <= 3 frames filled."""
    src = write_source(tmp_path / "s", {"mov": 60}, size=(64, 48))
    (src / "csv").mkdir()
    rows = ["video_id,frame_timestamp,entity_box_x1,entity_box_y1,entity_box_x2,entity_box_y2,label,entity_id"]
    for f in (3, 5, 7, 20):  # entity A every 2 frames (filled), then a 13-frame gap (not filled)
        label = "SPEAKING_AUDIBLE" if f in (5, 7) else "NOT_SPEAKING"
        rows.append(f"mov,{f / 30:.6f},0.25,0.5,0.75,1.0,{label},A")
    rows.append(f"mov,{10 / 30:.6f},0.0,0.0,0.5,0.5,SPEAKING_NOT_AUDIBLE,B")
    (src / "csv" / "ava.csv").write_text("\n".join(rows) + "\n")
    build(src, tmp_path / "o", ["train"], BuildParams(clip_seconds=1.0), progress=False)
    clips = read_clips(all_shards(tmp_path / "o", "train")[0])
    c = clips["mov/clip_f000000"]
    meta = json.loads(c["json"])
    assert meta["labels"]["source"] == "ava-csv" and [p["person_id"] for p in meta["persons"]] == ["A", "B"]
    boxes, speaking, visible = npy(c["boxes.npy"]), npy(c["speaking.npy"]), npy(c["visible.npy"])
    np.testing.assert_allclose(boxes[0, 3], [16, 24, 32, 24])  # 0.25*64, 0.5*48, 0.5*64, 0.5*48
    assert np.isnan(boxes[0, 2]).all() and not np.isnan(boxes[0, 4]).any()  # frame 4 filled between 3 and 5
    assert np.isnan(boxes[0, 8:20, 0]).all()  # a 13-frame gap stays empty
    assert speaking[0].nonzero()[0].tolist() == [5, 6, 7]  # audible at 5 and 7, and the filled 6 between
    assert speaking[1].sum() == 0  # SPEAKING_NOT_AUDIBLE is not speaking
    assert visible[10] == 1 and visible[9] == 0
    (src / "csv" / "ava.csv").write_text("\n".join(rows + ["mov,0.5,0,0,1,1,WHISPERING,A"]) + "\n")
    with pytest.raises(SourceError, match=r"ava\.csv:7: unknown label 'WHISPERING'"):
        build(src, tmp_path / "o2", ["train"], BuildParams(clip_seconds=1.0), progress=False)


def test_strict_cli_exits_1_and_writes_nothing(realdata, tmp_path):
    out = tmp_path / "o"
    res = subprocess.run([sys.executable, "-m", "shardgen", "build", "--data", str(realdata), "--out", str(out),
                          "--strict", "--tail", "drop", "--no-progress"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 1
    assert "--strict: 1 clip" in res.stderr and "short_hamilton_clip/clip_f000000" in res.stderr
    assert not list(out.rglob("*.tar"))


def test_flac_audio_member_decodes_to_the_wav_samples(small_source, tmp_path):
    import loaders
    from shardgen.core.sample import ClipSample

    for fmt_ in ("wav", "flac"):
        build(small_source, tmp_path / fmt_, ["train"], BuildParams(clip_seconds=1.0, audio_format=fmt_), progress=False)
    wav = read_clips(all_shards(tmp_path / "wav", "train")[0])
    flac = read_clips(all_shards(tmp_path / "flac", "train")[0])
    assert sorted(wav) == sorted(flac) and len(wav) >= 2  # the loop below really compares clips
    for key in wav:
        assert "flac" in flac[key] and "wav" not in flac[key]
        assert len(flac[key]["flac"]) < len(wav[key]["wav"])
        a, _ = ClipSample(key, wav[key]).audio()
        b, _ = ClipSample(key, flac[key]).audio()
        np.testing.assert_array_equal(a, b)  # lossless
    x = list(loaders.make_loader(tmp_path / "wav" / "train", shuffle=False))
    y = list(loaders.make_loader(tmp_path / "flac" / "train", shuffle=False))
    assert len(x) == len(y) == len(wav) and all(torch_equal(p[0], q[0]) for p, q in zip(x, y))


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_ego4d_v1_keys_clip_frame_and_clip_level_voice(tmp_path):
    """Older files: track points carry clip_frame, voice segments sit at clip level naming the person."""
    ann = {"videos": [{"video_uid": "v", "clips": [{
        "clip_uid": "v",
        "persons": [{"person_id": "7", "tracking_paths": [{"track_id": "a", "track": [
            {"clip_frame": f, "x": 2, "y": 2, "width": 10, "height": 10} for f in (3, 4, 5)]}]}],
        "voice_segments": [{"person": "7", "start_time": 0.1, "end_time": 0.2}],
    }]}]}
    src = write_source(tmp_path / "s", {"v": 30}, annotations=ann)
    build(src, tmp_path / "o", ["train"], BuildParams(clip_seconds=1.0), progress=False)
    c = read_clips(all_shards(tmp_path / "o", "train")[0])["v/clip_f000000"]
    assert npy(c["visible.npy"]).nonzero()[0].tolist() == [3, 4, 5]
    assert npy(c["speaking.npy"])[0].nonzero()[0].tolist() == [3, 4, 5, 6]  # 0.1 s → frame 3, 0.2 s → frame 6


def test_ego4d_v2_camera_wearer_voice_is_read_and_a_wearer_in_both_places_is_one_person(tmp_path):
    """v2 files keep the wearer beside persons[]: clips[].camera_wearer {person_id, voice_segments}. The
    wearer's speech is someone speaking (voice); a wearer also in persons[] is one row, its shared segment once."""
    def seg(s, e):
        return {"start_frame": s, "end_frame": e, "start_time": s / 30, "end_time": e / 30, "person": "cw"}

    other = {"person_id": "1", "camera_wearer": False, "tracking_paths": [{"track_id": "t", "track": [
        {"frame": f, "x": 2, "y": 2, "width": 10, "height": 10, "video_frame": 100 + f, "clip_frame": None}
        for f in range(30)]}], "voice_segments": [{**seg(0, 4), "person": "1"}]}
    ann = {"videos": [{"video_uid": "V", "clips": [
        {"clip_uid": "a", "valid": True, "persons": [other],
         "camera_wearer": {"person_id": "cw", "camera_wearer": True, "voice_segments": [seg(10, 14)]}},
        {"clip_uid": "b", "valid": True,
         "persons": [other, {"person_id": "cw", "camera_wearer": True, "tracking_paths": [],
                             "voice_segments": [seg(10, 14)]}],
         "camera_wearer": {"person_id": "cw", "camera_wearer": True, "voice_segments": [seg(10, 14), seg(20, 22)]}},
    ]}]}
    src = write_source(tmp_path / "s", {"a": 30, "b": 30}, annotations=ann)
    build(src, tmp_path / "o", ["train"], BuildParams(clip_seconds=1.0), progress=False)
    clips = read_clips(*all_shards(tmp_path / "o", "train"))
    a, b = clips["a/clip_f000000"], clips["b/clip_f000000"]
    assert npy(a["voice.npy"]).nonzero()[0].tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    assert [(p["person_id"], p["camera_wearer"]) for p in json.loads(a["json"])["persons"]] == [("1", False), ("cw", True)]
    assert npy(a["speaking.npy"])[1].nonzero()[0].tolist() == [10, 11, 12, 13, 14]
    assert npy(a["visible.npy"]).tolist() == [1] * 30  # the wearer has no face: visible is person 1's boxes
    assert [(p["person_id"], p["camera_wearer"]) for p in json.loads(b["json"])["persons"]] == [("1", False), ("cw", True)]
    assert npy(b["speaking.npy"])[1].nonzero()[0].tolist() == [10, 11, 12, 13, 14, 20, 21, 22]
    assert npy(b["voice.npy"]).nonzero()[0].tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 20, 21, 22]
    from shardgen.build.annotations import load_annotations
    [cw] = [p for p in load_annotations([src / "json" / "av_train.json"], 30.0)["b"].persons if p.person_id == "cw"]
    assert sorted(cw.voice) == [(10, 14), (20, 22)]  # the segment in both places, once


def test_pad_tail_gets_zero_audio_even_when_the_wav_goes_on(tmp_path):
    """--tail pad: padded frames get silence, not the wav's later audio (which belongs to no frame)."""
    src = write_source(tmp_path / "s", {"v": 45}, wav_seconds={"v": 3.0})  # frames end at 1.5 s, audio at 3 s
    build(src, tmp_path / "o", ["train"], BuildParams(clip_seconds=1.0, tail="pad", min_clip_seconds=0.1,
                                                       allow_unannotated=True), progress=False)
    c = read_clips(all_shards(tmp_path / "o", "train")[0])["v/clip_f000030"]
    meta = json.loads(c["json"])
    assert meta["pad_frames"] == 15 and meta["audio_padded_samples"] == 0  # the wav was not short
    _, audio = wavfile.read(io.BytesIO(c["wav"]))
    _, wav = wavfile.read(src / "wav" / "v.wav")
    assert len(audio) == 16000
    np.testing.assert_array_equal(audio[:8000], wav[16000:24000])  # frames 30-44: their own audio
    assert not audio[8000:].any() and wav[24000:32000].any()  # frames 45-59 are padding: zeros


def test_rerun_after_the_source_changed_rebuilds_exactly_the_affected_shards(tmp_path):
    ann = ego4d_json({v: {"1": [(f, 2, 2, 10, 10) for f in range(30)]} for v in ("a", "b")},
                     {"a": {"1": [(0, 5)]}, "b": {"1": [(0, 5)]}})
    src = write_source(tmp_path / "s", {"a": 30, "b": 30}, annotations=ann)
    p = BuildParams(clip_seconds=1.0, shard_clips=1)
    out = tmp_path / "o"
    build(src, out, ["train"], p, progress=False)
    again = build(src, out, ["train"], p, progress=False)
    assert again.report["timing"]["clips_written_now"] == 0  # nothing changed: everything kept
    ann["videos"][1]["clips"][0]["persons"][0]["voice_segments"][0]["end_frame"] = 20  # video b's labels change
    (src / "json" / "av_train.json").write_text(json.dumps(ann))
    changed = build(src, out, ["train"], p, progress=False)
    assert changed.report["timing"]["clips_written_now"] == 1
    clips = read_clips(*all_shards(out, "train"))
    assert npy(clips["b/clip_f000000"]["voice.npy"]).sum() == 21 and npy(clips["a/clip_f000000"]["voice.npy"]).sum() == 6
    frame = src / "video_imgs" / "a" / "img_00003.jpg"
    frame.write_bytes(tiny_jpeg(99))  # a re-extracted frame
    assert build(src, out, ["train"], p, progress=False).report["timing"]["clips_written_now"] == 1
    assert read_clips(*all_shards(out, "train"))["a/clip_f000000"]["f000003.jpg"] == frame.read_bytes()
    # what the metadata takes from the annotations counts too: the file's name, the order of track ids
    ann["videos"][0]["clips"][0]["persons"][0]["tracking_paths"].insert(0, {"track_id": "extra", "track": []})
    (src / "json" / "av_train.json").write_text(json.dumps(ann))
    assert build(src, out, ["train"], p, progress=False).report["timing"]["clips_written_now"] == 1  # video a
    renamed = src / "json" / "renamed.json"
    renamed.write_text(json.dumps(ann))
    assert build(src, out, ["train"], p, annotation_files=[renamed], progress=False).report["timing"]["clips_written_now"] == 2
    fresh = tmp_path / "fresh"
    build(src, fresh, ["train"], p, annotation_files=[renamed], progress=False)
    assert [x.read_bytes() for x in all_shards(out, "train")] == [x.read_bytes() for x in all_shards(fresh, "train")]


def test_an_edit_inside_one_clip_rebuilds_only_that_clips_shard(tmp_path):
    ann = ego4d_json({"a": {"1": [(f, 2, 2, 10, 10) for f in range(90)]}}, {"a": {"1": [(0, 5)]}})
    src = write_source(tmp_path / "s", {"a": 90}, annotations=ann)
    p = BuildParams(clip_seconds=1.0, shard_clips=1)
    build(src, tmp_path / "o", ["train"], p, progress=False)
    ann["videos"][0]["clips"][0]["persons"][0]["tracking_paths"][0]["track"][50]["x"] = 7  # frame 50: clip 2 of 3
    (src / "json" / "av_train.json").write_text(json.dumps(ann))
    assert build(src, tmp_path / "o", ["train"], p, progress=False).report["timing"]["clips_written_now"] == 1
    assert npy(read_clips(*all_shards(tmp_path / "o", "train"))["a/clip_f000030"]["boxes.npy"])[0, 20, 0] == 7


def test_demo_corpus_defaults_give_450_frame_clips_that_plain_webdataset_reads(tmp_path):
    """The README's check on `make shards` output, at the default clip length (15 s at 30 fps)."""
    import webdataset as wds

    from shardgen.demo.corpus import make_demo_corpus

    src = make_demo_corpus(tmp_path / "demo", seconds=15.0, width=160, height=90, n_train=2, n_val=1, n_test=1)
    res = build(src, tmp_path / "out", ["train", "val"], BuildParams(), workers=2, progress=False)
    assert [s["split"] for s in res.report["splits"]] == ["train", "val"]  # the test split is not built
    for split, n in (("train", 2), ("val", 1)):
        samples = list(wds.WebDataset([str(p) for p in all_shards(tmp_path / "out", split)], shardshuffle=False))
        assert len(samples) == n
        for s in samples:
            assert s["__key__"].endswith("/clip_f000000")
            assert sum(k.startswith("f") and k.endswith(".jpg") for k in s) == 450
            assert json.loads(s["json"])["n_frames"] == 450 and len(s["wav"]) == 44 + 2 * 240000


def test_crops_of_more_persons_than_crop_names_can_number_are_refused_naming_the_clip(tmp_path):
    """Crop members name the person row with two digits (c00..c99): a clip of 101 persons builds without
    crops (101 rows of boxes), and with ``--derive crops`` fails naming the clip and the limit."""
    from shardgen.core.format import MAX_PERSONS, FormatError, crop_ext, parse_crop_ext

    assert MAX_PERSONS == 100 and parse_crop_ext(crop_ext(99, 1)) == (99, 1)
    with pytest.raises(FormatError, match=r"person row 100: crop members name at most 100 persons"):
        crop_ext(100, 1)
    persons = {f"p{i:03d}": [(f, 1 + i % 40, 1 + i % 30, 8, 8) for f in range(15)] for i in range(101)}
    src = write_source(tmp_path / "s", {"v": 15}, annotations=ego4d_json({"v": persons}, {}))
    plain = BuildParams(clip_seconds=0.5)
    build(src, tmp_path / "plain", ["train"], plain, progress=False)
    [clip] = read_clips(*sorted((tmp_path / "plain" / "train").glob("*.tar"))).values()
    assert npy(clip["boxes.npy"]).shape == (101, 15, 4)
    with pytest.raises(FormatError, match=r"v/clip_f000000: person row 100: crop members name at most 100 persons a "
                                          r"clip \(c00\.\.c99\); build without --derive crops"):
        build(src, tmp_path / "crops", ["train"], BuildParams(clip_seconds=0.5, derive=("crops",)), progress=False)
