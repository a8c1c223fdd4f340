"""Phase ``clip``: the world's ``CLIPModel``, trained with image-caption InfoNCE whose
candidates include each image's hard negatives (``shapes.captions.negatives_for``:
swapped colours / shapes, replaced colour / shape, wrong relation or count; only of the
training colour-shape pairs, so no held-out pair's text is trained on, even as a negative),
and its caption retrieval against those negatives on fresh renders."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..._compat import clip_features
from ..captions import caption_text, negatives_for
from ..oracle import evaluate
from ..prompts import training_pairs
from .data import ShapesData, batch_indices, tokenize
from .optim import optimise


# The hard negatives' recipe a training log records (see negatives_recipe).
NEGATIVES_RECIPE = {"pairs": "training pairs only", "true_candidates": "left out of the softmax"}

def clip_pixels(images: torch.Tensor, processor) -> torch.Tensor:
    """uint8 images -> CLIP pixel values, normalised as ``processor`` does (images already at its size)."""
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def hard_negatives(data: ShapesData, seed: int, pairs=None) -> list[list[tuple[str, object]]]:
    """Per scene, its false perturbed captions ``(kind of edit, Caption)``, naming only
    ``pairs`` (colour-shape pairs; ``None``: any)."""
    out = []
    for k, (scene, spec, kind) in enumerate(zip(data.scenes, data.specs, data.kinds)):
        caption = caption_text(spec, kind)
        out.append(list(negatives_for(scene, caption, rng=[seed, k], pairs=pairs)))
    return out


def _named(spec) -> frozenset:
    """The (colour or None, shape) pairs a caption needs to see."""
    return frozenset((o.color, o.shape) for o in spec.objects)


def _seen(scene) -> frozenset:
    return frozenset(p for o in scene.objects for p in ((o.color, o.shape), (None, o.shape)))


def true_for(data: ShapesData, images: list[int], specs: list) -> torch.Tensor:
    """``(len(images), len(specs))`` bool: whether each text is true of each image's scene
    (the oracle's verdict). A batch's other captions often are: captions say "at least", and
    "a red circle" is true of the scene of "a red circle and a blue square". Only a caption
    whose every object the scene holds is given to the oracle (most are not: a cheap test)."""
    named = [_named(spec) for spec in specs]
    out = torch.zeros(len(images), len(specs), dtype=torch.bool)
    for row, i in enumerate(images):
        scene, seen = data.scenes[i], _seen(data.scenes[i])
        for column, (spec, needs) in enumerate(zip(specs, named)):
            if needs <= seen:
                out[row, column] = evaluate(scene.objects, spec).success
    return out


def _text_features(model, ids: torch.Tensor, device) -> torch.Tensor:
    length = int((ids != model.config.text_config.pad_token_id).sum(1).max()) + 1
    ids = ids[:, :min(length, ids.shape[1])].to(device)
    return F.normalize(clip_features(model.get_text_features(input_ids=ids)), dim=-1)


def train_clip(model, processor, data: ShapesData, args, log: dict, checkpoint=None) -> None:
    """InfoNCE: each image against the batch's captions plus its own ``--clip_negatives`` hard
    negatives; each caption against the batch's images. A candidate that is true of the
    image's scene (another image's caption that holds for it too, the same caption) is no
    negative: it is left out of that image's softmax, as an image is of a caption it fits."""
    gen = torch.Generator().manual_seed(args.seed * 1000 + 3)
    device = args.device
    negatives = hard_negatives(data, args.seed, pairs=training_pairs())
    spec_of = {t: s for t, s in zip(data.captions, data.specs)}
    spec_of.update({neg.text: neg.spec for negs in negatives for _, neg in negs})
    texts = sorted(spec_of)
    row = {t: k for k, t in enumerate(texts)}
    ids = tokenize(processor.tokenizer, texts)
    pos = torch.tensor([row[t] for t in data.captions])
    neg_rows = [[row[neg.text] for _, neg in negs] for negs in negatives]
    pixels = clip_pixels(data.images, processor)
    model.to(device).train()

    def batch_loss(step: int) -> torch.Tensor:
        idx = batch_indices(gen, len(pos), args.batch_size)
        picks = []
        for i in idx.tolist():
            options = neg_rows[i] or [int(pos[int(torch.randint(0, len(pos), (1,), generator=gen))])]
            picks += [options[int(torch.randint(0, len(options), (1,), generator=gen))]
                      for _ in range(args.clip_negatives)]
        columns = torch.cat([pos[idx], torch.tensor(picks, dtype=pos.dtype)])
        image = F.normalize(clip_features(model.get_image_features(pixel_values=pixels[idx].to(device))), dim=-1)
        text = _text_features(model, ids[columns], device)
        scale = model.logit_scale.exp().clamp(max=100)
        n = len(idx)
        fits = true_for(data, idx.tolist(), [spec_of[texts[r]] for r in columns.tolist()]).to(device)
        fits[torch.arange(n), torch.arange(n)] = False  # the image's own caption is its target
        logits = (scale * image @ text.T).masked_fill(fits, float("-inf"))  # (n, n + n * K)
        target = torch.arange(n, device=device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :n].T, target)) / 2

    optimise("clip", list(model.parameters()), args.clip_steps, args.clip_lr, batch_loss, log, args.log_every,
             weight_decay=0.1, checkpoint=checkpoint, generator=gen)
    # In the phase's entry, which a resumed run restores with the phase.
    log["phases"]["clip"]["negatives"] = NEGATIVES_RECIPE
    model.eval()


@torch.no_grad()
def clip_retrieval(model, processor, data: ShapesData, seed: int, device) -> dict:
    """How often the true caption scores above every hard negative of its image, overall and
    per kind of edit (``swap_colors``, ``replace_shape``, ...)."""
    negatives = [[(name, neg.text) for name, neg in negs] for negs in hard_negatives(data, seed)]
    image = F.normalize(clip_features(model.get_image_features(pixel_values=clip_pixels(data.images, processor).to(device))),
                        dim=-1)
    texts = sorted(set(data.captions) | {t for negs in negatives for _, t in negs})
    row = {t: k for k, t in enumerate(texts)}
    text = _text_features(model, tokenize(processor.tokenizer, texts), device)
    sims = image @ text.T
    wins, per_edit = [], {}
    for k, negs in enumerate(negatives):
        if not negs:
            continue
        true = sims[k, row[data.captions[k]]]
        beats = [bool(true > sims[k, row[t]]) for _, t in negs]
        wins.append(all(beats))
        for (name, _), ok in zip(negs, beats):
            per_edit.setdefault(name, []).append(ok)
    return {"accuracy": sum(wins) / max(len(wins), 1), "n": len(wins),
            "per_edit": {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(per_edit.items())}}
