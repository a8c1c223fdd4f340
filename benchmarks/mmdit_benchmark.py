"""Cost of attention-map guidance on MMDiT models: every method against plain generation on
SD3- and Flux-shaped transformers at reduced width (CPU, float32).

    PYTHONPATH=. python benchmarks/mmdit_benchmark.py --output benchmarks/results/mmdit/cpu.md

The transformers keep the real depth and layout (SD3 medium: 24 joint blocks, head width 64;
FLUX.1: 19 double-stream and 38 single-stream blocks, RoPE, guidance embedding, head width
128) with fewer heads (``--heads``, default 2 for SD3 and 1 for Flux: 128 wide instead of
1536 / 3072), at 128 px with 64 T5 tokens by default (a 2-core CPU); text encoders, tokenizers, VAE and scheduler are the tiny pipelines' (their
cost is the same with and without guidance). Each measurement runs in its own process, so
its peak memory (RSS sampled every 2 ms, as ``guidance_benchmark.py`` does) is its own.

Printed per method: seconds per image and the ratio to plain generation; the guidance
passes it made (forwards through the recorded blocks, with or without a backward: the
step's loss, refinement iterations, the loss at refined latents); seconds per pass, and per
pass over one full conditional forward of plain generation (the cut after the last
recorded block and the missing CFG half make it cheaper, the backward dearer); the extra
peak memory over plain generation. A&E's and CONFORM's refinement is capped at
``--refinement-iterations`` (default 4 instead of the papers' 20) to fit a shared 2-core
CPU; a pass costs the same either way, so their time at the papers' settings is plain time
plus their passes times the seconds per pass.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guidance_benchmark import PeakMemory  # noqa: E402  (same folder)

PROMPT = "a red car and a blue bench"
GROUPS = [["red", "car"], ["blue", "bench"]]
METHODS = ["none", "attend_and_excite", "conform", "ebama", "syngen"]


def build(shape: str, heads: int):
    """The guided pipeline of ``shape`` with a reduced-width, full-depth transformer."""
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    from contrastive_diffusers.models.tiny import tiny_pipeline
    from contrastive_diffusers.pipelines import GuidedFluxPipeline, GuidedStableDiffusion3Pipeline

    stock = tiny_pipeline("flux" if shape == "flux" else "sd3")
    torch.manual_seed(0)
    text_width = stock.text_encoder_2.config.d_model if shape == "flux" else stock.text_encoder_3.config.d_model
    if shape == "flux":
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=heads, joint_attention_dim=text_width,
            pooled_projection_dim=stock.text_encoder.config.hidden_size, guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        )
        cls = GuidedFluxPipeline
    else:
        pooled = stock.text_encoder.config.projection_dim + stock.text_encoder_2.config.projection_dim
        transformer = SD3Transformer2DModel(
            sample_size=stock.transformer.config.sample_size, patch_size=2, in_channels=16, num_layers=24,
            attention_head_dim=64, num_attention_heads=heads, joint_attention_dim=text_width,
            caption_projection_dim=64 * heads, pooled_projection_dim=pooled, out_channels=16, pos_embed_max_size=96,
        )
        cls = GuidedStableDiffusion3Pipeline
    components = {**stock.components, "transformer": transformer.eval()}
    return cls(**components)


def worker(args) -> dict:
    import torch

    from contrastive_diffusers.guidance import get_method

    torch.set_num_threads(args.threads)
    pipe = build(args.shape, args.heads)
    call = dict(prompt=PROMPT, height=args.size, width=args.size, num_inference_steps=args.steps,
                max_sequence_length=args.text_tokens, output_type="latent")
    guided = {}
    if args.method != "none":
        method = get_method(args.method)
        if method.schedule.refinement:  # A&E, CONFORM: fewer refinement iterations (see --refinement-iterations)
            method = method.with_schedule(refinement_iterations=args.refinement_iterations)
        guided = dict(guidance=method, token_groups=GROUPS)
    pipe(**{**call, "num_inference_steps": 1}, generator=torch.Generator().manual_seed(1))  # warm-up
    with PeakMemory("cpu") as memory:
        start = time.perf_counter()
        out = pipe(**call, **guided, generator=torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
    records = out.guidance_records or []
    # Per guided step: one forward for the loss; n refinement iterations reuse it and add n - 1
    # forwards, plus one at the refined latents.
    passes = sum(1 + r.refinement_iterations[0] for r in records)
    return {"seconds": seconds, "memory_before": memory.before, "memory_peak": memory.peak, "passes": passes,
            "guided_steps": len(records), "cfg": pipe.do_classifier_free_guidance if args.shape == "sd3" else False}


def measure(args, method: str) -> dict:
    command = [sys.executable, __file__, "--worker", "--shape", args.shape, "--method", method, "--heads",
               str(args.heads), "--size", str(args.size), "--steps", str(args.steps), "--text-tokens",
               str(args.text_tokens), "--threads", str(args.threads), "--refinement-iterations",
               str(args.refinement_iterations)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(shape: str, results: dict, args, note: str) -> list[str]:
    plain = results["none"]
    # A plain step runs the transformer once on the CFG batch (SD3) or once (Flux).
    forward = plain["seconds"] / args.steps
    lines = [
        f"### {shape}: {args.size} px, {args.steps} steps, {args.text_tokens} T5 tokens, "
        f"{args.heads} heads ({args.heads * (64 if shape == 'sd3' else 128)} wide)",
        "",
        note,
        "",
        "| method | s / image | x plain | guided steps | guidance passes | s / pass | pass / plain step | "
        "extra peak MB over plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, r in results.items():
        extra = (r["memory_peak"] - r["memory_before"]) - (plain["memory_peak"] - plain["memory_before"])
        per_pass = (r["seconds"] - plain["seconds"]) / r["passes"] if r["passes"] else None
        lines.append(
            f"| {method} | {r['seconds']:.2f} | {r['seconds'] / plain['seconds']:.2f} | {r['guided_steps']} | "
            f"{r['passes']} | {'' if per_pass is None else f'{per_pass:.3f}'} | "
            f"{'' if per_pass is None else f'{per_pass / forward:.2f}'} | "
            f"{'' if method == 'none' else f'{extra / 2**20:.0f}'} |"
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["sd3", "flux", "both"], default="both")
    parser.add_argument("--method", default=None, help="worker only")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--heads", type=int, default=None, help="default: 2 (SD3), 1 (Flux): 128 wide")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--text-tokens", type=int, default=64, help="T5 max_sequence_length")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--refinement-iterations", type=int, default=4,
                        help="cap on A&E's / CONFORM's refinement iterations per refinement step (papers: 20)")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown tables here")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    import torch

    lines = [
        "# Guidance on MMDiT models: cost on the CPU",
        "",
        f"`python benchmarks/mmdit_benchmark.py {' '.join(sys.argv[1:])}` on {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, torch {torch.__version__}, float32. Paper defaults of each method read as "
        "fractions of 50 steps (the MMDiT pipelines' default), refinement capped at "
        f"{args.refinement_iterations} iterations per refinement step (papers: 20), default blocks (the middle "
        "third of the joint / double-stream blocks).",
        "",
    ]
    for shape in (["sd3", "flux"] if args.shape == "both" else [args.shape]):
        shape_args = argparse.Namespace(**{**vars(args), "shape": shape,
                                           "heads": args.heads or (2 if shape == "sd3" else 1)})
        results = {}
        for method in args.methods:
            results[method] = measure(shape_args, method)
            print(shape, method, results[method], flush=True)
        # The CPU is shared: plain generation runs again last, and the reference is the mean.
        again = measure(shape_args, "none")
        print(shape, "none again", again, flush=True)
        note = (f"Plain generation: {results['none']['seconds']:.2f} s first, {again['seconds']:.2f} s last; "
                "the ratios use their mean.")
        results["none"] = {**results["none"], "seconds": (results["none"]["seconds"] + again["seconds"]) / 2}
        lines += table(shape, results, shape_args, note) + [""]
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
