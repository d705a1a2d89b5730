"""mode="qwen-omni": batches equal to what transformers' own processor and get_rope_index give the model.

The reference is transformers itself (pinned in the test extra; see tests/hf_reference.py): a real
``Qwen2_5OmniProcessor`` built in code (its video processor samples the frames itself from the whole
clip, decoded here with Pillow from the shard's JPEG bytes; its WhisperFeatureExtractor takes the
clip's wav read with soundfile) and the Qwen2.5-Omni ``get_rope_index`` on the processor's tokens.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from loaders import OMNI_MODEL_INPUTS, OmniConfig, make_loader, normalise_patches
from shardgen.build.pipeline import build
from shardgen.core.format import VOICE_EXT, frame_ext
from shardgen.demo import make_demo_corpus
from shardgen.build.plan import BuildParams
from tests.sources import npy, read_clips

FLOAT_TOL = 1e-5


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory) -> Path:
    """A 25 fps demo corpus (AVA's and TalkNet's rate, where float32 ids differ from exact times) in 5 s clips."""
    root = tmp_path_factory.mktemp("omni_demo")
    src = make_demo_corpus(root / "src", n_train=2, n_val=0, n_test=0, seconds=11.0, fps=25, width=320, height=180)
    out = root / "out"
    build(src, out, ["train"], BuildParams(clip_seconds=5.0, fps=25.0), workers=1, progress=False)
    return out / "train"


def _omni_batches(split: Path, batch_size: int, **omni) -> list[dict]:
    loader = make_loader(split, mode="qwen-omni", batch_size=batch_size, shuffle=False, omni=omni or None)
    return list(loader)


def _clip_media(split: Path, key: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """All frames of a clip (Pillow) and its audio (soundfile, float as int16 / 32768), read from the shards."""
    import json

    members = {}
    for shard in sorted(split.glob("*.tar")):
        members.update(read_clips(shard))
    m = members[key]
    meta = json.loads(m["json"])
    frames = np.stack([np.asarray(Image.open(io.BytesIO(m[frame_ext(i)])).convert("RGB"))
                       for i in range(1, meta["n_frames"] + 1)])
    audio, sr = soundfile.read(io.BytesIO(m[meta["audio_format"]]), dtype="int16")
    assert sr == 16000
    return frames, audio.astype(np.float32) / 32768.0, {"meta": meta, "voice": npy(m[VOICE_EXT])}


def _reference(split: Path, keys: list[str], **video_kwargs):
    """The real processor on the clips' full frame sequences (it samples 2 fps itself) and their audio."""
    from transformers.video_utils import VideoMetadata

    from tests.hf_reference import omni_processor, process_clips

    clips = [_clip_media(split, k) for k in keys]
    proc = omni_processor(**video_kwargs)
    out = process_clips(proc, [c[0] for c in clips], [c[1] for c in clips], fps=2.0, do_sample_frames=True,
                        return_metadata=True,
                        video_metadata=[VideoMetadata(total_num_frames=c[2]["meta"]["n_frames"], fps=c[2]["meta"]["fps"])
                                        for c in clips])
    return out, clips


def _assert_batch_equals_processor(batch: dict, ref, clips, *, full_audio: bool):
    from tests.hf_reference import omni_rope_index

    B = len(clips)
    for k in ("input_ids", "attention_mask", "video_grid_thw", "feature_attention_mask", "video_second_per_grid"):
        assert batch[k].dtype == ref[k].dtype, k
        if k == "feature_attention_mask" and not full_audio:
            L = batch[k].shape[1]
            torch.testing.assert_close(batch[k], ref[k][:, :L], rtol=0, atol=0)
            assert int(ref[k][:, L:].sum()) == 0  # nothing masked in past the batch's longest clip
            continue
        torch.testing.assert_close(batch[k], ref[k], rtol=0, atol=0, msg=k)
    torch.testing.assert_close(batch["pixel_values_videos"], ref["pixel_values_videos"], rtol=0, atol=FLOAT_TOL)
    L = batch["input_features"].shape[-1]
    assert L == (ref["input_features"].shape[-1] if full_audio else int(ref["feature_attention_mask"].sum(-1).max()))
    torch.testing.assert_close(batch["input_features"], ref["input_features"][..., :L], rtol=0, atol=FLOAT_TOL)
    # the model's own position ids over the processor's tokens
    pos, deltas = omni_rope_index(ref["input_ids"], ref["video_grid_thw"], ref["feature_attention_mask"].sum(-1),
                                  ref["video_second_per_grid"], attention_mask=ref["attention_mask"])
    torch.testing.assert_close(batch["position_ids"], pos, rtol=0, atol=0)
    torch.testing.assert_close(batch["rope_deltas"], deltas, rtol=0, atol=0)
    # labels at the frames the processor sampled
    assert len(ref["video_metadata"]) == B and len(batch["meta"]) == B
    for b, (meta, clip) in enumerate(zip(batch["meta"], clips)):
        picked = np.asarray(ref["video_metadata"][b].frames_indices)
        np.testing.assert_array_equal(meta["frame_index"], picked)
        labels = batch["frame_labels"][b]
        np.testing.assert_array_equal(labels[:picked.size].numpy(), clip[2]["voice"][picked])
        assert (labels[picked.size:] == -100).all()
        np.testing.assert_allclose(meta["frame_t"], (clip[2]["meta"]["start_frame"] + picked) / clip[2]["meta"]["fps"])


def test_omni_batches_equal_the_processor_on_a_25fps_demo(demo_build):
    batches = _omni_batches(demo_build, batch_size=2)
    uint8_batches = _omni_batches(demo_build, batch_size=2, pixel_dtype=torch.uint8)
    keys = [[m["key"] for m in b["meta"]] for b in batches]
    assert sum(len(k) for k in keys) == 6  # 2 videos x (5 s + 5 s + 1 s tail)
    assert len(uint8_batches) == len(batches) == 3
    for batch, small, batch_keys in zip(batches, uint8_batches, keys):
        ref, clips = _reference(demo_build, batch_keys)
        _assert_batch_equals_processor(batch, ref, clips, full_audio=False)
        # uint8 patches, normalised later (on the GPU, say): the same floats
        assert small["pixel_values_videos"].dtype == torch.uint8
        torch.testing.assert_close(normalise_patches(small["pixel_values_videos"]), ref["pixel_values_videos"],
                                   rtol=0, atol=FLOAT_TOL)


def test_omni_batch_equals_the_processor_on_the_real_clip(real_build):
    split = real_build / "train"
    (batch,) = _omni_batches(split, batch_size=3, audio_padding="max_length")
    keys = [m["key"] for m in batch["meta"]]
    assert keys == [f"short_hamilton_clip/clip_f{s:06d}" for s in (0, 120, 240)]
    ref, clips = _reference(split, keys)
    assert batch["input_features"].shape == (3, 128, 30000)
    _assert_batch_equals_processor(batch, ref, clips, full_audio=True)
    assert set(OMNI_MODEL_INPUTS) <= set(batch)


def test_omni_config_reads_a_model_config_and_refuses_unknown_options():
    from tests.hf_reference import omni_thinker_config

    cfg = OmniConfig.from_model_config(omni_thinker_config(audio_token_index=7, video_token_index=8,
                                                           vision_config={"spatial_merge_size": 4}))
    assert (cfg.audio_token_id, cfg.video_token_id, cfg.merge_size, cfg.vision_start_token_id) == (7, 8, 4, 151652)
    with pytest.raises(TypeError, match="unknown \\['frame_rate'\\]"):
        OmniConfig.coerce({"frame_rate": 2})
    with pytest.raises(ValueError, match="audio_padding 'none'"):
        OmniConfig(audio_padding="none")


def _tiny_thinker():
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from tests.hf_reference import omni_thinker_config

    torch.manual_seed(0)
    cfg = omni_thinker_config(
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6,
                                                                   "mrope_section": [2, 3, 3]}},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "fullatt_block_indexes": [1]},
        audio_config={"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                      "output_dim": 64})
    return Qwen2_5OmniThinkerForConditionalGeneration(cfg)


@pytest.mark.parametrize("build", ["demo_build", "real_build"])
def test_a_tiny_thinker_trains_a_step_on_an_omni_batch_and_agrees_on_the_ids(build, request):
    """A randomly initialised few-layer thinker: forward + backward of a per-step speaking head on one
    batch; the model's own get_rope_index over the batch's tokens gives the batch's position ids."""
    split = request.getfixturevalue(build)
    split = split / "train" if build == "real_build" else split
    model = _tiny_thinker()
    omni = OmniConfig.from_model_config(model.config, min_pixels=56 * 56, max_pixels=112 * 112)
    batch = next(iter(make_loader(split, mode="qwen-omni", batch_size=2, shuffle=False, omni=omni)))
    assert omni.max_pixels == 112 * 112 and batch["video_grid_thw"][0, 1:].prod() <= 112 * 112 // 14 ** 2

    pos, deltas = model.model.get_rope_index(batch["input_ids"], None, batch["video_grid_thw"], batch["attention_mask"],
                                             True, batch["feature_attention_mask"].sum(-1), batch["video_second_per_grid"])
    torch.testing.assert_close(batch["position_ids"], pos, rtol=0, atol=0)
    torch.testing.assert_close(batch["rope_deltas"], deltas, rtol=0, atol=0)

    head = torch.nn.Linear(model.config.text_config.hidden_size, 1)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=1e-2)
    out = model.model(**{k: batch[k] for k in OMNI_MODEL_INPUTS}, use_audio_in_video=True)
    hidden = out.last_hidden_state  # [B, S, H]
    # a speaking logit per video grid step: mean of the step's patch tokens; its label is the step's first frame's
    logits, targets = [], []
    for b, meta in enumerate(batch["meta"]):
        t, h, w = batch["video_grid_thw"][b].tolist()
        per_step = (h // omni.merge_size) * (w // omni.merge_size)
        video = hidden[b][batch["input_ids"][b] == omni.video_token_id]
        assert video.shape[0] == t * per_step
        logits.append(head(video.view(t, per_step, -1).mean(1)).squeeze(-1))
        targets.append(batch["frame_labels"][b, 0:2 * t:2].float())
    loss = torch.nn.functional.binary_cross_entropy_with_logits(torch.cat(logits), torch.cat(targets))
    opt.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    for name, module in (("vision", model.model.visual), ("audio", model.model.audio_tower),
                         ("language", model.model.language_model), ("head", head)):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, f"{name} got no gradient"
    before = head.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, head.weight)


def test_the_omni_mode_needs_neither_transformers_nor_torchvision(demo_build):
    import subprocess
    import sys

    code = ("import sys; from loaders import make_loader; "
            f"b = next(iter(make_loader({str(demo_build)!r}, mode='qwen-omni', shuffle=False))); "
            "assert b['input_ids'].shape[0] == 1; "
            "print(sorted(m for m in ('transformers', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_clip_too_short_for_one_grid_step_is_refused_by_name():
    from loaders.omni_video import sample_frame_indices

    with pytest.raises(ValueError, match="1 frames give no group of 2 to sample at 2 fps"):
        sample_frame_indices(1, 30.0, 2)
    with pytest.raises(ValueError, match="fps must be positive"):
        OmniConfig(fps=0)
