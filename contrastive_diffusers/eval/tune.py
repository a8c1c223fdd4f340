"""``tune``: calibrate a guidance method's settings for a model, then confirm the choice.

:func:`run_tuning` searches the method's settings (:func:`~.tune_space.search_space`: step
size, last guided step as a fraction, refinement on/off, the method's own weights such as
CONFORM's temperature or EBAMA's intensity weight, and the map size where the model has
several) on the *train* split of a prompt set, then runs the chosen setting, the paper
defaults and plain generation on a disjoint *test* split, paired by prompt and seed.

- **Split**: ShapesWorld sets use the world's own splits (train prompts whose text is a test
  prompt are dropped); other sets are split by a hash of each prompt id
  (:func:`~.tune_space.split_by_hash`). Prompts the method cannot apply to (CONFORM: one
  object; SynGen: no modifier) are left out of both.
- **Metric**: ``oracle_success`` (the ShapesWorld oracle; the embedded model) or a CLIP metric
  of the benchmark (``min_object_similarity``, ``binding_accuracy``, ...).
- **Search**: candidates that guide alike in the model's loop at ``steps`` are searched once
  (:func:`~.tune_space.same_guidance`, :func:`guided_loop`). Successive halving (Jamieson and
  Talwalkar, 2016) with rate 2: every candidate draws the first few train prompts, the better
  half (by mean metric; ties keep the earlier candidate, the paper defaults first) goes on to
  twice the prompts, until one is left or the train split is used up. ``budget`` counts
  images: a third goes to the confirmation (3 arms x test prompts x seeds), the rest to the
  search (:func:`~.tune_space.plan_halving`).
- **Folders**: every image is made by the benchmark runner (:mod:`.tune_runs`) in bench
  folders under ``output_dir/search`` and ``output_dir/confirm``, so a re-run resumes;
  ``tune.json`` holds the settings, and a different tune configuration in an existing folder
  is refused. The chosen setting is written as ``<method>-tuned.json`` (a method config that
  :func:`~contrastive_diffusers.guidance.load_method` and ``--method FILE.json`` load), and
  ``report.md`` / ``report.html`` show the search and confirmation tables and the images.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from ..atomic_io import read_json, write_json_atomic, write_text_atomic
from ..guidance.methods import method_class
from ..models.names import EMBEDDED_MODEL, default_clip_model, is_embedded
from ..records import jsonable
from .prompt_sets import load_prompt_set
from .run_folder import RUN_FILES, other_command_in
from .tune_runs import Arm, arm_tables, run_arms
from .tune_space import Plan, build_candidate, candidate_label, plan_halving, search_space, split_by_hash

__all__ = ["TUNE_METRICS", "TuneConfig", "TuneResult", "run_tuning"]

TUNE_METRICS = ("oracle_success", "min_object_similarity", "binding_accuracy", "binding_text_score", "clip_score")
TUNE_FILE = RUN_FILES["tune"]
TEST_SHARE = 1 / 3  # of the budget, for the confirmation
MIN_TEST_PROMPTS = 2  # an interval needs two pairs
SHAPES_TUNE_CATEGORIES = ("two_object", "relation", "single")


@dataclass
class TuneConfig:
    """What to tune. ``prompt_set``: a set name, a file or a list of PromptItems (``None``:
    ``"shapes"`` for the embedded model, else ``"attend_and_excite"``); ``metric``: ``None``
    picks ``oracle_success`` for the embedded model, ``min_object_similarity`` otherwise;
    ``categories``: only prompts of these categories (ShapesWorld default: two-object,
    relation and single-object); ``confirm=False`` stops after the search; ``seed_batch``: the
    bench runs' :attr:`BenchConfig.seed_batch` (seeds of a prompt per pipeline call; a speed
    setting, not part of what the folder fixes)."""

    output_dir: Path
    method: str
    model: str = EMBEDDED_MODEL
    prompt_set: Any = None
    metric: str | None = None
    budget: int = 120
    seeds: Sequence[int] = (0,)
    steps: int = 50
    categories: Sequence[str] | None = None
    clip_model: Any = "auto"
    device: str = "auto"
    dtype: str | None = None
    confirm: bool = True
    progress: bool = True
    seed_batch: int = 1
    text_sequence: str | None = None  # SD3 / SD3.5: the text the loss reads, "clip" (None) or "t5"

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        self.method = method_class(self.method).name  # unknown names fail here
        self.seeds = list(dict.fromkeys(int(s) for s in self.seeds))
        if self.prompt_set is None:
            self.prompt_set = "shapes" if is_embedded(self.model) else "attend_and_excite"
        if self.metric is None:
            self.metric = "oracle_success" if is_embedded(self.model) else "min_object_similarity"
        if self.metric not in TUNE_METRICS:
            raise ValueError(f"Unknown tuning metric {self.metric!r}; choose one of {', '.join(TUNE_METRICS)}.")
        if self.metric == "oracle_success" and not is_embedded(self.model):
            raise ValueError(
                f"The metric oracle_success is the ShapesWorld oracle, which judges only the embedded models' "
                f"images; model {self.model!r} cannot have it. Choose --metric min_object_similarity, "
                "binding_accuracy, binding_text_score or clip_score (CLIP metrics)."
            )
        if self.metric != "oracle_success":
            if isinstance(self.clip_model, str) and self.clip_model == "auto":
                self.clip_model = default_clip_model(self.model)
            if self.clip_model is None:
                raise ValueError(f"The metric {self.metric} is a CLIP metric; pass a CLIP model (--clip-model).")
        if not self.seeds:
            raise ValueError("tune needs at least one seed.")
        if self.budget < 1 or self.steps < 1:
            raise ValueError(f"budget and steps must be positive, got {self.budget} and {self.steps}.")

    def key(self) -> dict:
        """What a tune folder fixes: every setting but the progress display and the seed batch."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)
                 if f.name not in ("output_dir", "progress", "seed_batch")}
        if not isinstance(shown["prompt_set"], (str, os.PathLike)):
            shown["prompt_set"] = [item.id for item in shown["prompt_set"]]
        if not isinstance(shown["clip_model"], (str, os.PathLike, type(None))):
            shown["clip_model"] = getattr(shown["clip_model"], "name", type(shown["clip_model"]).__name__)
        if shown["text_sequence"] in (None, "clip"):  # the default: folders made before the option resume
            del shown["text_sequence"]
        return jsonable(shown)

    def bench_settings(self, heatmaps: bool) -> dict:
        clip = None if self.metric == "oracle_success" else self.clip_model  # the oracle needs no CLIP
        return dict(model=self.model, steps=self.steps, device=self.device, dtype=self.dtype, clip_model=clip,
                    heatmaps=heatmaps, progress=self.progress, report_max_prompts=20, seed_batch=self.seed_batch,
                    text_sequence=self.text_sequence)


@dataclass
class TuneResult:
    output_dir: Path
    chosen: dict  # the chosen candidate's changes to the defaults ({} = the defaults)
    method_file: Path  # <method>-tuned.json
    attn_res: tuple[int, int] | None  # the chosen map size (None: the pipeline's default)
    search: list[dict]  # one row per candidate
    confirmation: dict | None  # arm_tables of the test split; None with confirm=False
    files: dict = field(default_factory=dict)


# ============================================================================ prompts


def _is_shapes(items) -> bool:
    return bool(items) and all((item.metadata or {}).get("world") == "shapes" for item in items)


def split_prompts(config: TuneConfig) -> tuple[list, list]:
    """Train and test prompts (before the method's applicability filter)."""
    source = config.prompt_set
    items = list(load_prompt_set(str(source)) if isinstance(source, (str, os.PathLike)) else source)
    if not items:
        raise ValueError(f"The prompt set {source!r} holds no prompts.")
    if _is_shapes(items):
        from ..shapes.prompts import shapes_prompts

        train, test = shapes_prompts("train"), shapes_prompts("test")
        if {i.prompt for i in items} not in ({i.prompt for i in train}, {i.prompt for i in test},
                                             {i.prompt for i in train + test}):
            warnings.warn(f"The prompt set {source!r} is part of ShapesWorld: tune searches on the world's whole train "
                          "split and confirms on its whole test split, not on these prompts.", stacklevel=2)
        _check_categories(config.categories, train + test, source)
        test_texts = {item.prompt for item in test}
        train = [item for item in train if item.prompt not in test_texts]
        categories = config.categories or SHAPES_TUNE_CATEGORIES
        test_categories = {*categories, "held_out"} if "two_object" in categories else set(categories)
        for split, pool in (("train", train), ("test", test)):
            if not any(i.category in categories for i in pool):  # e.g. single objects: none in train
                held = ", ".join(sorted({str(i.category) for i in pool}))
                raise ValueError(
                    f"ShapesWorld's {split} split has no prompt of the categories {', '.join(sorted(categories))} "
                    f"(it holds {held}); add one of those to --categories."
                )
        train = [i for i in train if i.category in categories]
        test = [i for i in test if i.category in test_categories]
    else:
        _check_categories(config.categories, items, source)
        if config.categories:
            items = [i for i in items if i.category in config.categories]
        train, test = split_by_hash(items)
    random.Random(0).shuffle(train)  # any prefix mixes the categories
    random.Random(1).shuffle(test)
    return train, test


def _check_categories(categories, items: list, source) -> None:
    known = sorted({str(item.category) for item in items if item.category is not None})  # none: not selectable
    unknown = [c for c in categories or () if c not in known]
    if unknown:
        has = f"its categories: {', '.join(known)}" if known else "its prompts have none: leave --categories out"
        raise ValueError(f"The prompt set {source!r} has no category {', '.join(map(repr, unknown))}; {has}.")


def _check_metric_inputs(config: TuneConfig, items: list) -> None:
    """``ValueError`` when the metric cannot score these prompts: the oracle reads each prompt's
    ShapesWorld spec, which other prompt sets lack (every image would go unscored)."""
    if config.metric != "oracle_success":
        return
    missing = [item for item in items if not (item.metadata or {}).get("spec")]
    if missing:
        raise ValueError(
            f"The metric oracle_success is the ShapesWorld oracle, which judges a prompt by its spec; "
            f"{len(missing)} prompt(s) of {config.prompt_set!r} have none (e.g. {missing[0].prompt!r}). Use the "
            "world's prompts (--prompts shapes, or a file with a \"spec\" per prompt), or a CLIP metric: "
            "--metric min_object_similarity, binding_accuracy, binding_text_score or clip_score."
        )


def applicable(pipe, method, items: list, split: str, text_sequence: str | None = None) -> list:
    """The items whose token groups resolve (on SD3, in ``text_sequence``) and suit ``method``;
    ``ValueError`` naming the problem when none do (e.g. CONFORM on a set without two-object prompts)."""
    from ..runs import inapplicable_methods, resolve_token_groups

    kept, reasons = [], []
    for item in items:
        spec = item.token_groups or "auto"
        try:
            groups = resolve_token_groups(pipe, item.prompt, spec, text_sequence)
        except ValueError as err:
            reasons.append(str(err))
            continue
        problems = inapplicable_methods(groups, item.prompt, {method.name: method}, spec)
        if problems:
            reasons.append(problems[method.name])
        else:
            kept.append(item)
    if not kept:
        why = reasons[0] if reasons else "the split is empty"
        raise ValueError(f"No prompt of the {split} split suits {method.name} ({len(items)} tried); for example: {why}")
    return kept


def map_sizes(pipe, config: TuneConfig) -> list[tuple[int, int]]:
    """The model's cross-attention map sizes other than its default, at the default image size;
    none for an MMDiT model, whose maps all have the patch grid's size (its blocks are chosen
    by ``benchmarks/mmdit_block_maps.py``, not searched)."""
    from ..guidance.attention import default_attn_res, layer_resolutions
    from ..runs import generation_options

    if getattr(pipe, "unet", None) is None:
        return []
    options = generation_options(pipe, steps=config.steps)
    scale = getattr(pipe, "vae_scale_factor", 8)
    latent = (options["height"] // scale, options["width"] // scale)
    default = tuple(default_attn_res(pipe.unet, latent))
    return sorted({tuple(s) for s in layer_resolutions(pipe.unet, latent).values()} - {default})


def guided_loop(pipe, steps: int) -> tuple[int, bool]:
    """``(iterations, paper_fractions)`` of the model's runs of ``steps`` steps, as its guider
    sees them: the length of the scheduler's timesteps (PNDM, SD 1.x's default, runs one more
    than asked from two steps on) and whether int step indices are read as fractions of 50
    steps (the MMDiT guider's default); :func:`~.tune_space.same_guidance` needs both to tell
    twins apart."""
    import inspect

    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    # Flux's dynamic shifting needs a shift; the number of timesteps does not depend on it
    # (1.0: finite under the exponential and the linear time shift alike)
    extra = {"mu": 1.0} if "mu" in inspect.signature(scheduler.set_timesteps).parameters and \
        scheduler.config.get("use_dynamic_shifting") else {}
    scheduler.set_timesteps(steps, **extra)
    return len(scheduler.timesteps), getattr(pipe, "unet", None) is None


# ============================================================================ the search


def _budgets(config: TuneConfig, test_prompts: int) -> tuple[int, int]:
    """(search images, test prompts used) from the budget."""
    if not config.confirm:
        return config.budget, 0
    per_prompt = 3 * len(config.seeds)  # plain, defaults, tuned
    if test_prompts < MIN_TEST_PROMPTS:  # no budget helps: the prompt set has too few for the method
        raise ValueError(
            f"Only {test_prompts} test prompt(s) of this prompt set suit {config.method} (the confirmation needs "
            f"{MIN_TEST_PROMPTS}): choose a larger prompt set or other --categories, or --no-confirm."
        )
    n_test = min(test_prompts, math.floor(config.budget * TEST_SHARE / per_prompt))
    if n_test < MIN_TEST_PROMPTS:
        need = math.ceil(MIN_TEST_PROMPTS * per_prompt / TEST_SHARE)
        raise ValueError(
            f"A budget of {config.budget} images is too small for a test split: the confirmation runs plain, "
            f"the defaults and the tuned setting on at least {MIN_TEST_PROMPTS} test prompts x "
            f"{len(config.seeds)} seed(s) from a third of the budget; use --budget {need} or more."
        )
    return config.budget - n_test * per_prompt, n_test


def _write_candidates(config: TuneConfig, candidates: list[dict]) -> list[Arm]:
    folder = config.output_dir / "candidates"
    folder.mkdir(parents=True, exist_ok=True)
    arms = []
    for index, candidate in enumerate(candidates):
        method, attn_res = build_candidate(config.method, candidate)
        path = folder / f"{config.method}-c{index:02d}.json"
        write_text_atomic(path, method.to_json_string())
        arms.append(Arm(path.stem, str(path), attn_res))
    return arms


def rung_scores(records: list[dict], names: Sequence[str], metric: str) -> dict[str, dict]:
    """Each candidate's ``{mean, images, failed}`` over one rung's images. A failed image (no
    image, a NaN one, guidance that broke) counts as 0, the floor of the oracle's, the binding
    metrics' and the CLIP score's scale (or as the rung's lowest score when that is lower: a
    cosine can be negative): left out, a setting that fails on the hard prompts would be
    ranked on the easy ones.
    Not-applicable and unscored images are left out (the same for every candidate of a method)."""
    from .stats import metric_value

    scored = {name: [] for name in names}
    failed = dict.fromkeys(names, 0)
    for r in records:
        if r["method"] not in scored:
            continue
        if r.get("status") == "failed":
            failed[r["method"]] += 1
        elif (value := metric_value(r, metric)) is not None:
            scored[r["method"]].append(value)
    everything = [v for values in scored.values() for v in values]
    worst = min([*everything, 0.0])
    out = {}
    for name in names:
        values = scored[name] + [worst] * failed[name]
        out[name] = {"mean": sum(values) / len(values) if values else None, "images": len(values),
                     "failed": failed[name]}
    return out


def successive_halving(config: TuneConfig, plan: Plan, candidates: list[dict], train: list) -> tuple[int, list[dict]]:
    """Run the plan; returns the winner's index and one table row per candidate."""
    arms = _write_candidates(config, candidates[: plan.candidates])
    rows = [{"candidate": i, "name": a.name, "settings": candidates[i], "label": candidate_label(candidates[i]),
             "rung": 0, "prompts": 0, "images": 0, "failed": 0, "mean": None, "rung_means": [], "status": "running"}
            for i, a in enumerate(arms)]
    alive = list(range(len(arms)))
    for rung, n_prompts in enumerate(plan.prompts):
        records = run_arms(config.output_dir / "search", [arms[i] for i in alive], train[:n_prompts], config.seeds,
                           config.bench_settings(heatmaps=False))
        scores = rung_scores(records, [arms[i].name for i in alive], config.metric)
        for i in alive:
            rows[i].update(rung=rung, prompts=n_prompts, **scores[arms[i].name])
            # a rung's means compare the candidates it ran (the same prompts): the last ones do not
            rows[i]["rung_means"] = [*rows[i]["rung_means"], rows[i]["mean"]]
        ranked = sorted(alive, key=lambda i: (-(rows[i]["mean"] if rows[i]["mean"] is not None else -math.inf), i))
        keep = ranked[: plan.survivors(rung + 1)] if rung + 1 < len(plan.prompts) else ranked[:1]
        for i in alive:
            if i not in keep:
                rows[i]["status"] = f"stopped after rung {rung}"
        alive = keep
    rows[alive[0]]["status"] = "chosen"
    return alive[0], rows


# ============================================================================ the run


def _check_folder(config: TuneConfig) -> dict:
    path = config.output_dir / TUNE_FILE
    if not path.exists():
        problem = other_command_in(config.output_dir, "tune")
        if problem:
            raise ValueError(problem)
        return {}
    try:
        state = read_json(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read ({err}); choose another --output-dir, or delete the folder.") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise ValueError(f"{path} is not a tune run's record; choose another --output-dir.")
    if state.get("config") != config.key() and not any(config.output_dir.rglob("*.png")):
        # a run that stopped before its first image (a CLIP model that did not load, ...): nothing to
        # keep, and its candidate files and bench ledgers would refuse the new settings
        for stale in (config.output_dir / "candidates").glob("*.json"):
            stale.unlink()
        for bench_folder in ("search", "confirm"):
            shutil.rmtree(config.output_dir / bench_folder, ignore_errors=True)
        return {}
    if state.get("config") != config.key():
        changed = sorted(k for k in config.key() if state.get("config", {}).get(k) != config.key()[k])
        raise ValueError(
            f"{config.output_dir} holds a tune run with other settings ({', '.join(changed)} differ); resume with "
            "the same settings, or choose another --output-dir."
        )
    return state


def _settings(method_file: dict) -> dict:
    """A method file's settings without diffusers' bookkeeping (``_diffusers_version``, ...)."""
    return {k: v for k, v in method_file.items() if not k.startswith("_")}


def _check_candidates(config: TuneConfig, state: dict, searched: list) -> None:
    """Refuse a folder whose search ran over other candidates: its images are filed under the
    candidates' places in the list (``<method>-cNN``), so another list would mean other
    settings under the same names. The list is read from tune.json (``plan.settings``, or the
    search table of a finished run of an earlier version), else from the candidate files a
    search killed before its table wrote (those hold the method, not the map size: a list that
    differs only in map sizes there is not seen). Folders of versions before 2026-12-03, whose
    list could hold SynGen's or A&E's paper defaults twice, are the case met."""
    before = (state.get("plan") or {}).get("settings")
    if before is None and state.get("search"):
        before = [row.get("settings") for row in state["search"]]
    if before is None:
        for index, candidate in enumerate(searched):
            path = config.output_dir / "candidates" / f"{config.method}-c{index:02d}.json"
            made = json.loads(build_candidate(config.method, candidate)[0].to_json_string())
            if path.exists() and _settings(read_json(path)) != _settings(made):
                before = [*searched[:index], f"another method ({path.name})"]
                break
    if before is not None and before != searched:
        changed = next(i for i, (a, b) in enumerate(zip([*before, None], [*searched, None])) if a != b)

        def show(values):
            return values[changed] if changed < len(values) else "no candidate"

        raise ValueError(
            f"{config.output_dir} holds a search over other candidates (candidate {changed}: {show(before)} there, "
            f"{show(searched)} now; e.g. a search by a version before 2026-12-03, which could hold the paper "
            "defaults twice, or by other tune settings); choose another --output-dir."
        )


def run_tuning(config: TuneConfig) -> TuneResult:
    """Search, choose, confirm and report; see the module docstring. Bad input (unknown metric
    for the model, a budget too small for a test split, no prompt the method suits) raises
    ``ValueError`` before any image is made."""
    from ..guidance.methods import get_method
    from ..models.loading import load_pipeline, resolve_device, resolve_dtype
    from ..runs import checked_text_sequence
    from .tune_report import write_tune_report

    state = _check_folder(config)
    train, test = split_prompts(config)
    if not config.confirm:
        test = []  # the search alone: the test split is never drawn
    _check_metric_inputs(config, train + test)
    device = resolve_device(config.device)
    pipe = load_pipeline(config.model, device, resolve_dtype(config.dtype, device)[0], quiet=True,
                         loading_bars=config.progress)
    if config.text_sequence is not None:
        checked_text_sequence(pipe, config.text_sequence)  # an SD3 pipeline, with T5 for "t5"
    defaults = get_method(config.method)
    train = applicable(pipe, defaults, train, "train", config.text_sequence)
    test = applicable(pipe, defaults, test, "test", config.text_sequence) if config.confirm else []
    loop_steps, paper_fractions = guided_loop(pipe, config.steps)
    candidates = search_space(config.method, map_sizes(pipe, config), loop_steps=loop_steps,
                              paper_fractions=paper_fractions)
    del pipe
    if len(candidates) < 2:
        raise ValueError(
            f"In {config.steps} denoising steps every setting of {config.method} that tune searches guides alike (its "
            "steps are fractions of the trajectory: none is left to guide, or the same ones); raise --steps."
        )
    search_images, n_test = _budgets(config, len(test))
    plan = plan_halving(search_images, len(candidates), len(train), len(config.seeds))
    # tune.json holds the candidates as JSON (lists where candidates have tuples)
    searched = [jsonable(c) for c in candidates[: plan.candidates]]
    _check_candidates(config, state, searched)

    previous = state
    # The earlier choice stays in the file while the search runs again: a resumed run killed
    # in its search must still find it (its method file and confirmation were made with it).
    state = {"config": config.key(), "status": "searching",
             **{k: v for k, v in state.items() if k in ("history", "chosen")}}
    state["plan"] = {"candidates": plan.candidates, "prompts_per_rung": list(plan.prompts), "images": plan.images,
                     "drawn": plan.drawn, "test_prompts": n_test, "rule": "successive halving, rate 2",
                     "settings": searched}
    config.output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config.output_dir / TUNE_FILE, state)

    best, rows = successive_halving(config, plan, candidates, train)
    earlier = previous.get("chosen")
    if earlier is not None and earlier != searched[best] and earlier in searched:
        # A resumed search redraws the images that failed before, which can reorder the
        # candidates; the earlier choice is the one its method file and confirmation hold.
        warnings.warn(f"The resumed search ranks {candidate_label(candidates[best])!r} first, the first run chose "
                      f"{candidate_label(earlier)!r} (images that had failed were drawn again); the earlier choice "
                      "is kept, as its method file (and any confirmation) was made with it. A new "
                      "--output-dir tunes afresh.", stacklevel=2)
        rows[best]["status"] = "ranked first on the resumed search; the earlier choice kept"
        best = searched.index(earlier)
        rows[best]["status"] = "chosen"
    method, attn_res = build_candidate(config.method, candidates[best])
    method_file = config.output_dir / f"{config.method}-tuned.json"
    write_text_atomic(method_file, method.to_json_string())
    state.update(search=rows, chosen=candidates[best], attn_res=list(attn_res) if attn_res else None,
                 method_file=method_file.name, status="confirming" if config.confirm else "finished")
    write_json_atomic(config.output_dir / TUNE_FILE, state)

    confirmation, records = None, []
    if config.confirm:
        # When the defaults won, the tuned arm is the defaults arm (its images, not a second draw).
        tuned = Arm(method_file.stem, str(method_file), attn_res, same_as=None if candidates[best] else config.method)
        arms = [Arm("none", "none"), Arm(config.method, config.method), tuned]
        records = run_arms(config.output_dir / "confirm", arms, test[:n_test], config.seeds,
                           config.bench_settings(heatmaps=True))
        confirmation = arm_tables(records, config.metric, [a.name for a in arms], overall=True,
                                  pairs=[(method_file.stem, config.method)])
        state.update(confirmation=confirmation, status="finished")
    files = write_tune_report(config, state, records)
    state["files"] = {k: Path(v).name for k, v in files.items()}
    write_json_atomic(config.output_dir / TUNE_FILE, state)
    return TuneResult(config.output_dir, candidates[best], method_file, attn_res, rows, confirmation, files)
