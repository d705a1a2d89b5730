"""transformers' own Qwen code as the tests' reference: no weights, no hub, configs built here.

Everything the omni tests compare against comes from transformers (pinned in the ``test`` extra):
``get_rope_index`` of Qwen2-VL, Qwen2.5-VL and Qwen2.5-Omni called unbound on a namespace holding
a config, and a real ``Qwen2_5OmniProcessor`` assembled from its real parts (``Qwen2VLVideoProcessor``,
``WhisperFeatureExtractor`` with Qwen2.5-Omni's 300 s settings) and a tokenizer built in code that
knows only the special tokens, with the ids of the model config.

torchvision: see tests/torchvision_cpu.py (imported first, here and by conftest).
"""

from __future__ import annotations

import os
from functools import lru_cache, partial
from types import SimpleNamespace

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import tests.torchvision_cpu  # noqa: E402,F401  (before transformers: it imports torchvision)

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    PreTrainedTokenizerFast,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniThinkerConfig,
    Qwen2VLConfig,
    Qwen2_5_VLConfig,
    WhisperFeatureExtractor,
)
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (  # noqa: E402
    Qwen2_5OmniPreTrainedModelForConditionalGeneration as _OmniModel,
)
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel  # noqa: E402
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor  # noqa: E402
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel  # noqa: E402
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor  # noqa: E402

TRANSFORMERS_VERSION = transformers.__version__

# Qwen2.5-Omni-7B's thinker: the released config.json carries the vision bos/eos ids beside the class defaults.
OMNI_TOKEN_IDS = {"vision_start_token_id": 151652, "vision_end_token_id": 151653}
PAD_TOKEN_ID = 151643


def omni_thinker_config(**overrides) -> Qwen2_5OmniThinkerConfig:
    return Qwen2_5OmniThinkerConfig(**{**OMNI_TOKEN_IDS, **overrides})


def _bound(cls, obj, *names):
    for name in names:
        setattr(obj, name, partial(getattr(cls, name), obj))
    return obj


@lru_cache(maxsize=None)
def _omni_model():
    cfg = omni_thinker_config()
    return _bound(_OmniModel, SimpleNamespace(config=cfg, spatial_merge_size=cfg.vision_config.spatial_merge_size),
                  "get_chunked_index", "get_llm_pos_ids_for_vision")


def omni_rope_index(input_ids, video_grid_thw, audio_seqlens, second_per_grids, attention_mask=None, model=None):
    """``Qwen2_5OmniPreTrainedModelForConditionalGeneration.get_rope_index``, use_audio_in_video=True."""
    model = model or _omni_model()
    return _OmniModel.get_rope_index(model, input_ids, None, video_grid_thw, attention_mask, True, audio_seqlens,
                                     second_per_grids)


def qwen2vl_rope_index(input_ids, mm_token_type_ids, video_grid_thw):
    model = _bound(Qwen2VLModel, SimpleNamespace(config=Qwen2VLConfig()), "get_vision_position_ids")
    return Qwen2VLModel.get_rope_index(model, input_ids, mm_token_type_ids, None, video_grid_thw)


QWEN25VL_TOKENS_PER_SECOND = 2  # the released Qwen2.5-VL checkpoints' vision_config (the class default is 4)


def qwen25vl_rope_index(input_ids, mm_token_type_ids, video_grid_thw, second_per_grid_ts):
    cfg = Qwen2_5_VLConfig(vision_config={"tokens_per_second": QWEN25VL_TOKENS_PER_SECOND})
    model = _bound(Qwen2_5_VLModel, SimpleNamespace(config=cfg), "get_vision_position_ids")
    return Qwen2_5_VLModel.get_rope_index(model, input_ids, mm_token_type_ids, None, video_grid_thw,
                                          second_per_grid_ts)


def processor_layout(grid_thw, second_per_grid: float, n_audio_tokens: int, merge_size: int = 2) -> np.ndarray:
    """The processor's token layout for a video with its audio (``replace_video_with_audio_token``):
    modality per token between the bos and eos pairs, 0 video, 1 audio."""
    proc = _bound(Qwen2_5OmniProcessor, SimpleNamespace(
        video_processor=SimpleNamespace(merge_size=merge_size), audio_bos_token="", audio_eos_token="",
        video_token="V", audio_token="A"), "get_chunked_index")
    text = Qwen2_5OmniProcessor.replace_video_with_audio_token(
        proc, {"video_grid_thw": [list(grid_thw)], "video_second_per_grid": [second_per_grid]}, 0,
        {"num_audio_tokens": [n_audio_tokens]}, 0, position_id_per_seconds=25, seconds_per_chunk=2.0)
    return np.frombuffer(text.encode(), np.uint8) == ord("A")


SPECIAL_TOKENS = {"<|endoftext|>": PAD_TOKEN_ID, "<|AUDIO|>": 151646, "<|audio_bos|>": 151647, "<|audio_eos|>": 151648,
                  "<|vision_bos|>": 151652, "<|vision_eos|>": 151653, "<|IMAGE|>": 151655, "<|VIDEO|>": 151656}
VIDEO_PROMPT = "<|vision_bos|><|VIDEO|><|vision_eos|>"  # what Qwen2.5-Omni's chat template writes for a video


def _tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **SPECIAL_TOKENS}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", padding_side="left", extra_special_tokens={
        "image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
        "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
        "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"})


def whisper_feature_extractor() -> WhisperFeatureExtractor:
    """Qwen2.5-Omni-7B's preprocessor_config.json: 128 mel bins, hop 160, n_fft 400, 300 s chunks."""
    return WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300, n_fft=400,
                                   padding_value=0.0, dither=0.0, return_attention_mask=True)


def video_processor(**kwargs) -> Qwen2VLVideoProcessor:
    return Qwen2VLVideoProcessor(cap_pixels_per_frame=False, **kwargs)


def omni_processor(**video_kwargs) -> Qwen2_5OmniProcessor:
    return Qwen2_5OmniProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=video_processor(**video_kwargs),
                                feature_extractor=whisper_feature_extractor(), tokenizer=_tokenizer())


def process_clips(processor: Qwen2_5OmniProcessor, videos: list, audios: list, **kwargs):
    """The real processor on videos with their audio, as Qwen2.5-Omni's ``use_audio_in_video=True`` asks."""
    return processor(text=[VIDEO_PROMPT] * len(videos), videos=videos, audio=audios,
                     audio_from_video_indices=list(range(len(videos))), load_audio_from_video=True,
                     padding=True, return_tensors="pt", **kwargs)
