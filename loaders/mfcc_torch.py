"""TalkNet's MFCC on torch's float32 FFT: the loader-only variant of :mod:`shardgen.core.features`.

It lives in ``loaders`` because it needs torch, and the core must not import torch.
"""

from __future__ import annotations

import numpy as np
import torch

from shardgen.core.features import NFFT, NFILT, PREEMPH, PSF_EPS, mfcc_frame_count, mfcc_plan


def talknet_mfcc_torch(samples: np.ndarray, fps: float = 25.0, sample_rate: int = 16000) -> np.ndarray:
    """Same as :func:`shardgen.core.features.talknet_mfcc` but with a float32 ``torch.fft`` (about 1.5x faster on CPU).

    float32 rounding in the FFT costs accuracy where a frame's band energies span a wide range:
    ~3e-5 on speech, up to ~3e-4 on a pure full-scale 50 Hz tone (vs ~2e-6 for the float64
    numpy path). Use it when MFCC time matters more than bit-level agreement with TalkNet.
    """
    x = np.asarray(samples)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"talknet_mfcc_torch expects non-empty 1-D mono samples, got shape {x.shape}")
    frame_len, frame_step, fb, dct = mfcc_plan(float(fps), int(sample_rate))
    n_frames = mfcc_frame_count(x.size, frame_len, frame_step)

    padded = torch.zeros((n_frames - 1) * frame_step + frame_len, dtype=torch.float32)
    padded.numpy()[: x.size] = x  # numpy does the cast; works for read-only int16 buffers too
    padded[1 : x.size] -= PREEMPH * padded[: x.size - 1]
    spec = torch.fft.rfft(padded.unfold(0, frame_len, frame_step), n=NFFT, dim=1)
    pairs = torch.view_as_real(spec).reshape(n_frames, -1).square_()
    bands = pairs @ torch.from_numpy(fb.astype(np.float32))
    bands[bands == 0] = PSF_EPS
    logs = bands.log_()
    out = logs[:, :NFILT] @ torch.from_numpy(dct.astype(np.float32))
    out[:, 0] = logs[:, NFILT]
    return out.numpy()
