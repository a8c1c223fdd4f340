"""The GPU figures in one command: full-size fp16 / bf16 time and memory of every method.

    python benchmarks/gpu_suite.py --output-dir benchmarks/results/gpu     # one H200-class GPU, budget 8 min
    python benchmarks/gpu_suite.py --output-dir /tmp/smoke --smoke         # tiny models on the CPU

Real architectures with random weights (nothing is downloaded; time and memory do not
depend on the weights), built by ``guidance_benchmark.py``; every configuration runs in its
own process (``guidance_benchmark.py``'s worker, or ``python -m
contrastive_diffusers.training.<method>`` through ``training.benchmark``), so its CUDA peak
allocated memory is its own, and its time is taken after a warm-up call:

- SD 1.5, 512 px, 50 steps, fp16: plain (SDPA; and with explicit attention, the fp16 floor
  of the image comparison), diffusers' Attend-and-Excite pipeline, our A&E, CONFORM, EBAMA,
  SynGen; our A&E images must equal diffusers' within :data:`AE_TOLERANCE`.
- SDXL, 1024 px, 50 steps, fp16, the VAE decoding in float32 (SDXL's ``force_upcast``, as
  users of the stock SDXL VAE get it: that VAE overflows in fp16, and the fp16-fix VAE
  differs only in trained weights, which a random model cannot have): plain and our four
  methods, every image checked for NaN.
- One training step (after one warm-up step) of textual inversion, ReVersion, MCPL, LoRA
  and EvoGen at 512 px, mixed precision fp16, batch 1, with and without gradient checkpointing.
- SD3 (medium) and Flux (FLUX.1-dev), 1024 px, bf16, 8 steps: plain and our four methods,
  built on the GPU by ``mmdit_benchmark.py``'s worker with the stock T5 lengths; A&E's and
  CONFORM's refinement capped at :data:`MMDIT_REFINEMENT_ITERATIONS` iterations, so each row
  also gives seconds per guidance pass, from which any schedule's time follows.

Layers that do not record run xformers where installed, SDPA otherwise (recorded per row).
Every configuration has a time limit (``--limit-factor`` x its estimate, at least
``--min-limit-s``) and the run a budget (``--budget-s``): a configuration that would not fit
is deferred. Rows are appended to ``results.jsonl`` as each configuration finishes, and
``results.json`` / ``results.md`` are rewritten; the same command again resumes (finished
rows are kept, failed, timed-out and deferred ones run again). How the step counts and
estimates were chosen: ``benchmarks/GPU_RESULTS.md``. Models, images and training runs go to
``--work-dir``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Every process of the suite imports the package of this checkout (also where it is not installed).
sys.path.insert(0, str(ROOT))
CHILD_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
_spec = importlib.util.spec_from_file_location("_guidance_benchmark", HERE / "guidance_benchmark.py")
gb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gb)
_spec = importlib.util.spec_from_file_location("_mmdit_benchmark", HERE / "mmdit_benchmark.py")
mb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mb)

#: Our A&E against diffusers' pipeline, pixels in [0, 1]: fp16 rounds at 2^-11 relative, and
#: 50 steps with 60 refinement updates (step size up to 20) amplify it; the two pipelines
#: compute attention with different kernels (SDPA / explicit). Equal within this.
AE_TOLERANCE = {"max_abs": 0.1, "mean_abs": 0.01}
#: What users report for diffusers' A&E (stored attention probabilities in every layer).
USER_REPORT = "A&E needs ~16 GB at 512 px and more than 80 GB at 1024 px"
DEFAULT_BUDGET_S = 480.0
#: Refinement iterations per refinement step in the SD3 and Flux rows (papers: 20): a pass
#: costs the same either way, and 20 would not fit the budget on Flux (CONFORM refines without
#: a target, so up to 60 passes of ~0.3 s; A&E stops early only where its target is met).
MMDIT_REFINEMENT_ITERATIONS = 4
#: Steps of the SD3 and Flux rows' warm-up call: one guided step runs every kernel (refinement,
#: backward, the loop's CFG forward, the decode).
MMDIT_WARMUP_STEPS = 1
GENERATION_GROUPS = ("sd15", "sdxl", "sd3", "flux")
MMDIT_GROUPS = ("sd3", "flux")


@dataclass(frozen=True)
class Profile:
    """Sizes and precision of one suite: the GPU one or the CPU smoke test."""

    name: str
    device: str
    dtype: str
    mixed_precision: str
    sd15: tuple[str, int, int]  # model shape, image size, steps
    sdxl: tuple[str, int, int]
    sd3: tuple[str, int, int]
    flux: tuple[str, int, int]
    mmdit_dtype: str
    mmdit_full_size: bool  # the real models, or mmdit_benchmark's reduced width with tiny encoders
    training: tuple[str, int, int]  # model shape, resolution, optimizer steps (the first untimed)
    warmup_steps: int
    threads: int


FULL = Profile("gpu", "cuda", "float16", "fp16", ("sd15", 512, 50), ("sdxl", 1024, 50), ("sd3", 1024, 8),
               ("flux", 1024, 8), "bfloat16", True, ("sd15", 512, 3), 2, 0)
SMOKE = Profile("smoke", "cpu", "float32", "no", ("tiny", 64, 2), ("tiny-sdxl", 64, 2), ("sd3", 64, 2),
                ("flux", 64, 2), "float32", False, ("tiny", 64, 2), 1, 1)


@dataclass(frozen=True)
class Config:
    """One configuration: a generation (group sd15, sdxl, sd3 or flux) or a training run."""

    group: str
    name: str
    estimate_s: float = 0.0  # on one H200, process start included
    checkpointing: bool = False
    attention: str = "auto"

    @property
    def key(self) -> str:
        suffix = "+checkpointing" if self.checkpointing else ""
        suffix += "+explicit-attention" if self.attention == "explicit" else ""
        return f"{self.group}/{self.name}{suffix}"


#: The training configurations: ``training.benchmark`` names -> what the issue calls them.
TRAINING_LABELS = {"textual_inversion": "textual inversion", "reversion": "ReVersion", "mcpl": "MCPL",
                   "denoise": "LoRA (evogen --objective denoise)", "contrastive": "EvoGen (--objective contrastive)"}
BUILD_ESTIMATE_S = {"sd15": 15.0, "sdxl": 35.0}
CONFIGS: tuple[Config, ...] = (
    Config("sd15", "none", 10),
    Config("sd15", "none", 10, attention="explicit"),
    Config("sd15", "diffusers_attend_and_excite", 25),
    Config("sd15", "attend_and_excite", 14),
    Config("sd15", "conform", 14),
    Config("sd15", "ebama", 11),
    Config("sd15", "syngen", 11),
    Config("sdxl", "none", 17),
    Config("sdxl", "attend_and_excite", 30),
    Config("sdxl", "conform", 30),
    Config("sdxl", "ebama", 22),
    Config("sdxl", "syngen", 22),
    *(Config("training", m, 10.5, checkpointing=c) for c in (False, True) for m in TRAINING_LABELS),
    # Last: the rows the budget defers first when the estimates are short (see GPU_RESULTS.md).
    Config("sd3", "none", 8),
    Config("sd3", "attend_and_excite", 10),
    Config("sd3", "conform", 10),
    Config("sd3", "ebama", 8.5),
    Config("sd3", "syngen", 8.5),
    Config("flux", "none", 12),
    Config("flux", "attend_and_excite", 18),
    Config("flux", "conform", 18),
    Config("flux", "ebama", 14),
    Config("flux", "syngen", 14),
)


def estimated_total_s(configs=CONFIGS) -> float:
    """The GPU run's estimated seconds: the model builds and every configuration of ``configs``."""
    groups = {c.group for c in configs}
    return sum(v for k, v in BUILD_ESTIMATE_S.items() if k in groups) + sum(c.estimate_s for c in configs)


# ----------------------------------------------------------------------------- processes
def run_process(cmd: list[str], limit_s: float, env: dict = CHILD_ENV) -> tuple[str, str, str, float]:
    """Run ``cmd`` in its own process group; ``(status, stdout, stderr, seconds)`` with status
    ``ok``, ``failed`` or ``timeout`` (the group is killed at ``limit_s``)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=limit_s)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        status = "timeout"
    return status, out, err, time.perf_counter() - start


class Suite:
    """Runs the configurations in order, appending a row per configuration and rewriting the
    tables after each; rows already finished in ``output_dir`` are kept (resume)."""

    def __init__(self, profile: Profile, output_dir: Path, work_dir: Path, budget_s: float, limit_factor: float,
                 min_limit_s: float, only: list[str] | None = None, argv: list[str] | None = None):
        self.profile, self.output_dir, self.work_dir = profile, output_dir, work_dir
        self.budget_s, self.limit_factor, self.min_limit_s = budget_s, limit_factor, min_limit_s
        self.only, self.argv, self.environment = only, argv or [], None
        self.started = time.perf_counter()
        self.log = output_dir / "results.jsonl"
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        rows = [json.loads(line) for line in lines if line.strip()]
        self.rows: dict[str, dict] = {row["key"]: row for row in rows}  # later lines replace earlier ones

    # ------------------------------------------------------------------ selection
    def selected(self) -> list[Config]:
        if not self.only:
            return list(CONFIGS)
        keys = {c.key for c in CONFIGS}
        unknown = [k for k in self.only if k not in keys]
        if unknown:
            raise ValueError(f"--only names unknown configurations {unknown}; known: {', '.join(sorted(keys))}")
        return [c for c in CONFIGS if c.key in self.only]

    def settings(self, config: Config) -> dict:
        p = self.profile
        if config.group == "training":
            shape, size, steps = p.training
            return {"profile": p.name, "shape": shape, "resolution": size, "steps": steps,
                    "mixed_precision": p.mixed_precision, "gradient_checkpointing": config.checkpointing}
        shape, size, steps = getattr(p, config.group)
        if config.group in MMDIT_GROUPS:
            return {"profile": p.name, "shape": shape, "size": size, "steps": steps, "dtype": p.mmdit_dtype,
                    "full_size": p.mmdit_full_size, "warmup_steps": MMDIT_WARMUP_STEPS, "attention": config.attention,
                    "refinement_iterations": MMDIT_REFINEMENT_ITERATIONS}
        return {"profile": p.name, "shape": shape, "size": size, "steps": steps, "dtype": p.dtype,
                "warmup_steps": p.warmup_steps, "attention": config.attention}

    def done(self, config: Config) -> bool:
        row = self.rows.get(config.key)
        return row is not None and row["status"] == "ok" and row.get("settings") == self.settings(config)

    def remaining_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    # ------------------------------------------------------------------ running
    def run(self) -> dict:
        for config in self.selected():
            if self.done(config):
                continue
            cmd, env, read = self.prepare(config)  # builds the model first: its time counts in the budget
            estimate = config.estimate_s if self.profile.name == "gpu" else 0.0
            if self.remaining_s() < estimate:
                self.record(config, {"status": "deferred", "reason": f"{self.remaining_s():.0f} s of the budget "
                                     f"left, estimate {estimate:.0f} s; run the command again to resume"})
                continue
            limit = min(max(self.min_limit_s, self.limit_factor * config.estimate_s), max(self.remaining_s(), 1.0))
            print(f"[{time.perf_counter() - self.started:6.0f} s] {config.key} (limit {limit:.0f} s) ...",
                  file=sys.stderr, flush=True)
            status, out, err, seconds = run_process(cmd, limit, env)
            row = {"status": status, "wall_s": round(seconds, 1), "limit_s": round(limit, 1),
                   "attention": gb.attention_backend(config.attention, self.profile.device)}
            self.record(config, {**row, **read(out)} if status == "ok" else {**row, "error": err[-2000:]})
        return self.write()

    def model(self, shape: str) -> Path:
        """The saved random-weight pipeline of ``shape`` (built once per work dir)."""
        import torch

        folder = self.work_dir / "models" / f"{shape}-{self.profile.dtype}"
        if not (folder / "model_index.json").exists():
            print(f"building the {shape} model ...", file=sys.stderr, flush=True)
            gb.save_model(shape, folder, None if self.profile.dtype == "float32" else getattr(torch, self.profile.dtype))
        return folder

    def prepare(self, config: Config):
        """``(command, environment, reader of the finished process's row)`` of a configuration."""
        p = self.profile
        env = dict(CHILD_ENV, **({"OMP_NUM_THREADS": str(p.threads)} if p.threads else {}))
        if config.group in MMDIT_GROUPS:  # built in the worker, on the device
            shape, size, steps = getattr(p, config.group)
            args = argparse.Namespace(shape=shape, size=size, steps=steps, text_tokens=0, threads=p.threads,
                                      refinement_iterations=MMDIT_REFINEMENT_ITERATIONS, device=p.device,
                                      dtype=p.mmdit_dtype, warmup_steps=MMDIT_WARMUP_STEPS, attention=config.attention,
                                      output_type="np", full_size=p.mmdit_full_size, heads=mb.NARROW_HEADS[shape])
            return mb.worker_command(args, config.name), env, lambda out: json.loads(out.strip().splitlines()[-1])
        if config.group != "training":
            shape, size, steps = getattr(p, config.group)
            images = self.work_dir / "images" / f"{config.group}-{p.name}"
            images.mkdir(parents=True, exist_ok=True)
            args = argparse.Namespace(size=size, steps=steps, device=p.device, dtype=p.dtype, threads=p.threads,
                                      warmup_steps=p.warmup_steps, attention=config.attention)
            cmd = gb.worker_command(args, self.model(shape), images, config.name)
            return cmd, env, lambda out: json.loads(out.strip().splitlines()[-1])
        from contrastive_diffusers.training import benchmark as tb

        shape, resolution, steps = p.training
        model, root = self.model(shape), self.work_dir / "training-data"
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            tb.write_data(root / "prompt_learning")
            tb.write_pairs(root / "lora")
            (root / "done").write_text("")
        data = ((root / "lora" / "pairs", root / "lora" / "positives") if config.name in tb.LORA_CONFIGS
                else (root / "prompt_learning" / "single", root / "prompt_learning" / "multi"))
        out = self.work_dir / "training-runs" / f"{p.name}-{config.name}-{int(config.checkpointing)}"
        shutil.rmtree(out, ignore_errors=True)
        xformers = gb.attention_backend(config.attention, p.device) == "xformers"
        args = argparse.Namespace(resolution=resolution, steps=steps, mixed_precision=p.mixed_precision, warmup=1,
                                  extra=["--enable_xformers_memory_efficient_attention"] if xformers else [])
        cmd = tb.train_command(config.name, model, data, out, args, config.checkpointing)
        return cmd, env, lambda _: tb.read_result(config.name, out, 1, config.checkpointing)

    def record(self, config: Config, values: dict) -> None:
        row = {"key": config.key, "group": config.group, "name": config.name, **values,
               "settings": self.settings(config)}
        self.rows[config.key] = row
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.write()

    # ------------------------------------------------------------------ results
    def write(self) -> dict:
        self.environment = self.environment or environment(self.argv)
        report = summarize(self.rows, self.work_dir / "images", self.profile, self.environment)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (self.output_dir / "results.md").write_text(markdown(report))
        return report


# ----------------------------------------------------------------------------- tables
def _failure(row: dict) -> dict:
    return {"reason": row.get("reason") or " ".join((row.get("error") or "").strip().splitlines()[-1:])}


def generation_rows(rows: dict, group: str) -> list[dict]:
    """The group's rows: seconds per image and its ratio to plain generation and to diffusers'
    A&E, peak memory and the peak above the loaded pipeline (GiB), guided passes and seconds
    per pass (the time over plain generation over the passes), NaN."""
    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    plain_s = ok.get(f"{group}/none", {}).get("seconds")
    ref_s = ok.get(f"{group}/diffusers_attend_and_excite", {}).get("seconds")
    out = []
    for config in (c for c in CONFIGS if c.group == group and c.key in rows):
        row = rows[config.key]
        entry = {"key": config.key, "method": config.name, "attention": row.get("attention"), "status": row["status"]}
        if row["status"] != "ok":
            out.append({**entry, **_failure(row)})
            continue
        passes = row["updates"] + row["refinement_iterations"] if "updates" in row else None
        out.append({**entry, "s_per_image": row["seconds"], "peak_gib": row["memory_peak"] / 2**30,
                    "extra_gib": (row["memory_peak"] - row["memory_before"]) / 2**30, "nan": row["nan"],
                    "x_plain": row["seconds"] / plain_s if plain_s else None,
                    "x_diffusers_ae": row["seconds"] / ref_s if ref_s else None, "passes": passes,
                    "s_per_pass": (row["seconds"] - plain_s) / passes if passes and plain_s else None,
                    "skipped_nonfinite": row.get("skipped_nonfinite"), "vae_decode_dtype": row["vae_decode_dtype"]})
    return out


def compare_ae(images: Path) -> dict | None:
    """Our A&E images against diffusers' (pixels in [0, 1]), beside the guidance effect
    (|diffusers' A&E - plain|) and the fp16 kernel floor (|plain SDPA - plain explicit|)."""
    import numpy as np

    def load(method, attention="auto"):
        path = images / gb.image_name(method, attention)
        return np.load(path).astype(np.float64) if path.exists() else None

    ours, theirs, plain, explicit = load("attend_and_excite"), load("diffusers_attend_and_excite"), load("none"), \
        load("none", "explicit")
    if ours is None or theirs is None:
        return None
    diff = np.abs(ours - theirs)
    result = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "tolerance": AE_TOLERANCE}
    result["equal_within_tolerance"] = bool(all(result[k] <= v for k, v in AE_TOLERANCE.items()))
    if plain is not None:
        result["guidance_effect_mean_abs"] = float(np.abs(theirs - plain).mean())
    if plain is not None and explicit is not None:
        result["plain_sdpa_vs_explicit_max_abs"] = float(np.abs(plain - explicit).max())
    return result


def training_rows(rows: dict) -> list[dict]:
    """Training rows with ratios to the baseline of their family at the same checkpointing
    (textual inversion for prompt learning, LoRA for EvoGen) and peak memory to their own
    run without checkpointing."""
    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    out = []
    for config in (c for c in CONFIGS if c.group == "training" and c.key in rows):
        row, ckpt = rows[config.key], "+checkpointing" if config.checkpointing else ""
        base = "denoise" if config.name in ("denoise", "contrastive") else "textual_inversion"
        entry = {"key": config.key, "method": config.name, "label": TRAINING_LABELS[config.name], "baseline": base,
                 "gradient_checkpointing": config.checkpointing, "status": row["status"],
                 "attention": row.get("attention")}
        if row["status"] != "ok":
            out.append({**entry, **_failure(row)})
            continue
        ref, plain = ok.get(f"training/{base}{ckpt}"), ok.get(f"training/{config.name}")
        out.append({**entry, "step_time_s": row["step_time_s"], "step_times_s": row["step_times_s"],
                    "peak_gib": row["peak_memory_mb"] / 1024,
                    "x_baseline": row["step_time_s"] / ref["step_time_s"] if ref else None,
                    "x_peak_no_checkpointing": row["peak_memory_mb"] / plain["peak_memory_mb"]
                    if ckpt and plain else None})
    return out


def summarize(rows: dict, images_root: Path, profile: Profile, env: dict) -> dict:
    generation = {group: generation_rows(rows, group) for group in GENERATION_GROUPS}
    training = training_rows(rows)
    every = [r for group in generation.values() for r in group]
    peak = {r["key"]: r["peak_gib"] for r in every if r["status"] == "ok"}
    headline = {"user_report": USER_REPORT,
                "diffusers_ae_sd15_peak_gib": peak.get("sd15/diffusers_attend_and_excite"),
                "ours_ae_sd15_peak_gib": peak.get("sd15/attend_and_excite"),
                "ours_ae_sdxl_peak_gib": peak.get("sdxl/attend_and_excite"),
                **{f"ours_{g}_max_peak_gib": max((v for k, v in peak.items() if k.startswith(f"{g}/")), default=None)
                   for g in ("sdxl", *MMDIT_GROUPS)},
                "nan_anywhere": any(r.get("nan") for r in every)}
    mcpl = next((r for r in training if r["key"] == "training/mcpl+checkpointing" and r["status"] == "ok"), {})
    settings = {"device": profile.device, "dtype": profile.dtype, "mixed_precision": profile.mixed_precision,
                "sd15": profile.sd15, "sdxl": profile.sdxl, "sd3": profile.sd3, "flux": profile.flux,
                "mmdit_dtype": profile.mmdit_dtype, "mmdit_full_size": profile.mmdit_full_size,
                "mmdit_refinement_iterations": MMDIT_REFINEMENT_ITERATIONS, "training": profile.training,
                "warmup_steps": profile.warmup_steps}
    return {"profile": profile.name, "settings": settings, "environment": env,
            "ae_vs_diffusers": compare_ae(images_root / f"sd15-{profile.name}"),
            "memory_headline": headline, "mcpl_goal": {"x_ti_with_checkpointing": mcpl.get("x_baseline"), "goal": 1.15},
            **generation, "training": training, "rows": [rows[c.key] for c in CONFIGS if c.key in rows]}


def _f(value, digits=2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _status(entry) -> str:
    return entry["status"] + (f" ({entry['reason']})" if entry.get("reason") else "")


def markdown(report: dict) -> str:
    env, st = report["environment"], report["settings"]
    machine = (f"{env['date']} · {env.get('gpu') or env['cpu']} · torch {env['torch']} (CUDA {env.get('cuda')}) · "
               f"diffusers {env['diffusers']} · transformers {env['transformers']} · accelerate {env['accelerate']} · "
               f"peft {env['peft']} · xformers {env['xformers'] or 'not installed'} · attention of the layers that "
               f"do not record: {env['attention_non_recording']} · commit {env.get('git_commit')}")
    lines = [f"# GPU suite results ({report['profile']})", "", machine, "",
             f"`{env['command']}`", "", "Peak memory: CUDA peak allocated (CPU: peak RSS); times after a warm-up call.",
             ""]
    head = ("| method | attention | s/image | x plain | x diffusers A&E | fwd+bwd passes | s/pass | peak GiB | "
            "over loaded GiB | NaN | status |")
    captions = {"sd15": f"{st['dtype']}", "sdxl": f"{st['dtype']}, VAE decoding in float32 (force_upcast)",
                "sd3": f"{st['mmdit_dtype']}, A&E's and CONFORM's refinement capped at "
                       f"{st['mmdit_refinement_iterations']} iterations (papers: 20)"}
    captions["flux"] = captions["sd3"]
    names = ({"sd3": "SD3 medium", "flux": "FLUX.1-dev"} if st["mmdit_full_size"] else
             {g: f"{g} (full depth, reduced width, tiny encoders)" for g in MMDIT_GROUPS})
    for group in (g for g in GENERATION_GROUPS if report[g]):
        shape, size, steps = st[group]
        lines += [f"## {names.get(group, shape)}, {size} px, {steps} steps, {captions[group]}", "", head,
                  "|" + "---|" * 11]
        lines += [f"| {r['method']} | {r['attention']} | {_f(r.get('s_per_image'))} | {_f(r.get('x_plain'))} | "
                  f"{_f(r.get('x_diffusers_ae'))} | {_f(r.get('passes'))} | {_f(r.get('s_per_pass'), 3)} | "
                  f"{_f(r.get('peak_gib'))} | {_f(r.get('extra_gib'))} | {_f(r.get('nan'))} | {_status(r)} |"
                  for r in report[group]]
        lines.append("")
    ae = report["ae_vs_diffusers"]
    if ae:
        verdict = "equal" if ae["equal_within_tolerance"] else "NOT equal"
        lines += [(f"Our A&E against diffusers' pipeline (pixels in [0, 1]): max |Δ| {ae['max_abs']:.2e}, mean |Δ| "
                   f"{ae['mean_abs']:.2e}; tolerance {ae['tolerance']}: **{verdict}**. For scale: mean |diffusers' "
                   f"A&E − plain| {_f(ae.get('guidance_effect_mean_abs'), 3)}; max |plain SDPA − plain explicit "
                   f"attention| {_f(ae.get('plain_sdpa_vs_explicit_max_abs'), 4)}."), ""]
    h = report["memory_headline"]
    lines += [(f"**Memory headline.** Users: “{h['user_report']}”. Here: diffusers' A&E "
               f"{_f(h['diffusers_ae_sd15_peak_gib'])} GiB and ours {_f(h['ours_ae_sd15_peak_gib'])} GiB at "
               f"{st['sd15'][1]} px; ours on SDXL at {st['sdxl'][1]} px: A&E {_f(h['ours_ae_sdxl_peak_gib'])} GiB, "
               f"every method ≤ {_f(h['ours_sdxl_max_peak_gib'])} GiB; every method ≤ {_f(h['ours_sd3_max_peak_gib'])} "
               f"GiB on SD3 and ≤ {_f(h['ours_flux_max_peak_gib'])} GiB on Flux at {st['flux'][1]} px. NaN in any "
               f"image: {_f(h['nan_anywhere'])}."), "",
              f"## Training: one step at {st['training'][1]} px, mixed precision {st['mixed_precision']}, batch 1", "",
              "| method | grad. checkpointing | attention | s/step | x baseline | peak GiB | x no-ckpt | status |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {_f(r['gradient_checkpointing'])} | {r['attention']} | {_f(r.get('step_time_s'), 3)} | "
              f"{_f(r.get('x_baseline'))} ({r['baseline']}) | {_f(r.get('peak_gib'))} | "
              f"{_f(r.get('x_peak_no_checkpointing'))} | {_status(r)} |" for r in report["training"]]
    goal = report["mcpl_goal"]
    lines += ["", (f"MCPL with gradient checkpointing: {_f(goal['x_ti_with_checkpointing'])}x textual inversion's "
                   f"step time (goal ≤ {goal['goal']}).")]
    return "\n".join(lines) + "\n"


def environment(argv: list[str]) -> dict:
    """The machine and library versions of this run."""
    import platform

    import torch

    env = {"date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(), "torch": torch.__version__,
           "cpu": f"{gb._cpu_name()}, {os.cpu_count()} cores", "command": " ".join(["benchmarks/gpu_suite.py", *argv])}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
    for name in ("diffusers", "transformers", "accelerate", "peft", "xformers", "contrastive_diffusers"):
        spec = importlib.util.find_spec(name)
        env[name] = __import__(name).__version__ if spec is not None else None
    env["attention_non_recording"] = gb.attention_backend("auto", "cuda" if torch.cuda.is_available() else "cpu")
    try:  # none where the tree travelled without .git, or git is not installed
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True,
                                           text=True, check=False).stdout.strip() or None
    except OSError:
        env["git_commit"] = None
    return env


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, required=True, help="results.jsonl / .json / .md go here")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU, same code paths")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="saved models, images and training runs (default: <tmp>/contrastive-diffusers-gpu-suite)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-clock budget of this run")
    parser.add_argument("--limit-factor", type=float, default=3.0, help="per-configuration limit = this x estimate")
    parser.add_argument("--min-limit-s", type=float, default=45.0, help="per-configuration limit at least this")
    parser.add_argument("--only", default=None, help="comma-separated configuration keys (default: all)")
    args = parser.parse_args(argv)
    profile = SMOKE if args.smoke else FULL
    if profile.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: the full suite needs a GPU; use --smoke for the CPU run")
    work = args.work_dir or Path(tempfile.gettempdir()) / "contrastive-diffusers-gpu-suite"
    only = [k.strip() for k in args.only.split(",") if k.strip()] if args.only else None
    try:
        suite = Suite(profile, args.output_dir, work, args.budget_s, args.limit_factor, args.min_limit_s, only, argv)
        suite.selected()
    except ValueError as err:
        parser.error(str(err))
    report = suite.run()
    print((args.output_dir / "results.md").read_text())
    return 0 if all(r["status"] == "ok" for r in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
