"""Plain textual inversion on the shared framework: the baseline the contrastive methods are
measured against (``python -m contrastive_diffusers.training.textual_inversion --help``).

A folder of images without captions is trained with generic templates ("a photo of {}", ...),
as in diffusers' textual-inversion example; with ``metadata.jsonl`` or ``text.json`` the
captions are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from .entry import run_main
from .tokens import TokenMethod

#: Generic caption templates (written for this project) for caption-less folders and views.
GENERIC_TEMPLATES: tuple[str, ...] = (
    "a photo of {}",
    "a rendering of {}",
    "a close-up photo of {}",
    "a cropped photo of {}",
    "a bright photo of {}",
    "a dark photo of {}",
    "a good photo of {}",
    "a photo of the {}",
    "a picture of {}",
    "an image of {}",
)


class TextualInversion(TokenMethod):
    name = "textual_inversion"
    description = "Textual inversion: learn token embeddings from a few images (diffusers-loadable output)."
    default_templates = GENERIC_TEMPLATES
    defaults = MappingProxyType(
        {
            "learning_rate": 5e-4,
            "scale_lr": True,
            "train_batch_size": 1,
            "gradient_accumulation_steps": 4,
            "max_train_steps": 3000,
            "flip_p": 0.5,
            "max_grad_norm": 0.0,  # the authors' code clips no gradient
            "image_fit": "squash",  # the authors' loader resizes the whole image
        }
    )


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m contrastive_diffusers.training.textual_inversion"
) -> int:
    return run_main(TextualInversion(), argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
