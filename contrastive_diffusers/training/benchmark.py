"""Step time and peak memory of the training methods, each beside its baseline, same model, same run.

    python -m contrastive_diffusers.training.benchmark --shape sd15 --resolution 512 --steps 6
    python -m contrastive_diffusers.training.benchmark --shape tiny --resolution 64 --steps 3 --json out.json
    python -m contrastive_diffusers.training.benchmark --suite lora --shape sd15 --resolution 256 --steps 4

Two suites. ``prompt_learning`` (default): ReVersion and MCPL beside plain textual inversion.
``lora``: the EvoGen objectives (``evogen --objective denoise|contrastive|margin``) and DCO
beside plain LoRA fine-tuning, which is ``evogen --objective denoise`` (LoRA denoising MSE on
the positives only; the negative image is read from disk but neither VAE-encoded nor run
through the UNet). All LoRA configurations train on the same two positive images (the pair
folder's positives; DCO gets them as a ``metadata.jsonl`` folder with the same captions).

``sd15`` has SD 1.5's UNet and VAE configurations and a CLIP ViT-L-sized text encoder with
random weights (timing does not depend on the weights; nothing is downloaded); ``tiny`` is
``models.tiny.tiny_pipeline("sd1")``. The pipeline is saved once to a temporary folder, and each
configuration trains in its own process (``python -m contrastive_diffusers.training.<method>``)
with batch 1, no accumulation, no checkpoints or validation, so that its peak memory is its
own: CUDA peak allocated memory on a GPU, the process's peak RSS on the CPU (which includes
the loaded weights, so ratios there understate differences in activation memory).

Reported per method: median seconds per optimizer step (the first ``--warmup`` steps, default
1, excluded; every step's time is in the JSON), its ratio
to the baseline, peak memory and its ratio; with ``--gradient_checkpointing both`` each
method also runs with ``--gradient_checkpointing`` (ratios then against the baseline with
checkpointing too). Goals: prompt learning ≤ 1.15x textual inversion's step time and ≤ 1.1x
its peak memory.

The ``lora`` suite also gives the UNet sample-passes per example each objective needs
(:data:`evogen.UNET_PASSES`: with gradients, without; the positive and negative share ONE
batched forward, the frozen reference runs under ``no_grad``) and two per-pass costs relative
to plain LoRA (1 pass with gradients):

- ``x/pass``: ``(step time / all passes) / plain LoRA's step time`` — every pass counts one,
  as the issue counts them (goal ≤ 1.15x). A no-grad pass costs about a third of a pass with
  gradients (no backward), so this flatters the reference objectives (margin, DCO);
- ``x/grad pass``: ``(step time / passes with gradients) / plain LoRA's step time`` — the
  no-grad reference passes are charged as pure overhead (an upper bound for those objectives).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ..atomic_io import write_json_atomic
from .run_record import jsonable

METHODS = ("textual_inversion", "reversion", "mcpl")
#: The ``lora`` suite: configuration -> (training module, extra arguments); the first is the baseline.
LORA_CONFIGS = {
    "denoise": ("evogen", ["--objective", "denoise"]),
    "contrastive": ("evogen", ["--objective", "contrastive"]),
    "margin": ("evogen", ["--objective", "margin"]),
    "dco": ("dco", []),
}
SUITES = {"prompt_learning": ("textual_inversion", METHODS), "lora": ("denoise", tuple(LORA_CONFIGS))}


def sd15_pipeline():
    """SD 1.5-shaped ``StableDiffusionPipeline`` with random weights and the tiny tokenizer."""
    from diffusers import StableDiffusionPipeline

    from ..models.tiny import sd15_components

    return StableDiffusionPipeline(**sd15_components())


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


def write_pairs(root: Path) -> tuple[Path, Path]:
    """Two positive / negative pairs (one stage) as a ``pairs.jsonl`` folder, and the same two
    positives with the same captions as a ``metadata.jsonl`` folder (for DCO)."""
    import numpy as np
    from PIL import Image

    pairs, positives = root / "pairs", root / "positives"
    (pairs / "images").mkdir(parents=True)
    positives.mkdir(parents=True)
    rng = np.random.default_rng(0)
    captions = ["a red ball on a blue box", "a blue ball on a red box"]
    rows, meta = [], []
    for i, caption in enumerate(captions):
        positive = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        negative = positive.copy()
        negative[:, :, :2] = negative[:, :, 1::-1]  # a minimal colour change
        Image.fromarray(positive).save(pairs / "images" / f"{i}_pos.png")
        Image.fromarray(negative).save(pairs / "images" / f"{i}_neg.png")
        Image.fromarray(positive).save(positives / f"{i}.png")
        rows.append({"caption": caption, "positive": f"images/{i}_pos.png", "negative": f"images/{i}_neg.png",
                     "category": "color", "stage": 1})
        meta.append({"file_name": f"{i}.png", "text": caption})
    (pairs / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (positives / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in meta))
    return pairs, positives


def command(method: str, model: Path, data: tuple[Path, Path]) -> list[str]:
    """``python -m`` module, data folder and method options of a configuration of either suite."""
    if method in LORA_CONFIGS:
        module, extra = LORA_CONFIGS[method]
        folder = data[1] if module == "dco" else data[0]
    else:
        module, folder = method, data[1] if method == "mcpl" else data[0]
        extra = (
            ["--placeholder_tokens", "<c1>,<c2>", "--initializer_tokens", "ball,box"]
            if method == "mcpl"
            else ["--placeholder_token", "<R>", "--initializer_token", "and"]
        )
    return [
        sys.executable,
        "-m",
        f"contrastive_diffusers.training.{module}",
        "--pretrained_model_name_or_path",
        str(model),
        "--train_data_dir",
        str(folder),
        *extra,
    ]


def train_command(method: str, model: Path, data: tuple[Path, Path], out: Path, args, checkpointing: bool) -> list[str]:
    """The command line of one configuration: batch 1, no accumulation, checkpoints or validation;
    ``args.extra`` (if any) is appended (e.g. ``--enable_xformers_memory_efficient_attention``)."""
    cmd = [
        *command(method, model, data),
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
    ]
    if args.mixed_precision:
        cmd += ["--mixed_precision", args.mixed_precision]
    if checkpointing:
        cmd.append("--gradient_checkpointing")
    return cmd + list(getattr(args, "extra", None) or [])


def run_one(method: str, model: Path, data: tuple[Path, Path], out: Path, args, checkpointing: bool) -> dict:
    cmd = train_command(method, model, data, out, args, checkpointing)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    return read_result(method, out, args.warmup, checkpointing)


def read_result(method: str, out: Path, warmup: int, checkpointing: bool) -> dict:
    """The row of a finished run from its ``training_run.json``: the median step time after
    ``warmup`` steps, every step's time, peak memory, device and last loss."""
    run = json.loads((out / "training_run.json").read_text())
    times = [r["step_time_s"] for r in run["metrics"][warmup:]]
    return {
        "method": method,
        "gradient_checkpointing": checkpointing,
        "step_time_s": statistics.median(times),
        "step_times_s": [r["step_time_s"] for r in run["metrics"]],
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
    parser.add_argument("--suite", choices=tuple(SUITES), default="prompt_learning")
    parser.add_argument("--shape", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=6, help="Optimizer steps per method (the first is not timed).")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="Leading steps left out of the median (default 1; more where the first steps are slow, e.g. with "
        "gradient checkpointing on the CPU).",
    )
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default=None)
    parser.add_argument("--gradient_checkpointing", choices=("off", "both"), default="both")
    parser.add_argument(
        "--methods",
        default=None,
        help=f"Comma-separated; default: all of the suite ({', '.join(METHODS)} / {', '.join(LORA_CONFIGS)}).",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows here.")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps <= args.warmup:
        parser.error("--warmup must be at least 1 and --steps more than --warmup (the warm-up steps are not timed)")
    baseline, known = SUITES[args.suite]
    methods = [m.strip() for m in (args.methods or ",".join(known)).split(",") if m.strip()]
    if baseline not in methods or any(m not in known for m in methods):
        parser.error(f"--methods of the {args.suite} suite must include {baseline} (the reference) and name only "
                     f"{', '.join(known)}")
    methods = [baseline] + [m for m in methods if m != baseline]
    from ..models.tiny import tiny_pipeline

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pipe = sd15_pipeline() if args.shape == "sd15" else tiny_pipeline("sd1")
        pipe.save_pretrained(root / "model")
        del pipe
        data = write_pairs(root / "data") if args.suite == "lora" else write_data(root / "data")
        for checkpointing in [False, True] if args.gradient_checkpointing == "both" else [False]:
            for method in methods:
                out = root / f"{method}-{int(checkpointing)}"
                rows.append(run_one(method, root / "model", data, out, args, checkpointing))
    table = lora_table(rows) if args.suite == "lora" else prompt_learning_table(rows)
    print(
        f"suite {args.suite}, shape {args.shape}, {args.resolution} px, batch 1, {args.steps} steps "
        f"(median of the last {args.steps - args.warmup}), "
        f"device {rows[0]['device']}"
    )
    print(table)
    if args.json:  # atomic, and a non-finite number (a diverged step) written as null: JSON has no NaN
        write_json_atomic(args.json, jsonable({
            "suite": args.suite,
            "shape": args.shape,
            "resolution": args.resolution,
            "steps": args.steps,
            "warmup": args.warmup,
            "mixed_precision": args.mixed_precision,
            "rows": rows,
        }))
    return 0


def _ratios(rows: list[dict], baseline: str, tag: str) -> None:
    reference = {r["gradient_checkpointing"]: r for r in rows if r["method"] == baseline}
    for r in rows:
        ref = reference[r["gradient_checkpointing"]]
        r[f"x_step_time_vs_{tag}"] = r["step_time_s"] / ref["step_time_s"]
        r[f"x_peak_memory_vs_{tag}"] = r["peak_memory_mb"] / ref["peak_memory_mb"]
        r["x_peak_memory_vs_no_checkpointing"] = r["peak_memory_mb"] / next(
            (x["peak_memory_mb"] for x in rows if x["method"] == r["method"] and not x["gradient_checkpointing"]),
            float("nan"),
        )


def prompt_learning_table(rows: list[dict]) -> str:
    _ratios(rows, "textual_inversion", "ti")
    lines = [
        "| method | grad. checkpointing | s/step | x TI | peak MB | x TI | x no-ckpt |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {'yes' if r['gradient_checkpointing'] else 'no'} | {r['step_time_s']:.3f} | "
            f"{r['x_step_time_vs_ti']:.2f} | {r['peak_memory_mb']:.0f} | {r['x_peak_memory_vs_ti']:.2f} | "
            f"{r['x_peak_memory_vs_no_checkpointing']:.2f} |"
        )
    return "\n".join(lines)


def lora_table(rows: list[dict]) -> str:
    from .evogen import UNET_PASSES

    _ratios(rows, "denoise", "lora")
    for r in rows:
        grad, no_grad = UNET_PASSES[r["method"]]
        r["unet_passes_with_grad"], r["unet_passes_no_grad"] = grad, no_grad
        r["x_cost_per_unet_pass_vs_lora"] = r["x_step_time_vs_lora"] / (grad + no_grad)
        r["x_cost_per_grad_pass_vs_lora"] = r["x_step_time_vs_lora"] / grad
    names = {"denoise": "evogen denoise = plain LoRA", "dco": "dco"}
    lines = [
        (
            "| objective | grad. ckpt | UNet passes (grad + no-grad) | s/step | x LoRA | x/pass | x/grad pass "
            "| peak MB | x LoRA | x no-ckpt |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {names.get(r['method'], 'evogen ' + r['method'])} | {'yes' if r['gradient_checkpointing'] else 'no'} "
            f"| {r['unet_passes_with_grad']} + {r['unet_passes_no_grad']} | {r['step_time_s']:.3f} "
            f"| {r['x_step_time_vs_lora']:.2f} | {r['x_cost_per_unet_pass_vs_lora']:.2f} "
            f"| {r['x_cost_per_grad_pass_vs_lora']:.2f} | {r['peak_memory_mb']:.0f} | {r['x_peak_memory_vs_lora']:.2f} "
            f"| {r['x_peak_memory_vs_no_checkpointing']:.2f} |"
        )
    return "\n".join(lines)

if __name__ == "__main__":
    raise SystemExit(main())
