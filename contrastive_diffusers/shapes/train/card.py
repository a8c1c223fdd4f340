"""The model card (``README.md``) of a trained folder, written from its ``training_log.json``."""

from __future__ import annotations

import json

from ..prompts import held_out_pairs

_SCHEDULE_WORDS = {
    "sd": "epsilon loss on SD 1.x's DDPM schedule",
    "zero_snr": "v-prediction loss on SD 1.x's DDPM schedule rescaled to zero terminal SNR",
}

# Cards of runs whose CLIP drew negatives from every pair (no recipe in the log's CLIP phase).
_OLD_CLIP_NOTE = " (but the world CLIP's hard negatives named them)"


def negatives_recipe(log: dict) -> dict | None:
    """How the CLIP of a training log drew its hard negatives (None: the first recipe, which
    named held-out pairs and counted captions true of the image as negatives)."""
    return log.get("phases", {}).get("clip", {}).get("negatives")


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


def _unet_line(args: dict, params: dict) -> str:
    return (f"- UNet ({params['unet']:,} params) + text encoder ({params['text_encoder']:,} params): {args['unet_steps']} "
            f"steps, batch {args['batch_size']}, AdamW lr {args['unet_lr']} (warm-up, cosine), "
            f"{_SCHEDULE_WORDS[args.get('noise_schedule', 'sd')]} with min-SNR gamma {args['snr_gamma']}"
            f"{_v_form(args)}, caption dropout {args['caption_dropout']}, "
            f"EMA {args['ema_decay']}, {args.get('mixed_precision', 'no')} autocast; DDIM scheduler for inference.\n")


def _mmdit_lines(log: dict) -> dict:
    """The lines of the card that differ for ``--format mmdit`` (an SD3-format pipeline)."""
    args, phases, params = log["arguments"], log["phases"], log["parameters"]
    config = log.get("mmdit_config", {})
    clip_length, t5_length = config.get("clip_length", 77), config.get("t5_length", 256)
    encoders = " + ".join(f"{params[name]:,}" for name in ("text_encoder", "text_encoder_2", "text_encoder_3"))
    return dict(
        title="# ShapesWorld tiny Stable Diffusion 3 (MMDiT)\n",
        kind=("A Stable Diffusion 3-format pipeline (`StableDiffusion3Pipeline`: joint-attention "
              "`SD3Transformer2DModel`, two CLIP text encoders and T5, rectified flow)"),
        pipeline_class="StableDiffusion3Pipeline",
        in_package=("Load it with `--model <this folder>` in `contrastive-diffusers generate/bench`, or "
                    "`contrastive_diffusers.models.loading.load_pipeline`; the copy shipped in this package is "
                    "`--model embedded-mmdit` (`contrastive_diffusers.models.embedded.embedded_mmdit_dir()`).\n"),
        vae_extra=f", shift_factor {phases.get('vae', {}).get('shift_factor', 0):.4f}",
        denoiser=(f"- Transformer ({params['transformer']:,} params) + text encoders ({encoders} params): "
                  f"{args['transformer_steps']} steps, batch {args['batch_size']}, AdamW lr {args['transformer_lr']} "
                  "(warm-up, cosine), SD3's rectified-flow velocity loss with logit-normal noise levels, "
                  f"shift {args['flow_shift']}, caption dropout {args['caption_dropout']}, EMA {args['ema_decay']}, "
                  f"{args.get('mixed_precision', 'no')} autocast; flow-matching Euler scheduler for inference.\n"),
        sampler="Euler",
        call_extra=f", max_sequence_length={t5_length}",
        usage_note=(f"The text is short: {clip_length} CLIP tokens (stored as the CLIP tokenizers' `model_max_length`, "
                    f"which the pipeline reads) and {t5_length} T5 tokens, which stock calls must pass as "
                    f"`max_sequence_length={t5_length}` (the default 256 pads the text with tokens the model never saw); "
                    "this package's `GuidedStableDiffusion3Pipeline` takes that length by default.\n"),
    )


def model_card(log: dict) -> str:
    """The model card (``README.md``) written from the training log."""
    args, phases = log["arguments"], log["phases"]
    params = log["parameters"]
    mmdit = _mmdit_lines(log) if args.get("format") == "mmdit" else {}
    pipeline_class = mmdit.get("pipeline_class", "StableDiffusionPipeline")
    out = [
        "---\nlibrary_name: diffusers\npipeline_tag: text-to-image\ntags: [shapesworld, synthetic, tiny]\n---\n",
        mmdit.get("title", "# ShapesWorld tiny Stable Diffusion\n"),
        (mmdit.get("kind", "A Stable Diffusion 1.x-format pipeline") + " trained from scratch on ShapesWorld "
         "(`contrastive_diffusers.shapes`): flat coloured shapes on a dark background, 32x32 px, "
         "captions such as \"a red circle and a cyan square\". The colour-shape pairs "
         f"{', '.join(f'{c} {s}' for c, s in held_out_pairs())} were never shown in training"
         f"{'' if negatives_recipe(log) else _OLD_CLIP_NOTE}. "
         "The world's CLIP (`CLIPModel` + `CLIPProcessor`) is in `clip/`.\n"),
        "## Usage\n",
        (f"```python\nfrom diffusers import {pipeline_class}\npipe = {pipeline_class}.from_pretrained(folder)\n"
         f"image = pipe(\"a red circle\", num_inference_steps={log.get('eval', {}).get('steps', 50)}, "
         f"guidance_scale={log.get('eval', {}).get('guidance_scale', 7.5)}{mmdit.get('call_extra', '')})"
         ".images[0]\n```\n"),
        mmdit.get("usage_note", ""),
        mmdit.get("in_package", (
            "In this package: `contrastive_diffusers.shapes.embedded_model_dir()` is this folder and "
            "`embedded_clip_dir()` its `clip/`; `contrastive-diffusers generate/bench` use it when no "
            "`--model` is given.\n")),
        "## Recipe\n",
        (f"Command: `python -m contrastive_diffusers.shapes.train {log['command']}` (seed {args['seed']}, "
         f"device {args['device']}, torch {log['versions']['torch']}, diffusers {log['versions']['diffusers']}).\n"),
        (f"- Data: {args['num_scenes']} scenes of the training split (kinds {json.dumps(log['kind_weights'])}), "
         "each drawn to match its caption and rendered once.\n"),
        (f"- VAE ({params['vae']:,} params): {args['vae_steps']} steps, batch {args['batch_size']}, lr {args['vae_lr']}, "
         f"L1 + L2 + {args['vae_kl_weight']} KL; scaling_factor {phases.get('vae', {}).get('scaling_factor', 0):.4f}"
         f"{mmdit.get('vae_extra', '')}.\n"),
        mmdit.get("denoiser") or _unet_line(args, params),
        (f"- CLIP ({params['clip']:,} params): {args['clip_steps']} steps, InfoNCE with {args['clip_negatives']} hard "
         "negatives per image (swapped colours / shapes, replaced colour / shape, wrong relation / count"
         + ("; naming training pairs only, and a candidate true of the image left out of its softmax"
            if negatives_recipe(log) else "") + ").\n"),
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
    for name in ("vae", "unet", "transformer", "clip"):
        if name in phases:
            out.append(f"### {name}\n\n" + _curve_table(phases[name]["curve"]))
    if "clip_retrieval" in log:
        out.append("## CLIP: caption retrieval against hard negatives (fresh renders)\n")
        out.append("| scenes | accuracy | n |\n|---|---:|---:|\n" + "".join(
            f"| {name} | {r['accuracy']:.3f} | {r['n']} |\n" for name, r in log["clip_retrieval"].items()))
    if "clip_retrained" in log:
        again = log["clip_retrained"]
        before = ", ".join(f"{name} {r['accuracy']:.3f}" for name, r in (again.get("retrieval_before") or {}).items())
        why = ("" if again.get("recipe_before") else ": its first recipe drew hard negatives that named the "
               "held-out pairs and counted captions true of an image as its negatives")
        out.append(f"The CLIP was trained again on {again['date']} (`--retrain_clip`, the rest of the folder as it "
                   f"was){why}" + (f" (retrieval before: {before})" if before else "") + ".\n")
    if "eval" in log:
        ev = log["eval"]
        out.append(f"## Oracle success of the plain model (test split, seeds {ev['seeds']}, {ev['steps']} "
                   f"{mmdit.get('sampler', 'DDIM')} steps, "
                   f"guidance scale {ev['guidance_scale']})\n")
        out.append("| category | success | n | rate |\n|---|---:|---:|---:|\n" + "".join(
            f"| {c} | {r['success']} | {r['n']} | {r['rate']:.3f} |\n" for c, r in ev["per_category"].items()))
    return "\n".join(part for part in out if part)  # no blank line for a part a format lacks
