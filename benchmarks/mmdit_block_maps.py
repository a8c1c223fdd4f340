"""Which MMDiT blocks' image-to-text maps localise the objects: the measurement behind the
default ``blocks`` of the guided SD3 / Flux pipelines.

    PYTHONPATH=. python benchmarks/mmdit_block_maps.py --model embedded-mmdit --prompts 24 --seeds 0 1 2 3 \
        --at 0.1 0.25 0.5 0.75 0.95 [--text-sequence t5] --output benchmarks/results/mmdit/block_maps.md

For every prompt (two-object prompts of ShapesWorld's test split, e.g. "a red circle and a
blue square") and seed, plain generation runs; the latents entering step ``floor(at x
steps)`` are kept for each ``--at``, and one forward there records every joint / double-stream / single-stream block's map
(:mod:`contrastive_diffusers.guidance.joint_attention`, all blocks at once, no cut). The
ShapesWorld oracle finds the objects in the final image; for every object of the prompt that
it finds (right colour and shape), each block's map of the object's noun (the noun token of
its automatic group) (normalised over
the patch grid) is scored by the share of its mass inside the object's box, next to the
box's share of the image (what a uniform map would score). The table lists blocks by mean
share; the default blocks should be the best ones that come early (the guidance forward is
cut after the last recorded block).

It needs a trained model that draws ShapesWorld objects; on random-weight models (``tiny-sd3``,
``tiny-flux``) the oracle finds nothing to score and the script says so. On the embedded
MMDiT model no block localises (``benchmarks/results/mmdit/block_maps.md`` and
``block_maps_t5.md``: ``--model embedded-mmdit --prompts 24 --seeds 0 1 2 3 --at 0.1 0.25
0.5 0.75 0.95``, with ``--text-sequence t5`` for the second), so the pipelines' default (the
middle third of the joint blocks) stays.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

PROMPTS = [
    ("a red circle and a blue square", [["red", "circle"], ["blue", "square"]]),
    ("a green triangle and a yellow diamond", [["green", "triangle"], ["yellow", "diamond"]]),
    ("a white cross and a purple circle", [["white", "cross"], ["purple", "circle"]]),
    ("a cyan square and an orange triangle", [["cyan", "square"], ["orange", "triangle"]]),
]


def box_share(noun_map: torch.Tensor, box: tuple[int, int, int, int], image_hw: tuple[int, int]) -> tuple[float, float]:
    """``(share of the map's mass inside box, share of the grid inside box)`` for a map
    ``(h, w)`` over the patch grid and a pixel box ``(x0, y0, x1, y1)``, end-exclusive; a
    grid cell is inside when its centre is."""
    h, w = noun_map.shape
    ys = (torch.arange(h) + 0.5) * image_hw[0] / h
    xs = (torch.arange(w) + 0.5) * image_hw[1] / w
    x0, y0, x1, y1 = box
    inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    total = noun_map.sum()
    mass = float(noun_map[inside].sum() / total) if total > 0 else 0.0
    return mass, float(inside.float().mean())


def _inputs(pipe, prompt: str, latents: torch.Tensor, max_sequence_length: int, guidance_scale: float,
            text_sequence: str = "clip"):
    """The conditional forward's inputs, the text sequence read, its length and the patch grid."""
    from contrastive_diffusers.guidance.joint_attention import TextSequence
    from contrastive_diffusers.pipelines.joint import clip_then_t5

    if hasattr(pipe, "tokenizer_3"):  # SD3: the CLIP part, the pipeline's default text_sequence
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=[prompt], prompt_2=None, prompt_3=None, do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        inputs = {"encoder_hidden_states": embeds, "pooled_projections": pooled, "joint_attention_kwargs": None}
        patch = pipe.transformer.config.patch_size
        grid = (latents.shape[-2] // patch, latents.shape[-1] // patch)
        text, total = clip_then_t5(pipe.tokenizer_max_length, max_sequence_length, text_sequence, embeds.shape[1])
        return inputs, text, total, grid
    embeds, pooled, text_ids = pipe.encode_prompt(prompt=[prompt], prompt_2=None, max_sequence_length=max_sequence_length)
    side = int(math.isqrt(latents.shape[1]))
    image_ids = pipe._prepare_latent_image_ids(1, side, side, latents.device, latents.dtype)
    inputs = {"encoder_hidden_states": embeds, "pooled_projections": pooled, "txt_ids": text_ids,
              "img_ids": image_ids, "guidance_scale": guidance_scale, "joint_attention_kwargs": None}
    return inputs, TextSequence(0, embeds.shape[1], start_slot=False), embeds.shape[1], (side, side)


def block_maps(pipe, prompt: str, latents, t, max_sequence_length: int, guidance_scale: float,
               text_sequence: str = "clip") -> dict:
    """``{block: (h, w, tokens)}`` maps of every joint-attention block at ``latents``, ``t``."""
    from contrastive_diffusers.guidance.joint_attention import (
        JointAttentionRecorder,
        joint_blocks,
        joint_recording_processors,
    )

    inputs, text, text_len, grid = _inputs(pipe, prompt, latents, max_sequence_length, guidance_scale, text_sequence)
    blocks = joint_blocks(pipe.transformer)
    recorder = JointAttentionRecorder(grid, text_len)
    with torch.no_grad(), joint_recording_processors(pipe.transformer, blocks, recorder, text), recorder.recording():
        pipe._run_transformer(inputs, latents, t)
    return {name: (summed[0] / heads).reshape(*grid, -1) for name, (summed, heads) in recorder.maps.items()}


def _items(n: int) -> list[tuple[str, object]]:
    """The first ``n`` two-object prompts of ShapesWorld's test split, with "auto" groups."""
    from contrastive_diffusers.shapes import shapes_prompts

    return [(i.prompt, "auto") for i in shapes_prompts("test") if i.category == "two_object"][:n]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-sd3", help="a model name, hub id or folder (load_pipeline)")
    parser.add_argument("--prompts", type=int, default=12,
                        help="two-object prompts of the ShapesWorld test split (0: the four fixed ones)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--at", type=float, nargs="+", default=[0.25],
                        help="fractions of the trajectory where maps are read (several: one column each)")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--max-sequence-length", type=int, default=None,
                        help="T5 length (default: the pipeline's default for this model)")
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--text-sequence", choices=("clip", "t5"), default="clip",
                        help="SD3: the part of the joint text whose maps are scored (Flux: always T5)")
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown table here")
    args = parser.parse_args(argv)

    from contrastive_diffusers.guidance.tokens import resolve_groups
    from contrastive_diffusers.eval.stats import mean_ci
    from contrastive_diffusers.models.loading import load_pipeline
    from contrastive_diffusers.runs import generation_options
    from contrastive_diffusers.shapes.oracle import detect

    pipe = load_pipeline(args.model, "cpu", None, quiet=True)
    length = args.max_sequence_length or pipe.default_max_sequence_length()
    options = generation_options(pipe, args.size, args.size, args.steps, args.guidance_scale)
    options.pop("negative_prompt")
    read_at = sorted({max(1, min(args.steps - 1, int(at * args.steps))) for at in args.at})
    scores = defaultdict(list)  # (step, block) -> map mass inside the object's box
    chance = []
    items = _items(args.prompts) if args.prompts else PROMPTS
    for prompt, spec in items:
        sequence = args.text_sequence if hasattr(pipe, "tokenizer_3") else "clip"  # Flux's lookup is T5's anyway
        groups = resolve_groups(pipe.token_lookup(length, sequence), prompt, spec)
        for seed in args.seeds:
            kept = {}

            def keep(p, i, t, kwargs):
                if i + 1 in read_at:  # the latents entering step i + 1
                    kept[i + 1] = (kwargs["latents"].clone(), p.scheduler.timesteps[i + 1])
                return kwargs

            image = pipe(prompt, generator=torch.Generator().manual_seed(seed), callback_on_step_end=keep,
                         max_sequence_length=length, **options).images[0]
            found = detect(image)
            maps = {step: block_maps(pipe, prompt, latents, t, length, options["guidance_scale"], sequence)
                    for step, (latents, t) in kept.items()}
            for group in groups:
                color, shape = (group.words[0] if len(group.words) > 1 else None), group.words[-1]
                match = next((o for o in found if o.shape == shape and (color is None or o.color == color)), None)
                if match is None:
                    continue
                for step, by_block in maps.items():
                    for name, block_map in by_block.items():
                        noun = block_map[..., list(group.noun)].sum(-1)
                        mass, area = box_share(noun, match.bbox, (image.height, image.width))
                        scores[step, name].append(mass)
                chance.append(area)
    lines = [f"# Object localisation of each MMDiT block's maps: {args.model}"
             + (f", {args.text_sequence.upper()} text" if hasattr(pipe, "tokenizer_3") else ""), "",
             f"{len(items)} two-object prompts x seeds {args.seeds}, {args.steps} steps, maps read at steps "
             f"{read_at}; {len(chance)} objects found by the oracle (right colour and shape).", ""]
    if not chance:
        lines.append("The oracle found none of the prompts' objects in the images (a random-weight model draws "
                     "noise), so nothing could be scored; run this on a trained model.")
    else:
        blocks = list(dict.fromkeys(name for _, name in scores))
        lines += [f"Uniform map (box share of the image): {np.mean(chance):.3f}. Cells: mean share of the noun's "
                  "map inside its object's box (95% interval).", "",
                  "| block | " + " | ".join(f"step {s} of {args.steps}" for s in read_at) + " |",
                  "|---|" + "---|" * len(read_at)]
        for name in blocks:
            cells = []
            for step in read_at:
                ci = mean_ci(scores[step, name])  # Student's t with n - 1 degrees of freedom
                cells.append(f"{ci.mean:.3f} ±{ci.half_width:.3f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
