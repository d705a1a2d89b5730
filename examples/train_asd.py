"""Train a small TalkNet-shaped active-speaker model from avshards shards, and score it as ASD papers do.

    python examples/train_asd.py                       # demo corpus → shards → train → val mAP
    python examples/train_asd.py --shards out --steps 300

What it shows, end to end, on CPU in a few minutes:

* training batches exactly like TalkNet-ASD's recipe: ``mode="asd-tracks", batch_frames=N`` (face
  tracks packed longest first under a frame budget, batches shuffled each epoch), faces as uint8
  (``faces_dtype=torch.uint8``) normalised inside the model as TalkNet's visual front-end does;
* evaluation exactly like TalkNet's ``evaluate_network``: one track a batch over the val split,
  per-frame speaking probabilities through :class:`loaders.PredictionWriter`, the ground truth from
  ``shardgen eval-gt`` and the AVA-ActiveSpeaker frame mAP (``loaders.mean_ap``), before and after.

The demo corpus is learnable on purpose: each face's mouth opens with its own voice, while the
audio also holds the other person's and the camera wearer's speech, so the audio alone cannot
tell whose turn it is. Without ``--shards`` the script generates a small demo corpus and builds it
with ``--derive crops`` (stored 112x112 face crops: the loader decodes tiny JPEGs instead of
cropping full frames).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

import loaders
from shardgen.build.pipeline import build
from shardgen.demo.corpus import make_demo_corpus
from shardgen.tools.eval_gt import write_ground_truth
from shardgen.build.plan import BuildParams


class TinyTalkNet(nn.Module):
    """TalkNet's shape at toy size: audio and visual front-ends to one embedding per frame, a temporal
    back-end over both, a speaking logit per frame."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.visual = nn.Sequential(  # per frame: 112x112 gray → dim
            nn.AvgPool2d(4), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(32 * 16, dim), nn.ReLU())
        self.audio = nn.Sequential(  # 4 MFCC rows per frame → one embedding per frame
            nn.Conv1d(13, dim, 5, padding=2), nn.ReLU(), nn.Conv1d(dim, dim, 4, stride=4), nn.ReLU())
        self.backend = nn.GRU(2 * dim, dim, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * dim, 1)

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        B, T = faces.shape[:2]
        x = (faces.float() / 255 - 0.4161) / 0.1688  # TalkNet's visual normalisation, on the model's device
        v = self.visual(x.reshape(B * T, 1, *faces.shape[2:])).reshape(B, T, -1)
        a = self.audio(audio.transpose(1, 2)).transpose(1, 2)[:, :T]
        h, _ = self.backend(torch.cat([a, v], dim=2))
        return self.head(h).squeeze(2)  # [B, T] logits


def demo_shards(workdir: Path, seconds: float, workers: int, n_train: int = 4, n_val: int = 2) -> Path:
    src = make_demo_corpus(workdir / "src", seconds=seconds, width=320, height=180, n_train=n_train, n_val=n_val, n_test=0)
    out = workdir / "shards"
    build(src, out, ["train", "val"], BuildParams(clip_seconds=5.0, derive=("crops",)), workers=workers, progress=False)
    return out


def val_map(model: nn.Module, val: Path, gt: Path, pred: Path, workers: int) -> float:
    """TalkNet's evaluation: every val track, one a batch, scored per frame, then AVA frame mAP."""
    model.eval()
    ld = loaders.make_loader(val, mode="asd-tracks", with_meta=True, shuffle=False, remainder="pad",
                             faces_dtype=torch.uint8, num_workers=workers)
    with torch.no_grad(), loaders.PredictionWriter(pred, quiet=True) as out:
        for audio, faces, _, meta in ld:
            out.add(meta, torch.sigmoid(model(audio, faces)))
    model.train()
    return loaders.mean_ap(gt, pred)


def train(shards: Path, workdir: Path, *, steps: int, batch_frames: int, lr: float, seed: int, workers: int,
          log_every: int = 25) -> dict:
    torch.manual_seed(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    gt = workdir / "val_gt.csv"
    rows, positives = write_ground_truth(shards / "val", gt)
    model = TinyTalkNet()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    before = val_map(model, shards / "val", gt, workdir / "pred_before.csv", workers)
    print(f"val: {rows} face-track frames, {positives} speaking; mAP before training {before:.2f}")
    ld = loaders.make_loader(shards / "train", mode="asd-tracks", batch_frames=batch_frames, seed=seed,
                             faces_dtype=torch.uint8, augment=True, num_workers=workers)
    step, losses, t0, frames = 0, [], time.perf_counter(), 0
    while step < steps:
        for audio, faces, labels in ld:
            loss = loss_fn(model(audio, faces), labels.float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            frames += labels.numel()
            step += 1
            if step % log_every == 0 or step == steps:
                recent = losses[-log_every:]
                print(f"step {step:4d}  epoch {ld.epoch}  loss {sum(recent) / len(recent):.4f}  "
                      f"{frames / (time.perf_counter() - t0):.0f} frames/s")
            if step == steps:
                break
    after = val_map(model, shards / "val", gt, workdir / "pred_after.csv", workers)
    first = losses[: min(log_every, len(losses))]
    last = losses[-min(log_every, len(losses)):]
    result = {"steps": step, "loss_first": sum(first) / len(first), "loss_last": sum(last) / len(last),
              "map_before": before, "map_after": after, "seconds": time.perf_counter() - t0}
    print(f"mAP before {before:.2f} → after {after:.2f}  (loss {result['loss_first']:.4f} → {result['loss_last']:.4f}, "
          f"{step} steps in {result['seconds']:.0f} s)")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=Path, default=None, help="a build with train/ and val/ splits (default: build the demo)")
    p.add_argument("--workdir", type=Path, default=Path(".train_asd"), help="demo corpus, shards, CSVs (default .train_asd)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each demo video (default 20)")
    p.add_argument("--train-videos", type=int, default=4, help="demo train videos (default 4; 2 val)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-frames", type=int, default=600, help="frame budget per batch (TalkNet's --batchSize)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    args = p.parse_args(argv)
    shards = args.shards or demo_shards(args.workdir, args.seconds, max(1, args.workers), n_train=args.train_videos)
    return train(shards, args.workdir, steps=args.steps, batch_frames=args.batch_frames, lr=args.lr, seed=args.seed,
                 workers=args.workers)


if __name__ == "__main__":
    main(sys.argv[1:])
