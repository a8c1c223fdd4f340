"""The four ShapesWorld training experiments of the evidence command: ReVersion, MCPL, EvoGen
and DCO, each trained from the embedded model on data exported from the world and measured
with the oracle against the baselines its paper compares with (same data, steps and
learning rate; images paired by prompt and seed).

:func:`run_experiment` returns ``(entry, details)``: the experiment's ``training.json`` entry
(:func:`.train_evidence.comparison`) and the secondary numbers the report shows (other
metrics, per-category rates, per arm). :class:`Sizes` holds every size; :data:`FULL` and
:data:`SMOKE` are the command's two presets.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic_io import save_image_atomic, write_json_atomic, write_jsonl_atomic
from ..models.embedded import embedded_model_dir
from ..shapes.captions import caption_text, scenes_for
from ..shapes.export import (
    DCO_SUBJECT,
    export_dco,
    export_evogen,
    export_reversion,
    relation_folder,
)
from ..shapes.prompts import shapes_prompts, training_pairs
from ..shapes.render import render
from ..shapes.spec import CaptionSpec, ObjectSpec
from ..shapes.world import RELATION_PHRASES, RELATIONS
from .stats import metric_value
from .train_evidence import (
    Arm,
    EvalPrompt,
    GenerationSettings,
    RecipeChangedError,
    RecipeError,
    Timer,
    comparison,
    score_arm,
    stat,
    train_once,
)

__all__ = ["EXPERIMENTS", "FULL", "SMOKE", "Sizes", "run_experiment"]

EXPERIMENTS = ("reversion", "mcpl", "evogen", "dco")
#: MCPL's two concepts: (token, initializer word, colour, shape).
MCPL_CONCEPTS = (("<c1>", "square", "orange", "square"), ("<c2>", "triangle", "cyan", "triangle"))
#: Other objects the MCPL tokens are combined with at test time (never in its training images).
MCPL_PARTNERS = (("white", "circle"), ("yellow", "diamond"))


#: Training seed k draws its images at seed + k x this (see ``Sizes.train_seeds``).
TRAIN_SEED_STRIDE = 100_000


@dataclass(frozen=True)
class Sizes:
    """Every size of the experiments (steps are optimizer steps per training run)."""

    reversion_images: int = 8  # per relation
    reversion_steps: int = 300
    reversion_lr: float = 5e-3
    reversion_prompts: int = 4  # per relation
    mcpl_images: int = 10
    mcpl_steps: int = 400
    mcpl_lr: float = 5e-3
    evogen_pairs: int = 8  # per stage
    evogen_steps: int = 360  # split evenly over the three stages
    evogen_lr: float = 5e-4
    evogen_contrastive_weight: float = 0.1  # w_c of the contrastive arms (the training CLI's default)
    evogen_prompts: int = 3  # per test category
    dco_images: int = 6
    dco_steps: int = 400
    dco_lr: float = 1e-4
    dco_beta: float = 1000.0  # the paper's (SDXL); see the README for this model
    dco_prompts: int = 8
    batch: int = 4
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    #: seeds of the training runs (initialisation, noise, batch order; the data stay the same).
    #: Training seed k draws its images at the generation seeds + k x TRAIN_SEED_STRIDE, so the
    #: pairs (method vs baseline) stay within one training seed.
    train_seeds: tuple[int, ...] = (0,)
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def __post_init__(self):
        for name in ("reversion_images", "reversion_steps", "reversion_prompts", "mcpl_images", "mcpl_steps",
                     "evogen_pairs", "evogen_prompts", "dco_images", "dco_steps", "dco_prompts", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)} "
                                 f"(--set {name}=N).")
        if self.evogen_steps < 3:
            raise ValueError(f"evogen_steps must be at least 3 (one per curriculum stage), got {self.evogen_steps}.")
        for name in ("reversion_lr", "mcpl_lr", "evogen_lr", "dco_lr", "dco_beta"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}.")
        if not (math.isfinite(self.evogen_contrastive_weight) and self.evogen_contrastive_weight >= 0):
            raise ValueError(f"evogen_contrastive_weight must be a number >= 0, got {self.evogen_contrastive_weight}.")
        for name in ("seeds", "train_seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):  # a repeated seed would count its images twice
                raise ValueError(f"{name} names a seed twice: {values}.")
        if not self.train_seeds or min(self.train_seeds) < 0:
            raise ValueError(f"train_seeds must name at least one seed >= 0, got {self.train_seeds}.")
        # image seeds (DCO's fidelity seeds from 1000 up included) stay below the stride, so
        # that each image seed names its training seed
        top = max([*self.seeds, 1000 + self.dco_prompts * len(self.seeds)], default=0)
        if not self.seeds or min(self.seeds) < 0 or top >= TRAIN_SEED_STRIDE:
            raise ValueError(f"seeds must be >= 0 and leave DCO's fidelity seeds below {TRAIN_SEED_STRIDE}; "
                             f"got {self.seeds}.")


FULL = Sizes()


def generation_seeds(seeds: Sequence[int], train_seed: int) -> tuple[int, ...]:
    """The image seeds of the models trained with ``train_seed`` (training seed 0: ``seeds``)."""
    return tuple(int(s) + TRAIN_SEED_STRIDE * int(train_seed) for s in seeds)


def training_seed_of(generation_seed: int) -> int:
    return int(generation_seed) // TRAIN_SEED_STRIDE


def _run_dir(folder: Path, name: str, train_seed: int) -> Path:
    return folder / "runs" / (name if train_seed == 0 else f"{name}-seed{train_seed}")


def sizes_of(name: str, sizes: Sizes) -> dict:
    """The sizes experiment ``name`` ran with: its own fields (``<name>_*``) and the shared
    ones (batch, seeds, training seeds, generation), as JSON values (lists, not tuples), so the
    report reads the same from memory and from ``training.json``."""
    prefixes = tuple(f"{n}_" for n in EXPERIMENTS)
    own = {k: v for k, v in asdict(sizes).items() if k.startswith(f"{name}_") or not k.startswith(prefixes)}
    return json.loads(json.dumps(own))


def with_overrides(sizes: Sizes, overrides: list[str]) -> Sizes:
    """``sizes`` with ``["mcpl_steps=120", "dco_lr=1e-4", "seeds=0,1,2,3"]`` applied: a recipe
    is data, so a sweep is a list of these. ``ValueError`` naming the field for an unknown
    field or a value of the wrong type."""
    from dataclasses import fields, replace

    known = {f.name: f for f in fields(Sizes) if f.name != "generation"}
    changes: dict = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ValueError(f"--set takes FIELD=VALUE with FIELD one of {', '.join(known)}; got {item!r}.")
        current = getattr(sizes, name)
        try:
            if isinstance(current, tuple):
                changes[name] = tuple(int(v) for v in value.split(",") if v.strip())
            else:
                changes[name] = type(current)(value)
        except ValueError:
            kind = "a list of integers (0,1,2)" if isinstance(current, tuple) else \
                {int: "an integer", float: "a number"}.get(type(current), type(current).__name__)
            raise ValueError(f"--set {name} needs {kind}, got {value!r}.") from None
    return replace(sizes, **changes)
SMOKE = Sizes(reversion_images=2, reversion_steps=1, reversion_prompts=1, mcpl_images=2, mcpl_steps=1,
              evogen_pairs=2, evogen_steps=3, evogen_prompts=1, dco_images=2, dco_steps=1, dco_prompts=2,
              batch=1, seeds=(0,), generation=GenerationSettings(steps=1, batch=8))


def _common(data: Path, steps: int, lr: float, sizes: Sizes, seed: int = 0) -> list[str]:
    return ["--pretrained_model_name_or_path", str(embedded_model_dir()), "--train_data_dir", str(data),
            "--resolution", str(sizes.generation.resolution), "--max_train_steps", str(steps),
            "--train_batch_size", str(sizes.batch), "--gradient_accumulation_steps", "1",
            "--learning_rate", str(lr), "--no_scale_lr", "--flip_p", "0", "--seed", str(seed),
            "--checkpointing_steps", str(max(1, steps // 2)), "--checkpoints_total_limit", "1",
            "--save_steps", str(steps + 1), "--mixed_precision", "no"]


def _arm_rates(records: list[dict], metrics=("success", "objects", "clean")) -> dict:
    """``{arm: {metric or metric/category: {mean, ci_low, ci_high, n}}}`` for the report."""
    out: dict = {}
    for arm in dict.fromkeys(r["method"] for r in records):
        rows = [r for r in records if r["method"] == arm]
        entry = {}
        for metric in metrics:
            for category in [None, *sorted({r.get("category", "all") for r in rows})]:
                values = [metric_value(r, metric) for r in rows if category is None or r.get("category") == category]
                key = metric if category is None else f"{metric}/{category}"
                entry[key] = stat([v for v in values if v is not None])
        out[arm] = entry
    return out


def _exported(data: Path, params: dict, export: Callable[[], object], derived: Sequence[Path] = ()) -> Path:
    """``data`` exported by ``export`` once: ``data/recipe.json`` records ``params`` (the sizes
    the data were drawn with), and a recipe asking for other data is refused, as a changed
    training argument is (the finished runs were trained on these data). ``derived`` folders
    (made from the data) are removed when the data are exported anew."""
    marker = data / "recipe.json"
    if marker.exists():
        stored = json.loads(marker.read_text())
        if stored != params:
            detail = ", ".join(f"{k}: {stored.get(k)!r} -> {params.get(k)!r}"
                               for k in sorted(stored.keys() | params.keys()) if stored.get(k) != params.get(k))
            raise RecipeChangedError(
                f"{data} holds training data exported with other sizes ({detail}), and the finished runs "
                "were trained on them; use a new --output-dir for a changed recipe.")
        return data
    for folder in (data, *derived):
        shutil.rmtree(folder, ignore_errors=True)
    export()
    write_json_atomic(marker, params)  # last: the data are complete
    return data


def _score(arms: list[Arm], prompts, sizes: Sizes, folder: Path, train_seed: int = 0) -> list[dict]:
    """Judge every arm at the generation seeds of ``train_seed``; example images from seed 0's
    models. Returns the records of these arms, prompts and seeds only (the folder may hold more)."""
    records = []
    for arm in arms:
        records += score_arm(arm, prompts, generation_seeds(sizes.seeds, train_seed), folder / "records.jsonl",
                             sizes.generation, folder / "examples" if train_seed == 0 else None)
    return records


# ---------------------------------------------------------------- ReVersion
def _relation_prompt(relation: str, first: tuple[str, str], second: tuple[str, str]) -> tuple[CaptionSpec, str, str]:
    """``(spec, caption, caption with the relation phrase as "_")`` of two (colour, shape) objects."""
    spec = CaptionSpec((ObjectSpec(first[1], first[0]), ObjectSpec(second[1], second[0])), (0, relation, 1))
    text = caption_text(spec, "relation").text
    return spec, text, text.replace(f" {RELATION_PHRASES[relation]} ", " _ ", 1)


def _reversion_prompts(relation: str, exemplar_text: dict, n: int, seed: int) -> list[EvalPrompt]:
    """Relation prompts whose object pair appears in none of the relation's exemplar captions."""
    seen = {t.replace("{}", "_") for texts in exemplar_text.values() for t in texts}
    pool = training_pairs()
    available = sum(_relation_prompt(relation, a, b)[2] not in seen for a in pool for b in pool if a[1] != b[1])
    if n > available:
        raise RecipeError(f"reversion_prompts={n}, but only {available} object pairs of two shapes are absent from "
                         f"the exemplars of {relation!r}; use --set reversion_prompts={available} or fewer.")
    rng = np.random.default_rng([seed, RELATIONS.index(relation), 0x8E1])
    prompts, texts = [], set()
    while len(prompts) < n:
        first, second = (pool[int(k)] for k in rng.choice(len(pool), size=2, replace=False))
        if first[1] == second[1]:
            continue
        spec, text, template = _relation_prompt(relation, first, second)
        if template in seen or text in texts:
            continue
        texts.add(text)
        prompts.append(EvalPrompt(f"{relation_folder(relation)}-{len(prompts):02d}",
                                  template.replace(" _ ", " {R} ", 1), spec.to_dict(), relation_folder(relation)))
    return prompts


def run_reversion(folder: Path, sizes: Sizes) -> tuple[dict, dict]:
    timer = Timer(folder / "time.json")
    size = sizes.generation.resolution
    data = _exported(folder / "data", {"per_relation": sizes.reversion_images, "size": size},
                     lambda: export_reversion(folder / "data", per_relation=sizes.reversion_images, size=size))
    prompts = {  # every relation's before any training: a recipe asking for too many fails first
        relation: _reversion_prompts(relation, json.loads((data / relation_folder(relation) / "text.json").read_text()),
                                     sizes.reversion_prompts, 0)
        for relation in RELATIONS}
    records = []
    for relation in RELATIONS:
        name = relation_folder(relation)
        for train_seed in sizes.train_seeds:
            argv = _common(data / name, sizes.reversion_steps, sizes.reversion_lr, sizes, train_seed) + [
                "--placeholder_token", "<R>", "--initializer_token", "and"]
            trained = {m: train_once(m, argv, _run_dir(folder, f"{m}-{name}", train_seed))
                       for m in ("reversion", "textual_inversion")}
            arms = [Arm("reversion", (trained["reversion"],), "tokens", {"{R}": "<R>"}),
                    Arm("textual_inversion", (trained["textual_inversion"],), "tokens", {"{R}": "<R>"}),
                    Arm("plain_words", rewrite={"{R}": RELATION_PHRASES[relation]})]
            records += _score(arms, prompts[relation], sizes, folder, train_seed)
            timer.save()
    entry = _compare(records, "success", "reversion", ["textual_inversion", "plain_words"], timer.save(),
                       "oracle relation success (both objects right and the relation holds)")
    return entry, {"arms": _arm_rates(records, ("success", "objects"))}


# ---------------------------------------------------------------- MCPL
def _mcpl_data(folder: Path, n: int, size: int) -> None:
    """Two-object scenes of the two concepts; ``mcpl/`` captioned "a <c1> and a <c2>" (both
    orders), ``images/`` the same images without captions (textual inversion's generic ones)."""
    mcpl, images = folder / "mcpl", folder / "images"
    mcpl.mkdir(parents=True)
    images.mkdir()
    rng = np.random.default_rng([0, 0x3C1])
    (t1, _, c1, s1), (t2, _, c2, s2) = MCPL_CONCEPTS
    spec = CaptionSpec((ObjectSpec(s1, c1), ObjectSpec(s2, c2)))
    rows = []
    for k in range(n):
        image = render(scenes_for(spec, rng), size)
        name = f"{k:03d}.png"
        save_image_atomic(image, mcpl / name)
        save_image_atomic(image, images / name)
        rows.append({"file_name": name, "text": f"a {t1} and a {t2}" if k % 2 == 0 else f"a {t2} and a {t1}"})
    write_jsonl_atomic(mcpl / "metadata.jsonl", rows)


def _mcpl_prompts() -> list[EvalPrompt]:
    concepts = [(t, ObjectSpec(s, c).to_dict()) for t, _, c, s in MCPL_CONCEPTS]
    prompts = []
    for k, (token, obj) in enumerate(concepts):
        other = concepts[1 - k][1]
        spec = {"objects": [obj], "relation": None}
        prompts.append(EvalPrompt(f"alone-{k + 1}", f"a {token}", spec, "alone", (other,)))
        for color, shape in MCPL_PARTNERS:
            partner = ObjectSpec(shape, color).to_dict()
            prompts.append(EvalPrompt(f"with-{k + 1}-{color}-{shape}", f"a {token} and a {color} {shape}",
                                      {"objects": [obj, partner], "relation": None}, "combination", (other,)))
    return prompts


def run_mcpl(folder: Path, sizes: Sizes) -> tuple[dict, dict]:
    timer = Timer(folder / "time.json")
    size = sizes.generation.resolution
    data = _exported(folder / "data", {"images": sizes.mcpl_images, "size": size},
                     lambda: _mcpl_data(folder / "data", sizes.mcpl_images, size))
    mcpl_data, ti_data = data / "mcpl", data / "images"
    records = []
    tokens = [t for t, *_ in MCPL_CONCEPTS]
    inits = [w for _, w, *_ in MCPL_CONCEPTS]
    variants = {"mcpl": [], "mcpl_no_promptcl": ["--promptcl_weight", "0"], "mcpl_no_attnmask": ["--attn_mask", "none"]}
    for train_seed in sizes.train_seeds:
        base = _common(mcpl_data, sizes.mcpl_steps, sizes.mcpl_lr, sizes, train_seed) + [
            "--placeholder_tokens", ",".join(tokens), "--initializer_tokens", ",".join(inits)]
        arms = [Arm(name, (train_once("mcpl", base + extra, _run_dir(folder, name, train_seed)),), "tokens")
                for name, extra in variants.items()]
        ti_runs = tuple(
            train_once("textual_inversion",
                       _common(ti_data, sizes.mcpl_steps, sizes.mcpl_lr, sizes, train_seed) + [
                           "--placeholder_token", token, "--initializer_token", init],
                       _run_dir(folder, f"textual_inversion-{k + 1}", train_seed))
            for k, (token, init) in enumerate(zip(tokens, inits)))
        arms.append(Arm("textual_inversion", ti_runs, "tokens"))
        timer.save()
        records += _score(arms, _mcpl_prompts(), sizes, folder, train_seed)
    entry = _compare(records, "success", "mcpl", ["textual_inversion", "mcpl_no_promptcl", "mcpl_no_attnmask"],
                       timer.save(), "oracle concept success (the token's object right, the other concept absent)")
    return entry, {"arms": _arm_rates(records)}


# ---------------------------------------------------------------- EvoGen
def _evogen_prompts(n: int) -> list[EvalPrompt]:
    wanted = ("two_object", "relation", "count", "held_out")
    items = [i for i in shapes_prompts("test", per_category=max(n, 1)) if i.category in wanted]
    picked = []
    for category in wanted:
        picked += [i for i in items if i.category == category][:n]
    return [EvalPrompt(i.id, i.prompt, i.metadata["spec"], i.category) for i in picked]


def _flat_copy(pairs: Path, out: Path) -> Path:
    """The pair folder as one stage (no curriculum): same pairs, images linked."""
    if (out / "pairs.jsonl").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rows = [dict(json.loads(line), stage=1) for line in (pairs / "pairs.jsonl").read_text().splitlines() if line.strip()]
    if not (out / "images").exists():
        os.symlink((pairs / "images").resolve(), out / "images", target_is_directory=True)
    write_jsonl_atomic(out / "pairs.jsonl", rows)
    return out


def run_evogen(folder: Path, sizes: Sizes) -> tuple[dict, dict]:
    timer = Timer(folder / "time.json")
    size = sizes.generation.resolution
    data = _exported(folder / "data", {"per_stage": sizes.evogen_pairs, "size": size},
                     lambda: export_evogen(folder / "data", per_stage=sizes.evogen_pairs, size=size),
                     derived=[folder / "data-flat"])
    flat = _flat_copy(data, folder / "data-flat")
    steps = max(3, sizes.evogen_steps - sizes.evogen_steps % 3)
    staged = ["--stage_steps", ",".join([str(steps // 3)] * 3)]
    contrastive = ["--objective", "contrastive", "--contrastive_loss_weight", str(sizes.evogen_contrastive_weight)]
    variants = {
        "evogen": (data, staged + contrastive),
        "lora_positives": (data, staged + ["--objective", "denoise"]),
        "evogen_margin": (data, staged + ["--objective", "margin"]),
        "evogen_no_curriculum": (flat, contrastive),
    }
    records = []
    for train_seed in sizes.train_seeds:
        arms = []
        for name, (pairs, extra) in variants.items():
            argv = _common(pairs, steps, sizes.evogen_lr, sizes, train_seed) + extra
            arms.append(Arm(name, (train_once("evogen", argv, _run_dir(folder, name, train_seed)),), "lora"))
        arms.append(Arm("untrained"))
        timer.save()
        records += _score(arms, _evogen_prompts(sizes.evogen_prompts), sizes, folder, train_seed)
    entry = _compare(records, "success", "evogen", ["lora_positives", "untrained", "evogen_margin",
                                                      "evogen_no_curriculum"], timer.save(),
                       "oracle success on test two_object, relation, count and held_out prompts")
    return entry, {"arms": _arm_rates(records, ("success",))}


# ---------------------------------------------------------------- DCO
def _dco_prompts(n: int) -> list[EvalPrompt]:
    word, color, shape = DCO_SUBJECT
    subject = ObjectSpec(shape, color)
    prompts = [EvalPrompt("alone", f"a {word} {shape}", {"objects": [subject.to_dict()], "relation": None}, "fidelity")]
    pool = [(c, s) for c, s in training_pairs() if s != shape and c != color]
    rng = np.random.default_rng([0, 0xDC1])
    for k in range(n):
        c, s = pool[int(rng.integers(len(pool)))]
        other = ObjectSpec(s, c)
        if k % 2 == 0:
            text, relation = f"a {word} {shape} and a {c} {s}", None
        else:
            relation = RELATIONS[(k // 2) % len(RELATIONS)]
            text = f"a {word} {shape} {RELATION_PHRASES[relation]} a {c} {s}"
        spec = CaptionSpec((subject, other), None if relation is None else (0, relation, 1))
        prompts.append(EvalPrompt(f"compose-{k:02d}", text, spec.to_dict(), "composition"))
    return prompts


def run_dco(folder: Path, sizes: Sizes) -> tuple[dict, dict]:
    timer = Timer(folder / "time.json")
    size = sizes.generation.resolution
    data = _exported(folder / "data", {"images": sizes.dco_images, "size": size},
                     lambda: export_dco(folder / "data", n=sizes.dco_images, size=size))
    prompts = _dco_prompts(sizes.dco_prompts)
    # the one fidelity prompt is drawn with as many seeds as there are composition images
    fidelity_seeds = tuple(range(1000, 1000 + sizes.dco_prompts * len(sizes.seeds)))
    records = []
    for train_seed in sizes.train_seeds:
        base = _common(data, sizes.dco_steps, sizes.dco_lr, sizes, train_seed)
        arms = [Arm("dco", (train_once("dco", base + ["--objective", "dco", "--dco_beta", str(sizes.dco_beta)],
                                       _run_dir(folder, "dco", train_seed)),), "lora"),
                Arm("dreambooth_lora", (train_once("dco", base + ["--objective", "denoise"],
                                                   _run_dir(folder, "dreambooth", train_seed)),), "lora")]
        timer.save()
        examples = folder / "examples" if train_seed == 0 else None
        for arm in arms:
            records += score_arm(arm, prompts[:1], generation_seeds(fidelity_seeds, train_seed),
                                 folder / "records.jsonl", sizes.generation, examples)
            records += score_arm(arm, prompts[1:], generation_seeds(sizes.seeds, train_seed),
                                 folder / "records.jsonl", sizes.generation, examples)
    composition = [r for r in records if r.get("category") == "composition"]
    entry = _compare(composition, "success", "dco", ["dreambooth_lora"], timer.save(),
                       "oracle composition success (the subject and the other object right, and the relation)")
    return entry, {"arms": _arm_rates(records, ("success",))}


def _compare(records: list[dict], metric: str, method: str, baselines: Sequence[str], minutes: float,
             label: str) -> dict:
    """:func:`comparison` over every training seed's pairs, and with several training seeds each
    one's paired difference (``by_training_seed``): how much of the effect a training run's luck is."""
    entry = comparison(records, metric, method, baselines, minutes, label)
    seeds = sorted({training_seed_of(r["seed"]) for r in records})
    if len(seeds) > 1:
        entry["by_training_seed"] = {
            baseline: {str(k): comparison([r for r in records if training_seed_of(r["seed"]) == k], metric, method,
                                          [baseline], 0.0)["paired"][baseline] for k in seeds}
            for baseline in baselines}
        # The pooled interval treats images as independent; training runs are not, so the
        # interval that counts training seeds as the samples is reported beside it.
        entry["across_training_seeds"] = {
            baseline: stat([d["delta"] for d in per_seed.values() if d["delta"] is not None])
            for baseline, per_seed in entry["by_training_seed"].items()}
    return entry


_RUNNERS = {"reversion": run_reversion, "mcpl": run_mcpl, "evogen": run_evogen, "dco": run_dco}


def run_experiment(name: str, output_dir, sizes: Sizes = FULL) -> tuple[dict, dict]:
    """Run (or resume) one experiment in ``output_dir/<name>``."""
    if name not in _RUNNERS:
        raise ValueError(f"Unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}.")
    folder = Path(output_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    return _RUNNERS[name](folder, sizes)
