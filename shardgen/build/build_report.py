"""The build report (``<out>/build-report.json``, also printed as a summary).

It accounts for every clip of every listed video: written, or skipped with a reason (counted by
:class:`~shardgen.build.skips.SkipCode`, listed with each message), plus warnings and dropped
annotation entries. Unlike the manifests it records timing, so it differs between runs.
"""

from __future__ import annotations

from collections import Counter

from .plan import BuildParams, VideoPlan


def split_summary(split: str, listed: list[str], videos: list[VideoPlan], manifest: dict | None, params: BuildParams) -> dict:
    skips = [s for v in videos for s in v.skips]
    clip_skips = [s for s in skips if s.key is not None]
    written = manifest["totals"] if manifest else {"clips": 0, "frames": 0, "hours": 0.0, "bytes": 0, "shards": 0}
    return {
        "split": split,
        "videos_listed": len(listed),
        "videos_found": sum(v.found for v in videos),
        "videos_built": written.get("videos", 0),
        "clips_written": written["clips"],
        "clips_skipped": len(clip_skips),
        "videos_skipped_whole": sum(1 for s in skips if s.key is None),
        "frames": written["frames"],
        "hours": written["hours"],
        "bytes": written["bytes"],
        "shards": written["shards"],
        "skip_reasons": {str(code): n for code, n in sorted(Counter(s.code for s in skips).items())},
    }


def make_report(summaries: list[dict], videos: list[VideoPlan], annotation_dropped: dict, params: BuildParams) -> dict:
    return {
        "params": params.to_json(),
        "splits": summaries,
        "skipped": [s.to_json() for v in videos for s in v.skips],
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

