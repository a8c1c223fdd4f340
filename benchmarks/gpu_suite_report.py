"""The GPU suite's tables: rows and ratios from the finished configurations, the A&E image
comparison, the memory headline, the machine, and the Markdown of ``results.md``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path

import guidance_benchmark as gb  # same folder (gpu_suite.py puts it on the path)
from gpu_suite_configs import (
    CONFIGS,
    GENERATION_GROUPS,
    MMDIT_GROUPS,
    MMDIT_REFINEMENT_ITERATIONS,
    TRAINING_LABELS,
    Profile,
)

HERE = Path(__file__).resolve().parent

#: Our A&E against diffusers' pipeline, pixels in [0, 1]: fp16 rounds at 2^-11 relative, and
#: 50 steps with 60 refinement updates (step size up to 20) amplify it; the two pipelines
#: compute attention with different kernels (SDPA / explicit). Equal within this.
AE_TOLERANCE = {"max_abs": 0.1, "mean_abs": 0.01}
#: What users report for diffusers' A&E (stored attention probabilities in every layer).
USER_REPORT = "A&E needs ~16 GB at 512 px and more than 80 GB at 1024 px"


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


def _group_titles(settings: dict) -> dict:
    """Each generation group's heading: model, size, steps, precision."""
    st = settings
    captions = {"sd15": f"{st['dtype']}", "sdxl": f"{st['dtype']}, VAE decoding in float32 (force_upcast)",
                "sd3": f"{st['mmdit_dtype']}, A&E's and CONFORM's refinement capped at "
                       f"{st['mmdit_refinement_iterations']} iterations (papers: 20)"}
    captions["flux"] = captions["sd3"]
    names = ({"sd3": "SD3 medium", "flux": "FLUX.1-dev"} if st["mmdit_full_size"] else
             {g: f"{g} (full depth, reduced width, tiny encoders)" for g in MMDIT_GROUPS})
    return {g: f"{names.get(g, st[g][0])}, {st[g][1]} px, {st[g][2]} steps, {captions[g]}" for g in GENERATION_GROUPS}


def _ae_sentence(report: dict) -> list[str]:
    ae = report["ae_vs_diffusers"]
    if not ae:
        return []
    verdict = "equal" if ae["equal_within_tolerance"] else "NOT equal"
    return [(f"Our A&E against diffusers' pipeline (pixels in [0, 1]): max |Δ| {ae['max_abs']:.2e}, mean |Δ| "
             f"{ae['mean_abs']:.2e}; tolerance {ae['tolerance']}: **{verdict}**. For scale: mean |diffusers' "
             f"A&E − plain| {_f(ae.get('guidance_effect_mean_abs'), 3)}; max |plain SDPA − plain explicit "
             f"attention| {_f(ae.get('plain_sdpa_vs_explicit_max_abs'), 4)}."), ""]


def _headline_sentence(report: dict) -> str:
    h, st = report["memory_headline"], report["settings"]
    return (f"**Memory headline.** Users: “{h['user_report']}”. Here: diffusers' A&E "
            f"{_f(h['diffusers_ae_sd15_peak_gib'])} GiB and ours {_f(h['ours_ae_sd15_peak_gib'])} GiB at "
            f"{st['sd15'][1]} px; ours on SDXL at {st['sdxl'][1]} px: A&E {_f(h['ours_ae_sdxl_peak_gib'])} GiB, "
            f"every method ≤ {_f(h['ours_sdxl_max_peak_gib'])} GiB; every method ≤ {_f(h['ours_sd3_max_peak_gib'])} "
            f"GiB on SD3 and ≤ {_f(h['ours_flux_max_peak_gib'])} GiB on Flux at {st['flux'][1]} px. NaN in any "
            f"image: {_f(h['nan_anywhere'])}.")


def _mcpl_sentence(report: dict) -> str:
    goal = report["mcpl_goal"]
    return (f"MCPL with gradient checkpointing: {_f(goal['x_ti_with_checkpointing'])}x textual inversion's "
            f"step time (goal ≤ {goal['goal']}).")


def _machine(env: dict) -> str:
    return (f"{env['date']} · {env.get('gpu') or env['cpu']} · torch {env['torch']} (CUDA {env.get('cuda')}) · "
            f"diffusers {env['diffusers']} · transformers {env['transformers']} · accelerate {env['accelerate']} · "
            f"peft {env['peft']} · xformers {env['xformers'] or 'not installed'} · attention of the layers that "
            f"do not record: {env['attention_non_recording']} · commit {env.get('git_commit')}")


def markdown(report: dict) -> str:
    env, st = report["environment"], report["settings"]
    lines = [f"# GPU suite results ({report['profile']})", "", _machine(env), "",
             f"`{env['command']}`", "", "Peak memory: CUDA peak allocated (CPU: peak RSS); times after a warm-up call.",
             ""]
    head = ("| method | attention | s/image | x plain | x diffusers A&E | fwd+bwd passes | s/pass | peak GiB | "
            "over loaded GiB | NaN | status |")
    titles = _group_titles(st)
    for group in (g for g in GENERATION_GROUPS if report[g]):
        lines += [f"## {titles[group]}", "", head, "|" + "---|" * 11]
        lines += [f"| {r['method']} | {r['attention']} | {_f(r.get('s_per_image'))} | {_f(r.get('x_plain'))} | "
                  f"{_f(r.get('x_diffusers_ae'))} | {_f(r.get('passes'))} | {_f(r.get('s_per_pass'), 3)} | "
                  f"{_f(r.get('peak_gib'))} | {_f(r.get('extra_gib'))} | {_f(r.get('nan'))} | {_status(r)} |"
                  for r in report[group]]
        lines.append("")
    lines += [*_ae_sentence(report), _headline_sentence(report), "",
              f"## Training: one step at {st['training'][1]} px, mixed precision {st['mixed_precision']}, batch 1", "",
              "| method | grad. checkpointing | attention | s/step | x baseline | peak GiB | x no-ckpt | status |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {_f(r['gradient_checkpointing'])} | {r['attention']} | {_f(r.get('step_time_s'), 3)} | "
              f"{_f(r.get('x_baseline'))} ({r['baseline']}) | {_f(r.get('peak_gib'))} | "
              f"{_f(r.get('x_peak_no_checkpointing'))} | {_status(r)} |" for r in report["training"]]
    lines += ["", _mcpl_sentence(report)]
    return "\n".join(lines) + "\n"


#: The README's GPU block lies between these lines; ``gpu_suite.py --update-readme`` rewrites it.
README_START = ("<!-- gpu-suite results: written by `python benchmarks/gpu_suite.py --output-dir benchmarks/results/gpu "
                "--update-readme README.md` -->")
README_END = "<!-- end of gpu-suite results -->"
PENDING = ("**GPU figures: pending.** No session with a GPU has run the suite yet: every figure above is from "
           "a 2-core CPU in float32.")


def readme_block(report: dict | None, results_path: str = "benchmarks/results/gpu/results.md") -> str:
    """The README's summary of a GPU run (``report`` from ``results.json``; ``None``: pending):
    time per image, its ratio to plain generation and peak memory per method and model, the
    memory headline, our A&E against diffusers', MCPL's step-time goal, and what did not run."""
    if report is None:
        return PENDING
    env, titles = report["environment"], _group_titles(report["settings"])
    lines = [f"**GPU figures** ({_machine(env)}; every column and the training table: `{results_path}`).", "",
             "| model | method | s/image | x plain | peak GiB | NaN |", "|---|---|---|---|---|---|"]
    for group in (g for g in GENERATION_GROUPS if report[g]):
        lines += [f"| {titles[group]} | {r['method']} | {_f(r.get('s_per_image'))} | {_f(r.get('x_plain'))} | "
                  f"{_f(r.get('peak_gib'))} | {_f(r.get('nan'))} |" for r in report[group] if r["status"] == "ok"]
    missing = [f"{r['key']} ({r['status']})" for r in report["rows"] if r["status"] != "ok"]
    lines += ["", *_ae_sentence(report), _headline_sentence(report), "", _mcpl_sentence(report)]
    if missing:
        lines += ["", "Not measured in this run: " + ", ".join(missing) + "."]
    return "\n".join(lines)


def update_readme(readme: Path, block: str) -> None:
    """Replace the text between :data:`README_START` and :data:`README_END` in ``readme``."""
    text = Path(readme).read_text(encoding="utf-8")
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise ValueError(f"{readme} must hold the GPU block's two marker lines once each:\n{README_START}\n{README_END}")
    head, rest = text.split(README_START)
    _, tail = rest.split(README_END)
    Path(readme).write_text(f"{head}{README_START}\n{block}\n{README_END}{tail}", encoding="utf-8")


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
