"""Whisper log-mel features as Qwen2.5-Omni's processor computes them, without its 300 s of padding.

``Qwen2_5OmniProcessor`` runs ``WhisperFeatureExtractor`` (128 mel bins, 25 ms windows every
10 ms, ``chunk_length`` 300 s) with ``padding="max_length"``: every clip becomes 4,800,000
samples and 30,000 mel frames, of which the model reads only the ``feature_attention_mask``ed
ones, ``ceil(samples / 160)``. Here the same torch computation (float32 STFT, Slaney mel filters,
``log10``, clamp to the clip's maximum minus 8, ``(x + 4) / 4``) runs over the clip plus the two
frames after it that still see its last samples; every later frame of the padded array is
silence, one value per clip (:attr:`LogMel.silence`), so the processor's array is rebuilt exactly
to any length without computing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

__all__ = ["LogMel", "mel_filter_bank", "whisper_log_mel", "mel_frames", "audio_token_count"]


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = 3.0 * f / 200.0
    above = f >= 1000.0
    return np.where(above, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * (27.0 / np.log(6.4)), mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f = 200.0 * mel / 3.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), f)


def mel_filter_bank(n_mels: int = 128, n_fft: int = 400, sample_rate: int = 16000, f_max: float = 8000.0) -> np.ndarray:
    """``[n_fft // 2 + 1, n_mels]`` float64 triangular filters on Slaney's scale, Slaney-normalised (Whisper's)."""
    fft_freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    filter_freqs = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(f_max), n_mels + 2))
    diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= 2.0 / (filter_freqs[2:n_mels + 2] - filter_freqs[:n_mels])  # equal area per filter
    return filters


@lru_cache(maxsize=8)
def _mel_filters_t(n_mels: int, n_fft: int, sample_rate: int) -> torch.Tensor:
    """The filters as the extractor multiplies them: float32, transposed to ``[n_mels, bins]``."""
    return torch.from_numpy(mel_filter_bank(n_mels, n_fft, sample_rate)).to(torch.float32).T


def mel_frames(n_samples: int, hop_length: int = 160) -> int:
    """Mel frames the processor's mask lets through for ``n_samples`` samples: ``ceil(n / hop)``."""
    return -(-int(n_samples) // hop_length)


def audio_token_count(n_mel_frames: int) -> int:
    """Qwen2.5-Omni audio tokens for ``n_mel_frames`` (two stride-2 stages: 40 ms per token)."""
    return ((int(n_mel_frames) - 1) // 2 + 1 - 2) // 2 + 1


@dataclass
class LogMel:
    """A clip's features: ``features`` ``[n_mels, frames + 2]`` float32 (the masked frames and the two
    after them), ``frames`` the masked count, ``silence`` the value of every later padded frame."""

    features: torch.Tensor
    frames: int
    silence: float

    def padded(self, length: int) -> torch.Tensor:
        """``[n_mels, length]``: what the processor's padded array holds in its first ``length`` frames."""
        out = torch.full((self.features.shape[0], length), self.silence, dtype=torch.float32)
        n = min(length, self.features.shape[1])
        out[:, :n] = self.features[:, :n]
        return out


def whisper_log_mel(waveform: np.ndarray, *, n_mels: int = 128, n_fft: int = 400, hop_length: int = 160,
                    sample_rate: int = 16000, max_samples: int = 300 * 16000) -> LogMel:
    """Whisper log-mel of one float waveform, equal to ``WhisperFeatureExtractor`` with ``padding="max_length"``
    on the frames it computes (float32 torch, like the extractor's torch path; tested within 1e-5).

    Audio past ``max_samples`` is cut, as the extractor truncates (300 s for Qwen2.5-Omni).
    """
    wave = np.asarray(waveform, dtype=np.float32)[:max_samples]
    frames = mel_frames(wave.size, hop_length)
    computed = min(frames + 2, max_samples // hop_length)  # frames after these see only the zero padding
    # zeros far enough that no computed frame reaches the end (torch.stft reflects there; the extractor has zeros)
    padded = np.zeros(computed * hop_length + n_fft, np.float32)
    padded[:wave.size] = wave
    x = torch.from_numpy(padded)
    stft = torch.stft(x, n_fft, hop_length, window=torch.hann_window(n_fft), return_complex=True)
    power = (stft[..., :computed].abs() ** 2).contiguous()
    log_spec = torch.clamp(_mel_filters_t(n_mels, n_fft, sample_rate) @ power, min=1e-10).log10()
    floor = log_spec.max() - 8.0
    silence = torch.clamp(torch.zeros(()), min=1e-10).log10()  # a frame of zeros, through the same ops
    log_spec = (torch.maximum(log_spec, floor) + 4.0) / 4.0
    silence = (torch.maximum(silence, floor) + 4.0) / 4.0
    return LogMel(log_spec, min(frames, max_samples // hop_length), float(silence))
