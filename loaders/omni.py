"""``mode="qwen-omni"``: batches a Qwen2.5-Omni thinker takes as they are.

Per clip — frames sampled at ``fps`` (Qwen's 2 by default) the way ``Qwen2VLVideoProcessor``
samples them, the clip's audio — the loader computes what ``Qwen2_5OmniProcessor`` (with
``use_audio_in_video`` / ``load_audio_from_video``) and the model's ``get_rope_index`` would:
``pixel_values_videos``, ``video_grid_thw``, ``video_second_per_grid``, ``input_features``,
``feature_attention_mask``, the video+audio token block
``<|vision_bos|><|audio_bos|>`` (per 2 s chunk: its video tokens, then its audio tokens)
``<|audio_eos|><|vision_eos|>`` with the config's token ids, its ``attention_mask`` and
``position_ids`` (TMRoPE, :func:`loaders.timing.tmrope_ids`) and ``rope_deltas``; plus, beside
the model's inputs, ``frame_labels`` at the sampled frames and per-clip timing ``meta``.

Why not call the processor: it resizes and normalises the same pixels, but it also pads every
clip's audio to 300 s before its STFT, and runs per sample; here only the sampled frames are
decoded, the mel frames the mask keeps are computed (plus two), and nothing depends on
transformers. Tests hold the batch equal to the real processor's output and ids equal to the
model's ``get_rope_index``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

from shardgen.core.decode import rgb_frame
from shardgen.core.format import FormatError
from shardgen.core.sample import ClipSample

from .modes import ModeOptions, _check_labelled, clip_labels
from .omni_audio import LogMel, audio_token_count, whisper_log_mel
from .omni_video import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, sample_frame_indices, video_patches
from .timing import frame_times, tmrope_ids, tmrope_next_id

__all__ = ["OmniConfig", "MODEL_INPUTS", "omni_item", "collate_omni"]

# The keys of a batch a Qwen2.5-Omni thinker's forward takes: ``model(**{k: batch[k] for k in MODEL_INPUTS},
# use_audio_in_video=True)``. ``rope_deltas`` (for text generated after the block), ``frame_labels`` and
# ``meta`` are the batch's other keys.
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "pixel_values_videos", "video_grid_thw",
                "video_second_per_grid", "input_features", "feature_attention_mask")
AUDIO_PADDINGS = ("longest", "max_length")
IGNORE = -100  # frame_labels past a clip's sampled frames


@dataclass(frozen=True)
class OmniConfig:
    """What the omni batches are cut to; defaults are Qwen2.5-Omni-7B's processor and thinker config.

    Args:
        fps: frames per second to sample (``Qwen2VLVideoProcessor.sample_frames``: at least
            ``min_frames``, at most ``max_frames``, a multiple of ``temporal_patch_size``); ``None``
            keeps every frame. ``video_second_per_grid`` is ``temporal_patch_size / fps`` (the clip's
            fps when ``None``), what the processor reports when told this fps.
        min_pixels, max_pixels: the video processor's ``size`` (``shortest_edge``, ``longest_edge``):
            Qwen2.5-Omni's processor asks for 128·28² to 768·28² pixels a frame.
        audio_padding: ``"longest"`` pads ``input_features`` to the batch's longest masked clip;
            ``"max_length"`` to the processor's full ``chunk_seconds`` (30,000 frames, 15 MB a clip).
            The model reads only the masked frames, which are the same either way.
        pad_token_id: fills ``input_ids`` left of shorter blocks (the processor pads on the left).
        pixel_dtype: ``torch.float32`` (default, the processor's values) or ``torch.uint8``: the resized
            pixels in the patch layout, 4x fewer bytes from the workers; ``normalise_patches(batch
            ["pixel_values_videos"].cuda())`` then gives the float32 values exactly.
        The token ids, ``position_id_per_seconds`` and ``seconds_per_chunk`` are the thinker config's:
        :meth:`from_model_config` reads them, with the patch sizes and mel bins, from a config.
    """

    fps: float | None = 2.0
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_frames: int = 4
    max_frames: int = 768
    image_mean: tuple = OPENAI_CLIP_MEAN
    image_std: tuple = OPENAI_CLIP_STD
    n_mels: int = 128
    n_fft: int = 400
    hop_length: int = 160
    chunk_seconds: int = 300
    audio_padding: str = "longest"
    position_id_per_seconds: int = 25
    seconds_per_chunk: float = 2.0
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    audio_start_token_id: int = 151647
    audio_end_token_id: int = 151648
    video_token_id: int = 151656
    audio_token_id: int = 151646
    pad_token_id: int = 151643
    pixel_dtype: torch.dtype = torch.float32

    def __post_init__(self):
        if self.audio_padding not in AUDIO_PADDINGS:
            raise ValueError(f"audio_padding {self.audio_padding!r}: choose one of {AUDIO_PADDINGS}")
        if self.pixel_dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"pixel_dtype {self.pixel_dtype!r}: choose torch.float32 or torch.uint8")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive (or None for every frame), not {self.fps!r}")

    @classmethod
    def coerce(cls, value) -> "OmniConfig":
        """An OmniConfig, a dict of its fields (unknown keys are a TypeError naming them) or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"omni options: unknown {sorted(unknown)}")
        return cls(**value)

    @classmethod
    def from_model_config(cls, config, **overrides) -> "OmniConfig":
        """Token ids, chunking, patch sizes and mel bins from a Qwen2.5-Omni (thinker) config object.

        Duck-typed (no transformers import): a ``Qwen2_5OmniConfig`` (its ``thinker_config``) or a
        ``Qwen2_5OmniThinkerConfig``; attributes it lacks keep their defaults.
        """
        thinker = getattr(config, "thinker_config", config)
        found = {}
        for name in ("vision_start_token_id", "vision_end_token_id", "audio_start_token_id", "audio_end_token_id",
                     "video_token_id", "audio_token_id", "position_id_per_seconds", "seconds_per_chunk"):
            if getattr(thinker, name, None) is not None:
                found[name] = getattr(thinker, name)
        vision = getattr(thinker, "vision_config", None)
        for ours, theirs in (("patch_size", "patch_size"), ("temporal_patch_size", "temporal_patch_size"),
                             ("merge_size", "spatial_merge_size")):
            if getattr(vision, theirs, None) is not None:
                found[ours] = getattr(vision, theirs)
        if getattr(getattr(thinker, "audio_config", None), "num_mel_bins", None) is not None:
            found["n_mels"] = thinker.audio_config.num_mel_bins
        pad = getattr(getattr(thinker, "text_config", None), "pad_token_id", None)
        if pad is not None:
            found["pad_token_id"] = pad
        return cls(**{**found, **overrides})

    def replace(self, **changes) -> "OmniConfig":
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)


def omni_item(sample: ClipSample, opts: ModeOptions) -> dict:
    """One clip as the processor and ``get_rope_index`` would give it to the model (see the module doc);
    ``opts.omni`` is the :class:`OmniConfig`, ``opts.labels`` / ``opts.person`` pick the frame labels."""
    _check_labelled(sample, opts)
    cfg = opts.omni
    m = sample.meta
    fps, sr = m["fps"], m["sample_rate"]
    if sr != 16000:
        raise FormatError(f"{sample.key}: audio at {sr} Hz; Qwen2.5-Omni's Whisper features need 16000 Hz")
    try:
        picked = sample_frame_indices(sample.n_frames, fps, cfg.fps, cfg.temporal_patch_size, cfg.min_frames,
                                      cfg.max_frames)
    except ValueError as exc:
        raise FormatError(f"{sample.key}: {exc}") from None
    frames = np.stack([rgb_frame(sample.frame(int(i)), name=f"{sample.key} frame {int(i) + 1}") for i in picked])
    pixels, grid_thw = video_patches(frames, patch_size=cfg.patch_size, temporal_patch_size=cfg.temporal_patch_size,
                                     merge_size=cfg.merge_size, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                                     image_mean=cfg.image_mean, image_std=cfg.image_std, dtype=cfg.pixel_dtype)
    samples, _ = sample.audio()
    mel = whisper_log_mel(samples.astype(np.float32) / 32768.0, n_mels=cfg.n_mels, n_fft=cfg.n_fft,
                          hop_length=cfg.hop_length, sample_rate=sr, max_samples=cfg.chunk_seconds * sr)
    second_per_grid = cfg.temporal_patch_size / (cfg.fps if cfg.fps is not None else fps)
    frame_t = frame_times(m["start_frame"], sample.n_frames, fps)[picked]
    audio_t = m["audio_start_sample"] / sr + 0.04 * np.arange(audio_token_count(mel.frames))
    grid_hw = (grid_thw[1] // cfg.merge_size, grid_thw[2] // cfg.merge_size)
    ids, modality, order = tmrope_ids(frame_t, audio_t, grid_hw, cfg.temporal_patch_size, cfg.position_id_per_seconds,
                                      cfg.seconds_per_chunk, start_id=1, second_per_grid=second_per_grid)
    body = np.where(modality == 1, cfg.audio_token_id, cfg.video_token_id)
    input_ids = np.concatenate([[cfg.vision_start_token_id, cfg.audio_start_token_id], body,
                                [cfg.audio_end_token_id, cfg.vision_end_token_id]])
    end = tmrope_next_id(ids, modality) if ids.size else 1
    position_ids = np.concatenate([np.zeros((3, 2), np.int64), ids, np.full((3, 2), end, np.int64)], axis=1)
    return {
        "input_ids": torch.from_numpy(input_ids.astype(np.int64)),
        "position_ids": torch.from_numpy(position_ids),
        "pixel_values_videos": pixels,
        "video_grid_thw": torch.tensor(grid_thw, dtype=torch.int64),
        "video_second_per_grid": second_per_grid,
        "mel": mel,
        "frame_labels": torch.from_numpy(clip_labels(sample, opts)[picked].astype(np.int64)),
        "meta": {
            "key": sample.key, "frame_index": picked, "frame_t": frame_t, "audio_t": audio_t, "fps": fps,
            "sample_rate": sr, "clip_start": m["start_frame"] / fps, "video_second_per_grid": second_per_grid,
            "modality": modality, "order": order, "meta": m,
        },
    }


def _audio_length(mels: list[LogMel], cfg: OmniConfig) -> int:
    if cfg.audio_padding == "max_length":
        return cfg.chunk_seconds * 16000 // cfg.hop_length
    return max(mel.frames for mel in mels)


def _concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat``, without copying a lone clip's patches (tens of MB each)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def collate_omni(items: list[dict], cfg: OmniConfig | None = None) -> dict:
    """Stack clips into one batch: blocks left-padded (as the processor pads text), videos concatenated
    (as the processor concatenates them), mel features padded per ``cfg.audio_padding``."""
    cfg = cfg or OmniConfig()
    B = len(items)
    S = max(int(it["input_ids"].numel()) for it in items)
    input_ids = torch.full((B, S), cfg.pad_token_id, dtype=torch.int64)
    attention_mask = torch.zeros((B, S), dtype=torch.int64)
    position_ids = torch.ones((3, B, S), dtype=torch.int64)  # get_rope_index leaves padding at 1
    rope_deltas = torch.empty((B, 1), dtype=torch.int64)
    for b, it in enumerate(items):
        n = it["input_ids"].numel()
        input_ids[b, S - n:] = it["input_ids"]
        attention_mask[b, S - n:] = 1
        position_ids[:, b, S - n:] = it["position_ids"]
        rope_deltas[b, 0] = it["position_ids"].max() + 1 - n
    length = _audio_length([it["mel"] for it in items], cfg)
    frames = max(it["frame_labels"].numel() for it in items)
    frame_labels = torch.full((B, frames), IGNORE, dtype=torch.int64)
    for b, it in enumerate(items):
        frame_labels[b, :it["frame_labels"].numel()] = it["frame_labels"]
    feature_mask = torch.zeros((B, length), dtype=torch.int32)
    for b, it in enumerate(items):
        feature_mask[b, :it["mel"].frames] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "rope_deltas": rope_deltas,
        "pixel_values_videos": _concat([it["pixel_values_videos"] for it in items]),
        "video_grid_thw": torch.stack([it["video_grid_thw"] for it in items]),
        "video_second_per_grid": torch.tensor([it["video_second_per_grid"] for it in items], dtype=torch.float32),
        "input_features": torch.stack([it["mel"].padded(length) for it in items]),
        "feature_attention_mask": feature_mask,
        "frame_labels": frame_labels,
        "meta": [it["meta"] for it in items],
    }
