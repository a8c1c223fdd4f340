"""Pieces shared by the ``generate`` command and the benchmark runner: the methods of a run,
the pipeline's generation defaults, one seeded image, and what a run records about itself."""

from __future__ import annotations

from typing import Sequence

from . import __version__
from .loading import default_size, is_sdxl


def build_methods(names: Sequence[str]) -> dict:
    """``{name: GuidanceMethod or None}`` in the given order, duplicates dropped; ``"none"`` is plain generation."""
    from .guidance.methods import get_method

    return {name: (None if name == "none" else get_method(name)) for name in dict.fromkeys(names)}


def generation_options(
    pipe,
    height: int | None = None,
    width: int | None = None,
    steps: int = 50,
    guidance_scale: float | None = None,
    negative_prompt: str | None = None,
) -> dict:
    """Pipeline arguments shared by every image of a run, with the model's defaults resolved."""
    default_h, default_w = default_size(pipe)
    return {
        "height": height or default_h,
        "width": width or default_w,
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale if guidance_scale is not None else (5.0 if is_sdxl(pipe) else 7.5),
        "negative_prompt": negative_prompt,
    }


def generate_image(pipe, prompt: str, seed: int, options: dict, method=None, token_groups="auto", attn_res=None,
                   heatmaps: bool = False):
    """The pipeline's output for one prompt and seed, plain (``method=None``) or guided."""
    import torch

    # A CPU generator draws the same initial noise on every device and in every process,
    # so a seed means one image.
    generator = torch.Generator(device="cpu").manual_seed(seed)
    kwargs = dict(options, generator=generator, output_type="pil")
    negative = kwargs.pop("negative_prompt", None)
    if method is not None:
        kwargs.update(guidance=method, token_groups=token_groups, attn_res=attn_res, return_attention_maps=heatmaps)
    # Prompt and negative prompt as one-item lists: diffusers wants both of the same type, and
    # the guided path turns the prompt into a list.
    return pipe([prompt], negative_prompt=[negative] if negative is not None else None, **kwargs)


def guidance_summary(records) -> dict:
    """Totals of what guidance did for one image (a batch of one)."""
    return {
        "guided_steps": len(records),
        "updates": int(sum(sum(r.updated) for r in records)),
        "refinement_iterations": int(sum(sum(r.refinement_iterations) for r in records)),
        "skipped_nonfinite": int(sum(sum(r.skipped_nonfinite) for r in records)),
        "first_step_loss": float(records[0].loss[0]) if records else None,
    }


def versions() -> dict:
    import diffusers
    import torch
    import transformers

    return {
        "contrastive_diffusers": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
