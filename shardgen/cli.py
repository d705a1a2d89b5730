"""Command line: ``shardgen build | inspect | verify | preview | view | report | eval-gt | eval-map | demo`` (also ``python -m shardgen``)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .build.pipeline import StrictError, build
from .core.ava_eval import DIALECTS, DegenerateMetric, mean_ap
from .core.clip_index import INDEX_NAME
from .core.storage import S3Options
from .demo import make_demo_corpus, make_demo_videos
from .tools.eval_gt import write_ground_truth
from .tools.inspection import inspect_path
from .build.manifest_writer import upgrade_manifest
from .build.build_report import EXIT_CODES, EXIT_STRICT
from .build.plan import NATIVE, TAILS, BuildParams, check_fps
from .tools.preview import preview
from .tools.html_report import write_report
from .tools.verify import verify_manifest
from .tools.view import serve as serve_viewer


def _size(text: str) -> int:
    """'1GB', '500MB', '2e9', '1048576' → bytes."""
    t = text.strip().upper().replace("IB", "B")
    for suffix, mult in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(float(t))


def _fps(text: str):
    """``--fps``: a positive finite rate (30, 29.97, 30000/1001) or 'native'; argparse names the flag on error."""
    value = text.strip()
    if value.lower() == NATIVE:
        return NATIVE
    try:
        check_fps(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--fps ")) from None
    return float(value) if "/" not in value else value


_EXIT_HELP = "exit status: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shardgen", description="Ego4D-style AV corpus → WebDataset tar shards.")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="cut videos into clips and write shards + manifests",
                       description="Cut every listed video into clips, pack each clip (original JPEG frames, "
                                   "16 kHz audio, label arrays, metadata) into tar shards per split, write a manifest "
                                   "per split and a build report. Re-running the same command resumes an interrupted "
                                   "build and ends byte-identical.", epilog=_EXIT_HELP)
    b.add_argument("--data", required=True, type=Path, help="source directory (split/, video_imgs/, wav/, json/ or csv/)")
    b.add_argument("--out", required=True, help="output directory (or s3://bucket/prefix)")
    b.add_argument("--split", default="train,val", help="comma-separated splits to build (default: train,val; 'test' only when named)")
    b.add_argument("--annotations", action="append", type=Path, default=None,
                   help="annotation file (Ego4D AV .json or AVA .csv); repeatable. Default: DIR/json/av_<split>.json, else DIR/csv/*.csv")
    b.add_argument("--fps", type=_fps, default=30.0, help="frame rate of the source images, or the rate video files are "
                   "sampled at as ffmpeg's -vf fps=N does (default 30); 'native': each video file at its own rate "
                   "(recorded per clip; frame directories then need a number)")
    b.add_argument("--videos", type=Path, default=None,
                   help="directory of <id>.{mp4,mkv,mov,webm,avi} files for listed videos without video_imgs/<id>/ "
                        "(default: DIR/videos)")
    b.add_argument("--jpeg-quality", type=int, default=90,
                   help="video files: JPEG quality of decoded frames (default 90, the quantisation of ffmpeg's -q:v 2)")
    b.add_argument("--max-side", type=int, default=0,
                   help="video files: downscale frames so the longer side is at most N pixels (default: full resolution)")
    b.add_argument("--clip-seconds", type=float, default=15.0, help="clip length in seconds (default 15 → 450 frames at 30 fps)")
    b.add_argument("--stride-seconds", type=float, default=None, help="start-to-start distance of clips (default: = clip length, no overlap)")
    b.add_argument("--tail", choices=TAILS, default="keep-short",
                   help="what to do with the last, shorter clip of a video: keep it short (default), drop it, or pad it "
                        "to full length (last frame repeated, zero audio, zero labels)")
    b.add_argument("--min-clip-seconds", type=float, default=1.0, help="tails shorter than this are skipped (default 1.0)")
    b.add_argument("--audio-format", choices=("wav", "flac"), default="wav", help="audio member encoding (default wav)")
    b.add_argument("--shard-bytes", type=_size, default=10**9, help="target shard size, e.g. 1GB, 500MB (default 1GB)")
    b.add_argument("--shard-clips", type=int, default=0, help="at most this many clips per shard (default: no limit)")
    b.add_argument("--derive", default="", help="extra members for fast loading: 'small' (112x112 gray frames), 'crops' (112x112 face crops per person); comma-separated")
    b.add_argument("--no-originals", action="store_true", help="with --derive small: leave out the original JPEGs")
    b.add_argument("--allow-unannotated", action="store_true", help="build videos missing from the annotations, with empty labels")
    b.add_argument("--ava-time-offset", type=float, default=0.0, help="AVA: seconds of the first image (900 for AVA movie segments)")
    b.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    b.add_argument("--executor", choices=("local", "ray"), default="local", help="where the work runs (default local)")
    b.add_argument("--address", default=None, help="Ray cluster address (auto | HOST:PORT); default: a local Ray runtime")
    b.add_argument("--strict", action="store_true", help="refuse (exit 1, nothing written) instead of skipping any clip "
                   "or building with findings (unknown annotation keys, empty persons, unlisted annotations, a --fps the "
                   "source contradicts); without it such a build is written and exits 3")
    b.add_argument("--dry-run", action="store_true", help="read the source and annotations, plan and run every check, "
                   "print per split what would be built and skipped and why; write nothing")
    b.add_argument("--overwrite", action="store_true", help="replace shards built earlier with other parameters")
    b.add_argument("--no-space-check", action="store_true", help="skip the free-disk-space pre-flight")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    s3 = b.add_argument_group("s3:// output", "Credentials and endpoint come from the usual AWS variables "
                              "(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_PROFILE); "
                              "these flags override them.")
    s3.add_argument("--s3-endpoint", default=None, help="endpoint URL (MinIO, Ceph RGW, R2, Swift s3api...)")
    s3.add_argument("--s3-region", default=None, help="region name")
    s3.add_argument("--s3-profile", default=None, help="AWS profile from ~/.aws/config")
    s3.add_argument("--s3-addressing", choices=("auto", "path", "virtual"), default=None,
                    help="bucket addressing style (path for most self-hosted stores)")
    s3.add_argument("--staging", type=Path, default=None,
                    help="local directory where shards are written before upload (default: a folder in $TMPDIR)")

    i = sub.add_parser("inspect", help="list clips, members and label balance of a shard or split",
                       description="Print what a shard (.tar) or a split (manifest.json or its directory) holds; "
                                   "for a split, also a summary of its clip index (clips.idx).")
    i.add_argument("path", help="a shard .tar, a manifest.json, or a split directory; local or an http(s)/s3 URL of one")
    i.add_argument("--max-clips", type=int, default=20, help="clips listed one per line (default 20)")

    v = sub.add_parser("verify", help="check sizes, sha256 and that every clip decodes",
                       description="Exit 0 when the split's clip index (clips.idx) and every shard of the manifest have "
                                   "the recorded size and sha256 and every clip decodes (metadata, arrays, audio, every "
                                   "JPEG); otherwise print each problem, naming the shard and the clip (or clips.idx), "
                                   "and exit 1.")
    v.add_argument("manifest", help="<out>/<split>/manifest.json (or the split directory); local or an http(s)/s3 URL")
    v.add_argument("--no-decode", action="store_true", help="check sizes and hashes only")

    d = sub.add_parser("demo", help="generate the embedded demo corpus in the source layout",
                       description="Write a small synthetic corpus (frames, wavs, Ego4D AV JSON, split lists).")
    d.add_argument("--out", type=Path, required=True, help="directory to write the corpus into")
    d.add_argument("--seconds", type=float, default=45.0, help="length of each video (default 45)")
    d.add_argument("--width", type=int, default=640)
    d.add_argument("--height", type=int, default=360)
    d.add_argument("--video", action="store_true",
                   help="also write each video as videos/<id>.mp4 (H.264 + AAC) and leave out video_imgs/ and wav/, "
                        "so 'shardgen build' decodes the files")

    pv = sub.add_parser("preview", help="draw a contact sheet of one clip: frames with face boxes, audio, label tracks",
                        description="Draw one clip (the first, or --clip KEY): ~10 frames with every person's face box "
                                    "and id, the waveform, a spectrogram and the visible / voice / speaking tracks on one "
                                    "time axis in source-video seconds. Needs matplotlib (pip install 'avshards[viz]').")
    pv.add_argument("source", help="a shard .tar, a manifest.json, a split directory, or an http(s)/s3 URL of one")
    pv.add_argument("--clip", default=None, metavar="KEY", help="clip key <video_id>/clip_fNNNNNN (default: the first clip)")
    pv.add_argument("-o", "--out", type=Path, required=True, help="image to write (.png; .jpg also works)")
    pv.add_argument("--frames", type=int, default=10, help="frames shown, spread evenly over the clip (default 10)")
    pv.add_argument("--width", type=int, default=1400, help="image width in pixels (default 1400)")

    w = sub.add_parser("view", help="browse a build and watch its clips in a browser: frames, audio, boxes, labels",
                       description="Serve a local web app over a build: splits, videos and clips (with filters for "
                                   "suspicious ones), and a player that shows a clip's frames at its fps in sync with its "
                                   "audio, each person's box coloured by their speaking label, and the label timelines. "
                                   "Reads through the clip index and byte ranges; writes nothing. s3:// credentials and "
                                   "endpoint come from the AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).")
    w.add_argument("source", help="a build directory, split directory, manifest.json or shards; local or an http(s)/s3 URL")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    w.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    w.add_argument("--verbose", action="store_true", help="log every request")

    r = sub.add_parser("report", help="per-split statistics, label balance, skips and face sizes as HTML or PNG",
                       description="Summarise built splits: clips, hours, shards and sizes, label balance, clips skipped "
                                   "by reason (from <out>/build-report.json) and the distribution of face box sizes. "
                                   "Needs matplotlib (pip install 'avshards[viz]').")
    r.add_argument("manifests", nargs="+", help="manifest.json files, split directories, or a build directory")
    r.add_argument("-o", "--out", type=Path, required=True, help="report.html (self-contained) or report.png")

    g = sub.add_parser("eval-gt", help="a split's face tracks as AVA-ActiveSpeaker ground truth (CSV)",
                       description="Write one row per frame of every face track of the split (the tracks asd-tracks "
                                   "yields): video_id, frame_timestamp, the box normalised by the frame size, "
                                   "SPEAKING_AUDIBLE or NOT_SPEAKING, entity_id <video_id>:<person_id>. A frame in "
                                   "several clips appears once. Local, http(s):// or s3:// builds.")
    g.add_argument("source", help="a manifest.json, a split directory, or a build directory (with --split); or a URL")
    g.add_argument("-o", "--out", type=Path, required=True, help="ground-truth CSV to write")
    g.add_argument("--split", default="val", help="split of a build directory (default val)")
    g.add_argument("--dialect", choices=DIALECTS, default="talknet",
                   help="talknet (default): a header row, as TalkNet-ASD writes and its copy of the evaluation reads; "
                        "activitynet: no header, as ActivityNet's official get_ava_active_speaker_performance.py "
                        "(header=None) and the AVA challenge take. eval-map reads either")
    e = sub.add_parser("eval-map", help="AVA-ActiveSpeaker frame mAP of predictions against eval-gt ground truth",
                       description="The official AVA-ActiveSpeaker evaluation (get_ava_active_speaker_performance.py): "
                                   "rows matched on frame_timestamp:entity_id, boxes equal within 1e-9, VOC-style "
                                   "average precision. Several prediction files (one per rank) are merged. Prints "
                                   "'mAP NN.NNNN' (percent).")
    e.add_argument("ground_truth", type=Path, help="CSV written by shardgen eval-gt")
    e.add_argument("predictions", type=Path, nargs="+", help="CSV(s) written by loaders.PredictionWriter "
                   "(with a header row or without: either dialect)")
    u = sub.add_parser("upgrade-manifest", help="convert an older build's manifest (clips inline) to manifest + clips.idx",
                       description="A manifest of schema_version 1 listed every clip inline; this avshards reads the "
                                   "clip rows from a clips.idx sidecar. Writes clips.idx, then the new manifest.json "
                                   "(the old one is kept as manifest.v1.json). The shards are not touched. Local only.")
    u.add_argument("split_dirs", type=Path, nargs="+", help="split directories (or their manifest.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"shardgen {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _build(args) -> int:
    params = BuildParams(
        clip_seconds=args.clip_seconds, stride_seconds=args.stride_seconds, fps=args.fps, tail=args.tail,
        min_clip_seconds=args.min_clip_seconds, audio_format=args.audio_format, shard_bytes=args.shard_bytes,
        shard_clips=args.shard_clips, derive=tuple(sorted(x for x in args.derive.split(",") if x)),
        originals=not args.no_originals, allow_unannotated=args.allow_unannotated,
        ava_time_offset=args.ava_time_offset, jpeg_quality=args.jpeg_quality, max_side=args.max_side,
    )
    splits = [s for s in args.split.split(",") if s]
    try:
        result = build(
            args.data, args.out, splits, params, workers=args.workers, annotation_files=args.annotations,
            strict=args.strict, overwrite=args.overwrite, progress=not args.no_progress,
            check_space=not args.no_space_check, executor=args.executor,
            executor_options={"address": args.address} if args.executor == "ray" else None,
            staging=args.staging, s3_options=_s3_options(args), videos_dir=args.videos, dry_run=args.dry_run,
        )
    except StrictError as exc:
        print(f"shardgen build: {exc}", file=sys.stderr)
        return EXIT_STRICT
    print(result.summary)
    if args.dry_run:
        return result.exit_code
    print("\nmanifests:")
    for split, path in result.manifests.items():
        print(f"  {split}: {path}")
    print(f"report: {args.out.rstrip('/')}/build-report.json")
    return result.exit_code


def _s3_options(args):
    if not str(args.out).startswith("s3://"):
        return None
    overrides = {k: v for k, v in (("endpoint_url", args.s3_endpoint), ("region", args.s3_region),
                                   ("profile", args.s3_profile), ("addressing_style", args.s3_addressing)) if v}
    return S3Options.from_env(**overrides)


def _inspect(args) -> int:
    print(inspect_path(args.path, max_clips=args.max_clips))
    return 0


def _verify(args) -> int:
    res = verify_manifest(args.manifest, decode=not args.no_decode)
    for p in res.problems:
        print(f"FAIL {p}")
    print(f"{'OK' if res.ok else 'FAILED'}: {res.shards} shards, {res.clips} clips decoded, {res.frames} frames, "
          f"{len(res.problems)} problem(s)")
    return 0 if res.ok else 1


def _demo(args) -> int:
    if args.video:
        root = make_demo_videos(args.out, seconds=args.seconds, width=args.width, height=args.height)
        print(f"demo corpus in {root}, as video files in {root / 'videos'}")
        return 0
    root = make_demo_corpus(args.out, seconds=args.seconds, width=args.width, height=args.height)
    print(f"demo corpus in {root}")
    return 0


def _preview(args) -> int:
    sheet = preview(args.source, args.out, key=args.clip, n_frames=args.frames, width=args.width)
    h, w = sheet.rgb.shape[:2]
    print(f"{sheet.key}: {len(sheet.layout.frame_indices)} frames, {sheet.layout.t0:.2f}-{sheet.layout.t1:.2f} s "
          f"→ {args.out} ({w}x{h})")
    return 0


def _view(args) -> int:
    def ready(url: str) -> None:
        print(f"shardgen view: {args.source} at {url}  (Ctrl-C to stop)", flush=True)

    try:
        serve_viewer(args.source, args.host, args.port, verbose=args.verbose, ready=ready)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a viewer stops: nothing was being written
    return 0


def _report(args) -> int:
    stats = write_report(args.manifests, args.out)
    print(f"{len(stats)} split(s): {', '.join(s.name for s in stats)} → {args.out}")
    return 0


def _eval_gt(args) -> int:
    rows, positives = write_ground_truth(args.source, args.out, split=args.split, dialect=args.dialect)
    print(f"{args.out}: {rows} face-track frames, {positives} speaking ({100.0 * positives / max(rows, 1):.1f} %)")
    return 0


def _eval_map(args) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateMetric)
        value = mean_ap(args.ground_truth, args.predictions)
    for w in caught:
        print(f"shardgen eval-map: warning: {w.message}", file=sys.stderr)
    print(f"mAP {value:.4f}")
    return 0


def _upgrade_manifest(args) -> int:
    for d in args.split_dirs:
        print(f"{upgrade_manifest(d)}: version 2, clip rows in {INDEX_NAME}")
    return 0


_COMMANDS = {"upgrade-manifest": _upgrade_manifest, "build": _build, "inspect": _inspect, "verify": _verify, "demo": _demo, "preview": _preview, "view": _view,
             "report": _report, "eval-gt": _eval_gt, "eval-map": _eval_map}

if __name__ == "__main__":
    sys.exit(main())
