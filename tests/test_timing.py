"""loaders.timing: frame/MFCC-row timestamps and Qwen-style (t, h, w) position ids."""

import numpy as np
import pytest

from shardgen.core.features import talknet_mfcc
import torch

from loaders.timing import (
    chunk_numbers,
    audio_feature_times,
    audio_start_sample,
    frame_times,
    mrope_ids,
    tmrope_ids,
    tmrope_next_id,
)


# ---------------------------------------------------------------- timestamps


@pytest.mark.parametrize("start,n,fps", [(0, 10, 30.0), (82, 129, 30.0), (1234, 7, 29.97), (5, 3, 25.0)])
def test_frame_times_are_zero_based_frame_over_fps(start, n, fps):
    np.testing.assert_array_equal(frame_times(start, n, fps), [(start + i) / fps for i in range(n)])


def test_audio_rows_drift_behind_frames_at_30fps():
    rows = audio_feature_times(0, 4 * 451, 30.0)
    frames = frame_times(0, 451, 30.0)
    # 133-sample step: row 4*i starts at 532*i samples, frame i is at 533.33*i samples.
    np.testing.assert_allclose(rows[::4], 532 * np.arange(451) / 16000, rtol=0, atol=1e-12)
    lag = frames[450] - rows[4 * 450]
    assert lag == pytest.approx(0.0375, abs=1e-12)  # 600 samples at frame 450 (15 s)
    np.testing.assert_allclose(frames - rows[::4], np.arange(451) * (4 / 3) / 16000, atol=1e-12)


def test_audio_rows_align_with_frames_at_25fps():
    np.testing.assert_allclose(audio_feature_times(100, 400, 25.0)[::4], frame_times(100, 100, 25.0), atol=1e-12)


def test_audio_rows_start_at_the_clips_first_sample():
    # frame 300 at 30 fps is 10 s = sample 160000; frame 7 at 30 fps is 3733.33 -> 3733
    assert audio_start_sample(300, 30.0) == 160000
    assert audio_start_sample(7, 30.0) == 3733
    assert audio_feature_times(7, 2, 30.0).tolist() == [3733 / 16000, (3733 + 133) / 16000]
    assert audio_start_sample(1, 2.0, sample_rate=5) == 3  # 2.5 rounds half up, like the builder


def test_row_count_and_times_agree_with_the_mfcc():
    """The i-th row time is where the i-th MFCC window starts: the last row begins inside the clip."""
    samples = np.random.default_rng(0).integers(-1000, 1000, 16000 * 2).astype(np.int16)
    n_rows = talknet_mfcc(samples, 30.0).shape[0]
    times = audio_feature_times(0, n_rows, 30.0)
    assert times[-1] < len(samples) / 16000 <= times[-1] + 333 / 16000


# ---------------------------------------------------------------- M-RoPE (Qwen2-VL / Qwen2.5-VL)


def test_mrope_qwen2vl_hand_example():
    # 4 frames, temporal patch 2 -> 2 grid steps; 2x2 merged grid; t = step index (Qwen2-VL).
    ids = mrope_ids(frame_times(0, 4, 30.0), (2, 2))
    np.testing.assert_array_equal(
        ids,
        [
            [0, 0, 0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 0, 0, 1, 1],
            [0, 1, 0, 1, 0, 1, 0, 1],
        ],
    )
    np.testing.assert_array_equal(mrope_ids(frame_times(0, 4, 30.0), (2, 2), start_id=7), ids + 7)


def test_mrope_qwen25vl_absolute_time():
    # 2 fps sampling, temporal patch 2 -> one step per second; tokens_per_second=2 -> t = 0, 2, 4.
    ids = mrope_ids(frame_times(0, 6, 2.0), (1, 1), tokens_per_second=2)
    np.testing.assert_array_equal(ids[0], [0, 2, 4])
    # at 30 fps, steps of 1/15 s -> t = step * 2/15, 0 until step 8 (8 * 2/15 = 1.07)
    ids = mrope_ids(frame_times(0, 18, 30.0), (1, 1), tokens_per_second=2)
    np.testing.assert_array_equal(ids[0], [(s * 2 * 2) // 30 for s in range(9)])


def test_timing_must_be_model_or_exact():
    with pytest.raises(ValueError, match="timing 'float'"):
        mrope_ids(frame_times(0, 4, 30.0), (1, 1), timing="float")
    with pytest.raises(ValueError, match="t0 applies to timing='exact'"):
        tmrope_ids(frame_times(0, 4, 30.0), np.zeros(3), (1, 1), t0=0.0)


# ---------------------------------------------------------------- TMRoPE (Qwen2.5-Omni)


def test_tmrope_exact_timing_hand_example():
    # Frames every 0.5 s (6 frames), temporal patch 2 -> steps at 0, 1, 2 s -> t = 0, 25, 50.
    # Grid 1x2 -> 2 patches per step. Audio tokens every 0.5 s -> t = 0, 12, 25, 37, 50, 62.
    # Chunks of 2 s = 50 ids: chunk 0 = video t<50 then audio t<50; chunk 1 = the rest.
    ids, modality, order = tmrope_ids(frame_times(0, 6, 2.0), np.arange(6) * 0.5, (1, 2), start_id=10, timing="exact")
    want = np.array(
        [
            # V0   V0  V25 V25  A0 A12 A25 A37 V50 V50 A50 A62
            [0, 0, 25, 25, 0, 12, 25, 37, 50, 50, 50, 62],  # t
            [0, 0, 0, 0, 0, 12, 25, 37, 0, 0, 50, 62],  # h: grid row / audio t
            [0, 1, 0, 1, 0, 12, 25, 37, 0, 1, 50, 62],  # w: grid col / audio t
        ]
    )
    np.testing.assert_array_equal(ids, want + 10)
    np.testing.assert_array_equal(modality, [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1])
    # unordered list = [6 video patches, 6 audio tokens]
    np.testing.assert_array_equal(order, [0, 1, 2, 3, 6, 7, 8, 9, 4, 5, 10, 11])


def test_tmrope_exact_timing_floors_time_without_float_noise():
    ids, _, _ = tmrope_ids(np.array([]), np.array([0.0, 0.12, 0.36]), (1, 1), timing="exact")
    np.testing.assert_array_equal(ids[0], [0, 3, 9])  # 0.12*25 = 2.9999999999999996 in float


def test_tmrope_model_timing_truncates_in_float32_like_the_model():
    # 25 fps: step s starts at 0.08*s s; the model computes long(s * float32(0.08) * 25) in float32.
    ids, modality, _ = tmrope_ids(frame_times(0, 376, 25.0), np.zeros(375), (1, 1))
    video_t = ids[0][modality == 0]
    exact = 2 * np.arange(188)
    by_hand = [int(np.float32(np.float32(s) * np.float32(0.08)) * np.float32(25)) for s in range(188)]
    np.testing.assert_array_equal(video_t, by_hand)
    assert (video_t != exact).sum() > 0 and ((exact - video_t) <= 1).all()  # one id early where float32 rounds down


def test_what_follows_a_block_continues_from_its_last_piece():
    # 1 s at 2 fps (4 frames, min_frames): video steps at t = 0 and 25, audio 0..24: the model's
    # last piece is the audio (max 24), so the eos tokens get 25 although a video patch has 25.
    ids, modality, _ = tmrope_ids(np.array([0.0, 0.5, 1.0, 1.5]), np.zeros(25), (1, 1), second_per_grid=1.0)
    assert ids.max() == 25 and tmrope_next_id(ids, modality) == 25
    # video last (no audio after it): the video's grid rows count too
    ids, modality, _ = tmrope_ids(frame_times(0, 2, 2.0), np.zeros(0), (3, 1))
    assert tmrope_next_id(ids, modality) == 3


def test_chunk_numbers_lag_after_a_jump_longer_than_a_chunk():
    # get_chunked_index opens at most one chunk per token: a step 4 s (100 ids) after the last
    # puts its first patch alone in the chunk it skipped.
    t = np.repeat([0, 100, 200], 3)
    np.testing.assert_array_equal(chunk_numbers(t, 50), [0, 0, 0, 1, 2, 2, 3, 4, 4])
    np.testing.assert_array_equal(chunk_numbers(np.arange(120), 50), np.arange(120) // 50)


# ---------------------------------------------------------------- against transformers' own code

SWEEP_FPS = [1, 2, 5, 10, 12, 15, 24000 / 1001, 24, 25, 30000 / 1001, 30, 48, 50, 60000 / 1001, 60]
SWEEP_SECONDS = [15, 60, 300]
SWEEP_START = [0, 108000]
SWEEP_GRID = (2, 2)  # merged h, w: two rows and columns, so a chunk boundary can fall inside a step


def _sweep_case(fps, seconds, start):
    """Frame times of ``seconds`` at ``fps`` from ``start``, the processor's grid (t, h, w), audio tokens."""
    n_frames = int(round(seconds * fps))
    frame_t = frame_times(start, n_frames, fps)
    grid_thw = (-(-n_frames // 2), 2 * SWEEP_GRID[0], 2 * SWEEP_GRID[1])
    n_audio = seconds * 25
    return frame_t, grid_thw, n_audio, start / fps + 0.04 * np.arange(n_audio)


def _omni_block(modality: np.ndarray) -> torch.Tensor:
    from tests.hf_reference import omni_thinker_config

    cfg = omni_thinker_config()
    body = np.where(modality == 1, cfg.audio_token_id, cfg.video_token_id)
    return torch.tensor([[cfg.vision_start_token_id, cfg.audio_start_token_id, *body.tolist(),
                          cfg.audio_end_token_id, cfg.vision_end_token_id]])


def _expected_order(modality: np.ndarray) -> np.ndarray:
    """Where the model scatters features: video features into the video tokens in order, audio likewise."""
    n_video = int((modality == 0).sum())
    order = np.empty(modality.size, np.int64)
    order[modality == 0] = np.arange(n_video)
    order[modality == 1] = n_video + np.arange(modality.size - n_video)
    return order


def _audio_seqlen(n_tokens: int) -> int:
    """Mel frames that give ``n_tokens`` audio tokens: ((L - 1) // 2 + 1 - 2) // 2 + 1 = n."""
    return 4 * n_tokens


@pytest.mark.parametrize("start", SWEEP_START)
@pytest.mark.parametrize("seconds", SWEEP_SECONDS)
def test_tmrope_ids_equal_qwen25_omni_get_rope_index(seconds, start):
    from tests.hf_reference import omni_rope_index, processor_layout

    checked = 0
    for fps in SWEEP_FPS:
        frame_t, grid_thw, n_audio, audio_t = _sweep_case(fps, seconds, start)
        ids, modality, order = tmrope_ids(frame_t, audio_t, SWEEP_GRID, start_id=1)  # after the two bos tokens
        layout = processor_layout(grid_thw, 2 / fps, n_audio)
        np.testing.assert_array_equal(modality, layout, err_msg=f"{fps} fps: token layout differs from the processor's")
        pos, _ = omni_rope_index(_omni_block(modality), torch.tensor([grid_thw]), torch.tensor([_audio_seqlen(n_audio)]),
                                 torch.tensor([2 / fps]))  # float32, as the processor's tensors carry it
        pos = pos[:, 0].numpy()
        np.testing.assert_array_equal(ids, pos[:, 2:-2], err_msg=f"{fps} fps, {seconds} s from frame {start}")
        np.testing.assert_array_equal(pos[:, :2], 0)  # both bos tokens at 0
        np.testing.assert_array_equal(pos[:, -2:], tmrope_next_id(ids, modality))  # both eos tokens after the block
        np.testing.assert_array_equal(order, _expected_order(modality))
        assert ids.shape == (3, grid_thw[0] * 4 + n_audio)
        checked += 1
    assert checked == len(SWEEP_FPS)


def _vl_block(n_video: int, prefix: int = 5, suffix: int = 3):
    types = [0] * prefix + [2] * n_video + [0] * suffix
    return torch.zeros(1, len(types), dtype=torch.long), torch.tensor([types], dtype=torch.int)


@pytest.mark.parametrize("start", SWEEP_START)
@pytest.mark.parametrize("seconds", SWEEP_SECONDS)
def test_mrope_ids_equal_qwen2vl_and_qwen25vl_get_rope_index(seconds, start):
    from tests.hf_reference import QWEN25VL_TOKENS_PER_SECOND, qwen25vl_rope_index, qwen2vl_rope_index

    checked = 0
    for fps in SWEEP_FPS:
        frame_t, grid, _, _ = _sweep_case(fps, seconds, start)
        grid_thw = torch.tensor([grid])
        n_video = grid[0] * SWEEP_GRID[0] * SWEEP_GRID[1]
        input_ids, types = _vl_block(n_video)
        video = slice(5, 5 + n_video)
        pos2, _ = qwen2vl_rope_index(input_ids, types, grid_thw)
        np.testing.assert_array_equal(mrope_ids(frame_t, SWEEP_GRID, start_id=5), pos2[:, 0, video].numpy())
        pos25, _ = qwen25vl_rope_index(input_ids, types, grid_thw, torch.tensor([2 / fps]))
        np.testing.assert_array_equal(mrope_ids(frame_t, SWEEP_GRID, tokens_per_second=QWEN25VL_TOKENS_PER_SECOND, start_id=5),
                                      pos25[:, 0, video].numpy(), err_msg=f"Qwen2.5-VL {fps} fps {seconds} s from {start}")
        checked += 1
    assert checked == len(SWEEP_FPS)


@pytest.mark.parametrize("sample_fps", [0.5, 0.25])
def test_grid_steps_longer_than_a_chunk_follow_the_processor_and_the_model(sample_fps):
    """Frames 2-4 s apart: a grid step jumps past a whole 2 s chunk; the order is the processor's."""
    from tests.hf_reference import omni_rope_index, processor_layout

    seconds, source_fps = 60, 30
    picked = np.arange(0, seconds * source_fps, source_fps / sample_fps).astype(int)
    frame_t = frame_times(108000, 1, source_fps)[0] + picked / source_fps
    grid_t = -(-picked.size // 2)
    ids, modality, order = tmrope_ids(frame_t, np.zeros(seconds * 25), (2, 3), start_id=1)
    layout = processor_layout((grid_t, 4, 6), 2 / sample_fps, seconds * 25)
    np.testing.assert_array_equal(modality, layout)
    pos, _ = omni_rope_index(_omni_block(modality), torch.tensor([[grid_t, 4, 6]]), torch.tensor([_audio_seqlen(seconds * 25)]),
                             torch.tensor([2 / sample_fps]))
    np.testing.assert_array_equal(ids, pos[:, 0, 2:-2].numpy())
    np.testing.assert_array_equal(pos[:, 0, -2:].numpy(), tmrope_next_id(ids, modality))
    np.testing.assert_array_equal(order, _expected_order(modality))
    # the point of the case: the processor's layout is not "chunk = t // 50"
    _, exact_modality, _ = tmrope_ids(frame_t, 0.04 * np.arange(seconds * 25) + frame_t[0], (2, 3), timing="exact")
    assert (exact_modality != modality).sum() > 0


def test_ids_on_the_real_clip_equal_the_models(realdata):
    """The hamilton clip (275 frames at 30 fps, 640x360, its wav): Qwen's own processor parts give the
    frames it samples, the grid and the audio token count; the three models' get_rope_index the ids."""
    import soundfile
    from transformers.video_utils import VideoMetadata

    from tests.hf_reference import (QWEN25VL_TOKENS_PER_SECOND, omni_rope_index, qwen25vl_rope_index,
                                    qwen2vl_rope_index, video_processor, whisper_feature_extractor)

    n_frames = len(list((realdata / "video_imgs" / "short_hamilton_clip").glob("img_*.jpg")))
    wav, sr = soundfile.read(realdata / "wav" / "short_hamilton_clip.wav", dtype="float32")
    assert (n_frames, sr) == (275, 16000)
    mask = whisper_feature_extractor()(wav, sampling_rate=sr, return_attention_mask=True, return_tensors="pt")
    mel_frames = mask["attention_mask"][:, ::160].sum(-1)  # the processor's feature_attention_mask
    n_audio = int(((mel_frames - 1) // 2 + 1 - 2) // 2 + 1)
    processor = video_processor()
    checked = 0
    for fps in (None, 2.0):  # every frame, and the processor's own 2 fps sampling
        frames = np.zeros((n_frames, 360, 640, 3), np.uint8)
        if fps is None:
            out = processor(videos=[frames], return_tensors="pt")
            picked, spg = np.arange(n_frames), 2 / 30
        else:
            out = processor(videos=[frames], do_sample_frames=True, fps=fps, return_metadata=True, return_tensors="pt",
                            video_metadata=[VideoMetadata(total_num_frames=n_frames, fps=30.0)])
            picked, spg = np.asarray(out["video_metadata"][0].frames_indices), 2 / fps
        grid = out["video_grid_thw"]
        merged = (int(grid[0, 1]) // 2, int(grid[0, 2]) // 2)
        frame_t = frame_times(0, n_frames, 30.0)[picked]
        audio_t = 0.04 * np.arange(n_audio)

        ids, modality, _ = tmrope_ids(frame_t, audio_t, merged, start_id=1, second_per_grid=spg if fps else None)
        pos, _ = omni_rope_index(_omni_block(modality), grid, mel_frames, torch.tensor([spg]))
        np.testing.assert_array_equal(ids, pos[:, 0, 2:-2].numpy())

        n_video = int(grid[0].prod()) // 4
        input_ids, types = _vl_block(n_video)
        pos2, _ = qwen2vl_rope_index(input_ids, types, grid)
        np.testing.assert_array_equal(mrope_ids(frame_t, merged, start_id=5), pos2[:, 0, 5:5 + n_video].numpy())
        pos25, _ = qwen25vl_rope_index(input_ids, types, grid, torch.tensor([spg]))
        np.testing.assert_array_equal(
            mrope_ids(frame_t, merged, tokens_per_second=QWEN25VL_TOKENS_PER_SECOND, start_id=5,
                      second_per_grid=spg if fps else None),
            pos25[:, 0, 5:5 + n_video].numpy())
        checked += 1
    assert checked == 2
