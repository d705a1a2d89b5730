#!/usr/bin/env python3
"""Loader scaling with DataLoader workers, and (``--cuda``) a TalkNet-shaped training step fed by it.

Builds (once) a demo corpus of ``--videos`` 15 s videos, then measures clips/s of
``make_loader(mode=...)`` for each ``--workers`` value, in this process, after one warm-up
epoch; with ``--cuda`` each batch is moved with ``pin_memory`` / ``non_blocking`` and a small
TalkNet-shaped model takes an optimizer step on it, so the number is what a GPU job would get.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def corpus(root: Path, videos: int, width: int, height: int, derive: bool) -> Path:
    from shardgen.build.pipeline import build
    from shardgen.demo.corpus import make_demo_corpus
    from shardgen.build.plan import BuildParams

    src = make_demo_corpus(root / "src", seconds=15.0, width=width, height=height, n_train=videos, n_val=0, n_test=0)
    out = root / ("derived" if derive else "plain")
    if not (out / "train" / "manifest.json").exists():
        build(src, out, ["train"], BuildParams(shard_clips=2, derive=("crops", "small") if derive else ()),
              workers=os.cpu_count() or 1, progress=False, overwrite=True)
    return out / "train"


class TinyTalkNet:
    """Audio conv over [B,4T,13] and a frame conv over [B,T,112,112], fused per frame: TalkNet's contract."""

    def __init__(self, device):
        import torch

        self.a = torch.nn.Conv1d(13, 64, 4, stride=4).to(device)
        self.v = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 8, stride=8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1)).to(device)
        self.head = torch.nn.Linear(96, 2).to(device)
        self.params = [*self.a.parameters(), *self.v.parameters(), *self.head.parameters()]
        self.opt = torch.optim.SGD(self.params, lr=0.01)

    def step(self, audio, faces, labels):
        import torch

        B, T = faces.shape[:2]
        a = self.a(audio.transpose(1, 2)).transpose(1, 2)
        v = self.v(((faces / 255 - 0.4161) / 0.1688).reshape(B * T, 1, 112, 112)).reshape(B, T, 32)
        loss = torch.nn.functional.cross_entropy(self.head(torch.cat([a, v], -1)).reshape(-1, 2), labels.reshape(-1))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT / ".bench" / "workers")
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--workers", default="0,1,2,4,8")
    ap.add_argument("--mode", default="talknet")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--derived", action="store_true", help="shards built with --derive small,crops")
    ap.add_argument("--cuda", action="store_true", help="move each batch to the GPU and take a training step")
    ap.add_argument("--faces-uint8", action="store_true",
                    help="faces_dtype=torch.uint8: 4x fewer bytes from the workers to the GPU, converted there")
    ap.add_argument("--batch-frames", type=int, default=None, help="asd-tracks: frame-budget batches instead of --batch-size")
    args = ap.parse_args()

    import torch

    import loaders

    split = corpus(args.root, args.videos, args.width, args.height, args.derived)
    device = torch.device("cuda" if args.cuda else "cpu")
    model = TinyTalkNet(device) if args.cuda else None
    print(f"| workers | {args.mode} clips/s | batches | {'GPU step' if args.cuda else ''} |")
    print("|---:|---:|---:|---|")
    for w in (int(x) for x in args.workers.split(",")):
        size = {"batch_frames": args.batch_frames} if args.batch_frames else {"batch_size": args.batch_size}
        ld = loaders.make_loader(split, mode=args.mode, num_workers=w, pin_memory=args.cuda,
                                 faces_dtype=torch.uint8 if args.faces_uint8 else torch.float32, **size)
        for epoch in range(2):  # first epoch warms the page cache and the workers' imports
            t, n, items = time.perf_counter(), 0, 0
            for audio, faces, labels in ld:
                if model is not None:
                    audio, faces, labels = (x.to(device, non_blocking=True) for x in (audio, faces, labels))
                    model.step(audio, faces, labels)
                n += 1
                items += faces.shape[0]
            if args.cuda:
                torch.cuda.synchronize()
            secs = time.perf_counter() - t
        print(f"| {w} | {items / secs:.2f} | {n} | {'ok' if args.cuda else ''} |", flush=True)


if __name__ == "__main__":
    main()
