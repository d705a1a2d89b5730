"""Timestamps for frames and MFCC rows, and the (t, h, w) RoPE position ids built from them.

Everything is in SOURCE-VIDEO seconds: Ego4D frame numbers count from 0 and frame ``f`` is shown
at ``f / fps``. A clip that starts at ``start_frame`` keeps those absolute times, so a training
script can align any stream (frames, MFCC rows, transcripts) without knowing how we cut clips.

Position ids follow Qwen2-VL (M-RoPE) and Qwen2.5-Omni (TMRoPE) in transformers'
``get_rope_index``; see :func:`mrope_ids` and :func:`tmrope_ids` for what is followed exactly and
where we deliberately differ.
"""

from __future__ import annotations


import numpy as np

from shardgen.core.format import audio_sample_range

from shardgen.core.features import mfcc_geometry

__all__ = [
    "frame_times",
    "audio_start_sample",
    "audio_feature_times",
    "mrope_ids",
    "tmrope_ids",
]

# Guards floor() against float noise: 0.12 s * 25 = 2.9999999999999996 must give id 3.
_EPS = 1e-6


def frame_times(start_frame: int, n_frames: int, fps: float) -> np.ndarray:
    """Source-video seconds of each frame of a clip: ``(start_frame + i) / fps``, float64."""
    return (start_frame + np.arange(n_frames, dtype=np.float64)) / fps


def audio_start_sample(start_frame: int, fps: float, sample_rate: int = 16000) -> int:
    """First audio sample of a clip starting at video frame ``start_frame``: ``round(start_frame/fps*sr)``.

    Delegates to the shard format's definition (exact fractions, halves rounded up), so the time
    we give the first MFCC row is the time of the sample the builder cut at. Note: the Ego4D
    TalkNet port cuts with ``int(start*sr)`` (truncation), at most one sample (62.5 us) earlier.
    """
    return audio_sample_range(start_frame, start_frame, fps, sample_rate)[0]


def audio_feature_times(start_frame: int, n_rows: int, fps: float, sample_rate: int = 16000) -> np.ndarray:
    """Source-video seconds at which each MFCC row's analysis window starts.

    Row ``r`` starts at sample ``audio_start_sample(start_frame) + r * step`` of the source audio,
    with ``step = psf_round_half_up(0.010*25/fps*sr)`` as TalkNet's MFCC uses. At 30 fps the step is
    133 samples instead of 133.33, so row ``4*i``, which TalkNet pairs with frame ``i``, starts
    ``4*i/3`` samples before that frame: the audio features lag the video, by 37.5 ms at frame
    450 (row 1800 starts at 14.9625 s, the frame is at 15 s). These numbers show that drift; they
    do not correct it.
    """
    _, step = mfcc_geometry(fps, sample_rate)
    first = audio_start_sample(start_frame, fps, sample_rate)
    return (first + step * np.arange(n_rows, dtype=np.float64)) / sample_rate


def _temporal_ids(times: np.ndarray, t0: float, ids_per_second: float) -> np.ndarray:
    """``floor((t - t0) * ids_per_second)``: Qwen's ``.long()`` on non-negative times, minus float noise."""
    return np.floor((np.asarray(times, dtype=np.float64) - t0) * ids_per_second + _EPS).astype(np.int64)


def _video_grid_ids(t_ids: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """``[3, G*h*w]`` ids for video patches, frame-major then row-major like Qwen's flatten."""
    h, w = grid_hw
    n = t_ids.size
    t = np.repeat(t_ids, h * w)
    rows = np.tile(np.repeat(np.arange(h), w), n)
    cols = np.tile(np.arange(w), n * h)
    return np.stack([t, rows, cols]).astype(np.int64)


def _grid_step_times(frame_t: np.ndarray, temporal_patch_size: int) -> np.ndarray:
    """Time of each temporal grid step: its first frame (Qwen merges ``temporal_patch_size``
    consecutive frames into one step, padding the last group by repeating the last frame)."""
    return np.asarray(frame_t, dtype=np.float64)[::temporal_patch_size]


def mrope_ids(
    frame_t: np.ndarray,
    grid_hw: tuple[int, int],
    temporal_patch_size: int = 2,
    tokens_per_second: float | None = None,
    start_id: int = 0,
) -> np.ndarray:
    """Qwen2-VL-style M-RoPE ids ``[3, G*h*w]`` (t, h, w) for one video's patches.

    Args:
        frame_t: times of the frames fed to the vision encoder (seconds).
        grid_hw: the LLM token grid per frame, ``(h, w)`` AFTER spatial merging
            (Qwen's ``grid_h // spatial_merge_size``, ``grid_w // spatial_merge_size``).
        temporal_patch_size: frames merged into one temporal grid step (Qwen: 2).
        tokens_per_second: ``None`` reproduces Qwen2-VL, where t is the grid-step index. A number
            reproduces Qwen2.5-VL's absolute time ids,
            ``t = long(step * second_per_grid * tokens_per_second)`` (Qwen2.5-VL uses 2); here
            computed from the actual step times relative to the first frame, which equals
            Qwen's formula for evenly spaced frames.
        start_id: the position id the video starts at (Qwen adds ``text_len + st_idx`` to all
            three rows).
    """
    step_t = _grid_step_times(frame_t, temporal_patch_size)
    if tokens_per_second is None:
        t_ids = np.arange(step_t.size, dtype=np.int64)
    else:
        t_ids = _temporal_ids(step_t, step_t[0] if step_t.size else 0.0, tokens_per_second)
    return _video_grid_ids(t_ids, grid_hw) + start_id


def tmrope_ids(
    frame_t: np.ndarray,
    audio_t: np.ndarray,
    grid_hw: tuple[int, int],
    temporal_patch_size: int = 2,
    position_id_per_seconds: float = 25,
    seconds_per_chunk: float = 2.0,
    t0: float | None = None,
    start_id: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Qwen2.5-Omni TMRoPE ids for a video with its audio (``use_audio_in_video=True``).

    What we follow from transformers' ``Qwen2_5OmniThinker...get_rope_index``:

    - temporal id = time in units of 1/25 s (``position_id_per_seconds = 25``, 40 ms), truncated;
      video: one id per temporal grid step (``temporal_patch_size = 2`` frames), the time of its
      first frame, shared by all ``h*w`` patches of the step, whose h/w ids are the grid row and
      column; audio: ``t = h = w =`` the token's temporal id (Qwen's audio tokens are 40 ms each,
      so its ``arange(audio_len)`` is this same id).
    - ids are relative to the stream start and offset by ``start_id`` on all three rows (Qwen's
      ``st_idx``, also added to h and w of video patches).
    - interleaving: the stream is cut into ``seconds_per_chunk`` = 2 s chunks (50 ids); within each
      chunk all its video tokens come first, then all its audio tokens.

    Where we differ, on purpose: Qwen takes audio/video *indices* and assumes both streams start
    together and are evenly spaced; we take actual times (``frame_t``, ``audio_t`` in seconds,
    e.g. :func:`frame_times` and per-token audio times), so drift or offsets show up in the ids.
    A token's chunk is ``t_id // 50``; Qwen's ``get_chunked_index`` advances one chunk per
    boundary crossed, which only differs when a modality skips a whole chunk (>2 s between
    grid steps), where Qwen would pair the wrong chunks.

    Args:
        frame_t: frame times (s). Grouped by ``temporal_patch_size``; a short last group counts.
        audio_t: audio token start times (s).
        grid_hw: LLM token grid per frame after spatial merging, ``(h, w)``.
        t0: time of temporal id 0; default the earlier of the first frame and first audio token.
        start_id: added to every id.

    Returns:
        ``(ids, modality, order)``: ``ids`` int64 ``[3, L]`` in stream order; ``modality`` int8
        ``[L]`` (0 video, 1 audio); ``order`` int64 ``[L]``, for each stream position the index
        into the unordered token list ``[video patches (step, row, col major)..., audio tokens...]``,
        so features concatenated that way are put in stream order by ``features[order]``.
    """
    step_t = _grid_step_times(frame_t, temporal_patch_size)
    audio_t = np.asarray(audio_t, dtype=np.float64)
    if t0 is None:
        firsts = [a[0] for a in (step_t, audio_t) if a.size]
        t0 = min(firsts) if firsts else 0.0

    video = _video_grid_ids(_temporal_ids(step_t, t0, position_id_per_seconds), grid_hw)
    audio_ids = _temporal_ids(audio_t, t0, position_id_per_seconds)
    unordered = np.concatenate([video, np.stack([audio_ids] * 3)], axis=1)
    modality = np.concatenate([np.zeros(video.shape[1], np.int8), np.ones(audio_ids.size, np.int8)])

    ids_per_chunk = int(position_id_per_seconds * seconds_per_chunk)
    chunk = unordered[0] // ids_per_chunk
    order = np.lexsort((np.arange(modality.size), modality, chunk))  # chunk, then video first, stable
    return unordered[:, order] + start_id, modality[order], order
