"""The machinery of the ShapesWorld training evidence (``benchmarks/shapes_training_evidence.py``):
train a method in this process, generate prompts with the trained weights on the embedded
model, judge every image with the oracle, and summarise a method against its baselines.

Every step is resumable: a finished training run (its ``training_run.json`` says
``finished``) is not run again and an unfinished one resumes from its latest checkpoint;
image records are appended to a JSONL file as they are judged, and an arm's (prompt, seed)
already recorded is not drawn again. Comparisons are paired by (prompt id, seed), with
Student-t 95% intervals (:mod:`.stats`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic_io import save_image_atomic, write_json_atomic
from ..records import jsonable
from ..shapes.oracle import detect
from ..shapes.spec import CaptionSpec, ObjectSpec, evaluate
from .stats import clustered_mean_ci, mean_ci, metric_value, paired_differences

__all__ = [
    "Arm",
    "EvalPrompt",
    "RecipeChangedError",
    "RecipeError",
    "GenerationSettings",
    "Timer",
    "comparison",
    "judge",
    "load_pipeline",
    "read_records",
    "score_arm",
    "stat",
    "train_once",
]

#: Training methods by name (the ``contrastive_diffusers.training`` classes).
_METHODS = {
    "reversion": "ReVersion",
    "textual_inversion": "TextualInversion",
    "mcpl": "MCPL",
    "evogen": "EvoGen",
    "dco": "DCO",
}


@dataclass(frozen=True)
class EvalPrompt:
    """A prompt to generate and what the oracle must find: ``spec`` (a :class:`CaptionSpec`
    dict) and ``absent`` objects (:class:`ObjectSpec` dicts) that must not be drawn."""

    id: str
    text: str
    spec: dict
    category: str = "all"
    absent: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Arm:
    """One compared model: the embedded model with ``weights`` loaded as ``kind`` (``"tokens"``,
    ``"lora"`` or ``None`` for the plain model); ``rewrite`` maps a prompt's text for this arm
    (e.g. a placeholder token for the relation phrase)."""

    name: str
    weights: tuple[Path, ...] = ()
    kind: str | None = None
    rewrite: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationSettings:
    steps: int = 20
    guidance_scale: float = 7.5
    batch: int = 16
    resolution: int = 32


class Timer:
    """Minutes spent on an experiment, kept in a file so that a resumed run adds to them."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.previous = json.loads(self.path.read_text())["minutes"] if self.path.exists() else 0.0
        self.started = time.perf_counter()

    @property
    def minutes(self) -> float:
        return self.previous + (time.perf_counter() - self.started) / 60.0

    def save(self) -> float:
        minutes = self.minutes
        write_json_atomic(self.path, {"minutes": minutes})
        return minutes


def train_once(method: str, argv: Sequence[str], output_dir: Path) -> Path:
    """Train ``method`` (a key of the training methods) with ``argv`` into ``output_dir`` unless
    a finished run is there; an unfinished one resumes from its latest checkpoint."""
    import importlib

    from ..training.args import parse_method_args
    from ..training.loop import train

    output_dir = Path(output_dir)
    if method not in _METHODS:
        raise ValueError(f"Unknown training method {method!r}; choose one of {', '.join(_METHODS)}.")
    cls = getattr(importlib.import_module("contrastive_diffusers.training"), _METHODS[method])
    instance = cls()
    args = parse_method_args(
        instance,
        [*argv, "--output_dir", str(output_dir), "--resume_from_checkpoint", "latest"],
        f"python -m contrastive_diffusers.training.{method}",
    )
    record = output_dir / "training_run.json"
    if record.exists():  # finished (reused) or interrupted (resumed): either way, the same recipe
        stored = json.loads(record.read_text())
        _check_same_settings(output_dir, stored.get("args", {}), jsonable(vars(args)))
        if stored.get("status") == "finished":
            return output_dir
    train(args, instance)
    return output_dir


class RecipeError(ValueError):
    """The experiments' recipe cannot be run as asked (found once its data are known)."""


class RecipeChangedError(RecipeError):
    """A run folder holds a training run (or data) made with other settings than the recipe's."""


#: Arguments a run may differ in and still be the same run: where things are, not what is trained.
_LOCATIONS = frozenset({"command", "output_dir", "resume_from_checkpoint", "logging_dir", "train_data_dir",
                        "pretrained_model_name_or_path"})


def _check_same_settings(output_dir: Path, stored: dict, wanted: dict) -> None:
    """A run is reused or resumed only with the settings it was started with: a recipe changed
    since (a default, a ``--set``) must not silently keep the old weights. Paths are not
    compared, so a moved work folder or a reinstalled package keeps its runs."""
    shared = (stored.keys() & wanted.keys()) - _LOCATIONS
    changed = sorted(k for k in shared if stored[k] != wanted[k])
    if changed:
        detail = ", ".join(f"{k}: {stored[k]!r} -> {wanted[k]!r}" for k in changed)
        raise RecipeChangedError(
            f"{output_dir} holds a training run made with other settings ({detail}); use a new --output-dir "
            "for a changed recipe, or delete that run folder (and its arm's lines in records.jsonl) to retrain it."
        )


def load_pipeline(arm: Arm):
    """The embedded ShapesWorld pipeline with the arm's weights (stock diffusers loaders)."""
    from diffusers import StableDiffusionPipeline

    from ..models.embedded import embedded_model_dir
    from ..training.save import load_learned_embeds

    pipe = StableDiffusionPipeline.from_pretrained(embedded_model_dir())
    pipe.set_progress_bar_config(disable=True)
    for folder in arm.weights:
        if arm.kind == "tokens":
            load_learned_embeds(pipe, folder)
        elif arm.kind == "lora":
            pipe.load_lora_weights(folder)
        else:
            raise ValueError(f"Arm {arm.name}: weights need kind 'tokens' or 'lora', got {arm.kind!r}.")
    return pipe


def judge(image, prompt: EvalPrompt) -> dict[str, float]:
    """Oracle metrics of one image: ``objects`` (every required object drawn right, relation
    ignored), ``success`` (the whole spec holds and no ``absent`` object is drawn), and
    ``clean`` (no ``absent`` object drawn)."""
    spec = CaptionSpec.from_dict(prompt.spec)
    detected = detect(image)
    absent = [ObjectSpec.from_dict(a) for a in prompt.absent]
    clean = not any(a.matches(obj) for a in absent for obj in detected)
    full = evaluate(detected, spec).success
    objects = evaluate(detected, CaptionSpec(spec.objects)).success
    return {"success": float(full and clean), "objects": float(objects), "clean": float(clean)}


def read_records(path: Path) -> list[dict]:
    """The records of a JSONL file, one per (method, prompt id, seed): a later line replaces an
    earlier one of the same image (an image drawn again after its prompt changed)."""
    path = Path(path)
    if not path.exists():
        return []
    records: dict = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interrupted run; its image is drawn again
                continue
            key = (record.get("method"), record.get("prompt_id"), record.get("seed"))
            records.pop(key, None)  # the later line, in the later line's place
            records[key] = record
    return list(records.values())


def _drop_cut_line(path: Path) -> None:
    """Truncate ``path`` after its last newline: a line cut by an interrupted write would
    otherwise swallow the first line appended after it."""
    if not path.exists():
        return
    with path.open("rb+") as f:
        size = f.seek(0, 2)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def score_arm(arm: Arm, prompts: Sequence[EvalPrompt], seeds: Sequence[int], records_path: Path,
              settings: GenerationSettings, examples_dir: Path | None = None, examples: int = 4) -> list[dict]:
    """Generate and judge every (prompt, seed) of ``arm`` not yet in ``records_path`` (a record
    of the same prompt id with another text is drawn again); returns the arm's records of these
    prompts and seeds. The first ``examples`` prompts' images at the first seed are saved."""
    import torch

    records_path = Path(records_path)
    wanted = {(p.id, s): _rewrite(p.text, arm.rewrite) for s in seeds for p in prompts}

    def current():
        return [r for r in read_records(records_path)
                if r.get("method") == arm.name and wanted.get((r["prompt_id"], r["seed"])) == r.get("prompt")]

    _drop_cut_line(records_path)  # first: a last line without its newline is not a finished record
    done = {(r["prompt_id"], r["seed"]) for r in current()}
    todo = [(p, s) for s in seeds for p in prompts if (p.id, s) not in done]
    if todo:
        pipe = load_pipeline(arm)
        records_path.parent.mkdir(parents=True, exist_ok=True)
        keep = {p.id for p in prompts[:examples]}
        for start in range(0, len(todo), settings.batch):
            chunk = todo[start:start + settings.batch]
            texts = [_rewrite(p.text, arm.rewrite) for p, _ in chunk]
            with torch.no_grad():
                images = pipe(
                    texts,
                    num_inference_steps=settings.steps,
                    guidance_scale=settings.guidance_scale,
                    generator=[torch.Generator().manual_seed(s) for _, s in chunk],
                    height=settings.resolution,
                    width=settings.resolution,
                ).images
            lines = []
            for (prompt, seed), text, image in zip(chunk, texts, images):
                lines.append(json.dumps({"method": arm.name, "prompt_id": prompt.id, "seed": seed, "prompt": text,
                                         "category": prompt.category, "status": "ok",
                                         "metrics": judge(image, prompt)}))
                if examples_dir is not None and prompt.id in keep and seed == seeds[0]:
                    target = Path(examples_dir) / arm.name / f"{prompt.id}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    save_image_atomic(image, target)
            with records_path.open("a", encoding="utf-8") as f:  # whole lines; a cut last line is dropped
                f.write("\n".join(lines) + "\n")
    return current()


def _rewrite(text: str, mapping: dict) -> str:
    for old, new in mapping.items():
        text = text.replace(old, new)
    return text


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined mean or interval (no or one value) is ``None``."""
    return value if math.isfinite(value) else None


def stat(values: Sequence[float]) -> dict:
    ci = mean_ci(values)
    return {"mean": _finite(ci.mean), "ci_low": _finite(ci.low), "ci_high": _finite(ci.high), "n": ci.n}


def comparison(records: Sequence[dict], metric: str, method: str, baselines: Sequence[str],
               minutes: float, label: str | None = None) -> dict:
    """One experiment's entry of ``training.json``: the method's and each baseline's mean with
    its 95% interval, the paired differences method - baseline over (prompt, seed), and the
    same differences with the prompts as the samples (``paired_by_prompt``: the seeds of one
    prompt are not independent draws, so this interval is the honest one for "prompts like
    these"). ``records`` holds one record per (method, prompt id, seed) (:func:`read_records`)."""
    rows = list(records)

    def values(name):
        return [v for r in rows if r.get("method") == name and (v := metric_value(r, metric)) is not None]

    paired, by_prompt = {}, {}
    for baseline in baselines:
        keyed = paired_differences(rows, metric, method, baseline, with_keys=True)
        for target, ci in ((paired, mean_ci(d for _, d in keyed)),
                           (by_prompt, clustered_mean_ci((d for _, d in keyed), (key[0] for key, _ in keyed)))):
            target[baseline] = {"delta": _finite(ci.mean), "ci_low": _finite(ci.low), "ci_high": _finite(ci.high),
                                "n": ci.n}
    return {
        "metric": label or metric,
        "method": stat(values(method)),
        "baselines": {b: stat(values(b)) for b in baselines},
        "paired": paired,
        "paired_by_prompt": by_prompt,
        "minutes": round(minutes, 2),
    }
