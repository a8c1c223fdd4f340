"""Cost of attention-map guidance on MMDiT models: every method against plain generation on
SD3- and Flux-shaped transformers (by default at reduced width, on the CPU, in float32).

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

``--full-size`` builds the real models instead, with random weights, on ``--device`` in
``--dtype``: SD3 medium's transformer (24 joint blocks, 24 heads of 64) or FLUX.1-dev's (19
double- and 38 single-stream blocks, 24 heads of 128), CLIP-L, OpenCLIP bigG (SD3) and
T5-v1.1-XXL encoders and the 16-channel VAE, at the stock T5 lengths (256 for SD3, 512 for
Flux). Each is built on the device and cast at once (a GPU draws Flux's 12 B weights in a
moment; writing and reading them, 33 GB in bf16 with T5, would take longer), the same seed
giving the same weights in every process. ``benchmarks/gpu_suite.py`` runs its SD3 and Flux
rows through this worker.
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
from guidance_benchmark import attention_backend, guidance_counts, timed_call  # noqa: E402  (same folder)

PROMPT = "a red car and a blue bench"
GROUPS = [["red", "car"], ["blue", "bench"]]
METHODS = ["none", "attend_and_excite", "conform", "ebama", "syngen"]
#: Heads of the reduced-width transformers: 128 wide for both.
NARROW_HEADS = {"sd3": 2, "flux": 1}


def build(shape: str, heads: int | None, device: str = "cpu", dtype=None):
    """The guided pipeline of ``shape``: a reduced-width, full-depth transformer with the tiny
    pipeline's encoders and VAE (``heads``), or the full-size models (``heads=None``), built on
    ``device`` with every component cast to ``dtype`` as soon as it exists."""
    import torch

    from contrastive_diffusers.models.tiny import tiny_pipeline
    from contrastive_diffusers.pipelines import GuidedFluxPipeline, GuidedStableDiffusion3Pipeline

    stock = tiny_pipeline("flux" if shape == "flux" else "sd3")  # tokenizers and scheduler
    torch.manual_seed(0)
    builders = full_size_builders(shape, stock) if heads is None else {"transformer": lambda: _narrow(shape, heads, stock)}
    with torch.device(device):
        parts = {name: make().eval() if dtype is None else make().eval().to(dtype) for name, make in builders.items()}
    cls = GuidedFluxPipeline if shape == "flux" else GuidedStableDiffusion3Pipeline
    pipe = cls(**{**stock.components, **parts})
    # Full size: every model was cast as it was built; reduced width: the tiny encoders too.
    return pipe.to(device) if dtype is None or heads is None else pipe.to(device, dtype)


def _narrow(shape: str, heads: int, stock):
    """The real depth and layout at ``heads`` heads, reading the tiny pipeline's text encoders."""
    if shape == "flux":
        return _transformer("flux", heads, stock.text_encoder_2.config.d_model, stock.text_encoder.config.hidden_size)
    pooled = stock.text_encoder.config.projection_dim + stock.text_encoder_2.config.projection_dim
    return _transformer("sd3", heads, stock.text_encoder_3.config.d_model, pooled,
                        sample_size=stock.transformer.config.sample_size, pos_embed_max_size=96)


def _transformer(shape: str, heads: int, text_width: int, pooled_width: int, **sd3_sizes):
    """SD3 medium's (24 joint blocks, heads of 64) or FLUX.1-dev's (19 double- and 38
    single-stream blocks, heads of 128, RoPE, guidance embedding) transformer at ``heads`` heads."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    if shape == "flux":
        return FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
            num_attention_heads=heads, joint_attention_dim=text_width, pooled_projection_dim=pooled_width,
            guidance_embeds=True, axes_dims_rope=(16, 56, 56),
        )
    return SD3Transformer2DModel(
        patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=heads,
        joint_attention_dim=text_width, caption_projection_dim=64 * heads, pooled_projection_dim=pooled_width,
        out_channels=16, **sd3_sizes,
    )


#: The published configurations the full-size models follow (their ``config.json`` files).
CLIP_VOCAB, T5_VOCAB = 49408, 32128


def full_size_builders(shape: str, stock) -> dict:
    """Constructors of SD3 medium's / FLUX.1-dev's transformer, text encoders and VAE (random
    weights; the tiny pipeline's tokenizers, whose ids lie inside the real vocabularies)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from contrastive_diffusers.models.tiny_mmdit import VAE_FACTORS

    def clip(cls, tokenizer, width, layers, heads, act):
        return lambda: cls(CLIPTextConfig(
            vocab_size=CLIP_VOCAB, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=77, hidden_act=act, projection_dim=width,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))

    def t5(tokenizer):  # T5-v1.1-XXL's encoder
        return lambda: T5EncoderModel(T5Config(
            vocab_size=T5_VOCAB, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
            feed_forward_proj="gated-gelu", pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id))

    def vae():
        scaling, shift = VAE_FACTORS["flux" if shape == "flux" else "sd3"]
        return AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
            latent_channels=16, sample_size=1024, scaling_factor=scaling, shift_factor=shift, use_quant_conv=False,
            use_post_quant_conv=False)

    if shape == "flux":
        return {
            "transformer": lambda: _transformer("flux", 24, 4096, 768),
            "text_encoder": clip(CLIPTextModel, stock.tokenizer, 768, 12, 12, "quick_gelu"),
            "text_encoder_2": t5(stock.tokenizer_2),
            "vae": vae,
        }
    return {
        "transformer": lambda: _transformer("sd3", 24, 4096, 2048, sample_size=128, pos_embed_max_size=192),
        "text_encoder": clip(CLIPTextModelWithProjection, stock.tokenizer, 768, 12, 12, "quick_gelu"),
        "text_encoder_2": clip(CLIPTextModelWithProjection, stock.tokenizer_2, 1280, 32, 20, "gelu"),
        "text_encoder_3": t5(stock.tokenizer_3),
        "vae": vae,
    }


def worker(args) -> dict:
    import torch

    from contrastive_diffusers.guidance import get_method

    torch.set_num_threads(args.threads) if args.threads else None
    cuda = args.device.startswith("cuda")
    started = time.perf_counter()
    dtype = getattr(torch, args.dtype)
    # Components are drawn in float32; cast only to another precision.
    heads = None if args.full_size else args.heads or NARROW_HEADS[args.shape]
    pipe = build(args.shape, heads, args.device, None if dtype == torch.float32 else dtype)
    pipe.set_progress_bar_config(disable=True)
    backend = attention_backend(args.attention, args.device)
    if backend == "xformers":  # the layers that do not record
        pipe.enable_xformers_memory_efficient_attention()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # the float32 copies the components were drawn in
    build_s = time.perf_counter() - started
    call = dict(prompt=PROMPT, height=args.size, width=args.size, num_inference_steps=args.steps,
                output_type=args.output_type, **({"max_sequence_length": args.text_tokens} if args.text_tokens else {}))
    guided = {}
    if args.method != "none":
        method = get_method(args.method)
        if method.schedule.refinement:  # A&E, CONFORM: fewer refinement iterations (see --refinement-iterations)
            method = method.with_schedule(refinement_iterations=args.refinement_iterations)
        guided = dict(guidance=method, token_groups=[["car"], ["bench"]] if args.method == "attend_and_excite" else GROUPS)
    if args.warmup_steps:  # the same call, shorter: kernels (and, on a GPU, the allocator) settle
        pipe(**{**call, "num_inference_steps": args.warmup_steps}, **guided, generator=torch.Generator().manual_seed(1))
    out, seconds, memory = timed_call(lambda: pipe(**call, **guided, generator=torch.Generator().manual_seed(0)),
                                      args.device)
    records = out.guidance_records or []
    images = out.images.float() if torch.is_tensor(out.images) else torch.as_tensor(out.images)
    # Per guided step: one forward for the loss; n refinement iterations reuse it and add n - 1
    # forwards, plus one at the refined latents.
    forwards = sum(1 + r.refinement_iterations[0] for r in records)
    return {"seconds": seconds, "build_s": build_s, "memory_before": memory.before, "memory_peak": memory.peak,
            "forwards": forwards, "guided_steps": len(records),
            "cfg": pipe.do_classifier_free_guidance if args.shape == "sd3" else False,
            "nan": bool(torch.isnan(images).any()), "attention": backend,
            "vae_decode_dtype": args.dtype if args.output_type != "latent" else None,
            **(guidance_counts(records) if records else {})}


def worker_command(args, method: str) -> list[str]:
    """The command line of one measurement (its own process); it prints one JSON line."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--shape", args.shape, "--method", method,
               "--size", str(args.size), "--steps", str(args.steps), "--text-tokens", str(args.text_tokens),
               "--threads", str(args.threads), "--refinement-iterations", str(args.refinement_iterations),
               "--device", args.device, "--dtype", args.dtype, "--warmup-steps", str(args.warmup_steps),
               "--attention", args.attention, "--output-type", args.output_type]
    return command + (["--full-size"] if args.full_size else ["--heads", str(args.heads)])


def measure(args, method: str) -> dict:
    done = subprocess.run(worker_command(args, method), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args.shape} {method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(shape: str, results: dict, args, note: str) -> list[str]:
    plain = results["none"]
    # A plain step runs the transformer once on the CFG batch (SD3) or once (Flux).
    forward = plain["seconds"] / args.steps
    width = ("full size" if args.full_size else
             f"{args.heads} heads ({args.heads * (64 if shape == 'sd3' else 128)} wide)")
    tokens = f"{args.text_tokens} T5 tokens" if args.text_tokens else "the stock T5 length"
    lines = [
        f"### {shape}: {args.size} px, {args.steps} steps, {tokens}, {width}",
        "",
        note,
        "",
        "| method | s / image | x plain | guided steps | guidance passes | s / pass | pass / plain step | "
        "extra peak MB over plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, r in results.items():
        extra = (r["memory_peak"] - r["memory_before"]) - (plain["memory_peak"] - plain["memory_before"])
        per_pass = (r["seconds"] - plain["seconds"]) / r["forwards"] if r["forwards"] else None
        lines.append(
            f"| {method} | {r['seconds']:.2f} | {r['seconds'] / plain['seconds']:.2f} | {r['guided_steps']} | "
            f"{r['forwards']} | {'' if per_pass is None else f'{per_pass:.3f}'} | "
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
    parser.add_argument("--text-tokens", type=int, default=64,
                        help="T5 max_sequence_length (0: the pipeline's default, SD3 256 and Flux 512)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--full-size", action="store_true",
                        help="the real models (random weights) instead of reduced width and tiny encoders")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--warmup-steps", type=int, default=1, help="steps of the untimed warm-up call (0: none)")
    parser.add_argument("--attention", choices=["default", "auto", "xformers"], default="default",
                        help="the layers that do not record: SDPA, xformers, or auto (xformers on CUDA where installed)")
    parser.add_argument("--output-type", choices=["latent", "np"], default="latent",
                        help="np: decode with the VAE (its time and memory count), as a user's call does")
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
        f"# Guidance on MMDiT models: cost on the {'GPU' if args.device.startswith('cuda') else 'CPU'}",
        "",
        f"`python benchmarks/mmdit_benchmark.py {' '.join(sys.argv[1:])}` on "
        f"{torch.cuda.get_device_name(0) if args.device.startswith('cuda') else platform.processor() or platform.machine()}, "
        f"{args.threads or 'default'} threads, torch {torch.__version__}, {args.dtype}. Paper defaults of each method read as "
        "fractions of 50 steps (the MMDiT pipelines' default), refinement capped at "
        f"{args.refinement_iterations} iterations per refinement step (papers: 20), default blocks (the middle "
        "third of the joint / double-stream blocks).",
        "",
    ]
    for shape in (["sd3", "flux"] if args.shape == "both" else [args.shape]):
        shape_args = argparse.Namespace(**{**vars(args), "shape": shape,
                                           "heads": args.heads or NARROW_HEADS[shape]})
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
