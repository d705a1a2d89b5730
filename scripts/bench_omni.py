#!/usr/bin/env python3
"""Qwen2.5-Omni batches: ``mode="qwen-omni"`` vs transformers' processor per sample, same clips, one run.

The demo corpus (640x360, 30 fps, 16 kHz) built into 15 s clips. Each row turns every clip into what a
Qwen2.5-Omni thinker takes (frames sampled at 2 fps, 128-bin Whisper features, the interleaved
video+audio token block and its TMRoPE position ids):

* **processor, all frames** — what a user without the loader does: decode every frame of the clip,
  then ``Qwen2_5OmniProcessor(videos=..., audio=..., fps=2, do_sample_frames=True,
  load_audio_from_video=True)`` (the processor samples 2 fps itself) and the model's
  ``get_rope_index`` for the position ids;
* **processor, same decoded frames** — decode only the frames the loader samples, the same decoder,
  then the processor on those frames (``fps=2``) and ``get_rope_index``: the processing alone;
* **omni_item** — the loader's per-clip transform on the same clips (decoding included);
* **qwen-omni loader** — ``make_loader(mode="qwen-omni", batch_size=1)`` end to end from the shards
  (tar reading and checks included, ``num_workers=0``); again with ``pixel_dtype=torch.uint8`` (the
  normalisation left to the GPU's ``normalise_patches``).

The clips are read from the shards once, untimed, for the first three rows; every row runs in this
process, one thread pool (``torch.get_num_threads()``). Before timing, the first clip's outputs of
the processor and of the loader are compared (ids exact, floats within 1e-5).

    python scripts/bench_omni.py [--seconds 45] [--videos 2] [--repeat 3]

Prints a Markdown table; each row is the fastest of ``--repeat`` runs, the rows taking turns run by run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH = ROOT / ".bench" / "omni"

import tests.torchvision_cpu  # noqa: E402,F401  (before transformers; see the module)


def build_demo(seconds: float, videos: int) -> Path:
    from shardgen.build.pipeline import build
    from shardgen.demo import make_demo_corpus
    from shardgen.build.plan import BuildParams

    out = BENCH / f"shards_{videos}x{seconds:g}s"
    if not (out / "train" / "manifest.json").is_file():
        src = make_demo_corpus(BENCH / f"src_{videos}x{seconds:g}s", n_train=videos, n_val=0, n_test=0, seconds=seconds)
        build(src, out, ["train"], BuildParams(clip_seconds=15.0), workers=2, progress=False)
    return out / "train"


def read_clips(split: Path) -> list:
    from shardgen.core.sample import ClipSample
    from tests.sources import read_clips as read

    clips = read(*sorted(split.glob("*.tar")))
    return [ClipSample(key, fields) for key, fields in sorted(clips.items())]


def processor_row(samples: list, processor, *, all_frames: bool):
    import numpy as np
    import torch
    from transformers.video_utils import VideoMetadata

    from loaders.omni_video import sample_frame_indices
    from shardgen.core.decode import rgb_frame
    from tests.hf_reference import omni_rope_index, process_clips

    outs = []
    for s in samples:
        m = s.meta
        picked = range(s.n_frames) if all_frames else sample_frame_indices(s.n_frames, m["fps"], 2.0)
        frames = np.stack([rgb_frame(s.frame(int(i))) for i in picked])
        audio = s.audio()[0].astype(np.float32) / 32768.0
        kwargs = ({"do_sample_frames": True, "video_metadata": [VideoMetadata(total_num_frames=s.n_frames, fps=m["fps"])]}
                  if all_frames else {})
        out = process_clips(processor, [frames], [audio], fps=2.0, **kwargs)
        with torch.no_grad():
            out["position_ids"], out["rope_deltas"] = omni_rope_index(
                out["input_ids"], out["video_grid_thw"], out["feature_attention_mask"].sum(-1),
                out["video_second_per_grid"], attention_mask=out["attention_mask"])
        outs.append(out)
    return outs


def omni_item_row(samples: list, **omni):
    from loaders.modes import ModeOptions
    from loaders.omni import OmniConfig, collate_omni, omni_item

    opts = ModeOptions(mode="qwen-omni", omni=OmniConfig(**omni))
    return [collate_omni([omni_item(s, opts)], opts.omni) for s in samples]


def loader_row(split: Path, **omni):
    from loaders import make_loader

    return list(make_loader(split, mode="qwen-omni", batch_size=1, shuffle=False, omni=omni or None))


def check_equal(ours: dict, ref) -> None:
    import torch

    from loaders import normalise_patches

    if ours["pixel_values_videos"].dtype == torch.uint8:
        ours = {**ours, "pixel_values_videos": normalise_patches(ours["pixel_values_videos"])}
    for k in ("input_ids", "attention_mask", "video_grid_thw", "video_second_per_grid", "position_ids", "rope_deltas"):
        torch.testing.assert_close(ours[k], ref[k], rtol=0, atol=0, msg=k)
    torch.testing.assert_close(ours["pixel_values_videos"], ref["pixel_values_videos"], rtol=0, atol=1e-5)
    L = ours["input_features"].shape[-1]
    torch.testing.assert_close(ours["input_features"], ref["input_features"][..., :L], rtol=0, atol=1e-5)
    torch.testing.assert_close(ours["feature_attention_mask"], ref["feature_attention_mask"][:, :L], rtol=0, atol=0)


def best_times(rows: list, repeat: int, n: int) -> dict:
    """Fastest of ``repeat`` runs of each row, the rows interleaved run by run (a busy machine's drift
    hits every row alike); each run must give one output per clip."""
    best = {name: float("inf") for name, _ in rows}
    for _ in range(repeat):
        for name, fn in rows:
            t0 = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            assert len(out) == n, f"{name}: {len(out)} outputs for {n} clips"
            del out
    return best


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=45.0, help="length of each demo video (15 s clips)")
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)

    from tests.hf_reference import TRANSFORMERS_VERSION, omni_processor

    split = build_demo(a.seconds, a.videos)
    samples = read_clips(split)
    n = len(samples)
    processor = omni_processor()
    check_equal(omni_item_row(samples[:1])[0], processor_row(samples[:1], processor, all_frames=True)[0])
    check_equal(omni_item_row(samples[:1])[0], processor_row(samples[:1], processor, all_frames=False)[0])
    check_equal(omni_item_row(samples[:1], pixel_dtype=torch.uint8)[0],
                processor_row(samples[:1], processor, all_frames=False)[0])

    rows = [
        ("processor, all frames decoded (it samples 2 fps)", lambda: processor_row(samples, processor, all_frames=True)),
        ("processor, the same decoded frames (2 fps)", lambda: processor_row(samples, processor, all_frames=False)),
        ("omni_item (loader transform, decoding included)", lambda: omni_item_row(samples)),
        ("qwen-omni loader, end to end from shards", lambda: loader_row(split)),
        ("qwen-omni loader, uint8 pixels (normalised on the GPU)", lambda: loader_row(split, pixel_dtype=torch.uint8)),
    ]
    times = best_times(rows, a.repeat, n)
    base = times[rows[1][0]]
    print(f"\n{n} clips of 15 s, 640x360 at 30 fps -> 30 frames at 2 fps (364x644, 4485 video + 375 audio tokens); "
          f"transformers {TRANSFORMERS_VERSION}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"best of {a.repeat}\n")
    print("| path | s per clip | clips/s | vs processor on the same frames |")
    print("|---|---:|---:|---:|")
    for name, _ in rows:
        s = times[name]
        print(f"| {name} | {s / n:.3f} | {n / s:.2f} | {base / s:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
