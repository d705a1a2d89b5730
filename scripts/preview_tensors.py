#!/usr/bin/env python3
"""Render the exact tensors a model gets from ``loaders.make_loader``: its 112x112 faces, labels and MFCC.

``shardgen preview`` shows what is stored; this shows what is trained on, after cropping,
decoding and label selection. Each face is pasted pixel for pixel (no resampling) with a
border in its frame's label colour (green = 1, red = 0) and its index, source-video time and
label printed under it; under each item's grid its MFCC rows and label track are drawn on one
time axis (MFCC row r at ``audio_feat_t[r]``, frame i at ``frame_t[i]``). A crop off the face,
a label shifted against the mouth, or audio out of step with the frames shows up here.

    python scripts/preview_tensors.py out/train -o grid.png --mode asd-tracks --n 16 --items 2
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FACE = 112
BORDER = 3
GAP = 6
CAPTION = 30
MARGIN = 10
HEADER = 24
MFCC_H = 52
LABEL_H = 12
ON = (40, 170, 60)
OFF = (205, 55, 55)


def take_items(source, *, mode: str = "talknet", labels: str = "voice", items: int = 2) -> list[tuple]:
    """The first ``items`` items of an unshuffled loader: ``(audio [4T,13], faces [T,112,112], labels [T], meta)``."""
    import loaders

    ld = loaders.make_loader(source, mode=mode, batch_size=1, labels=labels, shuffle=False, with_meta=True)
    out = []
    for audio, faces, lab, meta in ld:
        out.append((audio[0].numpy(), faces[0].numpy(), lab[0].numpy(), meta[0]))
        if len(out) >= items:
            break
    if not out:
        raise ValueError(f"{source}: the loader yielded no {mode} items")
    return out


def face_grid(faces: np.ndarray, labels: np.ndarray, idx: np.ndarray, cols: int) -> np.ndarray:
    """``uint8 [H, W, 3]``: the chosen faces unscaled, each framed in its label's colour."""
    cell = FACE + 2 * BORDER
    rows = math.ceil(len(idx) / cols)
    grid = np.full((rows * (cell + CAPTION) - CAPTION, cols * (cell + GAP) - GAP, 3), 255, np.uint8)
    for k, i in enumerate(idx):
        r, c = divmod(k, cols)
        y, x = r * (cell + CAPTION), c * (cell + GAP)
        grid[y:y + cell, x:x + cell] = ON if labels[i] else OFF
        face = np.clip(np.rint(faces[i]), 0, 255).astype(np.uint8)  # the tensor is float32 0..255
        grid[y + BORDER:y + BORDER + FACE, x + BORDER:x + BORDER + FACE] = face[..., None]
    return grid


def render(items: list[tuple], *, n: int = 16, cols: int = 8, mode: str = "talknet", labels: str = "voice") -> np.ndarray:
    """Draw the items one under another → ``uint8 [H, W, 3]`` (W = one row of ``cols`` faces)."""
    from shardgen.tools.preview import DPI, figure_rgb, pyplot, sample_frames

    plt = pyplot()
    cell = FACE + 2 * BORDER
    cols = max(1, min(cols, n))
    width = 2 * MARGIN + cols * (cell + GAP) - GAP
    plan, y = [], MARGIN + 22
    for audio, faces, lab, meta in items:
        idx = sample_frames(len(faces), n)
        grid_rows = math.ceil(len(idx) / cols)
        top = y + HEADER
        plan.append((idx, y, top, top + grid_rows * (cell + CAPTION)))
        y = top + grid_rows * (cell + CAPTION) + MFCC_H + LABEL_H + 34
    height = y
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    try:
        what = "the track's speaking" if mode == "asd-tracks" else labels
        fig.text(MARGIN, height - MARGIN, f"make_loader(mode={mode!r}): 112x112 faces as given; border = {what} "
                 "label (green 1, red 0)", transform=None, fontsize=10, weight="bold", va="top")
        for (audio, faces, lab, meta), (idx, y0, top, bottom) in zip(items, plan):
            _draw_item(fig, (width, height), audio, faces, lab, meta, idx, cols, y0, top, bottom)
        return figure_rgb(fig)
    finally:
        plt.close(fig)


def _draw_item(fig, size, audio, faces, lab, meta, idx, cols, y0, top, bottom) -> None:
    width, height = size
    cell = FACE + 2 * BORDER
    T = len(faces)
    ft, at = np.asarray(meta["frame_t"]), np.asarray(meta["audio_feat_t"])
    fps = meta["fps"]
    who = f"  track {meta['track_id']}" if meta.get("track_id") else ""
    fig.text(MARGIN, height - y0, f"{meta['key']}{who}   T={T} frames, {ft[0]:.2f}–{ft[-1] + 1 / fps:.2f} s   "
             f"audio {tuple(audio.shape)}   label=1 on {lab.mean():.0%} of frames", transform=None, fontsize=9, va="top")
    grid = face_grid(faces, lab, idx, cols)
    fig.figimage(grid, xo=MARGIN, yo=height - top - grid.shape[0], origin="upper")
    for k, i in enumerate(idx):
        r, c = divmod(k, cols)
        x = MARGIN + c * (cell + GAP) + cell / 2
        yc = top + r * (cell + CAPTION) + cell + 2
        fig.text(x, height - yc, f"i={i}  {ft[i]:.2f} s\nlabel {int(lab[i])}", transform=None, fontsize=7,
                 ha="center", va="top", color="#1a7a2a" if lab[i] else "#b02020")
    left, w = MARGIN + 40, width - 2 * MARGIN - 40
    ax_a = fig.add_axes([left / width, 1 - (bottom + MFCC_H) / height, w / width, MFCC_H / height])
    step = 1 / (4 * fps)
    ax_a.imshow(audio.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                extent=(at[0], at[-1] + step, 0, audio.shape[1]))
    ax_a.set_yticks([])
    ax_a.set_ylabel("MFCC", fontsize=7)
    ax_a.tick_params(labelbottom=False)
    ax_l = fig.add_axes([left / width, 1 - (bottom + MFCC_H + LABEL_H) / height, w / width, LABEL_H / height],
                        sharex=ax_a)
    colours = np.where(lab.astype(bool)[None, :, None], np.array(ON) / 255, np.array(OFF) / 255)
    ax_l.imshow(colours, aspect="auto", interpolation="nearest", extent=(ft[0], ft[-1] + 1 / fps, 1, 0))
    ax_l.set_yticks([])
    ax_l.set_ylabel("label", fontsize=7, rotation=0, ha="right", va="center")
    ax_l.plot(ft[idx] + 0.5 / fps, np.full(len(idx), 0.5), "|", color="white", ms=8, mew=1.5)
    ax_l.tick_params(labelsize=7)
    ax_a.set_xlim(ft[0], ft[-1] + 1 / fps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="a manifest, split directory, shard or URL (anything make_loader takes)")
    p.add_argument("-o", "--out", type=Path, required=True, help="image to write (.png)")
    p.add_argument("--mode", choices=("talknet", "asd-tracks"), default="talknet")
    p.add_argument("--labels", choices=("visible", "voice", "speaking"), default="voice", help="talknet mode's labels")
    p.add_argument("--n", type=int, default=16, help="faces shown per item, spread evenly over it (default 16)")
    p.add_argument("--items", type=int, default=2, help="items (clips or tracks) drawn, in loader order (default 2)")
    p.add_argument("--cols", type=int, default=8, help="faces per row (default 8)")
    p.add_argument("--palette", action="store_true",
                   help="256-colour PNG: smaller, but faces no longer pixel-exact (default: exact RGB)")
    args = p.parse_args(argv)
    try:
        from shardgen.tools.preview import save_image

        items = take_items(args.source, mode=args.mode, labels=args.labels, items=args.items)
        rgb = render(items, n=args.n, cols=args.cols, mode=args.mode, labels=args.labels)
        save_image(rgb, args.out, palette=args.palette)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"preview_tensors: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(items)} item(s) → {args.out} ({rgb.shape[1]}x{rgb.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
