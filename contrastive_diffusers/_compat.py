"""Small shims over differences between the supported versions of diffusers and transformers."""

from __future__ import annotations


def dtype_kwarg(dtype) -> dict:
    """The keyword that ``from_pretrained`` / ``from_pipe`` take for a torch dtype: ``dtype``
    since diffusers 0.36 (``torch_dtype`` still works there but warns), ``torch_dtype`` before."""
    try:
        from diffusers.pipelines.pipeline_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def clip_features(output):
    """The embedding tensor of a CLIP ``get_image_features`` / ``get_text_features`` call:
    transformers 5 returns a model output there, earlier versions the tensor itself."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"Unexpected CLIP feature output {type(output).__name__}")
