"""Where the shipped ShapesWorld models live.

The package carries one trained ShapesWorld pipeline (``contrastive_diffusers/assets/shapesworld/``,
made by :mod:`contrastive_diffusers.shapes.train`; its model card is the folder's ``README.md``):
a stock ``StableDiffusionPipeline`` folder, with the world's CLIP (``CLIPModel`` +
``CLIPProcessor``) in its ``clip/`` subfolder. It is the default model of ``generate`` and
``bench`` (``--model embedded``), and ``--clip-model embedded-clip`` names its CLIP.
Beside it, ``assets/shapesworld_mmdit/`` holds the same world's SD3-format pipeline
(``--model embedded-mmdit``: an ``SD3Transformer2DModel``, flow matching), judged by the same
oracle and scored by the same CLIP.

UNet and VAE are stored in float16 (diffusers loads them as float32 unless asked otherwise);
the text encoder and the CLIP stay float32, because transformers >= 5 loads a checkpoint in
the dtype it was saved in, and a float16 text encoder would feed a float32 UNet.
"""

from __future__ import annotations

from pathlib import Path

from .names import EMBEDDED_CLIP, EMBEDDED_MMDIT_MODEL, EMBEDDED_MODEL

__all__ = ["EMBEDDED_CLIP", "EMBEDDED_MMDIT_MODEL", "EMBEDDED_MODEL", "embedded_clip_dir", "embedded_mmdit_dir",
           "embedded_model_dir"]

_FOLDER = Path(__file__).resolve().parent.parent / "assets" / "shapesworld"
_MMDIT_FOLDER = Path(__file__).resolve().parent.parent / "assets" / "shapesworld_mmdit"


def _shipped(folder: Path, what: str, train_flags: str) -> Path:
    """``folder`` if the package's copy of a model is there, else an error naming the fix."""
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the embedded ShapesWorld {what} is missing from {folder} (an install without the package's "
            "assets?); reinstall contrastive-diffusers, or train one with "
            f"`python -m contrastive_diffusers.shapes.train {train_flags}--output_dir DIR` and pass --model DIR"
        )
    return folder


def embedded_model_dir() -> Path:
    """The shipped pipeline's folder: ``StableDiffusionPipeline.from_pretrained(embedded_model_dir())``."""
    return _shipped(_FOLDER, "model", "")


def embedded_mmdit_dir() -> Path:
    """The shipped SD3-format pipeline's folder: ``StableDiffusion3Pipeline.from_pretrained(embedded_mmdit_dir())``."""
    return _shipped(_MMDIT_FOLDER, "MMDiT model", "--format mmdit ")


def embedded_clip_dir() -> Path:
    """The world's CLIP, beside the pipeline: ``CLIPModel.from_pretrained(embedded_clip_dir())``."""
    folder = embedded_model_dir() / "clip"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"the embedded ShapesWorld CLIP is missing from {folder}; reinstall contrastive-diffusers")
    return folder
