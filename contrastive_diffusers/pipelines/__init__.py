"""Stable Diffusion pipelines with attention-map guidance, and guidance for any pipeline."""

from ..guidance.attention import default_attn_res
from .callback import GuidanceCallback
from .guided import GuidedPipelineOutput
from .sd import GuidedStableDiffusionPipeline
from .sdxl import GuidedStableDiffusionXLPipeline
from .session import GuidanceSession

__all__ = [
    "GuidanceCallback",
    "GuidanceSession",
    "GuidedPipelineOutput",
    "GuidedStableDiffusionPipeline",
    "GuidedStableDiffusionXLPipeline",
    "default_attn_res",
]
