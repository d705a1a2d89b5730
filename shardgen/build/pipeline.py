"""The build: read the source, plan every clip and shard, check, then write what is missing and the manifests.

Order of events, each step finishing before the next:

1. read the split lists and their annotations (with ``--fps native``, each video file's rate
   first: the annotations' times become frames at it); plan every video (parallel) → clips,
   skips and findings (:mod:`shardgen.build.probe`, :mod:`shardgen.build.findings`);
2. refuse, before anything is written (:mod:`shardgen.build.prechecks`): ``--strict`` with any
   skip or finding, an output directory that holds a build made with other parameters (unless
   ``--overwrite``), too little disk space for the planned bytes. A refused build leaves the
   output as it found it. ``--dry-run`` stops here and prints what would be built;
3. cut clips into shards; a shard already on disk under its final name (from an interrupted
   run) is kept when its clips and sources match the plan, so a re-run resumes where the last
   one stopped;
4. write the missing shards (atomically), then the manifest, then the build report.

Because step 3 is a pure function of the source and the parameters, an interrupted and
resumed build ends byte-identical to an uninterrupted one. The exit status (0 clean, 3 built
with skips or findings, 1 refused by ``--strict``) is :mod:`shardgen.build.build_report`'s.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from tqdm import tqdm

from .annotations import find_annotation_files, load_annotation_files
from .clip import BuildContext
from .errors import BuildError, StrictError
from .executors import get_executor
from ..core.clip_index import INDEX_NAME
from ..core.manifest import MANIFEST_NAME, encode_manifest
from ..core.sources import BUILD_REPORT
from .build_report import EXIT_STRICT, exit_status, format_summary, make_report, plan_totals, split_summary
from .findings import Finding, unlisted_annotations
from .manifest_writer import WrittenShards, make_manifest
from .plan import BuildParams, ClipTable, ShardPlan, VideoPlan, assign_shards
from .prechecks import PARAMS_NAME, apply_survey, preflight, survey_split
from .source import SourceError, read_split_list, read_splits
from .output import SplitOutput, is_s3
from ..core.storage.atomic import remove_stale_temps
from .probe import video_files
from .video import stream_rate


@dataclass
class BuildResult:
    report: dict
    summary: str
    manifests: dict[str, Path]
    exit_code: int


def build(
    data_dir: Path,
    out_dir: Path,
    splits: list[str],
    params: BuildParams,
    *,
    workers: int = 1,
    annotation_files: list[Path] | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    check_space: bool = True,
    executor: str = "local",
    executor_options: dict | None = None,
    staging: Path | None = None,
    s3_options=None,
    videos_dir: Path | None = None,
    dry_run: bool = False,
) -> BuildResult:
    """Build ``splits`` of the source at ``data_dir`` into ``out_dir`` (a directory or ``s3://bucket/prefix``).

    ``videos_dir`` (``--videos``): where ``<id>.<ext>`` video files are found for listed videos without
    a frame directory (default ``data_dir/videos``). ``dry_run``: read, plan and check everything the
    build would, write nothing, and return what would be built (``manifests`` empty).
    """
    data_dir = Path(data_dir)
    remote = is_s3(out_dir)
    out_dir = str(out_dir) if remote else Path(out_dir)
    if not (data_dir / "split").is_dir():
        raise BuildError(f"{data_dir}: not a source directory (no split/ folder with <split>.list files)")
    if videos_dir is not None and not Path(videos_dir).is_dir():
        raise BuildError(f"{videos_dir}: --videos is not a directory")
    t0 = time.monotonic()
    lists = read_splits(data_dir, splits)
    rates = _native_rates(data_dir, lists, videos_dir) if params.native else None
    # FFmpeg's decoding threads share the cores with our worker processes: cores // workers each
    threads = max(1, (os.cpu_count() or 1) // max(1, workers)) if executor == "local" else 1
    contexts, dropped, file_findings = _contexts(data_dir, splits, lists, params, annotation_files, videos_dir,
                                                 threads, rates)
    ex = get_executor(executor, workers, **(executor_options or {}))
    videos, plans = _plan(ex, contexts, splits, lists, params)
    findings = [f for v in videos for f in v.findings] + file_findings
    refusal = _strict_refusal(videos, findings) if strict else None
    if refusal and not dry_run:
        raise StrictError(refusal)
    # ---- every check that can refuse the build, reading the output only
    outputs = {split: SplitOutput(out_dir, split, staging=staging, s3_options=s3_options, create=False)
               for split in splits}
    surveys = {split: survey_split(outputs[split], params, plans[split], overwrite) for split in splits}
    todo = [(sp, outputs[split]) for split in splits for sp in surveys[split].todo]
    if check_space and todo:
        preflight(todo, out_dir, remote, workers)
    code = EXIT_STRICT if refusal else exit_status(videos, findings)
    if dry_run:
        return _dry_run_result(out_dir, splits, lists, videos, plans, params, dropped, findings, code,
                               len(todo), sum(len(s.kept) for s in surveys.values()), refusal)
    # ---- the first write
    if not remote:
        remove_stale_temps(out_dir)  # a build killed while writing its report leaves .build-report.json.tmp-<pid> here
    done = {split: apply_survey(surveys[split]) for split in splits}
    written = _write(ex, contexts, todo, done, progress)
    manifests, summaries = _publish_manifests(outputs, splits, lists, videos, plans, done, params, findings)
    report = make_report(summaries, videos, dropped, params, findings, code)
    report["timing"] = {"seconds": round(time.monotonic() - t0, 3), "write_seconds": round(written.seconds, 3),
                        "clips_written_now": written.clips, "bytes_written_now": written.bytes,
                        "executor": ex.name, "workers": workers}
    outputs[splits[0]].store.put_bytes((json.dumps(report, indent=1) + "\n").encode(), BUILD_REPORT)
    return BuildResult(report, format_summary(report, str(out_dir)), manifests, exit_code=code)


def _dry_run_result(out_dir, splits: list[str], lists: dict[str, list[str]], videos: list[VideoPlan],
                    plans: dict[str, list[ShardPlan]], params: BuildParams, dropped: dict, findings: list[Finding],
                    code: int, to_write: int, kept: int, refusal: str | None) -> BuildResult:
    """What ``--dry-run`` reports: each split's totals as planned (sizes estimated), skips, findings, and
    how many shards a build would write or keep; no manifests."""
    summaries = [split_summary(split, lists[split], [v for v in videos if v.split == split],
                               plan_totals(plans[split]), findings) for split in splits]
    report = make_report(summaries, videos, dropped, params, findings, code)
    report["dry_run"] = {"shards_to_write": to_write, "shards_kept": kept, "strict_refusal": refusal}
    summary = format_summary(report, str(out_dir), dry_run=True) + (f"\n\n{refusal}" if refusal else "")
    return BuildResult(report, summary, {}, exit_code=code)


def _native_rates(data_dir: Path, lists: dict[str, list[str]], videos_dir: Path | None) -> dict[str, Fraction]:
    """``--fps native``: each listed video file's frame rate, as its container states it (read once, here:
    its annotations' times become frames at this rate, and its clips are cut at it)."""
    rates: dict[str, Fraction] = {}
    for ids in lists.values():
        for vid in ids:
            files = [] if (data_dir / "video_imgs" / vid).is_dir() else video_files(data_dir, vid, videos_dir)[1]
            rate = stream_rate(files[0]) if len(files) == 1 else None  # else the planner says why it is skipped
            if rate is not None:
                rates[vid] = rate
    return rates


def _contexts(data_dir: Path, splits: list[str], lists: dict[str, list[str]], params: BuildParams,
              annotation_files: list[Path] | None, videos_dir: Path | None, threads: int,
              rates: dict[str, Fraction] | None) -> tuple[dict[str, BuildContext], dict[str, dict], list[Finding]]:
    """Each split's build context (its annotations loaded; ``threads``: FFmpeg's decoding threads for
    video files), the annotation entries dropped per video, and the findings about the annotation
    files themselves (unknown top-level keys and columns, annotations no split list names)."""
    contexts: dict[str, BuildContext] = {}
    dropped: dict[str, dict] = {}
    findings: dict[str, Finding] = {}  # by message: a file several splits read is reported once
    listed, named = _all_listed(data_dir, lists)
    # times in the annotations become frames at the build's rate (--fps native: each video's own; 30 where a
    # video states none — it is skipped for that, so the number is never used)
    fps = params.frame_rate if rates is None else (lambda vid: rates.get(vid, Fraction(30)))
    for split in splits:
        files = list(annotation_files) if annotation_files else find_annotation_files(data_dir, split)
        anns, file_findings = (load_annotation_files(files, fps, ava_time_offset=params.ava_time_offset) if files
                               else (None, []))
        if anns is not None:
            for vid in lists[split]:
                if vid in anns and anns[vid].dropped:
                    dropped[f"{split}/{vid}"] = dict(sorted(anns[vid].dropped.items()))
            file_findings = file_findings + unlisted_annotations(anns, listed, named)
        for f in file_findings:
            findings.setdefault(f.message, f)
        contexts[split] = BuildContext(data_dir, params, anns, Path(videos_dir) if videos_dir else None, threads,
                                       native_rates=rates)
    return contexts, dropped, list(findings.values())


def _all_listed(data_dir: Path, lists: dict[str, list[str]]) -> tuple[set[str], str]:
    """Every video id any split list names (the built splits' and the others under split/), and the lists' names:
    an annotation for none of them is a finding (a combined annotation file also covers splits not built now)."""
    ids = {vid for v in lists.values() for vid in v}
    names = [f"split/{s}.list" for s in lists]
    for path in sorted((data_dir / "split").glob("*.list")):
        if path.stem in lists:
            continue
        try:
            ids.update(read_split_list(path))
        except SourceError:
            continue  # not built now: its problems are the build of that split's to report
        names.append(f"split/{path.name}")
    return ids, ", ".join(names)


def _plan(ex, contexts: dict[str, BuildContext], splits: list[str], lists: dict[str, list[str]],
          params: BuildParams) -> tuple[list[VideoPlan], dict[str, list[ShardPlan]]]:
    """Probe every video (in parallel) and cut each split into shards."""
    videos: list[VideoPlan] = ex.probe(contexts, [(split, vid) for split in splits for vid in sorted(lists[split])])
    plans = {split: assign_shards(split, ClipTable.concat([v.clips for v in videos if v.split == split]),
                                  params.shard_bytes, params.shard_clips) for split in splits}
    return videos, plans


def _strict_refusal(videos: list[VideoPlan], findings: list[Finding]) -> str | None:
    """Why ``--strict`` refuses this build (None: it does not): every skip, zero-audio video and finding."""
    parts = []
    skips = [s for v in videos for s in v.skips]
    if skips:
        lines = "\n".join(f"  {s.split}/{s.key or s.video_id}: {s.reason.message}" for s in skips[:50])
        parts.append(f"--strict: {len(skips)} clip(s)/video(s) would be skipped:\n{lines}")
    problems = [f"  {v.split}/{v.video_id}: {p}" for v in videos for p in v.strict_problems]
    if problems:
        parts.append(f"--strict: {len(problems)} video(s) would be built with zero audio:\n" + "\n".join(problems[:50]))
    if findings:
        lines = "\n".join(f"  {f.split + '/' + f.video_id + ': ' if f.video_id else ''}{f.message}" for f in findings[:50])
        parts.append(f"--strict: {len(findings)} finding(s) (labels or timing may be wrong):\n{lines}")
    return "\n".join(parts) or None


@dataclass
class _Written:
    clips: int = 0
    bytes: int = 0
    seconds: float = 0.0


def _write(ex, contexts: dict[str, BuildContext], todo: list[tuple[ShardPlan, SplitOutput]],
           done: dict[str, WrittenShards], progress: bool) -> _Written:
    """Write the missing shards (with a clips/s and MB/s bar), reducing each shard's result into ``done`` the
    moment the executor hands it over: the driver holds one shard's per-clip records at a time, never all."""
    written = _Written(clips=sum(len(sp.clips) for sp, _ in todo))
    bar = _progress_bar(written.clips, progress)
    t_write = time.monotonic()
    try:
        with closing(ex.write(contexts, todo)) as results:  # closed early on an error: the executor stops its workers
            for shard, res in results:
                done[shard.split].add(shard, res)
                written.bytes += res.bytes
                if bar is not None:
                    bar.update(len(shard.clips))
                    elapsed = max(bar.format_dict.get("elapsed", 0) or 1e-9, 1e-9)
                    bar.set_postfix_str(f"{written.bytes / 1e6 / elapsed:.1f} MB/s", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    written.seconds = time.monotonic() - t_write
    return written


def _publish_manifests(outputs: dict[str, SplitOutput], splits: list[str], lists: dict[str, list[str]],
                       videos: list[VideoPlan], plans: dict[str, list[ShardPlan]], done: dict[str, WrittenShards],
                       params: BuildParams, findings: list[Finding]) -> tuple[dict[str, str | Path], list[dict]]:
    """Each split's manifest, written last (it makes the split visible), and its summary for the report."""
    manifests: dict[str, str | Path] = {}
    summaries = []
    for split in splits:
        manifest, index_bytes = make_manifest(split, params, plans[split], done[split])
        outputs[split].write(INDEX_NAME, index_bytes)  # before the manifest that names it (S3 too)
        outputs[split].write(MANIFEST_NAME, encode_manifest(manifest))
        manifests[split] = outputs[split].url(MANIFEST_NAME)
        summaries.append(split_summary(split, lists[split], [v for v in videos if v.split == split], manifest["totals"],
                                       findings))
    return manifests, summaries


def _progress_bar(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    return tqdm(total=total, unit="clip", desc="writing", dynamic_ncols=True)


__all__ = ["build", "BuildParams", "BuildError", "StrictError", "SourceError", "BuildResult", "PARAMS_NAME"]
