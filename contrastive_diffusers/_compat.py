"""Small shims over differences between supported diffusers versions."""

from __future__ import annotations

import torch


def dtype_kwarg(dtype: torch.dtype) -> dict:
    """The keyword that ``from_pretrained`` / ``from_pipe`` take for a dtype: ``dtype`` since
    diffusers 0.36 (``torch_dtype`` still works there but warns), ``torch_dtype`` before."""
    try:
        from diffusers.pipelines.pipeline_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}
