"""Qwen2-VL's video processing (resize, normalise, patchify) and frame sampling, in plain torch.

What ``Qwen2VLVideoProcessor`` does to a clip, step for step, so the loader's
``pixel_values_videos`` equal the processor's (tested within 1e-5): pick frames as its
``sample_frames`` does for a requested fps; resize every frame to ``smart_resize``'s size (a
multiple of ``patch_size * merge_size`` with a pixel count in ``[min_pixels, max_pixels]``) with
torch's uint8 antialiased bicubic — the kernel torchvision's ``resize`` calls for uint8 on the
CPU; subtract ``255 * mean`` and divide by ``255 * std`` in float32; repeat the last frame up to
a multiple of ``temporal_patch_size``; cut ``patch_size`` squares ordered by merge window.
No torchvision, no transformers. Faster than the processor by staying in uint8 until the last
step: the resize runs channels-last (torch's fast uint8 path, same values), the patches are cut
as a uint8 view and converted to float32 straight into the patch layout, then normalised in place:
three float passes where the processor makes four. Or stop at uint8 patches (a quarter of the bytes
through the DataLoader) and normalise on the GPU with :func:`normalise_patches`, exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "smart_resize", "sample_frame_indices", "video_patches",
           "normalise_patches"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """Qwen's target size: both sides multiples of ``factor``, pixels within bounds, aspect kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.1f} is over Qwen's limit of 200")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def sample_frame_indices(total: int, video_fps: float, fps: float | None, temporal_patch_size: int = 2,
                         min_frames: int = 4, max_frames: int = 768) -> np.ndarray:
    """Frames ``Qwen2VLVideoProcessor.sample_frames`` keeps of a ``total``-frame video at ``video_fps``
    when asked for ``fps`` frames a second (``None``: every frame).

    Its count is ``total / video_fps * fps`` held within ``[min_frames, max_frames]`` and the
    video, rounded down to a multiple of ``temporal_patch_size``; its indices are float32
    ``arange(0, total, total / count)`` truncated — computed here with the same torch call, so the
    float32 steps (and the occasional extra index they give) are the processor's.
    """
    if fps is None:
        return np.arange(total, dtype=np.int64)
    max_frames = math.floor(min(max_frames, total) / temporal_patch_size) * temporal_patch_size
    count = total / video_fps * fps
    count = min(max(count, min_frames), max_frames, total)
    count = math.floor(count / temporal_patch_size) * temporal_patch_size
    if count <= 0:
        raise ValueError(f"{total} frames give no group of {temporal_patch_size} to sample at {fps} fps")
    return torch.arange(0, total, total / count, dtype=torch.float32).int().numpy().astype(np.int64)


def video_patches(frames: np.ndarray, *, patch_size: int = 14, temporal_patch_size: int = 2, merge_size: int = 2,
                  min_pixels: int = 128 * 28 * 28, max_pixels: int = 768 * 28 * 28,
                  image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``uint8 [T, H, W, 3]`` RGB frames → ``(pixel_values_videos [t*h*w, 3*tps*p*p], (t, h, w))``.

    ``dtype=torch.uint8`` stops before the normalisation: the resized pixels in the patch layout, a
    quarter of the bytes to move; :func:`normalise_patches` (on any device) then gives the float32
    values exactly.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"video_patches takes uint8 [T, H, W, 3] frames, not {frames.dtype} {list(frames.shape)}")
    if dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"video_patches makes float32 or uint8 patches, not {dtype}")
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # channels-last in memory: the fast uint8 resize path
    height, width = video.shape[-2:]
    size = smart_resize(height, width, factor=patch_size * merge_size, min_pixels=min_pixels, max_pixels=max_pixels)
    if size != (height, width):
        video = F.interpolate(video, size=list(size), mode="bicubic", align_corners=False, antialias=True)
    if pad := -video.shape[0] % temporal_patch_size:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
    t = video.shape[0] // temporal_patch_size
    h, w = size[0] // patch_size, size[1] // patch_size
    patches = video.reshape(t, temporal_patch_size, 3, h // merge_size, merge_size, patch_size,
                            w // merge_size, merge_size, patch_size).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    # the conversion (to float32, or a uint8 copy) writes the patch layout directly
    out = torch.empty(patches.shape, dtype=dtype).copy_(patches).view(t * h * w, -1)
    if dtype == torch.float32:
        _normalise(out, image_mean, image_std)
    return out, (t, h, w)


def normalise_patches(patches: torch.Tensor, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD) -> torch.Tensor:
    """uint8 patches (``video_patches(..., dtype=torch.uint8)``, any device) → the processor's float32 values.

    The same element-wise float32 ops as the processor (``float32(x) - 255·mean``, ``/ 255·std``), so
    the result is identical on the CPU (tested); CUDA rounds float32 subtraction and division the same
    way (IEEE, no fast-math in PyTorch's kernels), which no test here checks.
    """
    if patches.dtype != torch.uint8 or patches.dim() != 2:
        raise ValueError(f"normalise_patches takes uint8 [N, 3*tps*p*p] patches, not {patches.dtype} {list(patches.shape)}")
    return _normalise(patches.to(torch.float32), image_mean, image_std)


def _normalise(out: torch.Tensor, image_mean, image_std) -> torch.Tensor:
    """In place on float32 ``[N, 3*k]`` patches: the processor's ``sub_(255·mean).div_(255·std)`` per channel."""
    mean = torch.tensor(image_mean, device=out.device) * 255.0  # the processor folds its 1/255 rescale into both
    std = torch.tensor(image_std, device=out.device) * 255.0
    channels = out.view(out.shape[0], 3, -1)
    channels.sub_(mean.view(1, 3, 1)).div_(std.view(1, 3, 1))
    return out
