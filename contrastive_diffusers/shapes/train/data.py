"""The ShapesWorld training data: scenes drawn to match captions, rendered once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..captions import caption_text, sample_spec, scenes_for
from ..prompts import training_pairs
from ..render import render_array

#: Share of each caption kind in the training data (single-object kinds dominate: the
#: single-object target is the one the model must meet).
DEFAULT_KIND_WEIGHTS = {"single": 0.35, "size": 0.1, "no_color": 0.1, "count": 0.1, "two_object": 0.2,
                        "relation": 0.15}
PHASES = ("data", "vae", "unet", "clip")


@dataclass
class ShapesData:
    """Rendered scenes with their captions: ``images`` uint8 ``(N, 3, H, W)``."""

    images: torch.Tensor
    captions: list[str]
    kinds: list[str]
    scenes: list
    specs: list


def seed_of(seed: int, phase: str) -> list[int]:
    """The numpy seed of a phase's random choices."""
    return [int(seed), PHASES.index(phase) if phase in PHASES else 100 + len(phase)]


def make_data(n: int, seed: int, resolution: int, kind_weights: dict[str, float],
              pairs: Sequence[tuple[str, str]] | None = None) -> ShapesData:
    """``n`` scenes, each drawn to match a caption of a kind chosen by ``kind_weights``."""
    rng = np.random.default_rng(seed)
    pool = list(pairs) if pairs is not None else training_pairs()
    kinds = list(kind_weights)
    p = np.asarray([kind_weights[k] for k in kinds], dtype=np.float64)
    images, captions, drawn, scenes, specs = [], [], [], [], []
    for _ in range(n):
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        spec = sample_spec(kind, rng, pool)
        scene = scenes_for(spec, rng, pairs=pool)
        images.append(np.clip(np.rint(render_array(scene, resolution)), 0, 255).astype(np.uint8))
        captions.append(caption_text(spec, kind).text)
        drawn.append(kind)
        scenes.append(scene)
        specs.append(spec)
    array = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ShapesData(array, captions, drawn, scenes, specs)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] (the VAE's range)."""
    return images.float() / 127.5 - 1.0


def tokenize(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Input ids padded to the tokenizer's length, as ``StableDiffusionPipeline.encode_prompt`` does."""
    unique = sorted(set(texts))
    ids = tokenizer(unique, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    row = {t: k for k, t in enumerate(unique)}
    return ids[[row[t] for t in texts]]


def batch_indices(gen: torch.Generator, n: int, batch_size: int) -> torch.Tensor:
    """A batch of example indices, drawn with replacement."""
    return torch.randint(0, n, (batch_size,), generator=gen)
