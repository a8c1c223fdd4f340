"""Pure operations on aggregated cross-attention maps.

A map tensor has shape ``(h, w, tokens)``: for every latent pixel, the attention
probabilities over the text tokens, averaged over heads and recorded layers. Nothing
here edits its input in place (a stored map must never change under a loss).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

TokenWindowMode = Literal["all", "prompt"]


def token_window(mode: TokenWindowMode, prompt_length: int, num_tokens: int) -> tuple[int, int]:
    """Token positions ``[start, end)`` that the text softmax spans.

    ``"all"``: every position but the first and the last (``[1:-1]``), as diffusers'
    Attend-and-Excite pipeline does for SD 1.x, whose padding repeats the end token.
    ``"prompt"``: only the prompt's own tokens ``1..prompt_length``; needed where padding
    is a real token (SD 2.x, SDXL's second encoder) that would otherwise soak up mass.
    """
    if mode == "all":
        return 1, num_tokens - 1
    if mode == "prompt":
        if not 1 <= prompt_length <= num_tokens - 2:
            raise ValueError(f"prompt_length {prompt_length} does not fit a sequence of {num_tokens} tokens")
        return 1, prompt_length + 1
    raise ValueError(f"Unknown token window {mode!r}; use 'all' or 'prompt'.")


def text_softmax(maps: torch.Tensor, window: tuple[int, int], temperature: float = 100.0) -> torch.Tensor:
    """Softmax over the tokens in ``window`` of ``maps * temperature``.

    Returns a tensor of the input's shape with zeros outside the window, so token
    positions index it directly.
    """
    start, end = window
    inner = torch.softmax(maps[..., start:end] * temperature, dim=-1)
    return F.pad(inner, (start, maps.shape[-1] - end))


def gaussian_kernel(kernel_size: int = 3, sigma: float = 0.5, device=None) -> torch.Tensor:
    """The smoothing kernel of the Attend-and-Excite code base, normalised to sum 1.

    It is ``exp(-((x - mean) / (2 sigma))^2)`` per axis: the originals write ``2*sigma``
    inside the square, so its spread differs from a textbook Gaussian of the same sigma.
    Kept as is, since every published setting (sigma = 0.5) was tuned with it.
    """
    coords = torch.arange(kernel_size, dtype=torch.float32, device=device) - (kernel_size - 1) / 2
    one_d = torch.exp(-((coords / (2 * sigma)) ** 2)) / (sigma * math.sqrt(2 * math.pi))
    kernel = one_d[:, None] * one_d[None, :]
    return kernel / kernel.sum()


def check_smoothable(map_hw: tuple[int, int], kernel_size: int) -> None:
    """``ValueError`` when maps of ``map_hw`` are too small for the smoothing kernel: reflect
    padding needs a side longer than the pad."""
    side = min(int(s) for s in map_hw)
    if kernel_size // 2 >= side:
        raise ValueError(
            f"{map_hw[0]}x{map_hw[1]} attention maps are too small for the smoothing kernel of size {kernel_size}; "
            f"draw larger images, read larger maps (UNet models: attn_res / --attn-res), or give the method a "
            f"kernel_size below {2 * side}."
        )


def smooth(maps: torch.Tensor, kernel_size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """Gaussian-smooth 2-D maps ``(..., h, w)`` with reflect padding (output has the same shape)."""
    shape = maps.shape
    flat = maps.reshape(-1, 1, shape[-2], shape[-1])
    check_smoothable((shape[-2], shape[-1]), kernel_size)
    pad = kernel_size // 2
    flat = F.pad(flat, (pad, pad, pad, pad), mode="reflect")
    kernel = gaussian_kernel(kernel_size, sigma, maps.device).to(maps.dtype)
    return F.conv2d(flat, kernel[None, None]).reshape(shape)


def token_map(probs: torch.Tensor, positions: tuple[int, ...]) -> torch.Tensor:
    """The ``(h, w)`` map of one word: the sum of its pieces' maps (a single piece: its map)."""
    if len(positions) == 1:
        return probs[..., positions[0]]
    return probs[..., list(positions)].sum(-1)
