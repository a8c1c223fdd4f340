"""Which MMDiT blocks' image-to-text maps localise the objects: the measurement behind the
default ``blocks`` of the guided SD3 / Flux pipelines.

    PYTHONPATH=. python benchmarks/mmdit_block_maps.py --model FOLDER_OR_ID --seeds 0 1 2 3 --at 0.25

For every prompt (two ShapesWorld objects, e.g. "a red circle and a blue square") and seed,
plain generation runs; the latents entering step ``floor(at x steps)`` are kept, and one
forward there records every joint / double-stream / single-stream block's map
(:mod:`contrastive_diffusers.guidance.joint_attention`, all blocks at once, no cut). The
ShapesWorld oracle finds the objects in the final image; for every object of the prompt that
it finds (right colour and shape), each block's map of the object's noun (normalised over
the patch grid) is scored by the share of its mass inside the object's box, next to the
box's share of the image (what a uniform map would score). The table lists blocks by mean
share; the default blocks should be the best ones that come early (the guidance forward is
cut after the last recorded block).

It needs a trained model that draws ShapesWorld objects; on random-weight models (``tiny-sd3``,
``tiny-flux``) the oracle finds nothing to score and the script says so. Until a trained
MMDiT model exists, the pipelines' default (the middle third of the joint blocks) is
provisional.
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


def _inputs(pipe, prompt: str, latents: torch.Tensor, max_sequence_length: int, guidance_scale: float):
    """The conditional forward's inputs, the text sequence read, its length and the patch grid."""
    from contrastive_diffusers.guidance.joint_attention import TextSequence

    if hasattr(pipe, "tokenizer_3"):  # SD3: the CLIP part, the pipeline's default text_sequence
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=[prompt], prompt_2=None, prompt_3=None, do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        inputs = {"encoder_hidden_states": embeds, "pooled_projections": pooled, "joint_attention_kwargs": None}
        patch = pipe.transformer.config.patch_size
        grid = (latents.shape[-2] // patch, latents.shape[-1] // patch)
        return inputs, TextSequence(0, pipe.tokenizer_max_length), embeds.shape[1], grid
    embeds, pooled, text_ids = pipe.encode_prompt(prompt=[prompt], prompt_2=None, max_sequence_length=max_sequence_length)
    side = int(math.isqrt(latents.shape[1]))
    image_ids = pipe._prepare_latent_image_ids(1, side, side, latents.device, latents.dtype)
    inputs = {"encoder_hidden_states": embeds, "pooled_projections": pooled, "txt_ids": text_ids,
              "img_ids": image_ids, "guidance_scale": guidance_scale, "joint_attention_kwargs": None}
    return inputs, TextSequence(0, embeds.shape[1], start_slot=False), embeds.shape[1], (side, side)


def block_maps(pipe, prompt: str, latents, t, max_sequence_length: int, guidance_scale: float) -> dict:
    """``{block: (h, w, tokens)}`` maps of every joint-attention block at ``latents``, ``t``."""
    from contrastive_diffusers.guidance.joint_attention import (
        JointAttentionRecorder,
        joint_blocks,
        joint_recording_processors,
    )

    inputs, text, text_len, grid = _inputs(pipe, prompt, latents, max_sequence_length, guidance_scale)
    blocks = joint_blocks(pipe.transformer)
    recorder = JointAttentionRecorder(grid, text_len)
    with torch.no_grad(), joint_recording_processors(pipe.transformer, blocks, recorder, text), recorder.recording():
        pipe._run_transformer(inputs, latents, t)
    return {name: (summed[0] / heads).reshape(*grid, -1) for name, (summed, heads) in recorder.maps.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-sd3", help="a model name, hub id or folder (load_pipeline)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--at", type=float, default=0.25, help="fraction of the trajectory where maps are read")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--max-sequence-length", type=int, default=77)
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown table here")
    args = parser.parse_args(argv)

    from contrastive_diffusers.guidance.tokens import resolve_groups
    from contrastive_diffusers.models.loading import load_pipeline
    from contrastive_diffusers.runs import generation_options
    from contrastive_diffusers.shapes.oracle import detect

    pipe = load_pipeline(args.model, "cpu", None, quiet=True)
    options = generation_options(pipe, args.size, args.size, args.steps, args.guidance_scale)
    options.pop("negative_prompt")
    read_at = max(1, int(args.at * args.steps))
    scores = defaultdict(list)
    chance = []
    for prompt, word_groups in PROMPTS:
        groups = resolve_groups(pipe.token_lookup(args.max_sequence_length), prompt, word_groups)
        for seed in args.seeds:
            kept = {}

            def keep(p, i, t, kwargs):
                if i + 1 == read_at:  # the latents entering step read_at
                    kept["latents"] = kwargs["latents"].clone()
                    kept["t"] = p.scheduler.timesteps[read_at]
                return kwargs

            image = pipe(prompt, generator=torch.Generator().manual_seed(seed), callback_on_step_end=keep,
                         max_sequence_length=args.max_sequence_length, **options).images[0]
            found = detect(image)
            maps = block_maps(pipe, prompt, kept["latents"], kept["t"], args.max_sequence_length,
                              options["guidance_scale"])
            for group, words in zip(groups, word_groups):
                color, shape = words
                match = next((o for o in found if o.color == color and o.shape == shape), None)
                if match is None:
                    continue
                for name, block_map in maps.items():
                    noun = block_map[..., list(group.noun)].sum(-1)
                    mass, area = box_share(noun, match.bbox, (image.height, image.width))
                    scores[name].append(mass)
                chance.append(area)
    lines = [f"# Object localisation of each MMDiT block's maps: {args.model}", "",
             f"{len(PROMPTS)} prompts x seeds {args.seeds}, {args.steps} steps, maps at step {read_at}; "
             f"{len(chance)} objects found by the oracle.", ""]
    if not chance:
        lines.append("The oracle found none of the prompts' objects in the images (a random-weight model draws "
                     "noise), so nothing could be scored; run this on a trained model.")
    else:
        lines += [f"Uniform map (box share of the image): {np.mean(chance):.3f}.", "",
                  "| block | mean map mass inside the object's box |", "|---|---|"]
        for name, values in sorted(scores.items(), key=lambda kv: -np.mean(kv[1])):
            lines.append(f"| {name} | {np.mean(values):.3f} |")
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
