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
  SynGen; our A&E images must equal diffusers' within ``gpu_suite_report.AE_TOLERANCE``.
- SDXL, 1024 px, 50 steps, fp16, the VAE decoding in float32 (SDXL's ``force_upcast``, as
  users of the stock SDXL VAE get it: that VAE overflows in fp16, and the fp16-fix VAE
  differs only in trained weights, which a random model cannot have): plain and our four
  methods, every image checked for NaN.
- One training step (after one warm-up step) of textual inversion, ReVersion, MCPL, LoRA
  and EvoGen at 512 px, mixed precision fp16, batch 1, with and without gradient checkpointing.
- SD3 (medium) and Flux (FLUX.1-dev), 1024 px, bf16, 8 steps: plain and our four methods,
  built on the GPU by ``mmdit_benchmark.py``'s worker with the stock T5 lengths; A&E's and
  CONFORM's refinement capped at ``gpu_suite_configs.MMDIT_REFINEMENT_ITERATIONS``, so each row
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
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Every process of the suite imports the package of this checkout (also where it is not installed).
sys.path.insert(0, str(ROOT))
CHILD_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
# The suite's modules and the benchmark workers it drives sit beside it.
sys.path.insert(0, str(HERE))
import guidance_benchmark as gb  # noqa: E402
import mmdit_benchmark as mb  # noqa: E402
from gpu_suite_configs import (  # noqa: E402
    BUILD_ESTIMATE_S,
    CONFIGS,
    DEFAULT_BUDGET_S,
    FULL,
    MMDIT_GROUPS,
    MMDIT_REFINEMENT_ITERATIONS,
    MMDIT_WARMUP_STEPS,
    SMOKE,
    TRAINING_LABELS,
    Config,
    Profile,
    estimated_total_s,
)
from gpu_suite_report import (  # noqa: E402
    PENDING,
    README_END,
    README_START,
    compare_ae,
    environment,
    markdown,
    readme_block,
    summarize,
    update_readme,
)

__all__ = ["BUILD_ESTIMATE_S", "CONFIGS", "DEFAULT_BUDGET_S", "FULL", "MMDIT_GROUPS", "PENDING", "README_END",
           "README_START", "SMOKE", "TRAINING_LABELS", "Suite", "compare_ae", "estimated_total_s", "main",
           "readme_block", "run_process", "update_readme"]


# ----------------------------------------------------------------------------- processes
class BuildFailed(RuntimeError):
    """A model the configurations run on could not be built (its process failed or timed out)."""


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
        self.failed_builds: dict[str, str] = {}
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
            # the model build (where it is still to do) counts in the budget
            estimate = config.estimate_s + self.build_estimate_s(config) if self.profile.name == "gpu" else 0.0
            if self.remaining_s() < estimate:
                self.record(config, {"status": "deferred", "reason": f"{self.remaining_s():.0f} s of the budget "
                                     f"left, estimate {estimate:.0f} s; run the command again to resume"})
                continue
            try:
                cmd, env, read = self.prepare(config)
            except BuildFailed as err:
                self.record(config, {"status": "failed", "error": str(err)[-2000:]})
                continue
            limit = min(max(self.min_limit_s, self.limit_factor * config.estimate_s), max(self.remaining_s(), 1.0))
            print(f"[{time.perf_counter() - self.started:6.0f} s] {config.key} (limit {limit:.0f} s) ...",
                  file=sys.stderr, flush=True)
            status, out, err, seconds = run_process(cmd, limit, env)
            row = {"status": status, "wall_s": round(seconds, 1), "limit_s": round(limit, 1),
                   "attention": gb.attention_backend(config.attention, self.profile.device)}
            self.record(config, {**row, **read(out)} if status == "ok" else {**row, "error": err[-2000:]})
        return self.write()

    def model_folder(self, shape: str) -> Path:
        return self.work_dir / "models" / f"{shape}-{self.profile.dtype}"

    def build_estimate_s(self, config: Config) -> float:
        """Seconds still to spend building the model ``config`` runs on (0 once built)."""
        if config.group in MMDIT_GROUPS:  # built by each worker, counted in its estimate
            return 0.0
        shape = self.profile.training[0] if config.group == "training" else getattr(self.profile, config.group)[0]
        built = (self.model_folder(shape) / "model_index.json").exists()
        return 0.0 if built else BUILD_ESTIMATE_S.get(shape, 0.0)

    def model(self, shape: str) -> Path:
        """The saved random-weight pipeline of ``shape``, built once per work dir in its own
        process (this one never holds the GPU); :class:`BuildFailed` if that fails, then
        for every configuration on it."""
        folder = self.model_folder(shape)
        if shape in self.failed_builds:
            raise BuildFailed(self.failed_builds[shape])
        if not (folder / "model_index.json").exists():
            print(f"building the {shape} model ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, str(HERE / "guidance_benchmark.py"), "--shape", shape, "--device",
                   self.profile.device, "--dtype", self.profile.dtype, "--save-model", str(folder)]
            limit = max(self.min_limit_s, self.limit_factor * BUILD_ESTIMATE_S.get(shape, 0.0))
            status, _, err, _ = run_process(cmd, limit)
            if status != "ok":
                self.failed_builds[shape] = f"building the {shape} model: {status}\n{err[-1800:]}"
                raise BuildFailed(self.failed_builds[shape])
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
    parser.add_argument("--update-readme", type=Path, default=None, metavar="README",
                        help="run nothing: rewrite README's GPU block from --output-dir's results.json (pending "
                             "where there is none)")
    args = parser.parse_args(argv)
    if args.update_readme:
        results = args.output_dir / "results.json"
        report = json.loads(results.read_text()) if results.exists() else None
        if report is not None and report.get("profile") != "gpu":
            parser.error(f"{results} is from a {report.get('profile')!r} run; the README shows the GPU run's")
        try:
            update_readme(args.update_readme, readme_block(report, str(args.output_dir / "results.md")))
        except (OSError, ValueError) as err:
            parser.error(str(err))
        return 0
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
