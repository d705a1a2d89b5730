"""TalkNet's training augmentations (off unless asked for), applied to a whole sequence at once.

Visual (TalkNet ``load_visual``): one of original / horizontal flip / random crop of 70-100 %
resized back / rotation by -15..15 degrees, the same for every frame of the item. Audio
(TalkNet ``load_audio`` with ``audioAug``): mix in another clip's audio at a random SNR of
-5..5 dB. The other clip is another item of the same batch (TalkNet draws from its mini-batch).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def visual(faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    kind = rng.choice(["orig", "flip", "crop", "rotate"])
    if kind == "orig":
        return faces
    if kind == "flip":
        return np.ascontiguousarray(faces[:, :, ::-1])
    H = faces.shape[1]
    if kind == "crop":
        new = int(H * rng.uniform(0.7, 1.0))
        x, y = int(rng.integers(0, H - new + 1)), int(rng.integers(0, H - new + 1))
        return np.stack([np.asarray(Image.fromarray(f[y:y + new, x:x + new]).resize((H, H), Image.Resampling.BILINEAR)) for f in faces])
    angle = float(rng.uniform(-15, 15))
    return np.stack([np.asarray(Image.fromarray(f).rotate(angle, resample=Image.Resampling.BILINEAR)) for f in faces])


def mix_noise(samples: np.ndarray, noise: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    if noise is None or len(noise) == 0 or len(samples) == 0:
        return samples
    noise = np.resize(noise.astype(np.float64), len(samples))
    clean = samples.astype(np.float64)
    snr = rng.uniform(-5, 5)
    clean_db = 10 * np.log10(np.mean(clean ** 2) + 1e-4)
    noise_db = 10 * np.log10(np.mean(noise ** 2) + 1e-4)
    noise = np.sqrt(10 ** ((clean_db - noise_db - snr) / 10)) * noise
    return np.clip(clean + noise, -32768, 32767).astype(np.int16)
