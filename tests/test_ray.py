"""The Ray executor: same bytes as the local executor, retries after a killed worker, clean errors.

One local Ray runtime (2 CPUs, ~0.7 GB, a few seconds to start) serves the whole test session:
it is started on first use and shut down when this file's tests are done — the only users — so
that no later test forks a process that holds Ray's threads. Every test that needs Ray
skips, naming the reason, when ``ray`` is not importable (``pip install '.[ray]'``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shardgen.build.pipeline import build
from shardgen.build.clip import BuildContext
from shardgen.build.output import SplitOutput
from shardgen.build.plan import BuildParams, assign_shards
from shardgen.build.source import SourceError
from shardgen.core.storage.atomic import TMP_MARK
from tests.sources import index_clips, write_source
from tests.videos import video_source

ROOT = Path(__file__).resolve().parents[1]


def _have_ray() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


HAVE_RAY = _have_ray()
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed: pip install '.[ray]' to run the Ray executor tests")

SPLITS = ["train", "val"]
PARAMS = BuildParams(clip_seconds=2.0, shard_clips=2)  # 6 s videos → 3 clips each, 2 clips a shard


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """The session's one local Ray runtime (2 CPUs); yields the crash-marker folder (see ``tests.ray_faults``,
    installed in every worker of this runtime's job).

    Module scope: every Ray test lives in this file, so it starts once per session either way;
    move it to conftest.py with scope="session" if other files come to need Ray.
    """
    if not HAVE_RAY:
        pytest.skip("ray is not installed: pip install '.[ray]' to run the Ray executor tests")
    import ray

    from tests.ray_faults import CRASH_ENV

    crash_dir = tmp_path_factory.mktemp("ray-crash")
    with pytest.MonkeyPatch.context() as mp:
        # set before the runtime starts: its worker processes inherit the environment
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv(CRASH_ENV, str(crash_dir))
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))  # tests.ray_faults
        started = not ray.is_initialized()
        if started:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                     runtime_env={"worker_process_setup_hook": "tests.ray_faults.install"})
        try:
            yield crash_dir
        finally:
            if started:
                ray.shutdown()


@pytest.fixture(scope="session")
def demo_source(tmp_path_factory) -> Path:
    from shardgen.demo.corpus import make_demo_corpus

    return make_demo_corpus(tmp_path_factory.mktemp("demo"), seconds=6, width=320, height=180)


@pytest.fixture(scope="session")
def local_build(demo_source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    build(demo_source, out, SPLITS, PARAMS, workers=1, progress=False)
    return out


def split_files(out: Path) -> dict[str, bytes]:
    """Every file of every split directory (shards, clip index, manifest, params), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for s in SPLITS for p in sorted((out / s).rglob("*")) if p.is_file()}


def temps(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if TMP_MARK in p.name]


def report_without_timing(out: Path) -> dict:
    r = json.loads((out / "build-report.json").read_text())
    timing = r.pop("timing")
    return r, timing


@needs_ray
@pytest.mark.parametrize("workers", [2, 1])
def test_ray_build_is_byte_identical_to_local(ray_session, demo_source, local_build, tmp_path, workers):
    import ray

    out = tmp_path / "ray"
    build(demo_source, out, SPLITS, PARAMS, workers=workers, executor="ray", progress=False)
    ref = split_files(local_build)
    assert sum(n.endswith(".tar") for n in ref) >= 6 and any(n.endswith("manifest.json") for n in ref)
    assert {f"{s}/clips.idx" for s in SPLITS} <= set(ref)  # the clip index too, byte for byte
    got = split_files(out)
    assert sorted(got) == sorted(ref)
    for name in ref:
        assert got[name] == ref[name], name
    (r_ray, t_ray), (r_loc, _) = report_without_timing(out), report_without_timing(local_build)
    assert r_ray == r_loc and t_ray["executor"] == "ray" and t_ray["workers"] == workers
    assert not temps(out)
    assert ray.is_initialized()  # a runtime the caller started is reused, never shut down


@needs_ray
def test_killed_worker_is_retried_without_losing_or_duplicating_clips(ray_session, demo_source, local_build, tmp_path):
    crash_dir = ray_session
    victim = "train-000001.tar"
    (crash_dir / victim).write_text("kill the first attempt")
    out = tmp_path / "ray"
    build(demo_source, out, SPLITS, PARAMS, workers=2, executor="ray", progress=False)

    assert not (crash_dir / victim).exists(), "no task claimed the crash marker"
    left = (crash_dir / f"{victim}.crashed").read_text().split()
    assert left and all(n.startswith(f".{victim}{TMP_MARK}") for n in left)  # it died with its temp file open
    assert not temps(out)  # … which is gone now
    assert split_files(out) == split_files(local_build)
    keys = [c["key"] for c in index_clips(out / "train")]
    assert len(keys) == len(set(keys)) == 9  # 3 train videos × 3 clips, each exactly once


@needs_ray
def test_task_error_reaches_the_caller_unwrapped(ray_session, tmp_path):
    from shardgen.build.executors.ray import RayExecutor

    src = write_source(tmp_path / "s", {"v": 60})
    ctx = {"train": BuildContext(src, BuildParams(clip_seconds=1.0, allow_unannotated=True), None)}
    ex = RayExecutor(2)
    [video] = ex.probe(ctx, [("train", "v")])
    shards = assign_shards("train", video.clips, 10**9, 1)
    assert len(shards) == 2
    frame = src / "video_imgs" / "v" / "img_00045.jpg"
    frame.write_bytes(frame.read_bytes() + b"\0")  # the source changes between planning and writing
    target = SplitOutput(tmp_path / "o", "train")
    with pytest.raises(SourceError, match=r"video_imgs/v: frames img_00031\.jpg\.\.img_00060\.jpg changed size since "
                                          r"they were planned"):
        list(ex.write(ctx, [(sp, target) for sp in shards]))
    assert not temps(tmp_path / "o")


@needs_ray
def test_cli_joins_a_running_cluster_with_address(ray_session, demo_source, local_build, tmp_path):
    import ray

    address = ray.get_runtime_context().gcs_address
    out = tmp_path / "cli"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    res = subprocess.run(
        [sys.executable, "-m", "shardgen", "build", "--data", str(demo_source), "--out", str(out), "--split", "train,val",
         "--clip-seconds", "2", "--shard-clips", "2", "--executor", "ray", "--address", address, "--workers", "2",
         "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert split_files(out) == split_files(local_build)
    assert ray.is_initialized()  # the joined cluster (this session's runtime) is still up


def test_local_executor_never_imports_ray(demo_source, tmp_path):
    code = (
        "import sys; from shardgen.build.pipeline import build; from shardgen.build.plan import BuildParams; "
        f"build({str(demo_source)!r}, {str(tmp_path / 'o')!r}, ['val'], BuildParams(clip_seconds=2.0), workers=2, progress=False); "
        "assert 'ray' not in sys.modules, 'the local executor imported ray'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)


@needs_ray
def test_worker_death_with_no_retries_left_names_the_shard(ray_session, tmp_path):
    from shardgen.build.executors.ray import RayExecutor, RayExecutorError

    src = write_source(tmp_path / "s", {"v": 60})
    ctx = {"train": BuildContext(src, BuildParams(clip_seconds=1.0, allow_unannotated=True), None)}
    ex = RayExecutor(2, max_retries=0)
    [video] = ex.probe(ctx, [("train", "v")])
    [shard] = assign_shards("train", video.clips, 10**9)
    (ray_session / shard.name).write_text("kill the first attempt")
    target = SplitOutput(tmp_path / "o", "train")
    with pytest.raises(RayExecutorError, match=r"write train/train-000000\.tar: .*re-run the same command to resume"):
        list(ex.write(ctx, [(shard, target)]))
    assert not (target.local_dir / shard.name).exists()  # never a partial shard under its final name
    assert not (ray_session / shard.name).exists() and (ray_session / f"{shard.name}.crashed").read_text().strip()
    assert not temps(tmp_path / "o")  # the dead attempt's temp file is removed on the way out too


@needs_ray
def test_video_file_build_with_ray_is_byte_identical_to_local(ray_session, tmp_path):
    """Clips decoded from video files (issue 14): the same bytes from Ray as from 1 and 2 local workers."""
    src = video_source(tmp_path / "src", {"a": {"fps": 30, "seconds": 2.0}, "b": {"fps": 25, "seconds": 2.0}})
    params = BuildParams(clip_seconds=1.0, shard_clips=1)
    outs = {}
    for name, kw in {"local1": {"workers": 1}, "local2": {"workers": 2}, "ray": {"workers": 2, "executor": "ray"}}.items():
        outs[name] = tmp_path / name
        build(src, outs[name], ["train"], params, progress=False, **kw)
    files = {name: {str(p.relative_to(o)): p.read_bytes() for p in sorted((o / "train").rglob("*")) if p.is_file()}
             for name, o in outs.items()}
    assert sum(k.endswith(".tar") for k in files["ray"]) == 4 and "train/clips.idx" in files["ray"]
    assert files["ray"] == files["local1"] == files["local2"]


@needs_ray
def test_ray_results_are_reduced_as_they_arrive(ray_session, tmp_path, monkeypatch):
    """``write`` yields each task's result as it finishes; the driver reduces it at once and keeps none of them."""
    from tests.test_build_driver import AddSpy, one_frame_source

    src = one_frame_source(tmp_path / "src", 12)
    out = tmp_path / "out"
    spy = AddSpy(monkeypatch, out)
    params = BuildParams(clip_seconds=1 / 30, min_clip_seconds=1 / 30, allow_unannotated=True, shard_clips=2)
    build(src, out, ["train"], params, workers=2, executor="ray", progress=False)
    assert sorted(c["shard"] for c in spy.calls) == list(range(6))
    assert [c["earlier_alive"] for c in spy.calls] == [0] * 6
