"""Per-split manifests and the build report.

The manifest (``<out>/<split>/manifest.json``) is what a loader and ``shardgen verify`` read:
the byte-affecting build parameters, every shard with size and sha256, every clip with its
shard and byte offset, and totals. It holds nothing that varies between identical builds (no
time stamps, paths or worker counts), so identical input gives an identical manifest.

The build report (``<out>/build-report.json``, also printed) accounts for every clip of every
listed video: written, or skipped with a reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

from . import format as fmt
from .plan import BuildParams, ShardPlan, VideoPlan
from .writer import ShardResult

MANIFEST_SCHEMA = "avshards/manifest"
MANIFEST_NAME = "manifest.json"


def make_manifest(split: str, params: BuildParams, shards: list[ShardPlan], results: list[ShardResult]) -> dict:
    by_name = {r.name: r for r in results}
    shard_rows, clip_rows = [], []
    total_frames = 0
    for shard in shards:
        res = by_name[shard.name]
        if [c.key for c in shard.clips] != [r.key for r in res.clips]:
            raise RuntimeError(f"{shard.name}: written clips differ from the plan")
        frames = sum(c.n_frames for c in shard.clips)
        total_frames += frames
        shard_rows.append({"name": shard.name, "bytes": res.bytes, "sha256": res.sha256,
                           "clips": len(shard.clips), "frames": frames})
        for plan, rec in zip(shard.clips, res.clips):
            clip_rows.append({"key": plan.key, "shard": shard.index, "offset": rec.offset, "bytes": rec.bytes,
                              "sha256": rec.sha256, "members": rec.members, "video_id": plan.video_id, "start_frame": plan.start,
                              "n_frames": plan.n_frames, "pad_frames": plan.pad,
                              "tracks": rec.info.get("tracks", [])})
    seconds = Fraction(total_frames) / fmt.fps_fraction(params.fps)
    return {
        "schema": MANIFEST_SCHEMA,
        "schema_version": fmt.SCHEMA_VERSION,
        "split": split,
        "params": params.to_json(),
        "totals": {
            "shards": len(shard_rows), "clips": len(clip_rows), "frames": total_frames,
            "hours": round(float(seconds) / 3600, 6), "bytes": sum(s["bytes"] for s in shard_rows),
            "videos": len({c["video_id"] for c in clip_rows}),
        },
        "shards": shard_rows,
        "clips": clip_rows,
    }


def encode_manifest(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode()


def load_manifest(path: Path | str, data: bytes | None = None) -> dict:
    """Read and check a manifest (bytes may be given when it came over the network)."""
    raw = data if data is not None else Path(path).read_bytes()
    try:
        m = json.loads(raw)
    except Exception as exc:
        raise ValueError(f"{path}: manifest is not JSON ({exc})") from None
    if not isinstance(m, dict) or m.get("schema") != MANIFEST_SCHEMA:
        raise ValueError(f"{path}: not an {MANIFEST_SCHEMA} file")
    if m.get("schema_version") != fmt.SCHEMA_VERSION:
        raise ValueError(f"{path}: manifest schema_version {m.get('schema_version')!r} is not supported")
    return m


def split_summary(split: str, listed: list[str], videos: list[VideoPlan], manifest: dict | None, params: BuildParams) -> dict:
    skips = [s for v in videos for s in v.skips]
    clip_skips = [s for s in skips if s.key is not None]
    written = manifest["totals"] if manifest else {"clips": 0, "frames": 0, "hours": 0.0, "bytes": 0, "shards": 0}
    built = {c["video_id"] for c in manifest["clips"]} if manifest else set()
    return {
        "split": split,
        "videos_listed": len(listed),
        "videos_found": sum(v.found for v in videos),
        "videos_built": len(built),
        "clips_written": written["clips"],
        "clips_skipped": len(clip_skips),
        "videos_skipped_whole": sum(1 for s in skips if s.key is None),
        "frames": written["frames"],
        "hours": written["hours"],
        "bytes": written["bytes"],
        "shards": written["shards"],
        "skip_reasons": dict(sorted(Counter(_reason_class(s.reason) for s in skips).items())),
    }


def _reason_class(reason: str) -> str:
    """Group reasons for the summary ('missing frame img_00012.jpg' → 'missing frame')."""
    for prefix in ("missing frame", "zero-byte frame", "truncated JPEG", "not a JPEG", "unreadable frame",
                   "missing wav", "unreadable wav", "empty wav", "tail of", "no annotations", "frames directory",
                   "no img_", "ambiguous video source"):
        if reason.startswith(prefix):
            return prefix
    for marker, cls in ((" is damaged at ", "video file damaged"), (": no video stream", "video file without a video stream"),
                        (": unreadable video file", "unreadable video file"), (": no decodable video frames", "video file without frames")):
        if marker in reason:  # video-file reasons start with the file's name
            return cls
    return reason


def make_report(summaries: list[dict], videos: list[VideoPlan], annotation_dropped: dict, params: BuildParams) -> dict:
    return {
        "params": params.to_json(),
        "splits": summaries,
        "skipped": [asdict(s) for v in videos for s in v.skips],
        "warnings": [f"{v.split}/{v.video_id}: {w}" for v in videos for w in v.warnings],
        "annotation_entries_dropped": annotation_dropped,
    }


def format_summary(report: dict, out: str) -> str:
    """The one-screen summary printed after a build."""
    lines = [f"avshards build → {out}", ""]
    header = f"{'split':<8}{'listed':>7}{'found':>7}{'built':>7}{'clips':>8}{'skipped':>9}{'hours':>9}{'shards':>8}{'size':>11}"
    lines.append(header)
    lines.append("-" * len(header))
    for s in report["splits"]:
        lines.append(f"{s['split']:<8}{s['videos_listed']:>7}{s['videos_found']:>7}{s['videos_built']:>7}"
                     f"{s['clips_written']:>8}{s['clips_skipped']:>9}{s['hours']:>9.3f}{s['shards']:>8}"
                     f"{_human(s['bytes']):>11}")
    reasons = Counter()
    for s in report["splits"]:
        reasons.update(s["skip_reasons"])
    if reasons:
        lines += ["", "skipped (clips, or whole videos where no clip could be planned):"]
        lines += [f"  {n:>5}  {r}" for r, n in sorted(reasons.items())]
    if report["warnings"]:
        lines += ["", "warnings:"] + [f"  {w}" for w in report["warnings"][:10]]
        if len(report["warnings"]) > 10:
            lines.append(f"  ... {len(report['warnings']) - 10} more in build-report.json")
    dropped = sum(sum(d.values()) for d in report["annotation_entries_dropped"].values())
    if dropped:
        lines += ["", f"annotation entries dropped: {dropped} (by reason in build-report.json)"]
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)

