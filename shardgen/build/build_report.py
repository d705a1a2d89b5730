"""The build report (``<out>/build-report.json``, also printed as a summary), and the exit status.

It accounts for every clip of every listed video: written, or skipped with a reason (counted by
:class:`~shardgen.build.skips.SkipCode`, listed with each message), plus findings (what may make
labels or timing wrong: :mod:`shardgen.build.findings`), warnings, dropped annotation entries and
FFmpeg's own log lines. Unlike the manifests it records timing, so it differs between runs.

The printed summary names every skipped video with its whole reason (wrapped, never cut) and
every finding, so a newcomer reads what went wrong without opening the JSON; ``--dry-run``
prints the same from the plan, before anything is written.

Exit status (the CLI returns it; :data:`EXIT_CODES`): 0 a clean build; 3 built, but with
skipped clips or videos (other than the tail policy's) or findings; 1 ``--strict`` refused such
a build before writing; 2 an error (a message naming the file and the problem); 130 interrupted.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from fractions import Fraction

from .findings import Finding
from .plan import BuildParams, ShardPlan, VideoPlan

EXIT_CLEAN = 0
EXIT_STRICT = 1
EXIT_ERROR = 2
EXIT_WITH_PROBLEMS = 3
EXIT_CODES = {
    EXIT_CLEAN: "built; nothing skipped (but the tail policy's), no findings",
    EXIT_STRICT: "--strict refused the build: something would be skipped, or a finding made (nothing written)",
    EXIT_ERROR: "error: the message names the file or flag and the problem (nothing half-written)",
    EXIT_WITH_PROBLEMS: "built, with skipped clips/videos or findings: read the summary (or build-report.json)",
    130: "interrupted: re-run the same command to resume",
}
#: videos listed one by one in the printed summary (every one is in build-report.json)
SUMMARY_VIDEOS = 50
SUMMARY_FINDINGS = 30
WIDTH = 100


def exit_status(videos: list[VideoPlan], findings: list[Finding]) -> int:
    """0 when nothing but the tail policy skipped anything and nothing was found, else 3."""
    problems = any(s.is_problem for v in videos for s in v.skips)
    return EXIT_WITH_PROBLEMS if problems or findings else EXIT_CLEAN


def plan_totals(shards: list[ShardPlan]) -> dict:
    """A split's totals as the plan has them (``--dry-run``): sizes are the planning estimates."""
    seconds = sum((sp.clips.seconds() for sp in shards), Fraction(0))
    return {"clips": sum(len(sp.clips) for sp in shards), "frames": sum(int(sp.clips.n_frames.sum()) for sp in shards),
            "hours": round(float(seconds) / 3600, 6), "bytes": sum(sp.planned_bytes for sp in shards),
            "shards": len(shards), "videos": len({v[1] for sp in shards for v in sp.clips.videos})}


def split_summary(split: str, listed: list[str], videos: list[VideoPlan], totals: dict | None, params: BuildParams,
                  findings: list[Finding] = ()) -> dict:
    """One split's row: ``totals`` from its manifest (or :func:`plan_totals` for a dry run)."""
    skips = [s for v in videos for s in v.skips]
    clip_skips = [s for s in skips if s.key is not None]
    written = totals or {"clips": 0, "frames": 0, "hours": 0.0, "bytes": 0, "shards": 0}
    return {
        "split": split,
        "videos_listed": len(listed),
        "videos_found": sum(v.found for v in videos),
        "videos_built": written.get("videos", 0),
        "videos_unannotated": sum(v.annotated is False for v in videos),
        "clips_written": written["clips"],
        "clips_skipped": len(clip_skips),
        "videos_skipped_whole": sum(1 for s in skips if s.key is None),
        "frames": written["frames"],
        "hours": written["hours"],
        "bytes": written["bytes"],
        "shards": written["shards"],
        "skip_reasons": {str(code): n for code, n in sorted(Counter(s.code for s in skips).items())},
        "findings": sum(f.split == split for f in findings),
    }


def make_report(summaries: list[dict], videos: list[VideoPlan], annotation_dropped: dict, params: BuildParams,
                findings: list[Finding] = (), exit_code: int = EXIT_CLEAN) -> dict:
    return {
        "params": params.to_json(),
        "exit_code": exit_code,
        "splits": summaries,
        "skipped": [s.to_json() for v in videos for s in v.skips],
        "findings": [f.to_json() for f in findings],
        "warnings": [f"{v.split}/{v.video_id}: {w}" for v in videos for w in v.warnings],
        "annotation_entries_dropped": annotation_dropped,
        "ffmpeg_log": {f"{v.split}/{v.video_id}": v.ffmpeg_log for v in videos if v.ffmpeg_log},
    }


def format_summary(report: dict, out: str, *, dry_run: bool = False) -> str:
    """The one-screen summary printed after a build (or instead of one, for ``--dry-run``)."""
    title = f"avshards build --dry-run → {out} (nothing written; sizes are estimates)" if dry_run else f"avshards build → {out}"
    lines = [title, ""]
    built = "would" if dry_run else "built"
    header = (f"{'split':<8}{'listed':>7}{'found':>7}{built:>7}{'clips':>8}{'skipped':>9}{'findings':>9}{'hours':>9}"
              f"{'shards':>8}{'size':>11}")
    lines.append(header)
    lines.append("-" * len(header))
    for s in report["splits"]:
        lines.append(f"{s['split']:<8}{s['videos_listed']:>7}{s['videos_found']:>7}{s['videos_built']:>7}"
                     f"{s['clips_written']:>8}{s['clips_skipped']:>9}{s.get('findings', 0):>9}{s['hours']:>9.3f}"
                     f"{s['shards']:>8}{_human(s['bytes']):>11}")
    reasons = Counter()
    for s in report["splits"]:
        reasons.update(s["skip_reasons"])
    if reasons:
        lines += ["", "skipped, by reason (clips, or whole videos where no clip could be planned):"]
        lines += [f"  {n:>5}  {r}" for r, n in sorted(reasons.items())]
    lines += _skipped_videos(report["skipped"])
    lines += _findings(report.get("findings", []))
    unannotated = sum(s.get("videos_unannotated", 0) for s in report["splits"])
    if unannotated:
        lines += ["", f"listed videos without annotations: {unannotated} (skipped, or built unlabelled with "
                      "--allow-unannotated)"]
    if report["warnings"]:
        lines += ["", "warnings:"] + [_wrap(w) for w in report["warnings"][:10]]
        if len(report["warnings"]) > 10:
            lines.append(f"  ... {len(report['warnings']) - 10} more in build-report.json")
    dropped = sum(sum(d.values()) for d in report["annotation_entries_dropped"].values())
    if dropped:
        lines += ["", f"annotation entries dropped: {dropped} (by reason in build-report.json)"]
    if report.get("ffmpeg_log"):
        lines += ["", f"FFmpeg logged {sum(len(v) for v in report['ffmpeg_log'].values())} line(s) about "
                      f"{len(report['ffmpeg_log'])} video(s): in build-report.json (ffmpeg_log)"]
    code = report.get("exit_code", EXIT_CLEAN)
    lines += ["", f"exit status {code}{' (what the build would give)' if dry_run else ''}: {EXIT_CODES[code]}"]
    return "\n".join(lines)


def _skipped_videos(skipped: list[dict]) -> list[str]:
    """Each video something was skipped from (the tail policy apart), with each whole reason, once."""
    by_video: dict[tuple[str, str], dict[str, list]] = {}
    for s in skipped:
        if s.get("policy"):
            continue
        reasons = by_video.setdefault((s["split"], s["video_id"]), {})
        reasons.setdefault(s["reason"], []).append(s)
    if not by_video:
        return []
    lines = ["", "skipped videos and why:"]
    for (split, vid), reasons in list(by_video.items())[:SUMMARY_VIDEOS]:
        for reason, rows in reasons.items():
            what = "whole video" if rows[0]["key"] is None else f"{len(rows)} clip(s)"
            lines.append(_wrap(f"{split}/{vid} ({what}): {reason}"))
    if len(by_video) > SUMMARY_VIDEOS:
        lines.append(f"  ... {len(by_video) - SUMMARY_VIDEOS} more videos in build-report.json (skipped)")
    return lines


def _findings(findings: list[dict]) -> list[str]:
    if not findings:
        return []
    lines = ["", f"findings ({len(findings)}: the build may carry wrong labels or timing; --strict refuses them):"]
    lines += [f"  {n:>5}  {code}" for code, n in sorted(Counter(f["code"] for f in findings).items())]
    lines += [_wrap(f"{f['split'] + '/' + f['video_id'] + ': ' if f['video_id'] else ''}{f['message']}")
              for f in findings[:SUMMARY_FINDINGS]]
    if len(findings) > SUMMARY_FINDINGS:
        lines.append(f"  ... {len(findings) - SUMMARY_FINDINGS} more in build-report.json (findings)")
    return lines


def _wrap(text: str) -> str:
    """A long line wrapped, indented, never cut (long paths stay whole)."""
    return "\n".join(textwrap.wrap(text, WIDTH, initial_indent="  ", subsequent_indent="      ",
                                   break_long_words=False, break_on_hyphens=False))


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)
