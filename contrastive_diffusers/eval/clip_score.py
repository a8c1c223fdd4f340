"""CLIP-based scores of generated images, on transformers' ``CLIPModel`` / ``CLIPProcessor``.

- :meth:`ClipScorer.clip_score`: CLIPScore as torchmetrics defines it, ``max(100 * cos, 0)``
  per image (torchmetrics clamps the mean; :func:`aggregate_clip_score` does the same).
- :meth:`ClipScorer.object_similarity`: the Attend-and-Excite protocol's full-prompt and
  minimum-object similarity, each text embedded with the 80 ImageNet templates averaged.
- :meth:`ClipScorer.antonym_scores`: CLIP-IQA style, softmax over an antonym prompt pair.
- :meth:`ClipScorer.text_similarity`: cosine of paired texts (prompt vs a caption; with
  ``ensemble_a=True`` the first text template-ensembled, as the A&E protocol does).

The papers' choices: ViT-B/16 for the Attend-and-Excite protocol
(``openai/clip-vit-base-patch16``), ViT-L/14 for CLIPScore (``openai/clip-vit-large-patch14``);
any CLIP checkpoint (hub id or local folder) works.

Images may be PIL images, integer (``uint8``, ...) arrays/tensors in 0..255, or float
arrays/tensors in [0, 1] (NaN or infinite values are refused), channels last ``(H, W, 3)``
or first ``(3, H, W)``, one by one or batched; all are converted to the same 8-bit RGB
images first, so every form of one picture scores the same.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np
import torch

from .._compat import clip_features
from ..models.loading import looks_like_folder
from .templates import template_texts

DEFAULT_ANTONYMS = (("Good photo.", "Bad photo."),)


def to_pil_images(images) -> list:
    """PIL RGB images from any of the accepted forms (see the module docstring)."""
    from PIL import Image

    if isinstance(images, Image.Image):
        return [images.convert("RGB")]
    if isinstance(images, (torch.Tensor, np.ndarray)):
        array = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else images
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4:
            raise ValueError(f"Expected images of shape (H, W, 3), (3, H, W) or a batch of them; got {array.shape}.")
        return [_array_to_pil(a, is_integer=_is_integer(images)) for a in array]
    images = list(images)
    out = []
    for image in images:
        out.extend(to_pil_images(image))
    return out


def _is_integer(images) -> bool:
    if isinstance(images, torch.Tensor):
        return not (images.dtype.is_floating_point or images.dtype.is_complex or images.dtype == torch.bool)
    return np.issubdtype(images.dtype, np.integer)


def _array_to_pil(array: np.ndarray, is_integer: bool):
    from PIL import Image

    if array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)  # channels first -> last
    if array.shape[-1] != 3:
        raise ValueError(f"Expected RGB images with 3 channels; got an image of shape {array.shape}.")
    if not np.isfinite(array).all():  # NaN would be cast to 0 and scored as black
        raise ValueError(
            "Image values are NaN or infinite (a float16 VAE overflow?); decode in float32, or score "
            "only finite images."
        )
    if is_integer:  # any integer type holds 0..255, as uint8 does (torchmetrics reads them so)
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("Integer images must lie in 0..255 (found values outside).")
    else:
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError(
                "Float images must lie in [0, 1] (found values outside); pass integer images for 0..255 data."
            )
        array = np.round(array * 255)
    return Image.fromarray(np.asarray(array, dtype=np.uint8), "RGB")


def split_prompt(prompt: str, token_groups: Sequence[Sequence[str]] | None = None) -> list[str]:
    """Sub-prompts of a compositional prompt, as the A&E protocol splits it: on " and " when
    the prompt has one, else on " with " ("a cat with a hat and a dog" -> "a cat with a hat",
    "a dog"); every part is kept (A&E's two-object prompts have two). When neither splits the
    prompt, one sub-prompt per token group ("a " + its words)."""
    text = prompt.strip()
    word = "and" if re.search(r"\s+and\s+", text) else "with"
    parts = [p.strip(" .,") for p in re.split(rf"\s+{word}\s+", text) if p.strip(" .,")]
    if len(parts) >= 2 or not token_groups:
        return parts
    return ["a " + " ".join(group) for group in token_groups]


class ClipScorer:
    """Scores images against texts with a CLIP model. Build it with :meth:`from_pretrained`."""

    def __init__(self, model, processor, device=None, dtype=None, batch_size: int = 32, name: str | None = None):
        # What records say scored them: the hub id or folder, else the model's own record of it.
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.model = model.to(self.device, self.dtype).eval()
        self.processor = processor
        self.batch_size = batch_size
        self._template_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, name_or_path, device=None, dtype=None, batch_size: int = 32,
                        name: str | None = None) -> "ClipScorer":
        """Load a CLIP checkpoint (hub id or local folder) with its processor; ``name`` (default:
        ``name_or_path``) is how records name the scorer."""
        from huggingface_hub.errors import HFValidationError
        from transformers import CLIPModel, CLIPProcessor

        name_or_path = os.fspath(name_or_path)
        if looks_like_folder(name_or_path) and not os.path.isdir(os.path.expanduser(name_or_path)):
            raise OSError(f"CLIP model folder {name_or_path!r} does not exist; pass a folder or a hub id.")
        try:
            model = CLIPModel.from_pretrained(os.path.expanduser(name_or_path))
            processor = CLIPProcessor.from_pretrained(os.path.expanduser(name_or_path))
        except (OSError, HFValidationError) as err:
            raise OSError(
                f"Could not load a CLIP model from {name_or_path!r}: pass a hub id (e.g. "
                f"'openai/clip-vit-base-patch16') or a folder with config.json, weights and the processor files. "
                f"({err})"
            ) from err
        return cls(model, processor, device=device, dtype=dtype, batch_size=batch_size, name=name or name_or_path)

    # ------------------------------------------------------------------ embeddings
    @torch.no_grad()
    def image_embeddings(self, images) -> torch.Tensor:
        """L2-normalised image embeddings ``(N, D)`` in float32."""
        pil = to_pil_images(images)
        chunks = []
        for start in range(0, len(pil), self.batch_size):
            pixels = self.processor(images=pil[start : start + self.batch_size], return_tensors="pt")["pixel_values"]
            features = clip_features(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
            chunks.append(features.float())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``(N, D)`` in float32 (texts truncated to the model's length)."""
        texts = list(texts)
        max_length = self.model.config.text_config.max_position_embeddings
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.processor(
                text=texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
            )
            features = self.model.get_text_features(
                input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device)
            )
            chunks.append(clip_features(features).float())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def ensembled_text_embedding(self, text: str) -> torch.Tensor:
        """The mean of the normalised embeddings of ``text`` in the 80 ImageNet templates
        (:func:`~.templates.template_texts`, as the A&E protocol writes them), normalised."""
        if text not in self._template_cache:
            embeds = self.text_embeddings(template_texts(text))
            self._template_cache[text] = torch.nn.functional.normalize(embeds.mean(0), dim=-1)
        return self._template_cache[text]

    # ------------------------------------------------------------------ scores
    def clip_score(self, images, prompts: Sequence[str] | str, clamp: bool = True) -> torch.Tensor:
        """CLIPScore per image: ``max(100 * cos(image, prompt), 0)`` (torchmetrics' scale);
        ``clamp=False`` keeps negative values (for :func:`aggregate_clip_score`)."""
        image_embeds = self.image_embeddings(images)
        prompts = [prompts] * len(image_embeds) if isinstance(prompts, str) else list(prompts)
        _check_lengths(image_embeds, prompts)
        text_embeds = self.text_embeddings(prompts)
        scores = 100 * (image_embeds * text_embeds).sum(-1)
        return scores.clamp_min(0) if clamp else scores

    def text_similarity(
        self, texts_a: Sequence[str] | str, texts_b: Sequence[str] | str, ensemble_a: bool = False
    ) -> torch.Tensor:
        """Cosine similarity of the CLIP text embeddings of paired texts, ``(N,)`` float32 on the CPU.

        ``ensemble_a=True`` embeds each of ``texts_a`` with the 80 ImageNet templates averaged, as
        the Attend-and-Excite protocol embeds the prompt when comparing it with a BLIP caption."""
        texts_a = [texts_a] if isinstance(texts_a, str) else list(texts_a)
        texts_b = [texts_b] if isinstance(texts_b, str) else list(texts_b)
        if len(texts_a) != len(texts_b):
            raise ValueError(
                f"Got {len(texts_a)} texts_a but {len(texts_b)} texts_b; pass paired texts of the same length."
            )
        if not texts_a:
            return torch.zeros(0)
        if ensemble_a:
            embeds_a = torch.stack([self.ensembled_text_embedding(text) for text in texts_a])
        else:
            embeds_a = self.text_embeddings(texts_a)
        return (embeds_a.cpu() * self.text_embeddings(texts_b).cpu()).sum(-1)

    def object_similarity(
        self, images, prompts: Sequence[str] | str, token_groups: Sequence | None = None
    ) -> dict[str, torch.Tensor | list]:
        """Attend-and-Excite protocol: ``full`` (image vs the template-ensembled prompt) and
        ``min_object`` (the lowest image vs sub-prompt similarity; ``nan`` for a prompt with one
        sub-prompt, which the protocol skips), cosine per image; ``objects`` lists each image's
        sub-prompts and their similarities.

        ``token_groups``: per prompt, used to form sub-prompts when the prompt does not
        split on " and " / " with "."""
        image_embeds = self.image_embeddings(images)
        prompts = [prompts] * len(image_embeds) if isinstance(prompts, str) else list(prompts)
        _check_lengths(image_embeds, prompts)
        if token_groups is not None and len(token_groups) != len(prompts):
            raise ValueError(f"token_groups has {len(token_groups)} entries for {len(prompts)} prompts.")
        full, minimum, objects = [], [], []
        for i, (embed, prompt) in enumerate(zip(image_embeds, prompts)):
            full.append(embed @ self.ensembled_text_embedding(prompt))
            parts = split_prompt(prompt, token_groups[i] if token_groups is not None else None)
            sims = [float(embed @ self.ensembled_text_embedding(part)) for part in parts]
            minimum.append(min(sims) if len(parts) >= 2 else float("nan"))
            objects.append(dict(zip(parts, sims)))
        return {"full": torch.stack(full), "min_object": torch.tensor(minimum), "objects": objects}

    @torch.no_grad()
    def antonym_scores(self, images, pairs: Sequence[tuple[str, str]] = DEFAULT_ANTONYMS) -> torch.Tensor:
        """CLIP-IQA style: per image and antonym pair ``(positive, negative)``, the softmax
        probability of the positive prompt over the pair, at the model's logit scale: ``(N, pairs)``."""
        pairs = [tuple(pair) for pair in pairs]
        if not pairs or any(len(pair) != 2 for pair in pairs):
            raise ValueError("pairs must be a non-empty list of (positive, negative) prompt pairs.")
        image_embeds = self.image_embeddings(images)
        text_embeds = self.text_embeddings([text for pair in pairs for text in pair]).view(len(pairs), 2, -1)
        scale = self.model.logit_scale.exp().float().cpu()
        logits = scale * torch.einsum("nd,pkd->npk", image_embeds.cpu(), text_embeds.cpu())
        return logits.softmax(-1)[..., 0]


def aggregate_clip_score(per_image: torch.Tensor) -> torch.Tensor:
    """torchmetrics' corpus CLIPScore: the mean of the per-image ``100 * cos``, clamped at 0.
    Pass ``clip_score(..., clamp=False)`` values to match it exactly."""
    return per_image.float().mean().clamp_min(0)


def _check_lengths(image_embeds: torch.Tensor, prompts: list) -> None:
    if len(prompts) != len(image_embeds):
        raise ValueError(f"Got {len(image_embeds)} images but {len(prompts)} prompts; pass one prompt per image.")
