"""Step time and peak memory of ReVersion, MCPL and plain textual inversion, same model, same run.

    python -m contrastive_diffusers.training.benchmark --shape sd15 --resolution 512 --steps 6
    python -m contrastive_diffusers.training.benchmark --shape tiny --resolution 64 --steps 3 --json out.json

``sd15`` has SD 1.5's UNet and VAE configurations and a CLIP ViT-L-sized text encoder with
random weights (timing does not depend on the weights; nothing is downloaded); ``tiny`` is
``testing.tiny_pipeline("sd1")``. The pipeline is saved once to a temporary folder, and each
configuration trains in its own process (``python -m contrastive_diffusers.training.<method>``)
with batch 1, no accumulation, no checkpoints or validation, so that its peak memory is its
own: CUDA peak allocated memory on a GPU, the process's peak RSS on the CPU (which includes
the loaded weights, so ratios there understate differences in activation memory).

Reported per method: median seconds per optimizer step (the first step excluded), its ratio
to textual inversion, peak memory and its ratio; with ``--gradient_checkpointing both`` each
method also runs with ``--gradient_checkpointing``. The issue's goals: ≤ 1.15x textual
inversion's step time and ≤ 1.1x its peak memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

METHODS = ("textual_inversion", "reversion", "mcpl")


def sd15_pipeline():
    """SD 1.5-shaped ``StableDiffusionPipeline`` with random weights and the tiny tokenizer."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..testing import tiny_tokenizer

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=8,
        cross_attention_dim=768,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            projection_dim=768,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def write_data(root: Path) -> tuple[Path, Path]:
    """Two random images, as a ReVersion folder (one token) and a metadata.jsonl folder (two)."""
    import numpy as np
    from PIL import Image

    single, multi = root / "single", root / "multi"
    rng = np.random.default_rng(0)
    for folder in (single, multi):
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (single / "text.json").write_text(
        json.dumps({f"{i}.png": ["cat {} basket", "a dog {} a red box"] for i in range(2)})
    )
    with open(multi / "metadata.jsonl", "w") as f:
        for i in range(2):
            f.write(json.dumps({"file_name": f"{i}.png", "text": "a <c1> ball on a <c2> box"}) + "\n")
    return single, multi


def run_one(method: str, model: Path, data: tuple[Path, Path], out: Path, args, checkpointing: bool) -> dict:
    tokens = (
        ["--placeholder_tokens", "<c1>,<c2>", "--initializer_tokens", "ball,box"]
        if method == "mcpl"
        else ["--placeholder_token", "<R>", "--initializer_token", "and"]
    )
    cmd = [
        sys.executable,
        "-m",
        f"contrastive_diffusers.training.{method}",
        "--pretrained_model_name_or_path",
        str(model),
        "--train_data_dir",
        str(data[1] if method == "mcpl" else data[0]),
        "--output_dir",
        str(out),
        "--resolution",
        str(args.resolution),
        "--max_train_steps",
        str(args.steps),
        "--train_batch_size",
        "1",
        "--gradient_accumulation_steps",
        "1",
        "--checkpointing_steps",
        "100000",
        "--save_steps",
        "100000",
        "--seed",
        "0",
        *tokens,
    ]
    if args.mixed_precision:
        cmd += ["--mixed_precision", args.mixed_precision]
    if checkpointing:
        cmd.append("--gradient_checkpointing")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    run = json.loads((out / "training_run.json").read_text())
    return {
        "method": method,
        "gradient_checkpointing": checkpointing,
        "step_time_s": run["summary"]["median_step_time_s"],
        "peak_memory_mb": run["summary"]["peak_memory_mb"],
        "device": run["summary"]["device"],
        "final_loss": run["metrics"][-1]["loss"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m contrastive_diffusers.training.benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--shape", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=6, help="Optimizer steps per method (the first is not timed).")
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default=None)
    parser.add_argument("--gradient_checkpointing", choices=("off", "both"), default="both")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not timed)")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "textual_inversion" not in methods or any(m not in METHODS for m in methods):
        parser.error(f"--methods must include textual_inversion (the reference) and name only {', '.join(METHODS)}")
    from ..testing import tiny_pipeline

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pipe = sd15_pipeline() if args.shape == "sd15" else tiny_pipeline("sd1")
        pipe.save_pretrained(root / "model")
        del pipe
        data = write_data(root / "data")
        for checkpointing in [False, True] if args.gradient_checkpointing == "both" else [False]:
            for method in methods:
                out = root / f"{method}-{int(checkpointing)}"
                rows.append(run_one(method, root / "model", data, out, args, checkpointing))
    reference = {r["gradient_checkpointing"]: r for r in rows if r["method"] == "textual_inversion"}
    plain = reference[False]
    for r in rows:
        ref = reference[r["gradient_checkpointing"]]
        r["x_step_time_vs_ti"] = r["step_time_s"] / ref["step_time_s"]
        r["x_peak_memory_vs_ti"] = r["peak_memory_mb"] / ref["peak_memory_mb"]
        r["x_peak_memory_vs_no_checkpointing"] = r["peak_memory_mb"] / next(
            x["peak_memory_mb"] for x in rows if x["method"] == r["method"] and not x["gradient_checkpointing"]
        )
    print(f"shape {args.shape}, {args.resolution} px, batch 1, {args.steps} steps, device {plain['device']}")
    print("| method | grad. checkpointing | s/step | x TI | peak MB | x TI | x no-ckpt |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {'yes' if r['gradient_checkpointing'] else 'no'} | {r['step_time_s']:.3f} | "
            f"{r['x_step_time_vs_ti']:.2f} | {r['peak_memory_mb']:.0f} | {r['x_peak_memory_vs_ti']:.2f} | "
            f"{r['x_peak_memory_vs_no_checkpointing']:.2f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"shape": args.shape, "resolution": args.resolution, "steps": args.steps, "rows": rows}, indent=2
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
