"""Building straight from video files, checked against the ffmpeg command-line tool (issue 14).

The reference is ffmpeg itself: ``ffmpeg -i V -vf fps=30`` for the frames and ``ffmpeg -i V -ac 1
-ar 16000`` for the audio, on files made here with PyAV (30, 25 and 29.97 fps, streams starting late)
and on the real clip of ../shared (video starts at 0.852 s, audio at 0.008 s).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shardgen.build.pipeline import StrictError, build
from shardgen.core.format import SAMPLE_RATE
from shardgen.build.plan import BuildParams
from shardgen.build.video import fps_slots
from tests.sources import npy, read_clips, write_source
from tests.videos import (REAL_VIDEO, ffmpeg_frames, ffmpeg_wav, ffprobe_starts, make_video, needs_ffmpeg, psnr,
                          video_source, xcorr_lag)

pytestmark = needs_ffmpeg
SHORT = BuildParams(clip_seconds=1.0, min_clip_seconds=0.1)


def shards(out: Path, split: str = "train") -> list[Path]:
    return sorted((out / split).glob(f"{split}-*.tar"))


def clips_in_order(out: Path) -> list[tuple[str, dict]]:
    clips = read_clips(*shards(out))
    return sorted(clips.items(), key=lambda kv: (kv[0].split("/")[0], int(kv[0].rsplit("_f", 1)[1])))


def check_frames_against_ffmpeg(out: Path, video: Path, fps, size) -> dict:
    """Every clip frame: PSNR >= 30 dB against ffmpeg's frame of the same index, and no neighbour closer."""
    ref = ffmpeg_frames(video, fps, size)
    seen, worst, margins = 0, np.inf, []
    for key, fields in clips_in_order(out):
        meta = json.loads(fields["json"])
        for i in range(meta["n_frames"]):
            f = meta["start_frame"] + i
            ours = np.asarray(Image.open(io.BytesIO(fields[f"f{i + 1:06d}.jpg"])).convert("RGB"))
            p = psnr(ours, ref[f])
            assert p >= 30, f"{key} frame {i} (source frame {f}): {p:.1f} dB against ffmpeg's frame {f}"
            for g in (f - 1, f + 1):
                if 0 <= g < len(ref) and not np.array_equal(ref[g], ref[f]):  # a repeated frame is as close, fairly
                    q = psnr(ours, ref[g])
                    assert q < p, f"{key} frame {i}: ffmpeg's frame {g} is closer ({q:.1f} dB) than frame {f} ({p:.1f} dB)"
                    margins.append(p - q)
            worst = min(worst, p)
            seen += 1
    assert seen == len(ref), f"the clips hold {seen} frames, ffmpeg outputs {len(ref)}"
    return {"frames": seen, "min_psnr": worst, "min_margin": min(margins)}


@pytest.mark.parametrize("fps, offsets", [
    (30, {}),
    (25, {"audio_delay_s": 0.2}),  # audio starts 0.2 s after the video: clip 0's first 0.2 s are zeros, flagged
    (Fraction(30000, 1001), {"video_delay_s": 0.3}),  # video starts 0.3 s into the file
], ids=["30fps", "25fps-audio-late", "29.97fps-video-late"])
def test_frames_and_audio_match_ffmpeg(tmp_path, fps, offsets):
    src = video_source(tmp_path / "src", {"v": {"fps": fps, "seconds": 2.0, **offsets}})
    video = src / "videos" / "v.mp4"
    out = tmp_path / "out"
    build(src, out, ["train"], SHORT, workers=1, progress=False)
    stats = check_frames_against_ffmpeg(out, video, 30, (96, 64))
    assert stats["frames"] >= 59
    check_audio_against_ffmpeg(out, video)
    first = json.loads(clips_in_order(out)[0][1]["json"])
    assert first["source"]["kind"] == "video_file" and first["source"]["codec"] == "h264"
    assert Fraction(first["source"]["native_fps"]) == Fraction(fps)
    if "audio_delay_s" in offsets:  # zeros up to the audio stream's start (0.2 s less the AAC priming the edit list keeps)
        starts = ffprobe_starts(video)
        late = first["source"]["audio_padded_start_samples"]
        assert late > 1000 and abs(late - (starts["audio"] - starts["video"]) * SAMPLE_RATE) <= 1
        assert first["audio_padded_samples"] >= late and not np.frombuffer(clips_in_order(out)[0][1]["wav"][44:], "<i2")[:late].any()


def test_variable_frame_rate_file_goes_by_timestamps(tmp_path):
    """A VFR mkv (frame gaps of 20-100 ms, 1 ms time base): clip frame f is still ffmpeg's fps=30 frame f."""
    from shardgen.demo.videos import write_video
    from tests.videos import moving_frames

    gaps = np.random.default_rng(1).choice([20, 33, 33, 40, 50, 100], size=59)
    times = [0] + [int(t) for t in np.cumsum(gaps)]
    src = tmp_path / "src"
    (src / "split").mkdir(parents=True)
    (src / "split" / "train.list").write_text("vfr\n")
    (src / "videos").mkdir()
    write_video(src / "videos" / "vfr.mkv", moving_frames(60, 30), 30, times_ms=times)
    out = tmp_path / "out"
    build(src, out, ["train"], SHORT, workers=1, progress=False)
    stats = check_frames_against_ffmpeg(out, src / "videos" / "vfr.mkv", 30, (96, 64))
    assert stats["frames"] > 60  # longer gaps than 1/30 s: ffmpeg repeats frames, and so do we, in the same slots


def check_audio_against_ffmpeg(out: Path, video: Path, expect_shift_s: float | None = None) -> float:
    """The clips' audio, laid end to end, equals ffmpeg's 16 kHz wav shifted by the streams' start difference.

    Our sample j is at container time v0 + j/16000; ffmpeg's wav sample k at a0 + k/16000. So ours[j]
    should be ffmpeg[j + (v0 - a0) * 16000]: the cross-correlation peak, searched over +-1.5 s, must
    lie within 10 ms of that shift. Returns the measured offset error in seconds.
    """
    starts = ffprobe_starts(video)
    shift = starts["video"] - starts["audio"] if expect_shift_s is None else expect_shift_s
    ours = np.concatenate([np.frombuffer(f["wav"][44:], "<i2") for _, f in clips_in_order(out)])
    ref = ffmpeg_wav(video)
    lag = xcorr_lag(ours, ref, max_lag=int(1.5 * SAMPLE_RATE))
    err = lag / SAMPLE_RATE - shift
    assert abs(err) <= 0.010, f"audio is {err * 1000:.1f} ms off the streams' start difference {shift:.3f} s"
    return err


def test_real_clip_with_stream_offsets_matches_ffmpeg_frames_audio_and_labels(realdata, real_build, tmp_path):
    """The real clip: 29.97 fps, video from 0.852 s, audio from 0.008 s (container time)."""
    if not REAL_VIDEO.is_file():
        pytest.skip(f"{REAL_VIDEO} is absent: the real-clip video test needs ../shared/realdata/videos")
    src = tmp_path / "src"
    (src / "split").mkdir(parents=True)
    shutil.copy(realdata / "split" / "train.list", src / "split")
    shutil.copytree(realdata / "json", src / "json")
    (src / "videos").mkdir()
    os.symlink(REAL_VIDEO, src / "videos" / "short_hamilton_clip.mp4")
    out = tmp_path / "out"
    res = build(src, out, ["train"], BuildParams(clip_seconds=4.0), workers=1, progress=False)
    assert res.report["skipped"] == []
    stats = check_frames_against_ffmpeg(out, REAL_VIDEO, 30, (640, 360))
    assert stats["frames"] == 276  # 275 frames at 29.97 fps → 276 at 30 fps (one slot repeats a frame)
    starts = ffprobe_starts(REAL_VIDEO)
    assert abs(starts["video"] - 0.852) < 1e-3 and abs(starts["audio"] - 0.008) < 1e-3
    check_audio_against_ffmpeg(out, REAL_VIDEO)  # the 0.844 s that a naive extraction loses
    clips = dict(clips_in_order(out))
    meta = json.loads(clips["short_hamilton_clip/clip_f000000"]["json"])
    assert abs(meta["source"]["video_start_time"] - 0.852019) < 1e-6 and abs(meta["source"]["audio_start_time"] - 0.008005) < 1e-6
    # labels follow the annotation's 0-based 30 fps frames, exactly as from the frame directory
    frames_build = read_clips(*shards(real_build))
    ann = json.loads((realdata / "json" / "av_train.json").read_text())["videos"][0]["clips"][0]["persons"][0]
    track = {p["frame"] for p in ann["tracking_paths"][0]["track"]}
    for key, fields in clips.items():
        start = int(key.rsplit("_f", 1)[1])
        vis = npy(fields["visible.npy"])
        assert [bool(v) for v in vis] == [start + i in track for i in range(len(vis))]
        ref = frames_build[key]
        n = min(len(vis), len(npy(ref["visible.npy"])))
        for member in ("visible.npy", "voice.npy", "speaking.npy"):
            np.testing.assert_array_equal(npy(fields[member])[..., :n], npy(ref[member])[..., :n])
        np.testing.assert_array_equal(npy(fields["boxes.npy"])[:, :n], npy(ref["boxes.npy"])[:, :n])


def test_fps_slots_follow_the_filter_rule():
    """Hand-worked cases of the fps filter's rule (nearest slot, later frame wins, gaps repeat)."""
    one = Fraction(1, 1000)  # 1 ms time base
    # 25 fps input → 30 fps: frame k at 40k ms is slot round(1.2 k): 0,1,2,4,5,6,7,8,10 → slots 3 and 9 repeat;
    # the input ends at 360 ms = slot 10.8 → 11 slots
    assert fps_slots([40 * k for k in range(9)], one, 0, Fraction(30), 360) == [0, 1, 2, 2, 3, 4, 5, 6, 7, 7, 8]
    # 60 fps input (ms-rounded) → 30 fps: slots 0, .51→1, .99→1, 1.5→2 (half away from zero), 2.01→2, 2.49→2:
    # of frames sharing a slot the later wins
    assert fps_slots([round(1000 * k / 60) for k in range(6)], one, 0, Fraction(30), 100) == [0, 2, 5]
    # a gap (variable frame rate): slots nobody reaches repeat the previous frame
    assert fps_slots([0, 33, 200, 233], one, 0, Fraction(30), 266) == [0, 1, 1, 1, 1, 1, 2, 3]
    # the offset (the file's start) moves the grid: frames at 16 ms steps from 10 ms
    assert fps_slots([10, 43, 76], one, 10, Fraction(30), 109) == [0, 1, 2]


def test_mixed_build_frames_dir_clips_unchanged_and_video_clips_alike(tmp_path):
    """One build takes a frame directory and a video file; the frame-dir clips' bytes do not change."""
    alone = write_source(tmp_path / "alone", {"f": 45})
    build(alone, tmp_path / "out_alone", ["train"], SHORT, workers=1, progress=False)
    mixed = write_source(tmp_path / "mixed", {"f": 45})
    make_video(mixed / "videos" / "v.mkv", 30, 1.5)
    (mixed / "split" / "train.list").write_text("f\nv\n")
    build(mixed, tmp_path / "out_mixed", ["train"], SHORT, workers=1, progress=False)
    a, m = read_clips(*shards(tmp_path / "out_alone")), read_clips(*shards(tmp_path / "out_mixed"))
    assert sorted(m) == ["f/clip_f000000", "f/clip_f000030", "v/clip_f000000", "v/clip_f000030"]
    for key in a:
        assert m[key] == a[key]  # every member, byte for byte
        assert "source" not in json.loads(m[key]["json"])
    for key in ("v/clip_f000000", "v/clip_f000030"):
        assert set(m[key]) == set(m[key.replace("v/", "f/")])  # the same members as a frame-dir clip of that length
        meta = json.loads(m[key]["json"])
        assert meta["source"]["container"] == "matroska,webm" and meta["frame_size"] == [96, 64]


def test_same_bytes_for_one_and_two_workers_and_resume_keys_on_size_and_mtime(tmp_path):
    src = video_source(tmp_path / "src", {"a": {"fps": 30, "seconds": 2.0}, "b": {"fps": 25, "seconds": 2.0}})
    outs = {}
    for w in (1, 2):
        outs[w] = tmp_path / f"out{w}"
        build(src, outs[w], ["train"], BuildParams(clip_seconds=1.0, shard_clips=1), workers=w, progress=False)
    files = {w: {p.relative_to(o): p.read_bytes() for p in sorted((o / "train").rglob("*")) if p.is_file()}
             for w, o in outs.items()}
    assert len(files[1]) > 4 and files[1] == files[2]
    again = build(src, outs[1], ["train"], BuildParams(clip_seconds=1.0, shard_clips=1), workers=1, progress=False)
    assert again.report["timing"]["clips_written_now"] == 0  # nothing changed: every shard kept
    st = os.stat(src / "videos" / "b.mp4")
    os.utime(src / "videos" / "b.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = build(src, outs[1], ["train"], BuildParams(clip_seconds=1.0, shard_clips=1), workers=1, progress=False)
    assert touched.report["timing"]["clips_written_now"] == 2  # b's two clips, a's kept
    assert {p.relative_to(outs[1]): p.read_bytes() for p in sorted((outs[1] / "train").glob("*.tar"))} == \
           {k: v for k, v in files[1].items() if str(k).endswith(".tar")}


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_truncated_file_builds_the_clips_before_the_damage_and_skips_the_rest(tmp_path, ext):
    """mp4 (+faststart: the index says 4 s; the cut packet reads short) and mkv (its DURATION tag says 4 s)."""
    src = video_source(tmp_path / "src", {"v": {"fps": 30, "seconds": 4.0, "size": (160, 120), "ext": ext}})
    out_whole = tmp_path / "whole"
    build(src, out_whole, ["train"], SHORT, workers=1, progress=False)
    whole = dict(clips_in_order(out_whole))
    assert len(whole) == 4
    video = src / "videos" / f"v.{ext}"
    data = video.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.6)])  # the file still says it is 4 s long
    out = tmp_path / "cut"
    res = build(src, out, ["train"], SHORT, workers=1, progress=False)
    cut = dict(clips_in_order(out))
    skipped = {s["key"]: s["reason"] for s in res.report["skipped"]}
    assert cut and skipped and sorted(cut) + sorted(skipped) == sorted(whole)  # every clip accounted for
    assert max(int(k.rsplit("_f", 1)[1]) for k in cut) < min(int(k.rsplit("_f", 1)[1]) for k in skipped)
    for key in cut:  # the clips before the damage are exactly those of the whole file: frames, audio, labels
        assert {k: v for k, v in cut[key].items() if k != "json"} == {k: v for k, v in whole[key].items() if k != "json"}
        a, b = json.loads(cut[key]["json"]), json.loads(whole[key]["json"])
        assert a["audio_source"].pop("duration_s") < b["audio_source"].pop("duration_s")  # only the stream's length differs
        assert a == b
    for reason in skipped.values():
        assert f"videos/v.{ext} is damaged at " in reason and " s (container time)" in reason
    assert any("damaged" in w for w in res.report["warnings"])


def test_no_audio_stream_no_video_stream_and_unreadable_file(tmp_path):
    src = tmp_path / "src"
    make_video(src / "videos" / "mute.mp4", 30, 1.0, audio=False)
    import av

    with av.open(str(src / "videos" / "audio_only.mp4"), "w") as c:  # a file without a video stream
        a = c.add_stream("aac", rate=16000, layout="mono")
        for s in range(0, 16000, 1024):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, s
            c.mux(a.encode(f))
        c.mux(a.encode(None))
    (src / "videos" / "garbage.webm").write_bytes(b"\x1aE\xdf\xa3 not really a webm file" * 10)
    (src / "split").mkdir()
    (src / "split" / "train.list").write_text("mute\naudio_only\ngarbage\nabsent\n")
    res = build(src, tmp_path / "out", ["train"], SHORT, workers=1, progress=False)
    reasons = {s["video_id"]: s["reason"] for s in res.report["skipped"]}
    assert reasons["audio_only"] == "videos/audio_only.mp4: no video stream"
    assert reasons["garbage"].startswith("videos/garbage.webm: unreadable video file")
    assert reasons["absent"] == "frames directory video_imgs/absent is missing, and so is a video file videos/absent.{mp4,mkv,mov,webm,avi}"
    assert "mute" not in reasons
    meta = json.loads(read_clips(*shards(tmp_path / "out"))["mute/clip_f000000"]["json"])
    assert meta["audio_source"]["kind"] == "none" and meta["audio_padded_samples"] == meta["audio_samples"] == 16000
    assert any("mute.mp4 has no audio stream" in w for w in res.report["warnings"])
    with pytest.raises(StrictError, match="mute.mp4 has no audio stream"):
        (src / "split" / "train.list").write_text("mute\n")
        build(src, tmp_path / "strict", ["train"], SHORT, workers=1, progress=False, strict=True)


def test_wav_beside_a_video_file_is_used_and_max_side_downscales(tmp_path):
    src = video_source(tmp_path / "src", {"v": {"fps": 30, "seconds": 1.0, "size": (160, 120)}})
    (src / "wav").mkdir()
    ramp = (np.arange(16000) % 30000).astype(np.int16)
    import soundfile as sf

    sf.write(src / "wav" / "v.wav", ramp, 16000, subtype="PCM_16")
    out = tmp_path / "out"
    build(src, out, ["train"], BuildParams(clip_seconds=1.0, max_side=80, jpeg_quality=75), workers=1, progress=False)
    fields = read_clips(*shards(out))["v/clip_f000000"]
    meta = json.loads(fields["json"])
    assert meta["source"]["audio_from"] == "wav" and meta["frame_size"] == [80, 60]
    assert meta["source"]["jpeg_quality"] == 75 and meta["source"]["max_side"] == 80
    np.testing.assert_array_equal(np.frombuffer(fields["wav"][44:], "<i2"), ramp)
    assert Image.open(io.BytesIO(fields["f000001.jpg"])).size == (80, 60)


def test_odd_sized_frames_encode_to_the_same_bytes_every_time(tmp_path):
    """--max-side 64 on a 96x64 file gives 64x43 frames: libjpeg-turbo reads a little past an odd-sized plane,
    so the bytes used to depend on the memory after it (13 encodings of one frame in 40 tries). Now every
    decode of the clip, and every build, gives the same bytes; the memory past each plane repeats its edge."""
    from shardgen.build.video import _edge_padded, decode_clip, probe_file

    src = video_source(tmp_path / "src", {"v": {"fps": 30, "seconds": 1.0}})
    video = src / "videos" / "v.mp4"
    probe = probe_file(video, "videos/v.mp4", Fraction(30), 80, 64)
    decodes = []
    for i in range(6):
        clutter = [np.random.default_rng(i).integers(0, 255, 64 * 43 * k, np.uint8) for k in range(1, 4)]  # noqa: F841
        decodes.append(decode_clip(probe.source, probe.slot_pts, 80, 64, threads=1 + i % 2))
        del clutter
    assert len(decodes[0]) == 30 and all(d == decodes[0] for d in decodes)
    assert Image.open(io.BytesIO(decodes[0][0])).size == (64, 43)
    outs = []
    for k in range(2):
        outs.append(tmp_path / f"out{k}")
        build(src, outs[-1], ["train"], BuildParams(clip_seconds=1.0, max_side=64, jpeg_quality=80), workers=1,
              progress=False)
    assert [p.read_bytes() for p in shards(outs[0])] == [p.read_bytes() for p in shards(outs[1])]
    plane = np.arange(43 * 64, dtype=np.uint8).reshape(43, 64)
    padded = _edge_padded(plane)
    assert padded.flags.c_contiguous and np.array_equal(padded, plane)
    assert np.array_equal(padded.base[43:], np.stack([plane[-1], plane[-1]]))


def test_demo_video_cli_writes_mp4s_that_build(tmp_path):
    """``shardgen demo --video``: the demo corpus as mp4 files only, and a build of them."""
    from shardgen.cli import main

    root = tmp_path / "demo"
    assert main(["demo", "--out", str(root), "--seconds", "3", "--width", "64", "--height", "48", "--video"]) == 0
    assert sorted(p.name for p in (root / "videos").iterdir()) == [
        f"demo_{s}_{i:03d}.mp4" for s, n in (("test", 1), ("train", 3), ("val", 2)) for i in range(n)]
    assert not (root / "video_imgs").exists() and not (root / "wav").exists()
    assert main(["demo", "--out", str(root), "--seconds", "3", "--width", "64", "--height", "48", "--video"]) == 0
    res = build(root, tmp_path / "out", ["train", "val"], BuildParams(clip_seconds=1.0), workers=1, progress=False)
    assert [s["clips_written"] for s in res.report["splits"]] == [9, 6] and res.report["skipped"] == []
    train = read_clips(*shards(tmp_path / "out", "train"))
    last = json.loads(train["demo_train_002/clip_f000060"]["json"])  # its wav, hence its AAC stream, is 0.5 s short
    # zeros for the missing 0.5 s, less up to one AAC frame (1024 samples) of encoder padding the stream keeps
    assert 0.5 * SAMPLE_RATE - 1024 <= last["audio_padded_samples"] <= 0.5 * SAMPLE_RATE
    assert any("demo_train_002.mp4: audio stream covers" in w for w in res.report["warnings"])
    val = read_clips(*shards(tmp_path / "out", "val"))
    odd = json.loads(val["demo_val_001/clip_f000000"]["json"])["audio_source"]
    assert (odd["sample_rate"], odd["channels"], odd["resampled"]) == (48000, 2, True)
    voice = npy(train["demo_train_000/clip_f000000"]["voice.npy"])
    assert voice.shape == (30,)  # labels from the demo's Ego4D JSON, 0-based 30 fps frames


def test_videos_option_points_at_another_directory(tmp_path):
    """``--videos DIR``: files outside the source tree (e.g. Ego4D's v2/clips); a missing DIR is refused."""
    from shardgen.cli import main

    clips = tmp_path / "clips"
    make_video(clips / "v.mp4", 30, 1.0)
    src = tmp_path / "src"
    (src / "split").mkdir(parents=True)
    (src / "split" / "train.list").write_text("v\n")
    out = tmp_path / "out"
    assert main(["build", "--data", str(src), "--out", str(out), "--split", "train", "--videos", str(clips), "--clip-seconds", "1",
                 "--workers", "1", "--no-progress"]) == 0
    meta = json.loads(read_clips(*shards(out))["v/clip_f000000"]["json"])
    assert meta["source"]["file"] == str(clips / "v.mp4") and meta["n_frames"] == 30
    assert main(["build", "--data", str(src), "--out", str(tmp_path / "o2"), "--videos", str(tmp_path / "nope"),
                 "--no-progress"]) == 2
