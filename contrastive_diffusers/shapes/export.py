"""ShapesWorld training data in the formats of the training methods (all writes atomic,
everything deterministic for a seed, colour-shape pairs from :func:`prompts.training_pairs`
by default so the held-out combinations stay unseen).

- :func:`export_reversion`: ReVersion relation exemplars - one folder per relation
  (``left_of``, ``right_of``, ``above``, ``below``) of images and a ``text.json`` mapping each
  image to caption templates with ``{}`` where the relation goes
  (``"a red circle {} a blue square"``).
- :func:`export_mcpl`: MCPL image-sentence pairs - images and ``metadata.jsonl`` rows
  ``{"file_name", "text"}``, each sentence naming every object of its image
  (``"a red circle to the left of a blue square and a green triangle"``); with ``learned`` the
  shape words (``"nouns"``) or colour and shape words (``"all"``) are written as placeholder
  tokens (``"<circle>"``) and ``tokens.json`` lists them with their initializer words.
- :func:`export_evogen`: EvoGen positive / hard-negative pairs - ``images/`` and
  ``pairs.jsonl`` rows ``{"caption", "positive", "negative", "category", "stage"}`` (image
  paths relative to the folder). The negative is the positive's scene minimally changed so the
  caption is false: stage 1 (single-object attributes) ``color`` / ``shape`` changed; stage 2
  (two-object binding and relations) ``color`` / ``shape`` swapped between the objects,
  ``spatial`` positions swapped; stage 3 (complex scenes, three objects with a relation)
  ``complex`` colours swapped, ``counting`` one of several equal objects removed. Every pair is
  checked with the ground truth (:func:`spec.evaluate`): caption true of the positive, false of
  the negative.

- :func:`export_dco`: a personalisation subject - ``n`` images of one colour-shape object
  (the subject, at varied places and sizes) and ``metadata.jsonl`` captions naming it with a
  rare word instead of its colour (``"a sks diamond"``), for DCO and DreamBooth-style LoRA.

Run ``python -m contrastive_diffusers.shapes.export {reversion,mcpl,evogen,dco} OUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..atomic_io import save_image_atomic, write_json_atomic, write_jsonl_atomic
from .captions import Caption, caption_for, caption_text, sample_spec, scenes_for
from .prompts import training_pairs
from .render import render
from .spec import CaptionSpec, ObjectSpec, evaluate
from .world import (
    COLORS,
    OPPOSITE_RELATION,
    RELATION_PHRASES,
    RELATIONS,
    SHAPES,
    PlacementError,
    Scene,
    layout_problems,
)

__all__ = ["DCO_SUBJECT", "EVOGEN_STAGES", "export_dco", "export_evogen", "export_mcpl", "export_reversion",
           "relation_folder"]

#: The default DCO subject: (word, colour, shape) - "a sks diamond" is a purple diamond.
DCO_SUBJECT: tuple[str, str, str] = ("sks", "purple", "diamond")
#: Caption templates of the subject images; ``{}`` is "<word> <shape>".
DCO_TEMPLATES: tuple[str, ...] = ("a {}", "a photo of a {}", "an image of a {}")

#: stage -> categories of its pairs, in the order they are cycled.
EVOGEN_STAGES: dict[int, tuple[str, ...]] = {
    1: ("color", "shape"),
    2: ("color", "shape", "spatial"),
    3: ("complex", "counting"),
}


def _empty_folder(path) -> Path:
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder; export into a new or empty folder.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def relation_folder(relation: str) -> str:
    """Folder name of a relation: ``"left of"`` -> ``"left_of"``."""
    return relation.replace(" ", "_")


def export_reversion(out_dir, per_relation: int = 10, seed: int = 0, size: int = 64,
                     pairs: Iterable[tuple[str, str]] | None = None) -> dict[str, Path]:
    """One ReVersion folder per relation under ``out_dir``; returns relation -> folder."""
    out = _empty_folder(out_dir)
    pool = list(pairs) if pairs is not None else training_pairs()
    rng = np.random.default_rng([seed, 0x4E5])
    folders = {}
    for relation in RELATIONS:
        folder = out / relation_folder(relation)
        folder.mkdir()
        text = {}
        for n in range(per_relation):
            spec = sample_spec("relation", rng, pool)
            spec = replace(spec, relation=(spec.relation[0], relation, spec.relation[2]))
            scene = scenes_for(spec, rng, pairs=pool)
            caption = caption_text(spec, "relation")
            phrase = RELATION_PHRASES[relation]
            template = caption.text.replace(f" {phrase} ", " {} ", 1)
            a, b = (" ".join(g) for g in caption.token_groups)
            name = f"{n:03d}.png"
            save_image_atomic(render(scene, size), folder / name)
            text[name] = [template, f"{a} {{}} {b}", f"a photo of {template}"]
        write_json_atomic(folder / "text.json", text)
        folders[relation] = folder
    return folders


def export_mcpl(out_dir, n: int = 100, seed: int = 0, size: int = 64, learned: str = "nouns",
                pairs: Iterable[tuple[str, str]] | None = None) -> Path:
    """``n`` images with two or three objects and one sentence each; returns the folder.
    ``learned="none"`` writes plain sentences (for textual inversion or a baseline: MCPL needs
    learned tokens in every caption)."""
    if learned not in ("none", "nouns", "all"):
        raise ValueError(f"learned must be 'none', 'nouns' or 'all', got {learned!r}.")
    out = _empty_folder(out_dir)
    pool = list(pairs) if pairs is not None else training_pairs()
    rng = np.random.default_rng([seed, 0x3C9])
    words = () if learned == "none" else (SHAPES if learned == "nouns" else SHAPES + COLORS)
    pattern = re.compile(r"\b(" + "|".join(words) + r")\b") if words else None
    rows, used = [], set()
    for k in range(n):
        kind = ("two_object", "relation", "scene")[k % 3]
        spec = sample_spec(kind, rng, pool)
        scene = scenes_for(spec, rng, pairs=pool)
        text = caption_text(spec, kind).text
        if pattern is not None:
            used.update(pattern.findall(text))
            text = pattern.sub(lambda m: f"<{m.group(1)}>", text)
        name = f"{k:04d}.png"
        save_image_atomic(render(scene, size), out / name)
        rows.append({"file_name": name, "text": text})
    write_jsonl_atomic(out / "metadata.jsonl", rows)
    if pattern is not None:
        ordered = [w for w in words if w in used]
        write_json_atomic(out / "tokens.json", {
            "placeholder_tokens": [f"<{w}>" for w in ordered],
            "initializer_tokens": ordered,
        })
    return out


def _swap(scene: Scene, a: int, b: int, field_names: tuple[str, ...]) -> Scene:
    objs = list(scene.objects)
    oa, ob = objs[a], objs[b]
    objs[a] = replace(oa, **{f: getattr(ob, f) for f in field_names})
    objs[b] = replace(ob, **{f: getattr(oa, f) for f in field_names})
    return Scene(tuple(objs), scene.relation, scene.background)


def _other(rng: np.random.Generator, options, avoid) -> str:
    choices = [o for o in options if o not in avoid]
    return choices[int(rng.integers(len(choices)))]


def _evogen_pair(stage: int, category: str, rng: np.random.Generator, pool) -> tuple[Caption, Scene, Scene]:
    if stage == 1:
        spec = sample_spec("single", rng, pool)
        scene = scenes_for(spec, rng, pairs=pool)
        obj = scene.objects[0]
        # the new colour or shape makes a pair of the pool: held-out pairs stay unseen, negatives too
        if category == "color":
            changed = replace(obj, color=_other(rng, [c for c in COLORS if (c, obj.shape) in pool], {obj.color}))
        else:
            changed = replace(obj, shape=_other(rng, [h for h in SHAPES if (obj.color, h) in pool], {obj.shape}))
        return caption_for(scene, "single"), scene, Scene((changed,), None, scene.background)
    if stage == 2:
        kind = "relation" if category == "spatial" else "two_object"
        spec = sample_spec(kind, rng, pool)
        scene = scenes_for(spec, rng, pairs=pool)
        fields = {"color": ("color",), "shape": ("shape",), "spatial": ("x", "y")}[category]
        negative = _swap(scene, 0, 1, fields)
        if category == "spatial":  # the pair changed places: the scene's relation turns round
            i, name, j = scene.relation
            negative = Scene(negative.objects, (i, OPPOSITE_RELATION[name], j), scene.background)
        return caption_for(scene, kind), scene, negative
    if category == "complex":
        spec = sample_spec("scene", rng, pool)
        scene = scenes_for(spec, rng, pairs=pool)
        a, b = (0, 1) if rng.integers(2) else (1, 2)
        return caption_for(scene, "scene"), scene, _swap(scene, a, b, ("color",))
    count = int(rng.integers(2, 4))
    color, shape = pool[int(rng.integers(len(pool)))]
    spec = CaptionSpec((ObjectSpec(shape, color, count=count, exact=True),))
    scene = scenes_for(spec, rng, pairs=pool)
    drop = int(rng.integers(count))
    negative = Scene(tuple(o for k, o in enumerate(scene.objects) if k != drop), None, scene.background)
    return caption_for(scene, "count"), scene, negative


def export_evogen(out_dir, per_stage: int = 30, seed: int = 0, size: int = 64,
                  pairs: Iterable[tuple[str, str]] | None = None) -> Path:
    """``per_stage`` pairs for each of the three stages (categories in turn); returns the folder."""
    out = _empty_folder(out_dir)
    (out / "images").mkdir()
    pool = list(pairs) if pairs is not None else training_pairs()
    rng = np.random.default_rng([seed, 0xE70])
    rows = []
    for stage, categories in EVOGEN_STAGES.items():
        for k in range(per_stage):
            category = categories[k % len(categories)]
            for _ in range(100):
                try:
                    caption, positive, negative = _evogen_pair(stage, category, rng, pool)
                except PlacementError:
                    continue
                if (not layout_problems(negative) and evaluate(positive.objects, caption.spec).success
                        and not evaluate(negative.objects, caption.spec).success
                        and all((o.color, o.shape) in pool for o in negative.objects)):  # a swap may leave the pool
                    break
            else:
                raise RuntimeError(f"No valid {category} pair for stage {stage} in 100 tries.")
            stem = f"images/{len(rows):05d}"
            save_image_atomic(render(positive, size), out / f"{stem}_pos.png")
            save_image_atomic(render(negative, size), out / f"{stem}_neg.png")
            rows.append({"caption": caption.text, "positive": f"{stem}_pos.png", "negative": f"{stem}_neg.png",
                         "category": category, "stage": stage})
    write_jsonl_atomic(out / "pairs.jsonl", rows)
    return out


def export_dco(out_dir, n: int = 8, seed: int = 0, size: int = 64,
               subject: tuple[str, str, str] = DCO_SUBJECT) -> Path:
    """``n`` images of the subject alone, captioned with its word (templates in turn); returns the folder."""
    word, color, shape = subject
    if color not in COLORS or shape not in SHAPES:
        raise ValueError(f"The DCO subject must be a world colour and shape, got {color!r} {shape!r}.")
    out = _empty_folder(out_dir)
    rng = np.random.default_rng([seed, 0xDC0])
    spec = CaptionSpec((ObjectSpec(shape, color),))
    rows = []
    for k in range(n):
        name = f"{k:03d}.png"
        save_image_atomic(render(scenes_for(spec, rng), size), out / name)
        rows.append({"file_name": name, "text": DCO_TEMPLATES[k % len(DCO_TEMPLATES)].format(f"{word} {shape}")})
    write_jsonl_atomic(out / "metadata.jsonl", rows)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Export ShapesWorld training data.")
    parser.add_argument("format", choices=("reversion", "mcpl", "evogen", "dco"))
    parser.add_argument("out_dir")
    parser.add_argument("--n", type=int, default=None,
                        help="Images per relation (reversion, 10), images (mcpl, 100), pairs per stage (evogen, 30) "
                        "or subject images (dco, 8).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--learned", default="nouns", choices=("none", "nouns", "all"),
                        help="mcpl: the words written as placeholder tokens (<circle>): shapes (nouns), colours "
                        "and shapes (all), or none (plain sentences, which MCPL cannot train on). Default: nouns")
    args = parser.parse_args(argv)
    if args.format == "reversion":
        print(export_reversion(args.out_dir, args.n or 10, args.seed, args.size)[RELATIONS[0]].parent)
    elif args.format == "mcpl":
        folder = export_mcpl(args.out_dir, args.n or 100, args.seed, args.size, args.learned)
        print(folder)
        if (folder / "tokens.json").exists():
            tokens = json.loads((folder / "tokens.json").read_text())
            print(f"train with: --placeholder_tokens \"{','.join(tokens['placeholder_tokens'])}\" "
                  f"--initializer_tokens \"{','.join(tokens['initializer_tokens'])}\"")
    elif args.format == "evogen":
        print(export_evogen(args.out_dir, args.n or 30, args.seed, args.size))
    else:
        print(export_dco(args.out_dir, args.n or 8, args.seed, args.size))


if __name__ == "__main__":
    main()
