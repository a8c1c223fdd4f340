"""Do the embedded ShapesWorld model's cross-attention maps point at the objects their words
name? The guidance losses (A&E, CONFORM, EBAMA, SynGen) act on these maps; where a word's map
is spread evenly over the image, raising or separating it cannot move the object.

    python benchmarks/shapes_map_localisation.py [--prompts 48] [--output FILE.json]

For the first ``--prompts`` two-object prompts of the test split, a scene that satisfies each
is rendered, encoded and noised at several timesteps; one UNet forward per map size records
the maps of every cross-attention layer of that size (averaged over heads and layers, as the
guidance reads them). For each object's noun (its last token group word), the map normalised
to sum 1 over pixels gives:

- ``lift``: the share of the map on the object's own pixels divided by the object's share of
  the image (1: no better than uniform; the object masks are area-averaged to the map size);
- ``own_over_other``: how often the noun's map puts more mass on its own object than on the
  other object of the prompt (0.5: chance).

Means with 95% t-intervals over prompts x objects, per map size and timestep. Writes JSON
(default ``benchmarks/results/shapesworld/map_localisation.json``). About a minute on 2 CPU
cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from contrastive_diffusers.atomic_io import write_json_atomic
from contrastive_diffusers.eval.stats import mean_ci
from contrastive_diffusers.guidance.attention import (
    AttentionRecorder,
    layer_resolutions,
    recording_processors,
    select_layers,
)
from contrastive_diffusers.guidance.tokens import resolve_groups
from contrastive_diffusers.models.loading import load_pipeline
from contrastive_diffusers.shapes import shapes_prompts
from contrastive_diffusers.shapes.captions import scenes_for
from contrastive_diffusers.shapes.render import render_array
from contrastive_diffusers.shapes.spec import CaptionSpec
from contrastive_diffusers.shapes.world import Scene

RESULTS = Path(__file__).resolve().parent / "results" / "shapesworld" / "map_localisation.json"
TIMESTEPS = (100, 300, 500, 700, 900)


def scene_data(items, size: int, seed: int):
    """Per prompt: the image in [-1, 1] (3, H, W), and each object's pixel mask (H, W)."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    for item in items:
        spec = CaptionSpec.from_dict(item.metadata["spec"])
        scene = scenes_for(spec, rng)
        background = np.asarray(scene.background, dtype=np.float32)
        images.append(render_array(scene, size).astype(np.float32) / 127.5 - 1)
        # each required object (prompt order) found in the scene by its shape and colour
        placed = [next(o for o in scene.objects if o.shape == want.shape and o.color == want.color)
                  for want in spec.objects]
        own = [render_array(Scene((o,), background=scene.background), size).astype(np.float32) for o in placed]
        masks.append([np.abs(o - background).sum(-1) > 30 for o in own])
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), masks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    pipe = load_pipeline("embedded", "cpu", torch.float32, quiet=True)
    unet, vae, tokenizer = pipe.unet, pipe.vae, pipe.tokenizer
    items = [i for i in shapes_prompts("test") if i.category == "two_object"][: args.prompts]
    size = pipe.unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    images, masks = scene_data(items, size, args.seed)
    latent_hw = tuple(unet.config.sample_size for _ in range(2))
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        ids = tokenizer([i.prompt for i in items], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        hidden = pipe.text_encoder(ids)[0]
    # per prompt: the token position of each object's noun, as the guidance resolves them
    nouns = [[group.noun[0] for group in resolve_groups(tokenizer, item.prompt, item.token_groups)] for item in items]
    sizes = sorted(set(layer_resolutions(unet, latent_hw).values()), reverse=True)
    results: dict = {"prompts": len(items), "seed": args.seed, "maps": {}}
    for t in TIMESTEPS:
        generator = torch.Generator().manual_seed(args.seed * 1000 + t)
        noise = torch.randn(latents.shape, generator=generator)
        noisy = pipe.scheduler.add_noise(latents, noise, torch.full((len(items),), t))
        for hw in sizes:
            recorder = AttentionRecorder(hw)
            with recording_processors(unet, select_layers(unet, latent_hw, hw), recorder), recorder.recording(), \
                    torch.no_grad():
                unet(noisy, t, hidden)
            maps = recorder.aggregate()  # (B, h, w, 77)
            lifts, wins = [], []
            for b, positions in enumerate(nouns):
                low = [F.adaptive_avg_pool2d(torch.from_numpy(m.astype(np.float32))[None, None], hw)[0, 0]
                       for m in masks[b]]
                for k, position in enumerate(positions):
                    word_map = maps[b, :, :, position]
                    word_map = word_map / word_map.sum()
                    own, other = (word_map * low[k]).sum(), (word_map * low[1 - k]).sum()
                    lifts.append(float(own / low[k].mean()))
                    wins.append(float(own > other))
            key = f"{hw[0]}x{hw[1]}"
            entry = results["maps"].setdefault(key, {})
            lift, win = mean_ci(lifts), mean_ci(wins)
            entry[str(t)] = {"lift": {"mean": lift.mean, "ci_low": lift.low, "ci_high": lift.high, "n": lift.n},
                             "own_over_other": {"mean": win.mean, "ci_low": win.low, "ci_high": win.high, "n": win.n}}
            print(f"t={t} maps {key}: lift {lift.mean:.2f} [{lift.low:.2f}, {lift.high:.2f}], "
                  f"own > other {win.mean:.2f} [{win.low:.2f}, {win.high:.2f}] (n={lift.n})", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.output, results)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
