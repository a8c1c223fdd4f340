"""One image of a run, made the same way by the ``generate`` command and the benchmark runner.

A run has methods (:func:`build_methods`), generation options with the pipeline's defaults
resolved (:func:`generation_options`) and, per prompt, token groups resolved once up front
(:func:`resolve_token_groups`) and checked against every guided method
(:func:`inapplicable_methods`), so that bad groups are known before any image is made.
:func:`make_image` then draws one seeded image, writes it and its attention heatmap, and
says what guidance did (:func:`guidance_summary`); :func:`make_images` draws several seeds of
one prompt in one pipeline call, each image as :func:`make_image` would draw it. Callers decide what a failure means:
``generate`` stops, the benchmark records it and goes on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .atomic_io import atomic_path, save_image_atomic
from .models.loading import default_size, is_flux, is_sdxl, map_grid, size_multiple


def is_method_file(entry) -> bool:
    """Whether a ``--method`` entry names a method config file rather than a built-in method."""
    return str(entry).lower().endswith(".json")


def method_file_name(path) -> str:
    """The name a method config file's method has in run folders: the file's stem
    (``outputs/conform-tuned.json`` -> ``conform-tuned``). Built-in names are refused, so
    that a folder's ``conform`` always means the paper defaults."""
    from .guidance.methods import ALIASES, METHODS

    name = Path(path).stem
    reserved = {"none", *METHODS, *ALIASES}
    if name.lower() in reserved or not name or name.startswith("."):
        raise ValueError(
            f"The method config file {path} would be named {name!r} in the run folder, which is a built-in "
            f"method name ({', '.join(sorted(reserved))}); rename the file, e.g. to {name or 'method'}-custom.json."
        )
    return name


def load_method_file(path):
    """``(name, method)`` of a method config file (see :func:`method_file_name`); ``ValueError``
    naming the problem when the file is missing or not a method config."""
    from .guidance.methods import load_method

    name = method_file_name(path)
    if not Path(path).is_file():
        raise ValueError(f"No method config file {path}; pass a JSON file written by `tune` or method.save_config.")
    return name, load_method(path)


def build_methods(entries: Sequence[str]) -> dict:
    """``{name: GuidanceMethod or None}`` in the given order, duplicates dropped. An entry is
    ``"none"`` (plain generation), a built-in method name, or a method config file
    (``*.json``, as ``tune`` writes and :func:`~contrastive_diffusers.guidance.load_method`
    reads), named by its stem (:func:`method_file_name`). Two entries with one name raise
    ``ValueError``."""
    from .guidance.methods import get_method

    methods: dict = {}
    for entry in dict.fromkeys(str(e) for e in entries):
        if is_method_file(entry):
            name, method = load_method_file(entry)
        else:
            name, method = entry, (None if entry == "none" else get_method(entry))
        if name in methods:
            raise ValueError(f"Two methods are named {name!r} ({entry} and an earlier one); rename a config file.")
        methods[name] = method
    return methods


def generation_options(
    pipe,
    height: int | None = None,
    width: int | None = None,
    steps: int = 50,
    guidance_scale: float | None = None,
    negative_prompt: str | None = None,
    true_cfg_scale: float | None = None,
    text_sequence: str | None = None,
) -> dict:
    """Pipeline arguments shared by every image of a run, with the model's defaults resolved.

    ``true_cfg_scale`` is FLUX.1's true classifier-free guidance, which diffusers runs only
    with a negative prompt (two transformer passes per step). ``ValueError`` for a setting the
    pipeline would ignore or change: a negative prompt on Flux without ``true_cfg_scale > 1``
    or elsewhere with ``guidance_scale <= 1`` (classifier-free guidance off), true CFG without
    a negative prompt or on another model, a guidance scale on a Flux model without guidance
    embedding (schnell), a height or width that is not a multiple of :func:`size_multiple`,
    a ``text_sequence`` (the part of SD3's joint text the loss reads: ``"clip"`` or ``"t5"``) on
    another model or on SD3 loaded without T5."""
    flux = is_flux(pipe)
    true_cfg = true_cfg_scale is not None
    if true_cfg and not true_cfg_scale > 1:  # also NaN
        raise ValueError(f"true_cfg_scale must be above 1 (got {true_cfg_scale}); leave it out to sample without true CFG.")
    if true_cfg and not flux:
        raise ValueError(
            f"true_cfg_scale is FLUX.1's true classifier-free guidance; {type(pipe).__name__} runs classifier-free "
            "guidance with guidance_scale already: drop the true CFG scale."
        )
    if flux and negative_prompt and not true_cfg:
        raise ValueError(
            "FLUX.1 is guidance-distilled: diffusers reads a negative prompt only with true classifier-free "
            "guidance: add a true CFG scale above 1 (--true-cfg-scale 4, two transformer passes per step) or "
            "drop the negative prompt."
        )
    if true_cfg and not negative_prompt:
        raise ValueError(
            f"true_cfg_scale {true_cfg_scale} needs a negative prompt (diffusers runs true CFG only with one): "
            "add one (--negative-prompt TEXT) or drop the true CFG scale."
        )
    if flux and guidance_scale and not pipe.transformer.config.guidance_embeds:  # 0: the model card's own value
        raise ValueError(
            "This FLUX.1 model (schnell-like: its transformer has no guidance embedding) takes no guidance scale; "
            "drop it (--guidance-scale)."
        )
    default_h, default_w = default_size(pipe)
    height, width = height or default_h, width or default_w
    multiple = size_multiple(pipe)
    if height % multiple or width % multiple:
        raise ValueError(
            f"{type(pipe).__name__} draws images whose height and width are multiples of {multiple}; got "
            f"{height}x{width}: use e.g. {max(multiple, height // multiple * multiple)}x"
            f"{max(multiple, width // multiple * multiple)}."
        )
    scale = guidance_scale if guidance_scale is not None else default_guidance_scale(pipe)
    if negative_prompt and not flux and not scale > 1:
        raise ValueError(
            f"guidance_scale {scale} turns classifier-free guidance off, and with it the negative prompt: raise "
            "the guidance scale above 1 (--guidance-scale) or drop the negative prompt."
        )
    options = {
        "height": height,
        "width": width,
        "num_inference_steps": steps,
        "guidance_scale": scale,
        "negative_prompt": negative_prompt,
    }
    if true_cfg:  # only when on: the settings of runs made without it stay as they were (resume)
        options["true_cfg_scale"] = float(true_cfg_scale)
    if text_sequence is not None and checked_text_sequence(pipe, text_sequence) != "clip":
        options["text_sequence"] = text_sequence  # likewise only when not the default, CLIP
    return options


def checked_text_sequence(pipe, text_sequence: str) -> str:
    """``text_sequence`` when ``pipe`` can read it (SD3 / SD3.5: ``"clip"``, or ``"t5"`` with
    its T5 encoder loaded), else ``ValueError`` naming the problem."""
    if text_sequence not in ("clip", "t5"):
        raise ValueError(f"text_sequence must be 'clip' or 't5', got {text_sequence!r}.")
    if not hasattr(pipe, "tokenizer_3"):
        raise ValueError(
            f"text_sequence (--text-sequence) chooses the part of SD3's joint text the loss reads; "
            f"{type(pipe).__name__} has no such choice (Flux reads T5, the UNet models CLIP): drop it."
        )
    if text_sequence == "t5" and getattr(pipe, "text_encoder_3", None) is None:
        raise ValueError("text_sequence 't5' needs the T5 text encoder, and this SD3 pipeline was loaded without it.")
    return text_sequence


def default_guidance_scale(pipe) -> float:
    """The CFG scale of a run that sets none: the stock pipeline's default for SDXL (5.0) and
    the MMDiT pipelines (SD3 7.0, Flux 3.5, its distilled guidance), 7.5 for SD 1.x / 2.x."""
    import inspect

    if is_sdxl(pipe) or hasattr(pipe, "transformer"):
        return float(inspect.signature(pipe.__call__).parameters["guidance_scale"].default)
    return 7.5


def check_map_settings(pipe, options: dict, attn_res, methods: dict) -> None:
    """``ValueError`` before any image for map settings the guided calls would refuse: an
    ``attn_res`` with nothing guided or on an MMDiT model (it picks UNet layers), one no
    cross-attention layer has at this image size, or maps too small for a method's smoothing."""
    guided = [m for m in methods.values() if m is not None]
    if attn_res is not None and not guided:
        raise ValueError("attn_res (--attn-res) picks the maps guidance reads, and no method here guides; drop it.")
    if options.get("text_sequence") is not None and not guided:
        raise ValueError("text_sequence (--text-sequence) picks the text guidance reads, and no method here guides; "
                         "drop it.")
    if not guided:
        return
    grid = map_grid(pipe, options["height"], options["width"])
    if hasattr(pipe, "transformer"):
        if attn_res is not None:
            raise ValueError(
                f"attn_res selects UNet cross-attention layers; {type(pipe).__name__} has joint-attention blocks "
                "instead (its `blocks` argument). Drop attn_res (--attn-res) for this model."
            )
        map_hw = grid  # one map cell per patch token
    else:
        from .guidance.attention import default_attn_res, select_layers

        map_hw = tuple(int(s) for s in attn_res) if attn_res is not None else default_attn_res(pipe.unet, grid)
        select_layers(pipe.unet, grid, map_hw)
    for method in guided:
        method.check_map_size(map_hw)


# ============================================================================ token groups


def resolve_token_groups(pipe, prompt: str, spec, text_sequence: str | None = None) -> list:
    """The prompt's :class:`~contrastive_diffusers.guidance.tokens.TokenGroup` s for a group
    spec (``"auto"``, words or positions), on the pipeline's own tokenizer (SD3: that of
    ``text_sequence``, CLIP by default); ``ValueError`` naming the problem when they do not resolve."""
    from .guidance.tokens import resolve_groups

    if hasattr(pipe, "token_lookup"):  # MMDiT: the text sequence the loss reads (Flux: T5)
        lookup = pipe.token_lookup(text_sequence=text_sequence) if text_sequence else pipe.token_lookup()
        return resolve_groups(lookup, prompt, spec)
    tokenizer = getattr(pipe, "tokenizer", None) or getattr(pipe, "tokenizer_2", None)
    return resolve_groups(tokenizer, prompt, spec)


def inapplicable_methods(groups: list, prompt: str, methods: dict, spec="auto") -> dict:
    """``{name: why}`` for each guided method that cannot guide these groups (CONFORM with a
    single object, SynGen without a modifier, ...). When the groups came from ``spec="auto"``,
    the reason also shows what the automatic parser made of the prompt."""
    from .guidance.tokens import describe_auto_groups

    problems = {}
    for name, method in methods.items():
        if method is None:
            continue
        try:
            method.validate_groups(groups, prompt)
        except ValueError as err:
            problems[name] = f"{err} {describe_auto_groups(prompt)}" if spec == "auto" else str(err)
    return problems


def groups_record(groups) -> list[dict]:
    """Resolved token groups as plain data: words, each word's token positions, all positions."""
    return [
        {"words": list(g.words), "word_positions": [list(p) for p in g.word_positions], "positions": list(g.positions)}
        for g in groups
    ]


# ============================================================================ one image


def generate_image(pipe, prompt: str, seed: int, options: dict, method=None, token_groups="auto", attn_res=None,
                   heatmaps: bool = False):
    """The pipeline's output for one prompt and seed, plain (``method=None``) or guided."""
    return generate_images(pipe, prompt, [seed], options, method, token_groups, attn_res, heatmaps)


def generate_images(pipe, prompt: str, seeds: Sequence[int], options: dict, method=None, token_groups="auto",
                    attn_res=None, heatmaps: bool = False):
    """The pipeline's output for one prompt at several seeds in one call (image ``i`` at
    ``seeds[i]``), plain (``method=None``) or guided. ``output.images`` are PIL images, and
    ``output.nonfinite_images[i]`` says whether image ``i`` decoded to NaN or infinite pixels
    (drawn black: a PIL image would hide them)."""
    import torch

    if not seeds:
        raise ValueError("generate_images needs at least one seed.")
    # A CPU generator draws the same initial noise on every device and in every process, so a
    # seed means one image; with one generator per image, diffusers draws each image's noise
    # from its own generator, so an image does not depend on the batch it was drawn in.
    generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
    # decoded as floats, so that NaN pixels can be seen; made PIL below as diffusers does
    kwargs = dict(options, generator=generators[0] if len(seeds) == 1 else generators, output_type="np")
    if len(seeds) > 1:
        kwargs["num_images_per_prompt"] = len(seeds)
    negative = kwargs.pop("negative_prompt", None)
    if method is None:
        kwargs.pop("text_sequence", None)  # read by guidance only
    else:
        kwargs.update(guidance=method, token_groups=token_groups, return_attention_maps=heatmaps)
        if hasattr(pipe, "token_lookup"):  # MMDiT pipelines read blocks, not a map size
            if attn_res is not None:
                raise ValueError(
                    f"attn_res selects UNet cross-attention layers; {type(pipe).__name__} has joint-attention "
                    "blocks instead (its `blocks` argument). Drop attn_res for this model."
                )
        else:
            kwargs["attn_res"] = attn_res
    # Prompt and negative prompt as one-item lists: diffusers wants both of the same type, and
    # the guided path turns the prompt into a list.
    output = pipe([prompt], negative_prompt=[negative] if negative is not None else None, **kwargs)
    output.images, output.nonfinite_images = _as_pil(output.images)
    return output


def _as_pil(images) -> tuple[list, list[bool]]:
    """PIL images of a pipeline's ``output_type="np"`` images, converted as diffusers converts
    them, and whether each held NaN or infinite pixels (drawn black). Images that are PIL
    already (a pipeline that ignores ``output_type``) pass through."""
    import numpy as np
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    if not len(images) or isinstance(images[0], Image.Image):
        return list(images), [False] * len(images)
    arrays = np.asarray(images)
    if arrays.dtype.kind != "f":  # uint8 pixels
        return [Image.fromarray(array) for array in arrays], [False] * len(arrays)
    nonfinite = [not bool(np.isfinite(array).all()) for array in arrays]
    return VaeImageProcessor.numpy_to_pil(np.nan_to_num(arrays, nan=0.0, posinf=1.0, neginf=0.0)), nonfinite


def guidance_summary(records, index: int = 0) -> dict:
    """Totals of what guidance did for image ``index`` of a call."""
    return {
        "guided_steps": len(records),
        "updates": int(sum(bool(r.updated[index]) for r in records)),
        "refinement_iterations": int(sum(r.refinement_iterations[index] for r in records)),
        "skipped_nonfinite": int(sum(bool(r.skipped_nonfinite[index]) for r in records)),
        "first_step_loss": float(records[0].loss[index]) if records else None,
    }


@dataclass
class ImageRun:
    """What every image of a run shares."""

    pipe: Any
    methods: dict  # name -> GuidanceMethod, or None for "none"
    options: dict  # pipeline arguments common to all methods (generation_options)
    attn_res: tuple[int, int] | None
    heatmaps: bool
    out_dir: Path


@dataclass
class MadeImage:
    """One written image: paths relative to the run folder, generation time, guidance totals."""

    image: str
    attention: str | None  # the last guided step's maps, when saved
    seconds: float
    guidance: dict | None  # guidance_summary; None for plain generation
    nsfw_content_detected: bool | None
    nonfinite: bool = False  # decoded to NaN or infinite pixels (written black)


def make_image(run: ImageRun, method_name: str, prompt: str, seed: int, token_groups, stem: str) -> MadeImage:
    """Draw one image with ``run.methods[method_name]`` and write it as ``<stem>.png`` (and its
    heatmap as ``<stem>-attention.png``) under ``run.out_dir``, each file whole or not at all.
    ``token_groups``: the prompt's resolved groups (or a group spec). The pipeline's ``ValueError`` (bad size,
    ``attn_res``, ...) propagates."""
    return make_images(run, method_name, prompt, [seed], token_groups, [stem])[0]


def make_images(run: ImageRun, method_name: str, prompt: str, seeds: Sequence[int], token_groups,
                stems: Sequence[str]) -> list[MadeImage]:
    """:func:`make_image` for several seeds of one prompt, drawn in one pipeline call (image
    ``i`` at ``seeds[i]``, written as ``stems[i]``); each image's ``seconds`` is its share of
    the call's time."""
    from .guidance.visualize import save_output_heatmaps

    if len(seeds) != len(stems):
        raise ValueError(f"Got {len(seeds)} seeds and {len(stems)} file stems; pass one stem per seed.")
    method = run.methods[method_name]
    start = time.perf_counter()
    output = generate_images(run.pipe, prompt, seeds, run.options, method, token_groups, run.attn_res, run.heatmaps)
    seconds = round((time.perf_counter() - start) / len(seeds), 3)
    nsfw = output.nsfw_content_detected
    made = []
    for index, stem in enumerate(stems):
        image = f"{stem}.png"
        (run.out_dir / image).parent.mkdir(parents=True, exist_ok=True)
        save_image_atomic(output.images[index], run.out_dir / image)
        attention = None
        if method is not None and run.heatmaps and output.attention_maps:
            attention = f"{stem}-attention.png"
            with atomic_path(run.out_dir / attention) as tmp:
                # the image is written beside the strip (and shown beside it in reports): no copy in it
                save_output_heatmaps(output, tmp, image_index=index, include_image=False)
        made.append(MadeImage(
            image=image,
            attention=attention,
            seconds=seconds,
            guidance=guidance_summary(output.guidance_records or [], index) if method is not None else None,
            nsfw_content_detected=bool(nsfw[index]) if nsfw else None,
            nonfinite=output.nonfinite_images[index],
        ))
    return made
