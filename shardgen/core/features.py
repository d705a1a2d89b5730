"""Audio features with TalkNet's exact numbers, computed without a per-frame Python loop.

TalkNet / Light-ASD (and the Ego4D TalkNet port) feed the model
``python_speech_features.mfcc(audio, 16000, numcep=13, winlen=0.025*25/fps, winstep=0.010*25/fps)``
on int16-valued samples, then cut or wrap the rows to ``4 * n_frames``. Pretrained weights expect
exactly those values, so :func:`talknet_mfcc` repeats every step of the reference (framing,
padding, FFT size, filterbank, eps handling, DCT, lifter, energy column) and agrees to ~2e-6
(float32 output rounding), but runs on all frames at once: one strided view, one ``rfft``, the
filterbank as sparse band sums and one small matmul. Speed and MFCC-vs-video drift are discussed in :func:`talknet_mfcc` and
:func:`mfcc_geometry`.

python_speech_features is only a test dependency; nothing here imports it.
"""

from __future__ import annotations

import decimal
import functools
import math

import numpy as np

__all__ = ["psf_round_half_up", "mfcc_geometry", "talknet_mfcc", "fit_to_frames"]

NUMCEP = 13
NFILT = 26
NFFT = 512
PREEMPH = 0.97
CEPLIFTER = 22
PSF_EPS = np.finfo(np.float64).eps  # what python_speech_features substitutes for exact zeros


def psf_round_half_up(number: float) -> int:
    """Round like python_speech_features' framing does (``decimal`` ROUND_HALF_UP on the float).

    Kept as a scalar ``decimal`` computation on purpose: ``Decimal(float)`` sees the exact binary
    value, so 0.0104166...*16000 and similar edge cases land where the reference lands.
    """
    return int(decimal.Decimal(number).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def mfcc_geometry(fps: float = 25.0, sample_rate: int = 16000) -> tuple[int, int]:
    """``(frame_len, frame_step)`` in samples for TalkNet's fps-scaled MFCC windows.

    The window and step are scaled by ``25/fps`` so that there are 4 MFCC rows per video frame,
    then rounded to whole samples. At 30 fps this gives 333 and 133 samples; the exact step would
    be 133.33, so the 4 rows of each frame advance 532 samples while the video advances 533.33:
    1/3 sample per row, 4/3 per frame. Row ``4*i`` (paired with frame ``i``) therefore starts
    ``i*4/3`` samples early, and the features fall behind the video by 600 samples = 37.5 ms at
    frame 450 (15 s). (reference.md's "0.25 sample per row" does not match its own 37.5 ms; 1/3
    does.) TalkNet was trained with this drift; we reproduce it and do not correct it. See
    ``loaders.timing.audio_feature_times``. At 25 fps (400/160 samples) there is no drift.
    """
    frame_len = psf_round_half_up(0.025 * 25 / fps * sample_rate)
    frame_step = psf_round_half_up(0.010 * 25 / fps * sample_rate)
    return frame_len, frame_step


def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


@functools.lru_cache(maxsize=32)
def mfcc_plan(fps: float, sample_rate: int, nfft: int = NFFT):
    """Everything that depends only on (fps, sr, nfft): framing and the two matrices.

    ``fb`` is the reference's triangular mel filterbank transposed to [nfft//2+1, nfilt] (each
    row twice, see below), with one extra all-ones column so a single matmul yields the 26 band energies and the total frame
    energy (python_speech_features' ``energy = sum(pspec)``). ``1/nfft`` of the power spectrum is
    folded in. ``dct`` is the orthonormal DCT-II restricted to the first 13 outputs with the
    sinusoidal lifter folded in, i.e. ``lifter(dct(x, type=2, norm='ortho')[:, :13])`` as a matrix.
    Arrays are returned read-only because the cache shares them between callers.
    """
    frame_len, frame_step = mfcc_geometry(fps, sample_rate)

    # Filterbank, same arithmetic as python_speech_features.get_filterbanks (lowfreq 0, highfreq sr/2).
    melpoints = np.linspace(_hz2mel(0), _hz2mel(sample_rate / 2), NFILT + 2)
    bins = np.floor((nfft + 1) * _mel2hz(melpoints) / sample_rate)
    k = np.arange(nfft // 2 + 1)[:, None]
    lo, mid, hi = bins[:-2], bins[1:-1], bins[2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where((k >= lo) & (k < mid), (k - lo) / (mid - lo), 0.0)
        falling = np.where((k >= mid) & (k < hi), (hi - k) / (hi - mid), 0.0)
    fb = np.concatenate([rising + falling, np.ones((nfft // 2 + 1, 1))], axis=1) / nfft
    # Rows repeated so the matrix applies to the complex spectrum viewed as interleaved
    # (re, im) float pairs after squaring in place: sum(re^2 + im^2) without a power array.
    fb = np.repeat(fb, 2, axis=0)

    # Orthonormal DCT-II (scipy.fftpack.dct(type=2, norm='ortho')) with the cepstral lifter.
    n = np.arange(NFILT)[:, None]
    q = np.arange(NUMCEP)[None, :]
    dct = np.cos(np.pi * q * (2 * n + 1) / (2 * NFILT)) * np.sqrt(2.0 / NFILT)
    dct[:, 0] /= np.sqrt(2.0)
    dct *= 1 + (CEPLIFTER / 2.0) * np.sin(np.pi * np.arange(NUMCEP) / CEPLIFTER)

    fb.setflags(write=False)
    dct.setflags(write=False)
    return frame_len, frame_step, fb, dct


@functools.lru_cache(maxsize=32)
def mel_bands(fps: float, sample_rate: int, nfft: int = NFFT) -> tuple[tuple[int, int, np.ndarray], ...]:
    """The filterbank of :func:`mfcc_plan` as ``(first bin, end bin, weights)`` per mel band (``1/nfft`` folded in).

    Each triangular band covers a few dozen of the 257 bins, so summing each band's own bins does
    ~7 % of the dense product's work; and it uses no BLAS: a dense ``[N, 514] @ [514, 27]`` product
    is large enough for OpenBLAS to start its threads, which in a DataLoader worker beside others on
    a busy machine made the MFCC ~8x slower (11.9 ms instead of 1.5 ms for a 5 s track).
    """
    fb = mfcc_plan(float(fps), int(sample_rate), nfft)[2][::2, :NFILT]  # rows were repeated for (re, im) pairs
    bands = []
    for j in range(NFILT):
        nz = np.flatnonzero(fb[:, j])
        first, end = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        w = np.array(fb[first:end, j])
        w.setflags(write=False)
        bands.append((first, end, w))
    return tuple(bands)


def mfcc_frame_count(n_samples: int, frame_len: int, frame_step: int) -> int:
    """python_speech_features.sigproc.framesig's count: at least one frame, last one zero-padded."""
    if n_samples <= frame_len:
        return 1
    return 1 + int(math.ceil((1.0 * n_samples - frame_len) / frame_step))


def talknet_mfcc(samples: np.ndarray, fps: float = 25.0, sample_rate: int = 16000) -> np.ndarray:
    """TalkNet's MFCC: ``python_speech_features.mfcc(samples, sr, numcep=13, winlen=0.025*25/fps,
    winstep=0.010*25/fps)`` as float32 ``[N, 13]``, vectorised.

    Args:
        samples: 1-D mono audio with int16 *values* (int16 dtype, or floats on the int16 scale).
            Scale matters: column 0 is log frame energy, so 1/32768-normalised audio gives
            different numbers than TalkNet saw.
        fps: video frame rate; windows are scaled by 25/fps to keep 4 rows per video frame.
        sample_rate: audio rate in Hz (TalkNet: 16000).

    Reproduced reference behaviour: pre-emphasis 0.97 starting from ``x[0]``; rectangular
    window; window/step rounded half-up to samples (see :func:`mfcc_geometry`, including the
    30 fps drift which we keep on purpose); frame count ``1 + ceil((len - frame_len)/step)`` with
    the last frame zero-padded; 512-point ``rfft`` (frames longer than 512 samples are truncated,
    as numpy's rfft does for the reference); power spectrum / 512; 26 mel bands 0..sr/2; exact
    zeros replaced by float64 eps before the log; orthonormal DCT-II, first 13, lifter 22; column
    0 replaced by log of the summed power spectrum. Computed in float64, returned as float32
    (the reference returns float64; TalkNet casts to ``torch.FloatTensor`` anyway).
    """
    x = np.asarray(samples)
    if x.ndim != 1:
        raise ValueError(f"talknet_mfcc expects 1-D mono samples, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("talknet_mfcc needs at least one sample")
    frame_len, frame_step, fb, dct = mfcc_plan(float(fps), int(sample_rate))

    n_frames = mfcc_frame_count(x.size, frame_len, frame_step)
    padded = np.zeros((n_frames - 1) * frame_step + frame_len, dtype=np.float64)
    padded[: x.size] = x
    padded[1 : x.size] -= PREEMPH * padded[: x.size - 1]  # y[n] = x[n] - 0.97 x[n-1], y[0] = x[0]

    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_len)[::frame_step]
    spec = np.fft.rfft(frames, n=NFFT, axis=1).view(np.float64)  # [N, 2*257] as (re, im) pairs
    np.square(spec, out=spec)  # in place: big temporaries cost page faults, not flops
    power = spec[:, 0::2] + spec[:, 1::2]  # [N, 257] |X|^2
    bands = np.empty((n_frames, NFILT + 1))  # 26 mel energies + total energy, 1/NFFT folded in
    for j, (first, end, w) in enumerate(mel_bands(float(fps), int(sample_rate))):
        bands[:, j] = np.einsum("ij,j->i", power[:, first:end], w)  # einsum: its own loop, never BLAS threads
    bands[:, NFILT] = power.sum(axis=1) / NFFT
    bands[bands == 0] = PSF_EPS
    logs = np.log(bands)
    out = logs[:, :NFILT] @ dct
    out[:, 0] = logs[:, NFILT]
    return out.astype(np.float32)


def fit_to_frames(mfcc: np.ndarray, n_frames: float) -> np.ndarray:
    """Cut or wrap MFCC rows to match ``n_frames`` video frames, exactly as TalkNet's ``load_audio``.

    TalkNet: if there are fewer than ``int(4*T)`` rows, ``numpy.pad(..., 'wrap')`` up to that
    many (repeats the clip's own audio from its start, not silence), then keep the first
    ``int(round(4*T))`` rows. The int/round pair is kept verbatim, so a fractional ``T`` behaves
    as in TalkNet (e.g. T=2.9 pads to 11 rows and returns 11, not 12).
    """
    mfcc = np.asarray(mfcc)
    max_audio = int(n_frames * 4)
    if mfcc.shape[0] < max_audio:
        mfcc = np.pad(mfcc, ((0, max_audio - mfcc.shape[0]), (0, 0)), "wrap")
    return mfcc[: int(round(n_frames * 4)), :]
