"""What a benchmark run is asked to do (:class:`BenchConfig`) and what it returns (:class:`BenchResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from ..models.names import default_clip_model, is_embedded
from ..records import jsonable
from .judges import JUDGES
from .run_folder import BenchInputError

AUTO = "auto"  # clip_model: the world's CLIP for the embedded model, DEFAULT_CLIP_MODEL otherwise


def default_prompt_set(model) -> str:
    return "shapes" if is_embedded(model) else "attend_and_excite"


@dataclass
class BenchConfig:
    """What to run. ``prompt_set``: a built-in set name, a prompt file, or a list of
    :class:`PromptItem` (``None``: ``"shapes"`` for the embedded model, else
    ``"attend_and_excite"``). ``clip_model``: hub id, folder, ``"tiny-clip"``,
    ``"embedded-clip"``, ``"auto"`` (:func:`default_clip_model`), a ``ClipScorer``, or
    ``None`` to skip scoring. ``captioner``: hub id or folder of a BLIP captioning model, a
    ``Captioner``, or ``None``. ``seed_batch``: how many seeds of one method and prompt one
    pipeline call draws (each image as a call of its own would draw it, up to rounding: see
    :func:`~contrastive_diffusers.runs.make_images`); more is faster where per-call overhead
    dominates (small images, CPU) and needs that many times the memory. ``judges``: the
    benchmarks' own judges (:mod:`.judges`) by name (``"t2i-compbench"``, ``"geneval"``) or as
    :class:`~.judges.Judge` objects, scored after the CLIP metrics; ``judge_options``: their
    models (``vqa_model``, ``detector``, ``clip_model``), each given to the judges that take it.
    ``baseline``: the method the reports compare every other with (default: ``"none"`` when the
    folder has it, else the first method it ran); a report setting, so it may change between calls."""

    output_dir: Path
    model: str = "embedded"
    methods: Sequence[str] = ("none", "conform")
    prompt_set: Any = None
    seeds: Sequence[int] = (0,)
    num_prompts: int | None = None  # the first N prompts of the set
    steps: int = 50
    guidance_scale: float | None = None  # None: 7.5 for SD, 5.0 for SDXL
    height: int | None = None
    width: int | None = None
    attn_res: tuple[int, int] | None = None
    negative_prompt: str | None = None
    true_cfg_scale: float | None = None  # FLUX.1's true CFG, with negative_prompt
    text_sequence: str | None = None  # SD3: the text the loss reads, "clip" (None: the default) or "t5"
    scheduler: str | None = None  # a diffusers scheduler class name; None: the model's own
    device: str = "auto"
    dtype: str | None = None  # None: float16 on CUDA, float32 elsewhere
    clip_model: Any = AUTO
    captioner: Any = None
    contrast: bool = True
    heatmaps: bool = True
    report_max_prompts: int | None = 100
    baseline: str | None = None  # the reports' reference method; None: "none" if run, else the first method
    progress: bool = True
    seed_batch: int = 1
    judges: Sequence[Any] = ()
    judge_options: dict = field(default_factory=dict)

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        if self.prompt_set is None:
            self.prompt_set = default_prompt_set(self.model)
        if isinstance(self.clip_model, str) and self.clip_model == AUTO:
            self.clip_model = default_clip_model(self.model)
        self.methods = list(dict.fromkeys(self.methods))
        self.seeds = list(dict.fromkeys(int(s) for s in self.seeds))
        if not self.methods:
            raise BenchInputError("BenchConfig needs at least one method (e.g. ['none', 'conform']).")
        if not self.seeds:
            raise BenchInputError("BenchConfig needs at least one seed.")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise BenchInputError(f"num_prompts must be at least 1, got {self.num_prompts}.")
        if self.steps < 1:
            raise BenchInputError(f"steps must be at least 1, got {self.steps}.")
        for judge in self.judges:
            if isinstance(judge, str) and judge not in JUDGES:
                raise BenchInputError(f"unknown judge {judge!r}; the known judges are: {', '.join(sorted(JUDGES))}.")
        if self.seed_batch < 1:
            raise BenchInputError(f"seed_batch must be at least 1 (1: one image per pipeline call), got {self.seed_batch}.")

    def settings(self) -> dict:
        """The plain settings (no scorer or captioner objects: those are named, not copied)."""
        skip = ("clip_model", "captioner", "prompt_set", "judges")
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        settings["judges"] = [j if isinstance(j, str) else getattr(j, "name", type(j).__name__) for j in self.judges]
        return jsonable(settings)


@dataclass
class BenchResult:
    run_dir: Path
    records: list[dict]  # every record of the folder (main process; empty elsewhere)
    summary: dict | None  # None on the other processes
    generated: int  # images this process made in this call (0 on a finished re-run)
    scored: int  # records this process scored in this call
    failed: int = 0
    files: dict = field(default_factory=dict)
