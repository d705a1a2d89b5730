"""Bad inputs to a build: every damaged or odd input has a documented outcome.

Each case ends in one of two ways, and the test pins which:

* a **skip with a reason** (clip or whole video) in ``build-report.json``, or a counted drop of
  annotation entries, or a **warning** — the build goes on and accounts for everything; or
* a **clear error naming the file** (``SourceError`` / ``BuildError`` / ``OSError``; exit code 2
  from the CLI), and nothing half-written left under a final name.

Cases already pinned in ``test_build.py`` are not repeated here: truncated / non-JPEG /
zero-byte frames and a frame gap in the middle (``test_bad_inputs_are_skipped_with_reasons``),
a short 44.1 kHz stereo wav (``test_audio_resampled_from_44k_stereo_and_short_wav_padded``),
malformed JSON, a video in two split lists, an AVA CSV with an unknown label
(``test_ava_csv_labels_and_frame_mapping``), resume after SIGKILL (also ``test_build_resume_after_kill.py``).
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.io import wavfile

from shardgen.build.annotations import ava
from shardgen.build.pipeline import BuildError, build
from shardgen.build.prechecks import check_space
from shardgen.build.plan import BuildParams
from shardgen.build.source import SourceError
from tests.sources import ego4d_json, index_clips, write_source
from tests.test_build import all_shards, npy, read_clips

ROOT = Path(__file__).resolve().parents[1]
P1 = BuildParams(clip_seconds=1.0)  # 30 frames a clip
P1U = BuildParams(clip_seconds=1.0, allow_unannotated=True)


def report(out: Path) -> dict:
    return json.loads((out / "build-report.json").read_text())


def manifest(out: Path, split: str = "train") -> dict:
    return json.loads((out / split / "manifest.json").read_text())


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "build-report.json"}


# ----------------------------------------------------------------------------- frames


def test_frame_gap_at_the_start_and_frame_numbering(tmp_path):
    """img_00001 missing skips the first clip only; an img_00000.jpg is an error naming the directory."""
    src = write_source(tmp_path / "s", {"v": 60})
    (src / "video_imgs" / "v" / "img_00001.jpg").unlink()
    out = tmp_path / "o"
    build(src, out, ["train"], P1U, progress=False)
    assert [c["key"] for c in index_clips(out / "train")] == ["v/clip_f000030"]
    assert {s["key"]: s["reason"] for s in report(out)["skipped"]} == {"v/clip_f000000": "missing frame img_00001.jpg"}

    (src / "video_imgs" / "v" / "img_00000.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    with pytest.raises(SourceError, match=r"video_imgs/v: frame numbers start at 1 \(found img_00000\.jpg\)"):
        build(src, tmp_path / "o2", ["train"], P1U, progress=False)


def test_frames_beyond_the_annotation_range(tmp_path):
    """Annotations that run past the last image are unused and reported as a finding (exit status 3); frames
    the annotation does not reach are built with empty labels (no box = NaN, no voice = 0)."""
    ann = ego4d_json({"v": {"1": [(f, 5, 5, 20, 20) for f in list(range(0, 20)) + list(range(50, 75))]}},
                     {"v": {"1": [(55, 70)], "2": [(200, 210)]}})
    src = write_source(tmp_path / "s", {"v": 60}, annotations=ann)
    out = tmp_path / "o"
    res = build(src, out, ["train"], P1, progress=False)
    assert [c["key"] for c in index_clips(out / "train")] == ["v/clip_f000000", "v/clip_f000030"]
    [finding] = [f for f in report(out)["findings"] if f["code"] == "annotations past the last frame"]
    assert ("av_train.json: annotations of v reach frame 210" in finding["message"] and "ends at frame 59" in finding["message"]
            and "17 box(es)/voice segment end(s)" in finding["message"]), finding
    assert res.exit_code == 3 and finding["message"] in res.summary.replace("\n      ", " ")
    clips = read_clips(all_shards(out, "train")[0])
    c1 = clips["v/clip_f000030"]
    vis, voice, boxes = npy(c1["visible.npy"]), npy(c1["voice.npy"]), npy(c1["boxes.npy"])
    assert vis.tolist() == [0] * 20 + [1] * 10  # frames 30..49 have no box, 50..59 do
    assert np.isnan(boxes[0, :20]).all() and not np.isnan(boxes[0, 20:]).any()
    assert voice.tolist() == [0] * 25 + [1] * 5  # segment 55..70 is cut at the last image (59)
    assert npy(c1["speaking.npy"])[1].sum() == 0  # person 2 speaks only past the end: nothing here


# ----------------------------------------------------------------------------- audio


@pytest.mark.parametrize("case", ["stereo16k", "mono44k1", "u8", "float32"])
def test_wav_formats_are_converted_to_16k_mono_int16(tmp_path, case):
    kw = {"stereo16k": dict(channels=2), "mono44k1": dict(sample_rate=44100), "u8": dict(subtype="PCM_U8"),
          "float32": dict(subtype="FLOAT")}[case]
    src = write_source(tmp_path / "s", {"v": 30}, **kw)
    if case == "float32":  # float WAVs hold -1..1; write the ramp scaled like that
        sf.write(src / "wav" / "v.wav", (np.arange(16000) % 30000) / 32768.0, 16000, subtype="FLOAT")
    build(src, tmp_path / "o", ["train"], P1U, progress=False)
    fields = read_clips(all_shards(tmp_path / "o", "train")[0])["v/clip_f000000"]
    meta = json.loads(fields["json"])
    sr, audio = wavfile.read(io.BytesIO(fields["wav"]))
    assert sr == 16000 and audio.dtype == np.int16 and audio.ndim == 1 and len(audio) == 16000
    assert meta["audio_samples"] == 16000 and meta["audio_padded_samples"] == 0
    src_info = meta["audio_source"]
    ramp = (np.arange(16000) % 30000).astype(np.int64)
    if case == "stereo16k":  # both channels carry the ramp: their mean is the ramp, bit-exact
        assert src_info["channels"] == 2 and src_info["downmixed"] and not src_info["resampled"]
        np.testing.assert_array_equal(audio, ramp)
    elif case == "mono44k1":  # a band-limited resample: the right length and the right level, not bit-exact
        assert src_info["sample_rate"] == 44100 and src_info["resampled"]
        expected = (np.arange(16000) * 44100 / 16000) % 30000  # the source's per-sample ramp, in time
        assert np.corrcoef(audio[100:-100], expected[100:-100])[0, 1] > 0.95
        assert abs(np.median(audio - expected)) < 100
    elif case == "u8":  # 8-bit PCM: the ramp quantised to 256-steps, re-centred on 0
        assert src_info["subtype"] == "PCM_U8"
        assert np.abs(audio - ramp).max() <= 256
    else:
        assert src_info["subtype"] == "FLOAT"
        assert np.abs(audio - ramp).max() <= 1


def test_wav_longer_than_the_video_and_wav_ending_before_a_clip(tmp_path):
    src = write_source(tmp_path / "s", {"long": 30, "short": 60}, wav_seconds={"long": 3.0, "short": 0.5})
    out = tmp_path / "o"
    build(src, out, ["train"], P1U, progress=False)
    w = report(out)["warnings"]
    assert any("long.wav is 3.000 s, longer than the 1.000 s of frames" in x and "unused" in x for x in w), w
    assert any("short.wav is 0.500 s, shorter than the 2.000 s of frames" in x and "zero-padded" in x for x in w), w
    clips = read_clips(all_shards(out, "train")[0])
    _, a = wavfile.read(io.BytesIO(clips["long/clip_f000000"]["wav"]))
    np.testing.assert_array_equal(a, np.arange(16000) % 30000)  # exactly the clip's samples, the rest unused
    m = json.loads(clips["short/clip_f000030"]["json"])  # the wav ends before this clip starts: all zeros, flagged
    _, a = wavfile.read(io.BytesIO(clips["short/clip_f000030"]["wav"]))
    assert m["audio_padded_samples"] == 16000 and len(a) == 16000 and not a.any()


def test_unreadable_and_empty_wavs_skip_the_video_with_a_reason(tmp_path):
    src = write_source(tmp_path / "s", {"garbage": 30, "empty": 30, "ok": 30})
    (src / "wav" / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    sf.write(src / "wav" / "empty.wav", np.zeros(0, np.int16), 16000)
    out = tmp_path / "o"
    build(src, out, ["train"], P1U, progress=False)
    r = {s["key"]: s["reason"] for s in report(out)["skipped"]}
    assert r["garbage/clip_f000000"].startswith("unreadable wav wav/garbage.wav")
    assert r["empty/clip_f000000"] == "empty wav wav/empty.wav"
    assert [c["key"] for c in index_clips(out / "train")] == ["ok/clip_f000000"]


# ----------------------------------------------------------------------------- annotations


def test_annotation_json_missing_keys(tmp_path):
    """Unusable entries are dropped and counted per reason in the report; an unusable file is an error naming it."""
    persons = [
        {"person_id": "1", "tracking_paths": [{"track_id": "t1", "track": [
            {"frame": 0, "x": 1, "y": 1, "width": 10, "height": 10},
            {"frame": 1, "x": 1, "y": 1, "height": 10},  # no width
            {"x": 1, "y": 1, "width": 10, "height": 10},  # no frame
            {"frame": 3, "x": "left", "y": 1, "width": 10, "height": 10},  # not a number
            {"frame": 4, "x": float("nan"), "y": 1, "width": 10, "height": 10},  # not finite
        ]}, {"track_id": "t2"}],  # no track list
         "voice_segments": [{"start_frame": 0, "end_frame": 4}, {"person": "1"}, {"start_frame": 9, "end_frame": 2}]},
        {"camera_wearer": True},  # no person_id, no tracks, no voice: kept as an empty row
        "not an object",
    ]
    data = {"videos": [{"video_uid": "v", "clips": [{"clip_uid": "v", "persons": persons},
                                                    {"clip_uid": "w"}]}]}  # w: no persons list
    src = write_source(tmp_path / "s", {"v": 30, "w": 30})
    (src / "json").mkdir()
    (src / "json" / "av_train.json").write_text(json.dumps(data))
    out = tmp_path / "o"
    res = build(src, out, ["train"], P1, progress=False)
    dropped = report(out)["annotation_entries_dropped"]
    assert dropped["train/v"] == {
        "person entry is not an object": 1,
        "track point missing frame/x/y/width/height": 2,
        "track point with a non-finite box": 1,
        "track point with non-numeric fields": 1,
        "tracking path without a track list": 1,
        "voice segment that ends before it starts": 1,
        "voice segment without start/end": 1,
    }
    assert dropped["train/w"] == {"clip without a persons list": 1}
    assert "annotation entries dropped: 9" in res.summary
    clip = read_clips(all_shards(out, "train")[0])["v/clip_f000000"]
    boxes = npy(clip["boxes.npy"])
    assert boxes.shape == (2, 30, 4) and not np.isnan(boxes[0, 0]).any() and np.isnan(boxes[0, 1:]).all()
    assert npy(clip["voice.npy"]).tolist() == [1] * 5 + [0] * 25

    for bad, where in ((["videos"], r"av_train\.json: not an Ego4D AV file"),
                       ({"videos": [{"clips": [{"persons": []}]}]}, r"av_train\.json: videos\[0\]\.clips\[0\] has no clip_uid"),
                       ({"videos": [{"clips": "x"}]}, r"av_train\.json: videos\[0\]\.clips is not a list"),
                       ({"videos": [{"clip_uid": "v"}, {"clip_uid": "v"}]}, r"av_train\.json: clip 'v' appears twice")):
        (src / "json" / "av_train.json").write_text(json.dumps(bad))
        with pytest.raises(SourceError, match=where):
            build(src, tmp_path / "bad", ["train"], P1, progress=False)
    cli = subprocess.run([sys.executable, "-m", "shardgen", "build", "--data", str(src), "--out", str(tmp_path / "cli"),
                          "--split", "train", "--no-progress"], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 2 and "av_train.json: clip 'v' appears twice" in cli.stderr


def test_boxes_outside_the_frame_and_negative_sizes(tmp_path):
    """64x48 frames. Wholly outside → dropped, counted in the clip's metadata; partly outside → kept as
    annotated (the crop pads); zero/negative size → dropped at parse, counted in the report."""
    track = [(0, 100, 10, 10, 10),  # right of the frame
             (1, -30, 5, 20, 20),  # left of it (x + w <= 0)
             (2, 10, -40, 10, 10),  # above it
             (3, 50, 40, 30, 30),  # partly outside: kept
             (4, 10, 10, -5, 10),  # negative width
             (5, 10, 10, 10, 0),  # zero height
             (6, 10, 10, 10, 10)]  # fine
    src = write_source(tmp_path / "s", {"v": 30}, annotations=ego4d_json({"v": {"1": track}}, {}))
    out = tmp_path / "o"
    build(src, out, ["train"], P1, progress=False)
    assert report(out)["annotation_entries_dropped"] == {"train/v": {"box with zero or negative size": 2}}
    fields = read_clips(all_shards(out, "train")[0])["v/clip_f000000"]
    meta = json.loads(fields["json"])
    assert meta["labels"]["dropped"] == {"box wholly outside the frame": 3}
    assert meta["persons"][0]["frames_with_box"] == 2
    boxes = npy(fields["boxes.npy"])
    np.testing.assert_array_equal(boxes[0, 3], [50, 40, 30, 30])
    assert np.isnan(boxes[0, [0, 1, 2, 4, 5]]).all()
    assert npy(fields["visible.npy"])[:8].tolist() == [0, 0, 0, 1, 0, 0, 1, 0]


def test_ava_csv_malformed_rows(tmp_path):
    """Beyond the unknown label (test_build): short rows and non-numbers are errors naming file:line;
    non-finite values and inverted boxes are dropped and counted."""
    path = tmp_path / "a.csv"
    good = "mov,0.5,0.1,0.1,0.5,0.5,SPEAKING_AUDIBLE,A"
    for line, msg in (("mov,0.5,0.1,0.1,0.5", r"a\.csv:2: expected 8 columns"),
                      ("mov,half,0.1,0.1,0.5,0.5,NOT_SPEAKING,A", r"a\.csv:2: non-numeric timestamp or box"),
                      ("mov,0.5,0.1,0.1,0.5,0.5,speaking,A", r"a\.csv:2: unknown label 'speaking'")):
        path.write_text(f"{good}\n{line}\n")
        with pytest.raises(SourceError, match=msg):
            ava.parse_file(path, 30.0)
    path.write_text("\n".join([good, "mov,nan,0.1,0.1,0.5,0.5,NOT_SPEAKING,A", "mov,0.6,0.5,0.1,0.1,0.5,NOT_SPEAKING,A",
                               "mov,-1.0,0.1,0.1,0.5,0.5,NOT_SPEAKING,A", "mov,0.5,0.2,0.2,0.6,0.6,NOT_SPEAKING,A"]) + "\n")
    anns = ava.parse_file(path, 30.0)
    assert dict(anns["mov"].dropped) == {"row with a non-finite value": 1, "box with zero or negative size": 1,
                                         "row before the first frame": 1,
                                         "two rows of one entity in the same frame (first kept)": 1}


def test_duplicate_ids(tmp_path):
    """Within one split list: the first occurrence wins. The same clip in two annotation files: error.
    (A video listed in two splits is refused: test_build.test_video_in_two_splits_is_refused.)"""
    src = write_source(tmp_path / "s", {"v": 30}, splits={"train": ["v", "v", "v"]},
                       annotations=ego4d_json({"v": {"1": [(0, 1, 1, 5, 5)]}}, {}))
    out = tmp_path / "o"
    res = build(src, out, ["train"], P1, progress=False)
    assert res.report["splits"][0]["videos_listed"] == 1 and manifest(out)["totals"]["clips"] == 1
    other = tmp_path / "other.json"
    other.write_text((src / "json" / "av_train.json").read_text())
    with pytest.raises(SourceError, match=r"other\.json: video 'v' is also annotated in av_train\.json"):
        build(src, tmp_path / "o2", ["train"], P1, annotation_files=[src / "json" / "av_train.json", other], progress=False)


def test_split_lists_naming_absent_videos_and_bad_lists(tmp_path):
    src = write_source(tmp_path / "s", {"v": 30}, splits={"train": ["v"], "val": ["gone1", "gone2"]})
    out = tmp_path / "o"
    res = build(src, out, ["train", "val"], P1U, progress=False)
    val = res.report["splits"][1]
    assert (val["videos_listed"], val["videos_found"], val["clips_written"], val["shards"]) == (2, 0, 0, 0)
    assert {s["video_id"]: s["reason"] for s in report(out)["skipped"]} == {
        "gone1": "frames directory video_imgs/gone1 is missing", "gone2": "frames directory video_imgs/gone2 is missing"}
    assert manifest(out, "val")["totals"]["clips"] == 0 and manifest(out, "train")["totals"]["clips"] == 1
    with pytest.raises(BuildError, match="--strict: 2 clip"):
        build(src, tmp_path / "strict", ["train", "val"], P1U, strict=True, progress=False)
    with pytest.raises(SourceError, match=r"split/test\.list: split list not found"):
        build(src, tmp_path / "o3", ["test"], P1U, progress=False)
    (src / "split" / "val.list").write_text("ok_id\n../../etc\n")
    with pytest.raises(SourceError, match=r"split/val\.list:2: video id '\.\./\.\./etc' is not usable"):
        build(src, tmp_path / "o4", ["val"], P1U, progress=False)
    (src / "split" / "val.list").write_bytes(b"\xff\xfe\x00v\n")
    with pytest.raises(SourceError, match=r"split/val\.list: split list is not UTF-8"):
        build(src, tmp_path / "o5", ["val"], P1U, progress=False)


# ----------------------------------------------------------------------------- disk


@pytest.fixture(scope="module")
def disk_source(tmp_path_factory) -> tuple[Path, list[str], Path]:
    root = tmp_path_factory.mktemp("disk")
    src = write_source(root / "s", {f"v{i}": 60 for i in range(3)}, size=(160, 120))
    args = ["--split", "train", "--clip-seconds", "0.5", "--allow-unannotated", "--no-progress"]
    return src, args, root


def _limited_fsize(limit: int):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG, like ENOSPC on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


@pytest.mark.parametrize("workers,shard_clips", [(1, 4), (2, 4), (2, 0)])
def test_disk_full_during_a_write_fails_cleanly_and_resumes(disk_source, tmp_path, workers, shard_clips):
    """A write that hits the file-size limit (standing in for a full disk) fails the build with an error
    naming the shard; no partial shard appears under its final name; freeing space and re-running
    the same command completes byte-identical to a clean build. (2, 0): one shard, workers assemble
    clips and the parent writes; (2, 4): shards written by pool workers."""
    src, args, _ = disk_source
    cmd = [sys.executable, "-m", "shardgen", "build", "--data", str(src), *args, "--workers", str(workers),
           "--shard-clips", str(shard_clips)]
    clean = tmp_path / "clean"
    subprocess.run(cmd + ["--out", str(clean)], check=True, cwd=ROOT, capture_output=True)
    sizes = sorted(p.stat().st_size for p in all_shards(clean, "train"))
    limit = sizes[0] - 20_000  # every shard is bigger than this: the first write to cross it fails
    out = tmp_path / "full"
    cli = subprocess.run(cmd + ["--out", str(out)], cwd=ROOT, capture_output=True, text=True, preexec_fn=_limited_fsize(limit))
    assert cli.returncode == 2, cli.stderr
    assert "shardgen build: error: [Errno 27] File too large while writing" in cli.stderr
    assert "train-0000" in cli.stderr and ".tar" in cli.stderr
    clean_files = tree(clean)
    finished = sorted((out / "train").glob("train-*.tar"))
    assert len(finished) < sum(n.startswith("train/train-") and n.endswith(".tar") for n in clean_files)  # it did stop early
    for p in finished:  # anything under a final name is whole (there may be none: the first write can fail)
        assert p.read_bytes() == clean_files[f"train/{p.name}"]
    assert not (out / "train" / "manifest.json").exists()
    subprocess.run(cmd + ["--out", str(out)], check=True, cwd=ROOT, capture_output=True)
    assert tree(out) == clean_files
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_space_preflight_refuses_before_writing(disk_source, tmp_path, monkeypatch):
    src, _, _ = disk_source
    with pytest.raises(BuildError, match=r"not enough disk space in .*the plan needs about .* GB, .* GB are free"):
        check_space(tmp_path / "x", 10**16)  # 10 PB: no test machine has that
    import shardgen.build.prechecks as b

    real = b.shutil.disk_usage
    monkeypatch.setattr(b.shutil, "disk_usage", lambda p: real(p)._replace(free=10 << 20))  # 10 MB left
    out = tmp_path / "o"
    with pytest.raises(BuildError, match="not enough disk space.*--no-space-check"):
        build(src, out, ["train"], BuildParams(clip_seconds=0.5, allow_unannotated=True), progress=False)
    assert not list(out.rglob("*.tar")) and not (out / "train" / "manifest.json").exists()
    build(src, out, ["train"], BuildParams(clip_seconds=0.5, allow_unannotated=True), check_space=False, progress=False)
    assert manifest(out)["totals"]["clips"] == 12


def test_stale_temp_files_anywhere_in_the_output_are_removed(tmp_path):
    """A kill can leave ``.<name>.tmp-<pid>`` beside any file written atomically, the report included."""
    src = write_source(tmp_path / "s", {"v": 30})
    out = tmp_path / "o"
    (out / "train").mkdir(parents=True)
    stale = [out / ".build-report.json.tmp-99999", out / "train" / ".train-000000.tar.tmp-99999",
             out / "train" / ".manifest.json.tmp-99999"]
    for p in stale:
        p.write_bytes(b"half")
    build(src, out, ["train"], P1U, progress=False)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert os.path.exists(out / "build-report.json")


def test_a_frame_that_changes_size_between_plan_and_write_is_named(tmp_path):
    """The plan keeps a digest of each clip's frame sizes (not a tuple of ints per frame); a frame
    rewritten with another size after planning fails the clip, naming its frames, instead of
    packing bytes the plan did not size."""
    from shardgen.build.clip import BuildContext, clip_entry
    from shardgen.build.probe import probe_source

    src = write_source(tmp_path / "src", {"v": 30}, annotations=ego4d_json({"v": {"1": [(f, 5, 5, 20, 20) for f in range(30)]}}, {"v": {"1": [(3, 20)]}}))
    from shardgen.build.annotations import load_annotations

    params = BuildParams(clip_seconds=1.0)
    anns = load_annotations([src / "json" / "av_train.json"], params.fps)
    [clip] = probe_source(src, "train", "v", params, anns).clips
    ctx = BuildContext(src, params, anns)
    assert clip_entry(clip, ctx)[0] == "v/clip_f000000"  # unchanged: builds
    frame = src / "video_imgs" / "v" / "img_00007.jpg"
    frame.write_bytes(frame.read_bytes() + b"\0" * 10)
    with pytest.raises(SourceError, match=r"video_imgs/v: frames img_00001\.jpg\.\.img_00030\.jpg changed size"):
        clip_entry(clip, ctx)
