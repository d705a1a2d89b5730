"""The build: read the source, plan every clip and shard, write what is missing, then manifests.

Order of events for each split, each step finishing before the next:

1. read the split list and its annotations; probe every video (parallel) → clips and skips;
2. refuse early: ``--strict`` with any skip, too little disk space for the planned bytes, or an
   output directory that holds a build made with other parameters (unless ``--overwrite``);
3. cut clips into shards; a shard already on disk under its final name (from an interrupted
   run) is kept when its clips match the plan, so a re-run resumes where the last one stopped;
4. write the missing shards (atomically), then the manifest, then the build report.

Because step 3 is a pure function of the source and the parameters, an interrupted and
resumed build ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .annotations import find_annotation_files, load_annotations
from .clip import BuildContext
from .executors import get_executor
from ..core.clip_index import INDEX_NAME
from ..core.manifest import MANIFEST_NAME, encode_manifest
from .build_report import format_summary, make_report, split_summary
from .manifest_writer import WrittenShards, make_manifest
from .plan import BuildParams, ClipTable, ShardPlan, VideoPlan, assign_shards
from .source import SourceError, read_splits
from .output import SplitOutput, is_s3
from ..core.storage.atomic import remove_stale_temps

PARAMS_NAME = ".build-params.json"
REPORT_NAME = "build-report.json"


class BuildError(RuntimeError):
    """The build was refused or failed; the message says why and what to do."""


class StrictError(BuildError):
    """``--strict`` and at least one clip would be skipped (the CLI exits 1)."""


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
) -> BuildResult:
    """Build ``splits`` of the source at ``data_dir`` into ``out_dir`` (a directory or ``s3://bucket/prefix``).

    ``videos_dir`` (``--videos``): where ``<id>.<ext>`` video files are found for listed videos without
    a frame directory (default ``data_dir/videos``).
    """
    data_dir = Path(data_dir)
    remote = is_s3(out_dir)
    out_dir = str(out_dir) if remote else Path(out_dir)
    if not (data_dir / "split").is_dir():
        raise BuildError(f"{data_dir}: not a source directory (no split/ folder with <split>.list files)")
    if videos_dir is not None and not Path(videos_dir).is_dir():
        raise BuildError(f"{videos_dir}: --videos is not a directory")
    t0 = time.monotonic()
    if not remote:
        remove_stale_temps(out_dir)  # a build killed while writing its report leaves .build-report.json.tmp-<pid> here
    lists = read_splits(data_dir, splits)
    # FFmpeg's decoding threads share the cores with our worker processes: cores // workers each
    threads = max(1, (os.cpu_count() or 1) // max(1, workers)) if executor == "local" else 1
    contexts, dropped = _contexts(data_dir, splits, lists, params, annotation_files, videos_dir, threads)
    ex = get_executor(executor, workers, **(executor_options or {}))
    videos, plans = _plan(ex, contexts, splits, lists, params, strict)
    outputs = {split: SplitOutput(out_dir, split, staging=staging, s3_options=s3_options) for split in splits}
    todo, done = _resume(outputs, splits, plans, params, overwrite)
    if check_space and todo:
        _preflight(todo, out_dir, remote, workers)
    written = _write(ex, contexts, todo, done, progress)
    manifests, summaries = _publish_manifests(outputs, splits, lists, videos, plans, done, params)
    report = make_report(summaries, videos, dropped, params)
    report["timing"] = {"seconds": round(time.monotonic() - t0, 3), "write_seconds": round(written.seconds, 3),
                        "clips_written_now": written.clips, "bytes_written_now": written.bytes,
                        "executor": ex.name, "workers": workers}
    outputs[splits[0]].store.put_bytes((json.dumps(report, indent=1) + "\n").encode(), REPORT_NAME)
    return BuildResult(report, format_summary(report, str(out_dir)), manifests, exit_code=0)


def _contexts(data_dir: Path, splits: list[str], lists: dict[str, list[str]], params: BuildParams,
              annotation_files: list[Path] | None, videos_dir: Path | None,
              threads: int) -> tuple[dict[str, BuildContext], dict[str, dict]]:
    """Each split's build context (its annotations loaded; ``threads``: FFmpeg's decoding threads for
    video files), and the annotation entries dropped per video."""
    contexts: dict[str, BuildContext] = {}
    dropped: dict[str, dict] = {}
    for split in splits:
        files = list(annotation_files) if annotation_files else find_annotation_files(data_dir, split)
        anns = load_annotations(files, params.fps, ava_time_offset=params.ava_time_offset) if files else None
        if anns is not None:
            for vid in lists[split]:
                if vid in anns and anns[vid].dropped:
                    dropped[f"{split}/{vid}"] = dict(sorted(anns[vid].dropped.items()))
        contexts[split] = BuildContext(data_dir, params, anns, Path(videos_dir) if videos_dir else None, threads)
    return contexts, dropped


def _plan(ex, contexts: dict[str, BuildContext], splits: list[str], lists: dict[str, list[str]], params: BuildParams,
          strict: bool) -> tuple[list[VideoPlan], dict[str, list[ShardPlan]]]:
    """Probe every video (in parallel), refuse a ``--strict`` build with skips, cut each split into shards."""
    videos: list[VideoPlan] = ex.probe(contexts, [(split, vid) for split in splits for vid in sorted(lists[split])])
    skips = [s for v in videos for s in v.skips]
    if strict and skips:
        lines = "\n".join(f"  {s.split}/{s.key or s.video_id}: {s.reason.message}" for s in skips[:50])
        raise StrictError(f"--strict: {len(skips)} clip(s)/video(s) would be skipped:\n{lines}")
    problems = [f"  {v.split}/{v.video_id}: {p}" for v in videos for p in v.strict_problems]
    if strict and problems:
        raise StrictError(f"--strict: {len(problems)} video(s) would be built with zero audio:\n" + "\n".join(problems[:50]))
    plans = {split: assign_shards(split, ClipTable.concat([v.clips for v in videos if v.split == split]),
                                  params.shard_bytes, params.shard_clips) for split in splits}
    return videos, plans


def _resume(outputs: dict[str, SplitOutput], splits: list[str], plans: dict[str, list[ShardPlan]], params: BuildParams,
            overwrite: bool) -> tuple[list[tuple[ShardPlan, SplitOutput]], dict[str, WrittenShards]]:
    """What still needs writing, and the finished shards an earlier run left that match the plan."""
    todo: list[tuple[ShardPlan, SplitOutput]] = []
    done: dict[str, WrittenShards] = {}
    for split in splits:
        todo_split, done[split] = _prepare_split(outputs[split], split, params, plans[split], overwrite)
        todo += [(sp, outputs[split]) for sp in todo_split]
    return todo, done


def _preflight(todo: list[tuple[ShardPlan, SplitOutput]], out_dir, remote: bool, workers: int) -> None:
    """Refuse before writing anything when the planned shards will not fit."""
    if remote:  # staging holds at most one shard per worker at a time
        _check_space(todo[0][1].local_dir, max(sp.planned_bytes for sp, _ in todo) * max(1, workers))
    else:
        _check_space(out_dir, sum(sp.planned_bytes for sp, _ in todo))


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
                       params: BuildParams) -> tuple[dict[str, str | Path], list[dict]]:
    """Each split's manifest, written last (it makes the split visible), and its summary for the report."""
    manifests: dict[str, str | Path] = {}
    summaries = []
    for split in splits:
        manifest, index_bytes = make_manifest(split, params, plans[split], done[split])
        outputs[split].write(INDEX_NAME, index_bytes)  # before the manifest that names it (S3 too)
        outputs[split].write(MANIFEST_NAME, encode_manifest(manifest))
        manifests[split] = outputs[split].url(MANIFEST_NAME)
        summaries.append(split_summary(split, lists[split], [v for v in videos if v.split == split], manifest, params))
    return manifests, summaries


def _prepare_split(output: SplitOutput, split: str, params: BuildParams, shards: list[ShardPlan], overwrite: bool):
    """Decide which shards still need writing; keep finished ones that match the plan."""
    output.clean_temps()
    params_bytes = (json.dumps(params.to_json(), sort_keys=True, indent=1) + "\n").encode()
    previous = output.read(PARAMS_NAME)
    existing = output.shard_names()
    if (previous is not None and previous != params_bytes) or (existing and previous is None):
        if not overwrite:
            raise BuildError(
                f"{output.url('')} holds shards built with other parameters (see {PARAMS_NAME}); "
                "pass --overwrite to replace them, or choose another --out"
            )
    if overwrite:
        for name in existing:
            output.remove_shard(name)
        existing = []
    output.remove(MANIFEST_NAME)  # rewritten last, after every shard exists
    output.remove(INDEX_NAME)
    output.write(PARAMS_NAME, params_bytes)
    planned = {sp.name for sp in shards}
    for name in existing:
        if name not in planned:
            output.remove_shard(name)  # numbered past this plan's end: left by a build of a larger source
    todo, kept = [], WrittenShards()
    for sp in shards:
        res = output.finished(sp.name, sp.source_digest) if sp.name in existing else None
        if res is not None and [r.key for r in res.clips] == sp.clips.keys():
            kept.add(sp, res)
            continue
        if sp.name in existing:
            output.remove_shard(sp.name)
        todo.append(sp)
    return todo, kept


def _check_space(out_dir: Path, planned: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir).free
    need = int(planned * 1.02) + (64 << 20)
    if free < need:
        raise BuildError(
            f"not enough disk space in {out_dir}: the plan needs about {need / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free (free space, choose another --out, or pass --no-space-check)"
        )


def _progress_bar(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    return tqdm(total=total, unit="clip", desc="writing", dynamic_ncols=True)


__all__ = ["build", "BuildParams", "BuildError", "StrictError", "SourceError"]
