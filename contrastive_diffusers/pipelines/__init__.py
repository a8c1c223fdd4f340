"""Stable Diffusion pipelines with attention-map guidance, and guidance for any pipeline."""

from .guided import GuidanceCallback, GuidedPipelineOutput, default_attn_res
from .sd import GuidedStableDiffusionPipeline
from .sdxl import GuidedStableDiffusionXLPipeline

__all__ = [
    "GuidanceCallback",
    "GuidedPipelineOutput",
    "GuidedStableDiffusionPipeline",
    "GuidedStableDiffusionXLPipeline",
    "default_attn_res",
]
