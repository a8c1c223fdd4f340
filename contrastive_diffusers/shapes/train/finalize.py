"""The output folder: the ``StableDiffusionPipeline`` (``StableDiffusion3Pipeline`` for
``--format mmdit``) built from the trained components, its weights stored as ``--save_dtype``, the oracle evaluation of those stored weights, and the
model card (:mod:`.card`)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ...atomic_io import write_json_atomic, write_text_atomic
from ...records import jsonable
from ..model import build_inference_scheduler
from ..prompts import shapes_prompts
from .card import model_card


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
    from ...pipelines.sd3 import default_t5_length
    from ..oracle import check

    jobs = [(item, seed) for item in items for seed in seeds]
    # An SD3-format model reads T5 text of the length it was trained at (its tokenizer's), as the
    # guided pipeline's default does.
    extra = {"max_sequence_length": default_t5_length(pipe.tokenizer_3)} if hasattr(pipe, "tokenizer_3") else {}
    results: dict[str, list[bool]] = {}
    device = pipe.device
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        generators = [torch.Generator(device).manual_seed(int(seed)) for _, seed in chunk]
        images = pipe([item.prompt for item, _ in chunk], num_inference_steps=steps, guidance_scale=guidance_scale,
                      generator=generators, **extra).images
        for (item, _), image in zip(chunk, images):
            results.setdefault(item.category, []).append(check(image, item.metadata["spec"]).success)
    return {c: {"success": sum(v), "n": len(v), "rate": sum(v) / len(v)} for c, v in results.items()}


def _denoiser(folder: Path) -> str:
    """``unet`` or ``transformer``: the denoiser a saved pipeline folder holds."""
    return "transformer" if (Path(folder) / "transformer").is_dir() else "unet"


def store_half(folder: Path) -> None:
    """Re-save the UNet (or the MMDiT transformer) and the VAE of a saved pipeline in float16
    (half the bytes; diffusers loads them back as float32 unless told otherwise). The text
    encoders and the CLIP stay float32: transformers >= 5 loads a checkpoint in its stored
    dtype, and a float16 text encoder would feed float16 states to the float32 denoiser of a
    plain ``from_pretrained``."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel, UNet2DConditionModel

    denoiser = _denoiser(folder)
    denoiser_class = SD3Transformer2DModel if denoiser == "transformer" else UNet2DConditionModel
    for name, cls in ((denoiser, denoiser_class), ("vae", AutoencoderKL)):
        model = cls.from_pretrained(folder / name)
        model.to(torch.float16).save_pretrained(folder / name, safe_serialization=True)


def _stored_dtype(folder: Path) -> str:
    """The dtype of the floating-point tensors in a model folder's safetensors files."""
    from safetensors import safe_open

    dtypes = set()
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            dtypes |= {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    names = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
    floats = sorted(names[d] for d in dtypes if d in names)
    return "/".join(floats) if floats else "none"


def finalize(folder: Path, args) -> dict:
    """What makes a trained folder the shippable one: weights stored as ``--save_dtype``, the
    oracle evaluation of the weights *as stored* (loaded back with stock ``from_pretrained``,
    float32 compute), and the model card. Re-runnable on a folder (``--finalize_only``)."""
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline

    folder = Path(folder)
    log = json.loads((folder / "training_log.json").read_text())
    if args.save_dtype == "float16":
        store_half(folder)
    denoiser = _denoiser(folder)
    # As the files hold them: --finalize_only --save_dtype float32 cannot widen float16 weights.
    if denoiser == "transformer":
        encoders = sorted({_stored_dtype(folder / n) for n in ("text_encoder", "text_encoder_2", "text_encoder_3")})
        log["stored_dtype"] = {"transformer": _stored_dtype(folder / "transformer"), "vae": _stored_dtype(folder / "vae"),
                               "text_encoders": "/".join(encoders), "clip": _stored_dtype(folder / "clip")}
    else:
        log["stored_dtype"] = {name: _stored_dtype(folder / name) for name in ("unet", "vae", "text_encoder", "clip")}
    log["weights_bytes"] = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
    if args.eval:
        t0 = time.perf_counter()
        pipeline_class = StableDiffusion3Pipeline if denoiser == "transformer" else StableDiffusionPipeline
        pipe = pipeline_class.from_pretrained(folder).to(args.device)
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
