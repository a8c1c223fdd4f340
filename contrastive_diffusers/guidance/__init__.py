"""Training-free guidance: latent updates along the gradient of losses on cross-attention maps."""

from . import losses, maps
from .attention import AttentionRecorder, layer_resolutions, recording_processors, select_layers
from .engine import GuidanceConditioning, Guider, StepRecord
from .methods import METHODS, AttendAndExcite, Conform, Ebama, GuidanceMethod, SynGen, get_method, load_method
from .schedule import GuidanceSchedule
from .tokens import PromptTokens, TokenGroup, parse_prompt, resolve_batch_groups, resolve_groups, tokenize_prompt

__all__ = [
    "METHODS",
    "AttendAndExcite",
    "AttentionRecorder",
    "Conform",
    "Ebama",
    "GuidanceConditioning",
    "GuidanceMethod",
    "GuidanceSchedule",
    "Guider",
    "PromptTokens",
    "StepRecord",
    "SynGen",
    "TokenGroup",
    "get_method",
    "load_method",
    "layer_resolutions",
    "losses",
    "maps",
    "parse_prompt",
    "recording_processors",
    "resolve_batch_groups",
    "resolve_groups",
    "select_layers",
    "tokenize_prompt",
]
