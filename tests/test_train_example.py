"""examples/train_asd.py, short: a TalkNet-shaped model learns from frame-budget batches and its val mAP rises."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_asd.py"


def test_training_from_shards_raises_val_map(tmp_path):
    spec = importlib.util.spec_from_file_location("train_asd", EXAMPLE)
    train_asd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_asd)
    r = train_asd.main(["--workdir", str(tmp_path), "--seconds", "10", "--train-videos", "2", "--steps", "60",
                        "--lr", "3e-3"])
    assert r["steps"] == 60
    assert r["loss_last"] < 0.8 * r["loss_first"]
    assert r["map_after"] > r["map_before"] + 15, r
    assert (tmp_path / "val_gt.csv").is_file() and (tmp_path / "pred_after.csv").is_file()
