"""Train the ShapesWorld models from scratch: ``python -m contrastive_diffusers.shapes.train``.

Phases (each timed and logged; every random choice comes from a generator seeded by
``(seed, phase)``, so the same seed and arguments give the same weights on the same device):

1. data: ``--num_scenes`` captioned scenes of the training split (colour-shape pairs from
   :func:`~.prompts.training_pairs` only; caption kinds mixed by ``--kind_weights``), each
   scene drawn to match its caption exactly (:func:`~.captions.scenes_for`) and rendered once;
2. ``vae``: ``AutoencoderKL`` with L1 + L2 reconstruction and a small KL term; then
   ``scaling_factor = 1 / std`` of the training latents, so the UNet sees unit variance;
3. ``unet``: ``UNet2DConditionModel`` and ``CLIPTextModel`` trained jointly with the v loss on
   SD 1.x's DDPM schedule rescaled to zero terminal SNR (``--noise_schedule zero_snr``, the
   default; ``sd`` is SD's schedule with the epsilon loss), min-SNR-gamma weighting,
   ``--caption_dropout`` empty captions for classifier-free guidance, EMA of both (the EMA
   weights are saved); fp32 by default,
   ``--mixed_precision bf16`` autocasts the forward passes (fp32 master weights, optimiser and
   loss): 1.28 instead of 1.45 s per step at batch 64 on a 2-core AVX512-BF16 CPU, but the one
   full run with it (together with 1,700 steps and a 0.4 single-object share) drew a clearly
   worse model (single-object success 0.69 instead of 0.85, on SD's schedule), so the shipped
   recipe does not use it;
4. ``clip``: a ``CLIPModel`` trained with image-caption InfoNCE whose candidates include each
   image's hard negatives (:func:`~.captions.negatives_for`: swapped colours / shapes,
   replaced colour / shape, wrong relation or count); its caption retrieval against those
   negatives is measured on fresh renders (training pairs and held-out pairs);
5. ``--eval``: the test split's prompts at ``--eval_seeds`` seeds with the trained pipeline
   (no guidance), checked by the oracle, per category.

Output folder: a ``StableDiffusionPipeline`` (``model_index.json``, ``vae/``, ``unet/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``; safetensors; no safety checker), the
world's CLIP in ``clip/`` (``CLIPModel`` + ``CLIPProcessor``), ``training_log.json`` and a
model card ``README.md`` written from the log.

Plain torch, not accelerate: one process on one device; accelerate's value (multi-process,
mixed precision, state checkpointing) does not apply to runs of minutes, and ``--device cuda``
is all a lent GPU needs.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic_io import write_json_atomic, write_text_atomic
from ..records import jsonable
from .._compat import clip_features as _features
from ..training.timesteps import prediction_target
from .captions import caption_text, negatives_for, sample_spec, scenes_for
from .model import (
    NOISE_SCHEDULES,
    ShapesModelConfig,
    build_clip,
    build_components,
    build_inference_scheduler,
    build_noise_scheduler,
    parameter_count,
)
from .prompts import held_out_pairs, shapes_prompts, training_pairs
from .render import render_array

__all__ = ["DEFAULT_KIND_WEIGHTS", "ShapesData", "build_parser", "main", "make_data", "train"]

#: Share of each caption kind in the training data (single-object kinds dominate: the
#: single-object target is the one the model must meet).
DEFAULT_KIND_WEIGHTS = {"single": 0.35, "size": 0.1, "no_color": 0.1, "count": 0.1, "two_object": 0.2,
                        "relation": 0.15}
PHASES = ("data", "vae", "unet", "clip")


# ----------------------------------------------------------------------------- data
@dataclass
class ShapesData:
    """Rendered scenes with their captions: ``images`` uint8 ``(N, 3, H, W)``."""

    images: torch.Tensor
    captions: list[str]
    kinds: list[str]
    scenes: list
    specs: list


def _seed_of(seed: int, phase: str) -> list[int]:
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


# ----------------------------------------------------------------------------- optimisation
class EMA:
    """Exponential moving average of parameters, with the usual ``(1 + n) / (10 + n)`` warm-up."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - decay)

    @torch.no_grad()
    def copy_to(self) -> None:
        for shadow, p in zip(self.shadow, self.params):
            p.copy_(shadow)


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimise(phase: str, params: list[torch.nn.Parameter], steps: int, lr: float,
             batch_loss: Callable[[int], torch.Tensor], log: dict, log_every: int,
             weight_decay: float = 0.01, ema: EMA | None = None) -> None:
    """AdamW over ``steps`` calls of ``batch_loss(step)``, with warm-up + cosine lr, gradient
    clipping at 1, optional EMA, and the curve (mean loss per ``log_every`` steps) and timing
    written to ``log["phases"][phase]``."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, min(100, steps // 10))
    curve, window, start = [], [], time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        loss = batch_loss(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{phase}: non-finite loss at step {step}; lower --{phase}_lr.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if ema is not None:
            ema.update()
        window.append(float(loss.detach()))
        if len(window) == log_every or step == steps - 1:
            elapsed = time.perf_counter() - start
            curve.append({"step": step + 1, "loss": sum(window) / len(window), "seconds": round(elapsed, 2)})
            print(f"[{phase}] step {step + 1}/{steps} loss {curve[-1]['loss']:.4f} "
                  f"({elapsed / (step + 1):.2f} s/step)", flush=True)
            window = []
    seconds = time.perf_counter() - start
    log["phases"].setdefault(phase, {}).update(
        steps=steps, curve=curve, seconds=round(seconds, 2),
        seconds_per_step=round(seconds / max(steps, 1), 4),
    )


def _batch_indices(gen: torch.Generator, n: int, batch_size: int) -> torch.Tensor:
    return torch.randint(0, n, (batch_size,), generator=gen)


# ----------------------------------------------------------------------------- phases
def train_vae(vae, data: ShapesData, args, log: dict) -> float:
    """Train the VAE; set and return its ``scaling_factor`` (1 / std of the training latents)."""
    gen = torch.Generator().manual_seed(args.seed * 1000 + 1)
    device = args.device
    vae.to(device).train()

    def batch_loss(step: int) -> torch.Tensor:
        x = to_unit(data.images[_batch_indices(gen, len(data.images), args.batch_size)]).to(device)
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=gen).to(device)
        recon = vae.decode(posterior.mean + posterior.std * noise).sample
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return F.l1_loss(recon, x) + F.mse_loss(recon, x) + args.vae_kl_weight * kl

    optimise("vae", list(vae.parameters()), args.vae_steps, args.vae_lr, batch_loss, log, args.log_every)
    vae.eval()
    mean, std = encode_all(vae, data.images, args)
    scale = 1.0 / float(mean.flatten().std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=scale)
    with torch.no_grad():
        x = to_unit(data.images[:256]).to(device)
        recon = vae.decode(mean[:256].to(device)).sample
    log["phases"]["vae"].update(
        scaling_factor=scale, latent_mean=float(mean.mean()), latent_std=float(mean.std()),
        posterior_std_mean=float(std.mean()), recon_l1_255=float((recon - x).abs().mean() * 127.5),
    )
    print(f"[vae] scaling_factor {scale:.4f}; reconstruction L1 {log['phases']['vae']['recon_l1_255']:.2f}/255",
          flush=True)
    return scale


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, args) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image (CPU tensors)."""
    means, stds = [], []
    for start in range(0, len(images), 256):
        posterior = vae.encode(to_unit(images[start:start + 256]).to(args.device)).latent_dist
        means.append(posterior.mean.cpu())
        stds.append(posterior.std.cpu())
    return torch.cat(means), torch.cat(stds)


def tokenize(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Input ids padded to the tokenizer's length, as ``StableDiffusionPipeline.encode_prompt`` does."""
    unique = sorted(set(texts))
    ids = tokenizer(unique, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    row = {t: k for k, t in enumerate(unique)}
    return ids[[row[t] for t in texts]]


def snr_weights(scheduler, timesteps: torch.Tensor, gamma: float, v_weighting: str = "snr") -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), ones when gamma <= 0. Epsilon prediction:
    ``min(snr, gamma) / snr``. v-prediction, ``v_weighting="snr"``: Hang et al.'s
    ``min(snr, gamma) / (snr + 1)`` - the same weight on the clean-latent error as epsilon's, so 0
    at a zero-SNR timestep; ``"snr_plus_one"``: ``snr + 1`` in place of ``snr`` (diffusers'
    training scripts), which weighs the noisiest timesteps ~1 instead of ~snr."""
    if gamma <= 0:
        return torch.ones_like(timesteps, dtype=torch.float32)
    alpha_bar = scheduler.alphas_cumprod[timesteps.cpu()]
    snr = alpha_bar / (1 - alpha_bar)
    if scheduler.config.prediction_type != "v_prediction":
        return torch.clamp(snr, max=gamma) / snr
    if v_weighting == "snr":
        return torch.clamp(snr, max=gamma) / (snr + 1)
    if v_weighting == "snr_plus_one":
        return torch.clamp(snr + 1, max=gamma) / (snr + 1)
    raise ValueError(f"Unknown v_weighting {v_weighting!r}; choose snr or snr_plus_one.")


def train_unet(unet, text_encoder, tokenizer, vae_latents, scale: float, data: ShapesData, args, log: dict) -> None:
    """Joint training of the UNet and the text encoder (epsilon or v loss, per ``--noise_schedule``);
    leaves the EMA weights in them."""
    gen = torch.Generator().manual_seed(args.seed * 1000 + 2)
    device = args.device
    scheduler = build_noise_scheduler(args.noise_schedule)
    ids = tokenize(tokenizer, data.captions)
    empty = tokenize(tokenizer, [""])[0]
    mean, std = vae_latents
    unet.to(device).train()
    text_encoder.to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema = EMA(params, args.ema_decay) if args.ema_decay > 0 else None
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                              enabled=args.mixed_precision == "bf16")

    def batch_loss(step: int) -> torch.Tensor:
        idx = _batch_indices(gen, len(ids), args.batch_size)
        latents = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        noise = torch.randn(latents.shape, generator=gen)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        drop = torch.rand(len(idx), generator=gen) < args.caption_dropout
        batch_ids = torch.where(drop[:, None], empty[None], ids[idx])
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with autocast:
            encoder_states = text_encoder(batch_ids.to(device))[0]
            pred = unet(noisy.to(device), timesteps.to(device), encoder_states).sample
        target = prediction_target(scheduler, latents, noise, timesteps)
        per_sample = F.mse_loss(pred.float(), target.to(device), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * snr_weights(scheduler, timesteps, args.snr_gamma, args.v_weighting).to(device)).mean()

    optimise("unet", params, args.unet_steps, args.unet_lr, batch_loss, log, args.log_every, ema=ema)
    if ema is not None:
        ema.copy_to()
    unet.eval()
    text_encoder.eval()


def clip_pixels(images: torch.Tensor, processor) -> torch.Tensor:
    """uint8 images -> CLIP pixel values, normalised as ``processor`` does (images already at its size)."""
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def hard_negatives(data: ShapesData, seed: int) -> list[list[tuple[str, str]]]:
    """Per scene, its false perturbed captions ``(kind of edit, text)``."""
    out = []
    for k, (scene, spec, kind) in enumerate(zip(data.scenes, data.specs, data.kinds)):
        caption = caption_text(spec, kind)
        out.append([(name, neg.text) for name, neg in negatives_for(scene, caption, rng=[seed, k])])
    return out


def _text_features(model, ids: torch.Tensor, device) -> torch.Tensor:
    length = int((ids != model.config.text_config.pad_token_id).sum(1).max()) + 1
    ids = ids[:, :min(length, ids.shape[1])].to(device)
    return F.normalize(_features(model.get_text_features(input_ids=ids)), dim=-1)


def train_clip(model, processor, data: ShapesData, args, log: dict) -> None:
    """InfoNCE: each image against the batch's captions plus its own ``--clip_negatives`` hard
    negatives; each caption against the batch's images."""
    gen = torch.Generator().manual_seed(args.seed * 1000 + 3)
    device = args.device
    negatives = hard_negatives(data, args.seed)
    texts = sorted({t for t in data.captions} | {t for negs in negatives for _, t in negs})
    row = {t: k for k, t in enumerate(texts)}
    ids = tokenize(processor.tokenizer, texts)
    pos = torch.tensor([row[t] for t in data.captions])
    neg_rows = [[row[t] for _, t in negs] for negs in negatives]
    pixels = clip_pixels(data.images, processor)
    model.to(device).train()

    def batch_loss(step: int) -> torch.Tensor:
        idx = _batch_indices(gen, len(pos), args.batch_size)
        picks = []
        for i in idx.tolist():
            options = neg_rows[i] or [int(pos[int(torch.randint(0, len(pos), (1,), generator=gen))])]
            picks += [options[int(torch.randint(0, len(options), (1,), generator=gen))]
                      for _ in range(args.clip_negatives)]
        image = F.normalize(_features(model.get_image_features(pixel_values=pixels[idx].to(device))), dim=-1)
        text = _text_features(model, ids[torch.cat([pos[idx], torch.tensor(picks)])], device)
        scale = model.logit_scale.exp().clamp(max=100)
        n = len(idx)
        logits = scale * image @ text.T  # (n, n + n * K)
        target = torch.arange(n, device=device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :n].T, target)) / 2

    optimise("clip", list(model.parameters()), args.clip_steps, args.clip_lr, batch_loss, log, args.log_every,
             weight_decay=0.1)
    model.eval()


@torch.no_grad()
def clip_retrieval(model, processor, data: ShapesData, seed: int, device) -> dict:
    """How often the true caption scores above every hard negative of its image, overall and
    per kind of edit (``swap_colors``, ``replace_shape``, ...)."""
    negatives = hard_negatives(data, seed)
    image = F.normalize(_features(model.get_image_features(pixel_values=clip_pixels(data.images, processor).to(device))),
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


# ----------------------------------------------------------------------------- saving and eval
def build_pipeline(components: dict, noise_schedule: str = "sd"):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        unet=components["unet"], scheduler=build_inference_scheduler(noise_schedule),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def evaluate_pipeline(pipe, items, seeds: Sequence[int], steps: int, guidance_scale: float,
                      batch_size: int = 32) -> dict:
    """Oracle success per category of ``items`` (prompt items with ``metadata["spec"]``) generated
    plainly at every seed: ``{category: {"success": k, "n": n, "rate": k / n}}``."""
    from .oracle import check

    jobs = [(item, seed) for item in items for seed in seeds]
    results: dict[str, list[bool]] = {}
    device = pipe.device
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        generators = [torch.Generator(device).manual_seed(int(seed)) for _, seed in chunk]
        images = pipe([item.prompt for item, _ in chunk], num_inference_steps=steps, guidance_scale=guidance_scale,
                      generator=generators).images
        for (item, _), image in zip(chunk, images):
            results.setdefault(item.category, []).append(check(image, item.metadata["spec"]).success)
    return {c: {"success": sum(v), "n": len(v), "rate": sum(v) / len(v)} for c, v in results.items()}


_SCHEDULE_WORDS = {
    "sd": "epsilon loss on SD 1.x's DDPM schedule",
    "zero_snr": "v-prediction loss on SD 1.x's DDPM schedule rescaled to zero terminal SNR",
}


def _v_form(args: dict) -> str:
    if args.get("noise_schedule") != "zero_snr":
        return ""
    return f" ({args.get('v_weighting', 'snr_plus_one')} form)"  # runs from before the option used snr + 1


def _curve_table(curve: list[dict], rows: int = 8) -> str:
    if not curve:
        return "(no steps)\n"
    pick = sorted({round(k * (len(curve) - 1) / max(rows - 1, 1)) for k in range(rows)})
    lines = ["| step | loss | seconds |", "|---:|---:|---:|"]
    lines += [f"| {curve[k]['step']} | {curve[k]['loss']:.4f} | {curve[k]['seconds']:.0f} |" for k in pick]
    return "\n".join(lines) + "\n"


def model_card(log: dict) -> str:
    """The model card (``README.md``) written from the training log."""
    args, phases = log["arguments"], log["phases"]
    params = log["parameters"]
    out = [
        "---\nlibrary_name: diffusers\npipeline_tag: text-to-image\ntags: [shapesworld, synthetic, tiny]\n---\n",
        "# ShapesWorld tiny Stable Diffusion\n",
        ("A Stable Diffusion 1.x-format pipeline trained from scratch on ShapesWorld "
         "(`contrastive_diffusers.shapes`): flat coloured shapes on a dark background, 32x32 px, "
         "captions such as \"a red circle and a cyan square\". The colour-shape pairs "
         f"{', '.join(f'{c} {s}' for c, s in held_out_pairs())} were never shown in training. "
         "The world's CLIP (`CLIPModel` + `CLIPProcessor`) is in `clip/`.\n"),
        "## Usage\n",
        ("```python\nfrom diffusers import StableDiffusionPipeline\npipe = StableDiffusionPipeline.from_pretrained(folder)\n"
         f"image = pipe(\"a red circle\", num_inference_steps={log.get('eval', {}).get('steps', 50)}, "
         f"guidance_scale={log.get('eval', {}).get('guidance_scale', 7.5)}).images[0]\n```\n"),
        ("In this package: `contrastive_diffusers.shapes.embedded_model_dir()` is this folder and "
         "`embedded_clip_dir()` its `clip/`; `contrastive-diffusers generate/bench` use it when no "
         "`--model` is given.\n"),
        "## Recipe\n",
        (f"Command: `python -m contrastive_diffusers.shapes.train {log['command']}` (seed {args['seed']}, "
         f"device {args['device']}, torch {log['versions']['torch']}, diffusers {log['versions']['diffusers']}).\n"),
        (f"- Data: {args['num_scenes']} scenes of the training split (kinds {json.dumps(log['kind_weights'])}), "
         "each drawn to match its caption and rendered once.\n"),
        (f"- VAE ({params['vae']:,} params): {args['vae_steps']} steps, batch {args['batch_size']}, lr {args['vae_lr']}, "
         f"L1 + L2 + {args['vae_kl_weight']} KL; scaling_factor {phases.get('vae', {}).get('scaling_factor', 0):.4f}.\n"),
        (f"- UNet ({params['unet']:,} params) + text encoder ({params['text_encoder']:,} params): {args['unet_steps']} "
         f"steps, batch {args['batch_size']}, AdamW lr {args['unet_lr']} (warm-up, cosine), "
         f"{_SCHEDULE_WORDS[args.get('noise_schedule', 'sd')]} with min-SNR gamma {args['snr_gamma']}"
         f"{_v_form(args)}, caption dropout {args['caption_dropout']}, "
         f"EMA {args['ema_decay']}, {args.get('mixed_precision', 'no')} autocast; DDIM scheduler for inference.\n"),
        (f"- CLIP ({params['clip']:,} params): {args['clip_steps']} steps, InfoNCE with {args['clip_negatives']} hard "
         "negatives per image (swapped colours / shapes, replaced colour / shape, wrong relation / count).\n"),
        (f"Stored weights: {json.dumps(log.get('stored_dtype', {}))}, "
         f"{log.get('weights_bytes', 0) / 2**20:.1f} MiB of safetensors in all.\n"),
        "## Timings\n",
        (f"Training (everything but the evaluation): {log.get('training_seconds', log.get('total_seconds', 0)) / 60:.1f} "
         f"min with {log.get('threads', '?')} CPU thread(s).\n"),
        ("| phase | steps | seconds | s/step |\n|---|---:|---:|---:|\n" + "".join(
         f"| {name} | {p.get('steps', '')} | {p.get('seconds', 0):.0f} | {p.get('seconds_per_step', '')} |\n"
         for name, p in phases.items())),
        "## Training curves\n",
    ]
    for name in ("vae", "unet", "clip"):
        if name in phases:
            out.append(f"### {name}\n\n" + _curve_table(phases[name]["curve"]))
    if "clip_retrieval" in log:
        out.append("## CLIP: caption retrieval against hard negatives (fresh renders)\n")
        out.append("| scenes | accuracy | n |\n|---|---:|---:|\n" + "".join(
            f"| {name} | {r['accuracy']:.3f} | {r['n']} |\n" for name, r in log["clip_retrieval"].items()))
    if "eval" in log:
        ev = log["eval"]
        out.append(f"## Oracle success of the plain model (test split, seeds {ev['seeds']}, {ev['steps']} DDIM steps, "
                   f"guidance scale {ev['guidance_scale']})\n")
        out.append("| category | success | n | rate |\n|---|---:|---:|---:|\n" + "".join(
            f"| {c} | {r['success']} | {r['n']} | {r['rate']:.3f} |\n" for c, r in ev["per_category"].items()))
    return "\n".join(out)


# ----------------------------------------------------------------------------- driver
def parse_kind_weights(text: str) -> dict[str, float]:
    """``"single=0.4,two_object=0.2"`` -> ``{"single": 0.4, "two_object": 0.2}`` (shares are
    normalised when the data is drawn); unknown kinds and non-positive totals are errors."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = (t.strip() for t in part.partition("="))
        if not sep or kind not in DEFAULT_KIND_WEIGHTS:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected KIND=SHARE with KIND one of {', '.join(DEFAULT_KIND_WEIGHTS)}")
        try:
            weights[kind] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: the share must be a number") from None
        if weights[kind] < 0:
            raise argparse.ArgumentTypeError(f"{part!r}: shares must be >= 0")
    if not weights or sum(weights.values()) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one kind with a positive share")
    return weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m contrastive_diffusers.shapes.train", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--output_dir", required=True, type=Path)
    add("--seed", type=int, default=0)
    add("--device", default="cpu", help="cpu or cuda (fp32 either way)")
    add("--resolution", type=int, default=32)
    add("--num_scenes", type=int, default=30000)
    add("--batch_size", type=int, default=64)
    add("--vae_steps", type=int, default=300)
    add("--unet_steps", type=int, default=1550)
    add("--clip_steps", type=int, default=600)
    add("--vae_lr", type=float, default=1e-3)
    add("--unet_lr", type=float, default=1e-3)
    add("--clip_lr", type=float, default=5e-4)
    add("--vae_kl_weight", type=float, default=1e-3)
    add("--caption_dropout", type=float, default=0.1)
    add("--noise_schedule", choices=tuple(NOISE_SCHEDULES), default="zero_snr",
        help="sd: SD 1.x betas, epsilon prediction, DDIM leading; zero_snr: betas rescaled to zero "
             "terminal SNR, v-prediction, DDIM trailing")
    add("--snr_gamma", type=float, default=5.0, help="min-SNR weighting; 0 for the unweighted loss")
    add("--v_weighting", choices=("snr_plus_one", "snr"), default="snr",
        help="min-SNR form for v-prediction (zero_snr): snr_plus_one weighs the noisiest timesteps ~1 "
             "(diffusers' scripts), snr ~snr (Hang et al.; the clean-latent weights of the sd schedule)")
    add("--ema_decay", type=float, default=0.995, help="0 disables EMA")
    add("--mixed_precision", choices=("no", "bf16"), default="no",
        help="autocast of the UNet + text encoder forward passes (weights, optimiser and loss stay fp32)")
    add("--kind_weights", type=parse_kind_weights, default=dict(DEFAULT_KIND_WEIGHTS),
        help="caption kinds of the training data and their shares, e.g. single=0.4,two_object=0.2,... "
             f"(default {','.join(f'{k}={v}' for k, v in DEFAULT_KIND_WEIGHTS.items())})")
    add("--clip_negatives", type=int, default=2, help="hard negatives per image in the CLIP loss")
    add("--log_every", type=int, default=25)
    add("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add("--probe", type=int, default=0, help="time N UNet steps at --batch_size, print the full run's estimate, exit")
    add("--eval", action="store_true", help="score the test split's prompts with the oracle after training")
    add("--eval_seeds", type=int, default=4)
    add("--eval_per_category", type=int, default=20)
    add("--eval_steps", type=int, default=50, help="DDIM steps of the evaluation (the CLI's default)")
    add("--eval_guidance_scale", type=float, default=7.5, help="classifier-free guidance of the evaluation")
    add("--save_dtype", choices=("float16", "float32"), default="float16",
        help="storage dtype of the UNet and VAE weights (text encoder and CLIP: always float32)")
    add("--finalize_only", action="store_true",
        help="skip training: re-store, evaluate (with --eval) and re-write the card of --output_dir")
    add("--retrieval_scenes", type=int, default=300, help="fresh renders per CLIP retrieval check")
    return parser


def _check_args(parser, args) -> None:
    for name in ("num_scenes", "batch_size", "log_every", "eval_seeds", "eval_per_category", "eval_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}.")
    for name in ("vae_steps", "unet_steps", "clip_steps", "probe", "clip_negatives"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}.")
    if not 0 <= args.caption_dropout < 1:
        parser.error(f"--caption_dropout must be in [0, 1), got {args.caption_dropout}.")
    if args.resolution % 8 or args.resolution < 16:
        parser.error(f"--resolution must be a multiple of 8 of at least 16, got {args.resolution}.")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda given but no CUDA device is available.")


def model_config(args) -> ShapesModelConfig:
    config = ShapesModelConfig()
    config.vae["sample_size"] = args.resolution
    config.unet["sample_size"] = config.latent_size
    return config


def probe(args, config: ShapesModelConfig) -> dict:
    """Seconds per step of each phase at ``--batch_size`` (``--probe`` steps of the real phase
    code on 256 scenes, the first step not counted), and the estimated time of the full run."""
    import copy

    data = make_data(256, _seed_of(args.seed, "data"), args.resolution, args.kind_weights)
    components = build_components(config, args.seed)
    clip, processor = build_clip(config, components["tokenizer"], args.seed + 3)
    short = copy.copy(args)
    short.vae_steps = short.unet_steps = short.clip_steps = args.probe + 1
    short.log_every = 1
    log: dict = {"phases": {}}
    scale = train_vae(components["vae"], data, short, log)
    latents = encode_all(components["vae"], data.images, short)
    train_unet(components["unet"], components["text_encoder"], components["tokenizer"], latents, scale, data, short, log)
    train_clip(clip, processor, data, short, log)
    per_step = {}
    for phase in ("vae", "unet", "clip"):
        curve = log["phases"][phase]["curve"]
        per_step[phase] = (curve[-1]["seconds"] - curve[0]["seconds"]) / max(len(curve) - 1, 1)
    data_seconds = 0.0003 * args.num_scenes  # measured: ~0.3 ms per scene
    estimate = data_seconds + sum(per_step[p] * getattr(args, f"{p}_steps") for p in per_step)
    result = {"seconds_per_step": per_step, "unet_steps_per_second": 1 / per_step["unet"],
              "estimated_total_minutes": estimate / 60, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "device": args.device}
    print(json.dumps(result, indent=1), flush=True)
    return result


def _versions() -> dict:
    import diffusers
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}


def train(args) -> dict:
    """Run every phase and write the output folder; returns the training log."""
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    config = model_config(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log: dict = {"arguments": jsonable(vars(args)), "seed": args.seed, "command": args.command,
                 "versions": _versions(), "kind_weights": args.kind_weights, "config": config.to_dict(),
                 "phases": {}, "threads": torch.get_num_threads()}
    start = time.perf_counter()
    data = make_data(args.num_scenes, _seed_of(args.seed, "data"), args.resolution, args.kind_weights)
    log["phases"]["data"] = {"scenes": len(data.captions), "seconds": round(time.perf_counter() - start, 2),
                             "kinds": {k: data.kinds.count(k) for k in args.kind_weights}}
    print(f"[data] {len(data.captions)} scenes in {log['phases']['data']['seconds']:.1f} s", flush=True)

    components = build_components(config, args.seed)
    clip, processor = build_clip(config, components["tokenizer"], args.seed + 3)
    log["parameters"] = {name: parameter_count(m) for name, m in
                         [("vae", components["vae"]), ("unet", components["unet"]),
                          ("text_encoder", components["text_encoder"]), ("clip", clip)]}
    print(f"[model] parameters {log['parameters']}", flush=True)

    scale = train_vae(components["vae"], data, args, log)
    latents = encode_all(components["vae"], data.images, args)
    train_unet(components["unet"], components["text_encoder"], components["tokenizer"], latents, scale, data, args, log)
    build_pipeline(components, args.noise_schedule).save_pretrained(out, safe_serialization=True)

    train_clip(clip, processor, data, args, log)
    clip.save_pretrained(out / "clip", safe_serialization=True)
    processor.save_pretrained(out / "clip")
    log["clip_retrieval"] = {
        name: clip_retrieval(clip, processor, make_data(args.retrieval_scenes, [args.seed, 7 + k], args.resolution,
                                                        DEFAULT_KIND_WEIGHTS, pairs), args.seed, args.device)
        for k, (name, pairs) in enumerate([("training pairs", training_pairs()), ("held-out pairs", held_out_pairs())])
    }
    print(f"[clip] retrieval {json.dumps({k: round(v['accuracy'], 3) for k, v in log['clip_retrieval'].items()})}",
          flush=True)

    log["training_seconds"] = round(time.perf_counter() - start, 1)  # everything but the evaluation
    log["total_seconds"] = log["training_seconds"]
    write_json_atomic(out / "training_log.json", jsonable(log))
    finalize(out, args)
    print(f"[done] {out}: trained in {log['training_seconds'] / 60:.1f} min", flush=True)
    return json.loads((out / "training_log.json").read_text())


def store_half(folder: Path) -> None:
    """Re-save the UNet and the VAE of a saved pipeline in float16 (half the bytes; diffusers
    loads them back as float32 unless told otherwise). The text encoder and the CLIP stay
    float32: transformers >= 5 loads a checkpoint in its stored dtype, and a float16 text
    encoder would feed float16 states to the float32 UNet of a plain ``from_pretrained``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
        model = cls.from_pretrained(folder / name)
        model.to(torch.float16).save_pretrained(folder / name, safe_serialization=True)


def finalize(folder: Path, args) -> dict:
    """What makes a trained folder the shippable one: weights stored as ``--save_dtype``, the
    oracle evaluation of the weights *as stored* (loaded back with stock ``from_pretrained``,
    float32 compute), and the model card. Re-runnable on a folder (``--finalize_only``)."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    log = json.loads((folder / "training_log.json").read_text())
    if args.save_dtype == "float16":
        store_half(folder)
    log["stored_dtype"] = {"unet": args.save_dtype, "vae": args.save_dtype, "text_encoder": "float32",
                           "clip": "float32"}
    log["weights_bytes"] = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
    if args.eval:
        t0 = time.perf_counter()
        pipe = StableDiffusionPipeline.from_pretrained(folder).to(args.device)
        pipe.set_progress_bar_config(disable=True)
        items = shapes_prompts("test", per_category=args.eval_per_category)
        seeds = list(range(args.eval_seeds))
        per_category = evaluate_pipeline(pipe, items, seeds, args.eval_steps, args.eval_guidance_scale)
        log["eval"] = {"seeds": seeds, "steps": args.eval_steps, "guidance_scale": args.eval_guidance_scale,
                       "per_category_prompts": args.eval_per_category, "per_category": per_category,
                       "seconds": round(time.perf_counter() - t0, 1)}
        for c, r in per_category.items():
            print(f"[eval] {c:12s} {r['success']:4d}/{r['n']:<4d} {r['rate']:.3f}", flush=True)
    write_json_atomic(folder / "training_log.json", jsonable(log))
    write_text_atomic(folder / "README.md", model_card(log))
    return log


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    args.command = " ".join(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if args.probe:
        probe(args, model_config(args))
        return 0
    if args.finalize_only:
        if not (args.output_dir / "training_log.json").is_file():
            parser.error(f"--finalize_only: {args.output_dir} holds no training_log.json (not a training output)")
        finalize(args.output_dir, args)
        return 0
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
