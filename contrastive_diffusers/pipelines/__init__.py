"""Guided pipelines (SD 1.x/2.x, SDXL, SD3/3.5, Flux.1) and guidance for any pipeline."""

from ..guidance.attention import default_attn_res
from .callback import GuidanceCallback
from .flux import GuidedFluxPipeline
from .guided import GuidedPipelineOutput
from .sd import GuidedStableDiffusionPipeline
from .sd3 import GuidedStableDiffusion3Pipeline
from .sdxl import GuidedStableDiffusionXLPipeline
from .session import GuidanceSession

__all__ = [
    "GuidanceCallback",
    "GuidanceSession",
    "GuidedFluxPipeline",
    "GuidedPipelineOutput",
    "GuidedStableDiffusion3Pipeline",
    "GuidedStableDiffusionPipeline",
    "GuidedStableDiffusionXLPipeline",
    "default_attn_res",
]
