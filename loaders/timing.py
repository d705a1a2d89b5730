"""Timestamps for frames and MFCC rows, and the (t, h, w) RoPE position ids built from them.

Everything is in SOURCE-VIDEO seconds: Ego4D frame numbers count from 0 and frame ``f`` is shown
at ``f / fps``. A clip that starts at ``start_frame`` keeps those absolute times, so a training
script can align any stream (frames, MFCC rows, transcripts) without knowing how we cut clips.

Position ids follow Qwen2-VL / Qwen2.5-VL (M-RoPE) and Qwen2.5-Omni (TMRoPE). By default
(``timing="model"``) they are, bit for bit, what transformers' ``get_rope_index`` gives the model
(checked against transformers 5.25.0 over 15 frame rates, clips deep into a video and grid steps
longer than a chunk): the model computes temporal ids in float32 and truncates them, and counts
both streams from the block's start. ``timing="exact"`` gives ids from the true times instead
(float64, offsets and uneven sampling visible), for models of your own, not for a Qwen checkpoint.
"""

from __future__ import annotations


import numpy as np

from shardgen.core.format import audio_sample_range

from shardgen.core.features import mfcc_geometry

__all__ = [
    "frame_times",
    "audio_start_sample",
    "audio_feature_times",
    "grid_steps",
    "second_per_grid_of",
    "model_video_time_ids",
    "chunk_numbers",
    "mrope_ids",
    "tmrope_ids",
    "tmrope_next_id",
    "TIMINGS",
]

TIMINGS = ("model", "exact")

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
    """``floor((t - t0) * ids_per_second)`` in float64, minus float noise (the time-exact ids)."""
    return np.floor((np.asarray(times, dtype=np.float64) - t0) * ids_per_second + _EPS).astype(np.int64)


def grid_steps(n_frames: int, temporal_patch_size: int = 2) -> int:
    """Temporal grid steps of ``n_frames`` frames: Qwen pads the last group by repeating the last frame."""
    return -(-int(n_frames) // temporal_patch_size)


def second_per_grid_of(frame_t: np.ndarray, temporal_patch_size: int = 2) -> float:
    """Seconds per temporal grid step of evenly spaced frames: ``temporal_patch_size`` × their mean spacing.

    This is what ``Qwen2_5OmniProcessor`` reports as ``video_second_per_grid`` (``temporal_patch_size
    / fps``) when told the frames' true rate. The model rounds it to float32, which absorbs the float64
    noise of times far into a video (the sweep test checks 15 frame rates at frame 108000).
    """
    frame_t = np.asarray(frame_t, dtype=np.float64)
    if frame_t.size < 2:
        return float(temporal_patch_size)  # one grid step: its id is 0 whatever the spacing
    return temporal_patch_size * float(frame_t[-1] - frame_t[0]) / (frame_t.size - 1)


def model_video_time_ids(grid_t: int, second_per_grid: float, ids_per_second: float) -> np.ndarray:
    """transformers' ``(arange(grid_t) * second_per_grid * ids_per_second).long()``, in float32 like the model.

    ``second_per_grid`` arrives in the model as a float32 tensor, so the product is float32 and
    truncated: at 25 fps ``float32(0.08) * 125 * 25`` is ``249.99998``, id 249, where exact time gives
    250. NumPy's float32 multiply rounds like torch's, one operation at a time, in the same order.
    """
    steps = np.arange(int(grid_t), dtype=np.float32)
    t = steps * np.float32(second_per_grid) * np.float32(ids_per_second)
    return t.astype(np.int64)


def chunk_numbers(t_ids: np.ndarray, ids_per_chunk: int) -> np.ndarray:
    """Each token's chunk as transformers' ``get_chunked_index`` cuts a stream of temporal ids.

    It walks the tokens and opens the next chunk whenever a token's id reaches the current chunk's
    end, at most ONE chunk per token. When ids never jump by more than a chunk that is ``t // ids_per_chunk``;
    after a longer jump (a grid step longer than a chunk, e.g. frames sampled at 0.5 fps) the chunk
    numbers lag, so the first patches of such a step each open a chunk of their own: the processor
    lays out the tokens this way and the model numbers them this way, so we do too.
    """
    t = np.asarray(t_ids, dtype=np.int64)
    if t.size == 0:
        return t.copy()
    if t[0] < ids_per_chunk and (np.diff(t) <= ids_per_chunk).all():
        return t // ids_per_chunk  # the common case: no jump past a chunk, no lag
    chunks = np.empty_like(t)
    opened = 0  # chunks opened so far; the current chunk ends at (opened + 1) * ids_per_chunk
    values, starts, counts = np.unique(t, return_index=True, return_counts=True)  # t is non-decreasing
    for value, start, count in zip(values.tolist(), starts.tolist(), counts.tolist()):
        opens = min(max(value // ids_per_chunk - opened, 0), count)  # tokens of this run that each open a chunk
        chunks[start:start + count] = opened + np.minimum(np.arange(1, count + 1), opens)
        opened += opens
    return chunks


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


def _check_timing(timing: str) -> None:
    if timing not in TIMINGS:
        raise ValueError(f"timing {timing!r}: choose one of {TIMINGS}")


def mrope_ids(
    frame_t: np.ndarray,
    grid_hw: tuple[int, int],
    temporal_patch_size: int = 2,
    tokens_per_second: float | None = None,
    start_id: int = 0,
    *,
    second_per_grid: float | None = None,
    timing: str = "model",
) -> np.ndarray:
    """Qwen2-VL / Qwen2.5-VL M-RoPE ids ``[3, G*h*w]`` (t, h, w) for one video's patches.

    Args:
        frame_t: times of the frames fed to the vision encoder (seconds); ``G = ceil(len / temporal_patch_size)``.
        grid_hw: the LLM token grid per frame, ``(h, w)`` AFTER spatial merging
            (Qwen's ``grid_h // spatial_merge_size``, ``grid_w // spatial_merge_size``).
        temporal_patch_size: frames merged into one temporal grid step (Qwen: 2).
        tokens_per_second: ``None`` reproduces Qwen2-VL, where t is the grid-step index. A number
            reproduces Qwen2.5-VL (its ``vision_config.tokens_per_second``, 2):
            ``t = long(step * float32(tokens_per_second * second_per_grid))``, as transformers 5.x
            computes it (4.57 cast ``second_per_grid`` to int64 first: 2/30 s became 0).
        start_id: the position id the video starts at (Qwen adds it to all three rows).
        second_per_grid: the ``second_per_grid_ts`` the processor gives the model (``temporal_patch_size
            / fps``, fps being the rate you tell it); default from ``frame_t`` (:func:`second_per_grid_of`).
        timing: ``"model"`` (default): what transformers computes; ``"exact"``: ``floor`` of each
            step's first-frame time since the first frame, in float64 (uneven frames show).
    """
    _check_timing(timing)
    frame_t = np.asarray(frame_t, dtype=np.float64)
    grid_t = grid_steps(frame_t.size, temporal_patch_size)
    if tokens_per_second is None:
        t_ids = np.arange(grid_t, dtype=np.int64)
    elif timing == "exact":
        step_t = _grid_step_times(frame_t, temporal_patch_size)
        t_ids = _temporal_ids(step_t, step_t[0] if step_t.size else 0.0, tokens_per_second)
    else:
        spg = second_per_grid_of(frame_t, temporal_patch_size) if second_per_grid is None else second_per_grid
        interval = np.float32(tokens_per_second) * np.float32(spg)  # Qwen2.5-VL: tokens_per_second * tensor
        t_ids = (np.arange(grid_t, dtype=np.float32) * interval).astype(np.int64)
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
    *,
    second_per_grid: float | None = None,
    timing: str = "model",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Qwen2.5-Omni TMRoPE ids for a video with its audio (``use_audio_in_video=True``).

    ``timing="model"`` (default) is what transformers' ``get_rope_index`` gives the tokens the
    processor lays out (``replace_video_with_audio_token``), exactly:

    - video: one temporal id per grid step, ``long(step * float32(second_per_grid) * 25)`` in
      float32 (so at 25 fps step 125 is 249, not 250), shared by the step's ``h*w`` patches, whose
      h/w ids are their grid row and column;
    - audio: token ``k`` (40 ms each, 25 per second) has ``t = h = w = k``;
    - both counted from the block's start (the model cannot see an offset between the streams;
      ``t0`` is refused), all three rows offset by ``start_id``;
    - stream order: per 2 s chunk (50 ids) the chunk's video tokens, then its audio tokens, the
      chunks cut as ``get_chunked_index`` cuts them (:func:`chunk_numbers`).

    ``timing="exact"``: ids are ``floor((t - t0) * 25)`` of the true times in float64 (a frame
    step's first frame, each audio token's start), a token's chunk is ``t // 50``, and ``t0``
    defaults to the earlier of the first frame and the first audio token. Offsets, drift and uneven
    sampling show up in these ids: for models you train from scratch, not for a Qwen checkpoint.

    Args:
        frame_t: frame times (s). Grouped by ``temporal_patch_size``; a short last group counts.
        audio_t: audio token start times (s), one per 40 ms token (the model: only their count).
        grid_hw: LLM token grid per frame after spatial merging, ``(h, w)``.
        t0: ``timing="exact"`` only: time of temporal id 0.
        start_id: added to every id (the position after the block's two bos tokens).
        second_per_grid: the processor's ``video_second_per_grid`` (``temporal_patch_size / fps``
            with the fps you give it); default from ``frame_t`` (:func:`second_per_grid_of`).

    Returns:
        ``(ids, modality, order)``: ``ids`` int64 ``[3, L]`` in stream order; ``modality`` int8
        ``[L]`` (0 video, 1 audio); ``order`` int64 ``[L]``, for each stream position the index
        into the unordered token list ``[video patches (step, row, col major)..., audio tokens...]``,
        so features concatenated that way are put in stream order by ``features[order]``.
    """
    _check_timing(timing)
    frame_t = np.asarray(frame_t, dtype=np.float64)
    audio_t = np.asarray(audio_t, dtype=np.float64)
    ids_per_chunk = int(position_id_per_seconds * seconds_per_chunk)
    if timing == "model":
        if t0 is not None:
            raise ValueError("t0 applies to timing='exact': the model counts video and audio from the block's start")
        spg = second_per_grid_of(frame_t, temporal_patch_size) if second_per_grid is None else second_per_grid
        video_t = model_video_time_ids(grid_steps(frame_t.size, temporal_patch_size), spg, position_id_per_seconds)
        audio_ids = np.arange(audio_t.size, dtype=np.int64)
        video = _video_grid_ids(video_t, grid_hw)
        chunk = np.concatenate([chunk_numbers(video[0], ids_per_chunk), chunk_numbers(audio_ids, ids_per_chunk)])
    else:
        step_t = _grid_step_times(frame_t, temporal_patch_size)
        if t0 is None:
            firsts = [a[0] for a in (step_t, audio_t) if a.size]
            t0 = min(firsts) if firsts else 0.0
        video = _video_grid_ids(_temporal_ids(step_t, t0, position_id_per_seconds), grid_hw)
        audio_ids = _temporal_ids(audio_t, t0, position_id_per_seconds)
        chunk = np.concatenate([video[0], audio_ids]) // ids_per_chunk

    unordered = np.concatenate([video, np.stack([audio_ids] * 3)], axis=1)
    modality = np.concatenate([np.zeros(video.shape[1], np.int8), np.ones(audio_ids.size, np.int8)])
    order = np.lexsort((np.arange(modality.size), modality, chunk))  # chunk, then video first, stable
    return unordered[:, order] + start_id, modality[order], order


def tmrope_next_id(ids: np.ndarray, modality: np.ndarray) -> int:
    """The id transformers gives what follows a ``tmrope_ids`` block (its eos tokens, then text).

    ``get_rope_index`` continues from the largest id of the LAST piece it appended (the last
    chunk's audio tokens, or video patches when the video runs longer) plus one — not from the
    block's largest id: a 1 s clip sampled at 2 fps has a video step at t=25 but audio only up to
    24, so what follows gets 25, not 26. The trailing run of one modality holds that piece's
    maximum (audio ids rise; a video run ends with the last step's full grid).
    """
    modality = np.asarray(modality)
    if modality.size == 0:
        return 0
    other = np.nonzero(modality != modality[-1])[0]
    run = slice(other[-1] + 1 if other.size else 0, None)
    return int(np.asarray(ids)[:, run].max()) + 1
