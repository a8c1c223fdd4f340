"""Cost of attention-map guidance: every method against plain generation and against
diffusers' own Attend-and-Excite pipeline, measured in the same run.

    python benchmarks/guidance_benchmark.py --shape sd15 --size 256 --steps 10
    python benchmarks/guidance_benchmark.py --shape tiny --size 128 --steps 10 --json out.json

Each measurement runs in its own process (so peak memory is that configuration's alone) on
a pipeline saved once to a temporary folder: ``tiny`` is ``models.tiny.tiny_pipeline("sd1")``;
``sd15`` / ``sdxl`` have the real SD 1.5 / SDXL UNet and VAE configurations with random
weights (timing does not depend on the weights; none can be downloaded here).

Printed per method: seconds per image and its ratio to plain generation and to diffusers'
Attend-and-Excite; seconds per guided step; peak memory (CUDA peak allocated on a GPU, peak
RSS sampled every 2 ms on the CPU) and the extra over plain generation; and the floor:
the guided forward+backward passes (updates plus refinement iterations) times the measured
cost of one truncated forward+backward, plus the CFG forwards times their measured cost.

``--warmup-steps N`` first runs the same call with N steps in the worker (kernels, cuDNN
autotuning and allocator pools settle), so the timed call measures the steady state;
``--attention auto`` runs the layers that do not record with xformers where it is installed
(on CUDA), SDPA otherwise. ``benchmarks/gpu_suite.py`` drives the workers of this script
for the full-size fp16 GPU figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROMPT = "a red car and a blue bench"
GROUPS = [["red", "car"], ["blue", "bench"]]
METHODS = ["none", "diffusers_attend_and_excite", "attend_and_excite", "conform", "ebama", "syngen"]


# ----------------------------------------------------------------------------- model shapes
def sdxl_components():
    """SDXL's UNet and VAE configurations (random weights), CLIP-L and OpenCLIP-bigG-sized encoders."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from contrastive_diffusers.models.tiny import tiny_tokenizer

    tokenizer, tokenizer_2 = tiny_tokenizer(), tiny_tokenizer(pad_token="!")

    def text_config(tok, width, layers, heads, projection):
        return CLIPTextConfig(
            vocab_size=len(tok), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=77, projection_dim=projection,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )

    unet = UNet2DConditionModel(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, sample_size=1024, scaling_factor=0.13025,
    )
    return dict(
        vae=vae,
        text_encoder=CLIPTextModel(text_config(tokenizer, 768, 12, 12, 768)),
        text_encoder_2=CLIPTextModelWithProjection(text_config(tokenizer_2, 1280, 32, 20, 1280)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
            timestep_spacing="leading",
        ),
    )


SHAPES = ("tiny", "tiny-sdxl", "sd15", "sdxl")


def save_model(shape: str, folder: Path, dtype=None, device: str = "cpu") -> None:
    """Build the ``shape`` pipeline with random weights and save it; ``dtype`` (e.g.
    ``torch.float16``) stores the weights so, which halves the writing and every load.
    ``device`` draws the weights there (a GPU draws SDXL's in well under a second, 16 CPU
    cores in tens of seconds). Written to a side folder and renamed when complete, so an
    interrupted build is never taken for a model."""
    import shutil

    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from contrastive_diffusers.models.tiny import sd15_components, tiny_pipeline

    builders = {"tiny": lambda: tiny_pipeline("sd1"), "tiny-sdxl": lambda: tiny_pipeline("sdxl"),
                "sd15": lambda: StableDiffusionPipeline(**sd15_components()),
                "sdxl": lambda: StableDiffusionXLPipeline(**sdxl_components())}
    if shape not in builders:
        raise ValueError(f"Unknown model shape {shape!r}; choose one of {', '.join(SHAPES)}.")
    with torch.device(device):
        pipe = builders[shape]()
    if dtype is not None:
        pipe.to(dtype=dtype)
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(partial)
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)


# ----------------------------------------------------------------------------- one measurement
class PeakMemory:
    """Peak CUDA allocation, or peak RSS sampled by a thread, over a block."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak = self.before = 0

    def __enter__(self):
        import psutil
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
            return self
        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._process.memory_info().rss)


def timed_call(fn, device: str):
    """``(result, seconds, memory)`` of one call of ``fn``: its peak memory (:class:`PeakMemory`)
    and its wall time, the GPU synchronised before the clock stops."""
    import torch

    with PeakMemory(device) as memory:
        start = time.perf_counter()
        result = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return result, seconds, memory


def load(folder: str, device: str, dtype, attention: str = "default"):
    from diffusers import DiffusionPipeline, StableDiffusionXLPipeline

    from contrastive_diffusers._compat import dtype_kwarg
    from contrastive_diffusers.pipelines import GuidedStableDiffusionPipeline, GuidedStableDiffusionXLPipeline

    pipe = DiffusionPipeline.from_pretrained(folder, **dtype_kwarg(dtype)).to(device)
    backend = attention_backend(attention, device)
    if backend == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
    elif backend == "explicit":  # diffusers' AttnProcessor: softmax(QK^T)V written out, no fused kernel
        from diffusers.models.attention_processor import AttnProcessor

        pipe.unet.set_attn_processor(AttnProcessor())
    guided_cls = GuidedStableDiffusionXLPipeline if isinstance(pipe, StableDiffusionXLPipeline) else GuidedStableDiffusionPipeline
    pipe = guided_cls.from_pipe(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def attention_backend(choice: str, device: str) -> str:
    """The attention of the layers that do not record: ``"xformers"`` (``auto`` picks it on
    CUDA where it is installed), ``"explicit"``, or diffusers' default, SDPA."""
    import importlib.util

    if choice == "explicit":
        return "explicit"
    if choice == "xformers" or (
        choice == "auto" and device.startswith("cuda") and importlib.util.find_spec("xformers") is not None
    ):
        return "xformers"
    return "sdpa"


def floor_costs(pipe, args) -> dict:
    """Seconds of one truncated guidance forward+backward (batch 1) and of one CFG forward."""
    import torch

    from contrastive_diffusers.guidance import Conform
    from contrastive_diffusers.pipelines import GuidanceSession

    device = pipe._execution_device
    session = GuidanceSession.start(pipe.tokenizer, Conform(), PROMPT, GROUPS)
    latents = torch.randn(1, 4, args.size // 8, args.size // 8, device=device, dtype=pipe.unet.dtype)
    pipe.scheduler.set_timesteps(args.steps, device=device)
    t = pipe.scheduler.timesteps[len(pipe.scheduler.timesteps) // 2]
    if hasattr(pipe, "text_encoder_2"):
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(PROMPT, device=device, do_classifier_free_guidance=True)
        time_ids = torch.tensor([[args.size, args.size, 0, 0, args.size, args.size]], device=device, dtype=embeds.dtype)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        added_cfg = {"text_embeds": torch.cat([neg_pooled, pooled]), "time_ids": time_ids.repeat(2, 1)}
    else:
        embeds, neg = pipe.encode_prompt(PROMPT, device, 1, True)
        added = added_cfg = None
    cond = session.conditioning(embeds, added_cond_kwargs=added)
    guider = session.guider(pipe, cond, latents, len(pipe.scheduler.timesteps))

    def guided_pass():
        guider.step(latents, t, 1)  # one forward + one backward, no refinement at step 1

    def cfg_pass():
        with torch.no_grad():
            pipe.unet(torch.cat([latents] * 2), t, encoder_hidden_states=torch.cat([neg, embeds]),
                      added_cond_kwargs=added_cfg)

    return {"guided_pass": timed(guided_pass, device), "cfg_forward": timed(cfg_pass, device)}


def timed(fn, device, repeats: int = 3) -> float:
    import torch

    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def worker(args) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads) if args.threads else None
    dtype = getattr(torch, args.dtype)
    pipe = load(args.folder, args.device, dtype, args.attention)
    if args.method == "floor":
        return floor_costs(pipe, args)
    generator = torch.Generator().manual_seed(0)
    common = dict(num_inference_steps=args.steps, height=args.size, width=args.size, output_type="np")
    summary = {}
    if args.method == "diffusers_attend_and_excite":
        from diffusers import StableDiffusionAttendAndExcitePipeline

        reference = StableDiffusionAttendAndExcitePipeline(**{k: v for k, v in pipe.components.items()
                                                               if k != "image_encoder"})
        reference.set_progress_bar_config(disable=True)
        res = (args.size // 32, args.size // 32)

        def run(**kwargs):
            return reference(PROMPT, token_indices=[3, 7], attn_res=res, generator=generator,
                             **{**common, **kwargs}).images
    else:
        guidance = None if args.method == "none" else args.method
        groups = [["car"], ["bench"]] if args.method == "attend_and_excite" else GROUPS

        def run(**kwargs):
            out = pipe(PROMPT, guidance=guidance, token_groups=groups, generator=generator, **{**common, **kwargs})
            if out.guidance_records:
                summary.update(guidance_counts(out.guidance_records))
            return out.images

    if args.warmup_steps:
        run(num_inference_steps=args.warmup_steps)
        generator.manual_seed(0)  # the timed call draws the same latents as without a warm-up
    images, seconds, memory = timed_call(run, args.device)
    np.save(Path(args.images) / image_name(args.method, args.attention), images)
    vae = pipe.vae
    upcast = args.dtype == "float16" and bool(vae.config.get("force_upcast", False))
    return {"seconds": seconds, "memory_before": memory.before, "memory_peak": memory.peak,
            "cfg_forwards": len(pipe.scheduler.timesteps), "nan": bool(np.isnan(images).any()),
            "attention": attention_backend(args.attention, args.device),
            "vae_decode_dtype": "float32" if upcast else args.dtype, **summary}


def image_name(method: str, attention: str = "default") -> str:
    """The file a worker saves its images to (``.npy``, float in [0, 1])."""
    return f"{method}-explicit.npy" if attention == "explicit" else f"{method}.npy"


def guidance_counts(records) -> dict:
    return {
        "guided_steps": len(records),
        "updates": sum(sum(r.updated) for r in records),
        "refinement_iterations": sum(sum(r.refinement_iterations) for r in records),
        "skipped_nonfinite": sum(sum(r.skipped_nonfinite) for r in records),
    }


# ----------------------------------------------------------------------------- driver
def worker_command(args, folder: Path, images: Path, method: str) -> list[str]:
    """The command line of one measurement (its own process); it prints one JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--folder", str(folder), "--images",
           str(images), "--method", method, "--size", str(args.size), "--steps", str(args.steps),
           "--device", args.device, "--dtype", args.dtype, "--warmup-steps", str(args.warmup_steps),
           "--attention", args.attention]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def measure(args, folder: Path, images: Path, method: str) -> dict:
    done = subprocess.run(worker_command(args, folder, images, method), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict, floor: dict, images: Path) -> list[dict]:
    import numpy as np

    def extra(r):  # peak memory of the generation above the loaded pipeline
        return r["memory_peak"] - r["memory_before"]

    plain = results["none"]
    reference = results.get("diffusers_attend_and_excite")
    reference_extra = extra(reference) - extra(plain) if reference else None
    rows = []
    for method, r in results.items():
        over_plain = extra(r) - extra(plain)
        row = {
            "method": method,
            "s_per_image": r["seconds"],
            "x_plain": r["seconds"] / plain["seconds"],
            "x_diffusers_ae": r["seconds"] / reference["seconds"] if reference else None,
            "peak_mb": r["memory_peak"] / 2**20,
            "extra_peak_mb": extra(r) / 2**20,
            "extra_over_plain_mb": over_plain / 2**20,
        }
        if reference_extra and reference_extra > 0:
            row["extra_over_plain_x_diffusers_ae"] = over_plain / reference_extra
        if "guided_steps" in r:
            passes = r["updates"] + r["refinement_iterations"]
            row["guided_steps"] = r["guided_steps"]
            row["s_per_guided_step"] = (r["seconds"] - plain["seconds"]) / r["guided_steps"]
            row["passes"] = passes
            row["floor_s"] = passes * floor["guided_pass"] + r["cfg_forwards"] * floor["cfg_forward"]
            row["x_floor"] = r["seconds"] / row["floor_s"]
        if method == "attend_and_excite" and reference:
            ours, theirs = (np.load(images / f"{m}.npy") for m in ("attend_and_excite", "diffusers_attend_and_excite"))
            row["max_abs_diff_vs_diffusers"] = float(np.abs(ours - theirs).max())
        rows.append(row)
    return rows


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def print_table(rows, floor, args):
    cols = [("method", "method"), ("s_per_image", "s/image"), ("x_plain", "x plain"),
            ("x_diffusers_ae", "x diffusers A&E"), ("s_per_guided_step", "s/guided step"),
            ("passes", "fwd+bwd passes"), ("floor_s", "floor s"), ("x_floor", "x floor"),
            ("extra_over_plain_mb", "extra peak MB over plain"),
            ("extra_over_plain_x_diffusers_ae", "extra peak x diffusers A&E"),
            ("max_abs_diff_vs_diffusers", "max |diff| vs diffusers")]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(k), 4 if k == "max_abs_diff_vs_diffusers" else 2)
                                       for k, _ in cols) + " |")
    print(f"\nshape={args.shape} size={args.size} steps={args.steps} device={args.device} dtype={args.dtype}")
    print(f"one truncated guidance forward+backward: {floor['guided_pass']:.3f} s; one CFG forward: "
          f"{floor['cfg_forward']:.3f} s")
    print("\n".join(lines))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(args) -> dict:
    import diffusers
    import torch

    import contrastive_diffusers

    device = args.device
    if device.startswith("cuda"):
        device = torch.cuda.get_device_name(0)
    else:
        device = f"{_cpu_name()}, {os.cpu_count()} cores"
    return {"date": time.strftime("%Y-%m-%d"), "device": device, "torch": torch.__version__,
            "diffusers": diffusers.__version__, "contrastive_diffusers": contrastive_diffusers.__version__,
            "command": " ".join(sys.argv)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    parser.add_argument("--warmup-steps", type=int, default=0,
                        help="run the call with this many steps first, untimed (0: no warm-up)")
    parser.add_argument("--attention", choices=["default", "auto", "xformers", "explicit"], default="default",
                        help="layers that do not record: diffusers' default (SDPA), xformers, auto (xformers "
                             "on CUDA where installed), or explicit (diffusers' AttnProcessor)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--save-model", type=Path, default=None, metavar="FOLDER",
                        help="only build --shape on --device, store it in --dtype to FOLDER and exit")
    args = parser.parse_args(argv)
    if args.save_model:
        import torch

        save_model(args.shape, args.save_model, None if args.dtype == "float32" else getattr(torch, args.dtype),
                   args.device)
        return 0
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "none" not in methods:
        methods.insert(0, "none")
    if args.shape in ("sdxl", "tiny-sdxl") and "diffusers_attend_and_excite" in methods:
        methods.remove("diffusers_attend_and_excite")  # diffusers has no SDXL A&E pipeline
    with tempfile.TemporaryDirectory() as tmp:
        folder, images = Path(tmp) / "model", Path(tmp) / "images"
        images.mkdir()
        print(f"building the {args.shape} model ...", file=sys.stderr)
        save_model(args.shape, folder)
        results = {}
        for method in methods:
            print(f"measuring {method} ...", file=sys.stderr)
            results[method] = measure(args, folder, images, method)
        floor = measure(args, folder, images, "floor")
        rows = table(results, floor, images)
    print_table(rows, floor, args)
    if args.json:
        args.json.write_text(json.dumps({"environment": environment(args), "floor": floor, "rows": rows,
                                         "raw": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
