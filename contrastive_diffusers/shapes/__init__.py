"""ShapesWorld: a synthetic world of coloured shapes where compositional errors are measured exactly.

- :mod:`.world`: vocabulary (shapes, palette, sizes, relations) and scenes;
- :mod:`.render`: scene -> image; :mod:`.geometry`: the silhouettes;
- :mod:`.captions`: captions with token groups and specs; :mod:`.spec`: what a caption requires;
- :mod:`.oracle`: image -> objects, and the GenEval-style check; :mod:`.accuracy`: its accuracy;
- :mod:`.prompts`: the ShapesWorld prompt set with held-out colour-shape pairs;
- :mod:`.export`: training data for ReVersion, MCPL and EvoGen;
- :mod:`.model`, :mod:`.train`: the models and their training script (the shipped ones: :mod:`contrastive_diffusers.models.embedded`).
"""

from .captions import (
    CAPTION_KINDS,
    Caption,
    caption_for,
    caption_text,
    negatives_for,
    sample_spec,
    scenes_for,
)
from ..models.embedded import (
    EMBEDDED_CLIP,
    EMBEDDED_MMDIT_MODEL,
    EMBEDDED_MODEL,
    embedded_clip_dir,
    embedded_mmdit_dir,
    embedded_model_dir,
)
from .oracle import DetectedObject, OracleResult, check, detect
from .prompts import held_out_pairs, shapes_prompts, training_pairs
from .render import render
from .spec import CaptionSpec, ObjectSpec, evaluate
from .world import (
    COLORS,
    PALETTE,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    sample_scene,
)

__all__ = [
    "CAPTION_KINDS",
    "COLORS",
    "PALETTE",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "Caption",
    "CaptionSpec",
    "DetectedObject",
    "EMBEDDED_CLIP",
    "EMBEDDED_MMDIT_MODEL",
    "EMBEDDED_MODEL",
    "ObjectSpec",
    "OracleResult",
    "Scene",
    "ShapeObject",
    "caption_for",
    "caption_text",
    "check",
    "detect",
    "embedded_clip_dir",
    "embedded_mmdit_dir",
    "embedded_model_dir",
    "evaluate",
    "held_out_pairs",
    "negatives_for",
    "render",
    "sample_scene",
    "sample_spec",
    "scenes_for",
    "shapes_prompts",
    "training_pairs",
]
