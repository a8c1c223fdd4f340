"""A benchmark run's set-up: everything that can fail on the user's input (prompt set, model,
CLIP model, captioner, token groups, the folder's earlier settings), checked before anything
is written."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..distributed import is_main_launched_process
from ..models.loading import load_pipeline, resolve_device, resolve_dtype
from ..models.names import EMBEDDED_CLIP, TINY_CLIP
from ..models.schedulers import use_scheduler
from ..prompts import PromptItem, contrast_set
from ..runs import (
    ImageRun,
    build_methods,
    check_map_settings,
    generation_options,
    inapplicable_methods,
    resolve_token_groups,
)
from ..shapes.spec import CaptionSpec
from .bench_config import BenchConfig
from .prompt_sets import load_prompt_set
from .run_folder import BenchInputError, Ledger
from .summary import unique

# Processes wait for each other at the end of generation; a long share must not time out.
_PROCESS_GROUP_TIMEOUT = timedelta(hours=24)


@dataclass
class BenchItem:
    """A prompt of the run with what its images need."""

    prompt: PromptItem
    spec: Any  # token groups as the pipelines take them: word lists or "auto"
    groups: list | None  # the TokenGroups, resolved once (the pipelines take them); None when they did not resolve
    words: list[list[str]] | None  # their words
    errors: dict  # method -> why its token groups failed to resolve (a failure)
    not_applicable: dict  # method -> why it cannot apply to this prompt (e.g. one object for CONFORM)
    contrast: dict | None  # perturbation -> caption
    positions: list | None = None  # each group's word positions, as guidance reads them (a resumed image must match)


@dataclass
class BenchSetup:
    state: Any  # accelerate's PartialState: this process's index and the number of processes
    items: list[BenchItem]
    methods: dict  # name -> GuidanceMethod, or None for "none"
    images: ImageRun | None  # how images are made (None once generation is done, to free the pipeline)
    scorer: Any
    captioner: Any
    scorer_key: dict
    ledger: Ledger
    run_info: dict
    baseline: str | None = None  # the reports' baseline, as the folder names it


def load_items(config: BenchConfig) -> list[PromptItem]:
    source = config.prompt_set
    items = list(load_prompt_set(str(source)) if isinstance(source, (str, os.PathLike)) else source)
    if not items:
        raise BenchInputError(f"The prompt set {source!r} holds no prompts.")
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise BenchInputError(f"Prompt ids must be unique in a run; repeated: {', '.join(duplicates[:5])}.")
    for item in items:  # checked now: a bad one would fail the oracle only after every image is drawn
        spec = item.metadata.get("spec")
        if spec is not None:
            try:
                CaptionSpec.from_dict(spec)
            except (AttributeError, KeyError, TypeError, ValueError) as err:
                raise BenchInputError(
                    f"Prompt {item.id}: its \"spec\" field is not a ShapesWorld caption spec ({type(err).__name__}: "
                    f"{err}). The oracle reads {{\"objects\": [{{\"shape\": \"circle\", \"color\": \"red\"}}], "
                    "\"relation\": null}, as the shapes prompt sets write it; fix it or rename the field."
                ) from None
    if config.num_prompts and config.num_prompts > len(items) and is_main_launched_process():
        print(f"warning: the prompt set has {len(items)} prompts; --num-prompts {config.num_prompts} uses all of them",
              file=sys.stderr)
    return items[: config.num_prompts] if config.num_prompts else items


def prepare_items(pipe, items: list[PromptItem], methods: dict, want_contrast: bool,
                  text_sequence: str | None = None) -> list[BenchItem]:
    """Resolve each prompt's token groups once; a prompt whose groups fail is recorded per method, not dropped."""
    prepared = []
    for item in items:
        spec = item.token_groups or "auto"
        errors, not_applicable, groups, words, positions = {}, {}, None, None, None
        try:
            groups = resolve_token_groups(pipe, item.prompt, spec, text_sequence)
        except ValueError as err:
            errors = {name: str(err) for name, method in methods.items() if method is not None}
        else:
            words = [list(g.words) for g in groups]
            positions = [[list(p) for p in g.word_positions] for g in groups]
            not_applicable = inapplicable_methods(groups, item.prompt, methods, spec)
        contrast = contrast_captions_for(item, words) if want_contrast else None
        prepared.append(BenchItem(item, spec, groups, words, errors, not_applicable, contrast, positions))
    return prepared


def contrast_captions_for(item: PromptItem, words) -> dict | None:
    """``{perturbation: caption}`` of a prompt with these token group words, or ``None``."""
    if not words:
        return None
    try:
        # Only the captions are kept, so a short id: "<id>~<perturbation>" could pass the id length limit.
        variants = contrast_set(PromptItem("contrast", item.prompt, item.category, words))
    except ValueError:  # a group word not found as a whole word: no contrast captions for it
        return None
    return {v.metadata["perturbation"]: v.prompt for v in variants} or None


def _name_of(model) -> str | None:
    """How records name a scorer or captioner: the id or folder, or the loaded object's name."""
    if model is None:
        return None
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return getattr(model, "name", None) or type(model).__name__


def load_scorer(clip_model, device: str):
    from .clip_score import ClipScorer

    if clip_model is None or not isinstance(clip_model, (str, os.PathLike)):
        return clip_model
    if clip_model == TINY_CLIP:
        from ..models.tiny import tiny_clip

        return ClipScorer(*tiny_clip(), device=device, name=TINY_CLIP)
    if clip_model == EMBEDDED_CLIP:
        from ..models.embedded import embedded_clip_dir

        try:
            folder = embedded_clip_dir()
        except FileNotFoundError as err:
            raise OSError(str(err)) from None
        # the name, not the install path, goes into the records
        return ClipScorer.from_pretrained(folder, device=device, name=EMBEDDED_CLIP)
    try:
        return ClipScorer.from_pretrained(clip_model, device=device)
    except OSError as err:
        raise OSError(f"{err} Without the hub: tiny-clip (random weights) runs the CLIP metrics for the machinery "
                      "only, and bench --clip-model none skips them.") from None


def load_captioner(captioner, device: str):
    if captioner is None or not isinstance(captioner, (str, os.PathLike)):
        return captioner
    from .captioner import Captioner

    return Captioner.from_pretrained(captioner, device=device)


#: Version of how texts are embedded for the CLIP metrics: 2 = the A&E protocol's template
#: clean-up and its " and "-first split; records scored before it are re-scored.
CLIP_TEXT_PROTOCOL = 2


def scorer_key(clip_model, captioner) -> dict:
    """What a record's metrics depend on besides the image: re-score when it changes."""
    if clip_model is None:
        return {"clip": None, "captioner": None}
    return {"clip": _name_of(clip_model), "captioner": _name_of(captioner), "text_protocol": CLIP_TEXT_PROTOCOL}


def process_state():
    """accelerate's view of the processes a launcher started (one when run directly)."""
    from accelerate import PartialState

    from ..distributed import needs_cpu_process_group

    return PartialState(cpu=needs_cpu_process_group(), timeout=_PROCESS_GROUP_TIMEOUT)


def device_for(config_device: str, state) -> str:
    if config_device == "auto" and state.num_processes > 1:
        return str(state.device)  # accelerate gave each process its own GPU (or the CPU)
    return resolve_device(config_device)


def check_baseline(baseline: str | None, methods) -> str | None:
    """The reports' baseline as the folder names it: one of its methods (after this call),
    matched exactly, else in any case, else through ``--method``'s aliases (``ae``)."""
    from ..guidance.methods import ALIASES

    if baseline is None:
        return None
    methods = unique(methods)
    by_case = {name.lower(): name for name in reversed(methods)}
    for candidate in (baseline, by_case.get(baseline.lower()), ALIASES.get(baseline.lower())):
        if candidate in methods:
            return candidate
    raise BenchInputError(f"--baseline {baseline!r} is not a method of this run; the folder's methods (with "
                          f"this call's) are: {', '.join(methods)}.")


def setup_run(config: BenchConfig) -> BenchSetup:
    """Everything that can fail on the user's input, before anything is written."""
    state = process_state()
    ledger = Ledger.load(config.output_dir)  # first: a folder it refuses is refused before the model loads
    baseline = check_baseline(config.baseline, [*ledger.data["methods"], *config.methods])
    try:
        items = load_items(config)
        methods = build_methods(config.methods)
        device = device_for(config.device, state)
        dtype, dtype_name = resolve_dtype(config.dtype, device)
        pipe = load_pipeline(config.model, device, dtype, quiet=True, loading_bars=config.progress)
        scorer = load_scorer(config.clip_model, device)
        captioner = load_captioner(config.captioner, device) if scorer is not None else None
    except OSError as err:  # missing prompt file, CLIP or captioner folder
        raise BenchInputError(str(err)) from None
    try:
        use_scheduler(pipe, config.scheduler, guided=any(method is not None for method in methods.values()))
    except ValueError as err:  # not a scheduler class, not one for this model, or one guidance cannot follow
        raise BenchInputError(str(err)) from None
    try:
        options = generation_options(
            pipe, config.height, config.width, config.steps, config.guidance_scale, config.negative_prompt,
            config.true_cfg_scale, config.text_sequence,
        )
        check_map_settings(pipe, options, config.attn_res, methods)
    except ValueError as err:  # a setting the model would ignore or refuse on the first guided image
        raise BenchInputError(str(err)) from None
    fingerprint = {
        "model": config.model,
        "pipeline": type(pipe).__name__,
        "dtype": dtype_name,
        "generation": {**options, "attn_res": list(config.attn_res) if config.attn_res else None},
    }
    if config.scheduler is not None:  # only when asked: folders made before the option still resume
        fingerprint["scheduler"] = type(pipe.scheduler).__name__
    # the report's binding columns compare every method: all scored with contrast captions or none
    fingerprint["contrast_captions"] = bool(config.contrast)
    ledger.merge(
        fingerprint,
        {name: (m.config() if m is not None else None) for name, m in methods.items()},
        {item.id: item.prompt for item in items},
        {item.id: item.category for item in items},
        config.seeds,
    )
    prepared = prepare_items(pipe, items, methods, config.contrast, options.get("text_sequence"))
    key = scorer_key(config.clip_model, config.captioner)
    run_info = {
        "model": config.model,
        "prompt_set": str(config.prompt_set) if isinstance(config.prompt_set, (str, os.PathLike)) else "(items)",
        "clip_model": key["clip"],
        "captioner": key["captioner"],
        "device": device,
    }
    images = ImageRun(pipe, methods, options, config.attn_res, config.heatmaps, config.output_dir)
    return BenchSetup(state, prepared, methods, images, scorer, captioner, key, ledger, run_info, baseline)
