"""Every per-image metric of a benchmark, from one CLIP image forward per image.

:func:`image_metrics` returns, per image, the numbers :class:`~.clip_score.ClipScorer`'s
public methods give (CLIPScore, full-prompt and minimum-object similarity, the CLIP-IQA
"Good photo." probability) plus the contrast-caption ranking and, with a captioner, the
prompt-caption text similarity. The image embeddings are computed once and shared.

Contrast captions (see :func:`~.prompts.contrast_set`) are compared with the image's own
prompt as raw captions, without template ensembling, as in Winoground's text score: a
contrast caption is "correct" when CLIP ranks the image's own prompt strictly above it.
``binding_accuracy`` is the fraction correct over the binding perturbations (attributes or
objects swapped), ``binding_text_score`` 1 when all of them are; ``replace_object_score``
(one object replaced by another noun) tests presence, not binding, and is kept apart.
``min_object_similarity`` needs at least two sub-prompts (objects), else it is ``None``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .clip_score import DEFAULT_ANTONYMS, ClipScorer, split_prompt

METRIC_NAMES = (
    "oracle_success",  # ShapesWorld prompts only: the exact check (see eval.bench)
    "clip_score",
    "full_similarity",
    "min_object_similarity",
    "text_text_similarity",
    "quality",
    "binding_accuracy",
    "binding_text_score",
    "replace_object_score",
)
BINDING_PERTURBATIONS = ("swap_attributes", "swap_objects")  # the others test presence, not binding


@torch.no_grad()
def image_metrics(
    scorer: ClipScorer,
    images,
    prompts: Sequence[str],
    token_groups: Sequence | None = None,
    contrast_captions: Sequence[dict | None] | None = None,
    captions: Sequence[str] | None = None,
) -> list[dict]:
    """Per image ``{"metrics": {...}, "objects": {...}, "contrast": {...} | None}``.

    ``token_groups``: per image, the groups' words (sub-prompts when the prompt does not
    split on " and " / " with "). ``contrast_captions``: per image, ``{perturbation: caption}``
    or ``None``. ``captions``: per image, a captioner's text (adds ``text_text_similarity``, the
    A&E protocol's: the template-ensembled prompt against the caption).
    Metrics that do not apply are ``None``.
    """
    prompts = list(prompts)
    n = len(prompts)
    for name, values in (("token_groups", token_groups), ("contrast_captions", contrast_captions), ("captions", captions)):
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries for {n} prompts.")
    image_embeds = scorer.image_embeddings(images)
    if len(image_embeds) != n:
        raise ValueError(f"Got {len(image_embeds)} images but {n} prompts; pass one prompt per image.")

    prompt_cos = (image_embeds * scorer.text_embeddings(prompts)).sum(-1)
    quality = _antonym_probability(scorer, image_embeds)
    # A&E's text-text similarity: the template-ensembled prompt against the plain caption.
    text_text = scorer.text_similarity(prompts, captions, ensemble_a=True) if captions is not None else None

    results = []
    for i, (embed, prompt) in enumerate(zip(image_embeds, prompts)):
        groups = token_groups[i] if token_groups is not None else None
        parts = split_prompt(prompt, groups)
        sims = [float(embed @ scorer.ensembled_text_embedding(part)) for part in parts]
        objects = dict(zip(parts, sims))  # "a cat and a cat": one entry, but two parts for the minimum
        contrast = _contrast(scorer, embed, float(prompt_cos[i]), contrast_captions[i] if contrast_captions else None)
        contrast = contrast or {}
        binding = [entry["correct"] for name, entry in contrast.items() if name in BINDING_PERTURBATIONS]
        replaced = contrast.get("replace_object")
        metrics = {
            "clip_score": float((100 * prompt_cos[i]).clamp_min(0)),
            "full_similarity": float(embed @ scorer.ensembled_text_embedding(prompt)),
            # one part is the whole prompt again, not an object: no minimum over objects then
            "min_object_similarity": min(sims) if len(parts) >= 2 else None,
            "text_text_similarity": float(text_text[i]) if text_text is not None else None,
            "quality": float(quality[i]),
            "binding_accuracy": sum(binding) / len(binding) if binding else None,
            "binding_text_score": float(all(binding)) if binding else None,
            "replace_object_score": float(replaced["correct"]) if replaced else None,
        }
        contrast = contrast or None
        results.append({"metrics": metrics, "objects": objects, "contrast": contrast})
    return results


def _antonym_probability(scorer: ClipScorer, image_embeds: torch.Tensor) -> torch.Tensor:
    """P("Good photo.") over the pair at CLIP's logit scale, as ``ClipScorer.antonym_scores``."""
    text_embeds = scorer.text_embeddings(list(DEFAULT_ANTONYMS[0]))
    scale = scorer.model.logit_scale.exp().float().cpu()
    return (scale * image_embeds.cpu() @ text_embeds.cpu().T).softmax(-1)[:, 0]


def _contrast(scorer: ClipScorer, embed: torch.Tensor, own_cos: float, captions: dict | None) -> dict | None:
    if not captions:
        return None
    names = list(captions)
    cos = scorer.text_embeddings([captions[name] for name in names]) @ embed
    return {
        name: {"caption": captions[name], "similarity": float(c), "correct": bool(own_cos > float(c))}
        for name, c in zip(names, cos)
    }
