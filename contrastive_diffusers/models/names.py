"""The model names the command line, the benchmark runner and the pair builder accept besides
hub ids and folders, and the CLIP that scores each kind of model. Plain constants: importing
them loads no library, so ``--help`` can quote them."""

from __future__ import annotations

#: The shipped ShapesWorld pipeline and its CLIP (see :mod:`.embedded`).
EMBEDDED_MODEL = "embedded"
EMBEDDED_CLIP = "embedded-clip"
#: The shipped SD3-format (MMDiT) ShapesWorld pipeline: same world, same oracle, same CLIP.
EMBEDDED_MMDIT_MODEL = "embedded-mmdit"
EMBEDDED_MODELS = (EMBEDDED_MODEL, EMBEDDED_MMDIT_MODEL)


def is_embedded(model) -> bool:
    """Whether ``model`` names one of the shipped ShapesWorld pipelines (oracle-judged images)."""
    return isinstance(model, str) and model in EMBEDDED_MODELS


#: Random-weight pipelines that only exercise the machinery (see :mod:`.tiny`): name -> kind.
TINY_MODELS = {
    "tiny-sd1": "sd1",
    "tiny-sd2": "sd2",
    "tiny-sdxl": "sdxl",
    "tiny-sd3": "sd3",
    "tiny-sd35": "sd35",
    "tiny-flux": "flux",
    "tiny-flux-schnell": "flux-schnell",
}
#: A random-weight CLIP, offline: exercises the scoring machinery only.
TINY_CLIP = "tiny-clip"

#: The Attend-and-Excite protocol's CLIP (ViT-B/16).
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"


def default_clip_model(model) -> str:
    """The CLIP that means something for ``model``: the world's own for the embedded ShapesWorld
    models (an OpenAI CLIP has never seen 32 px flat shapes), the A&E protocol's otherwise."""
    return EMBEDDED_CLIP if is_embedded(model) else DEFAULT_CLIP_MODEL
