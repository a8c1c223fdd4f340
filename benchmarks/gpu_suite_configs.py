"""What the GPU suite (``gpu_suite.py``) runs: the two profiles (the GPU run and the CPU
smoke run), the configurations in their order, and the estimates the budget is planned with
(``GPU_RESULTS.md`` says where they come from)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_BUDGET_S = 480.0
#: Refinement iterations per refinement step in the SD3 and Flux rows (papers: 20): a pass
#: costs the same either way, and 20 would add up to 48 passes to each A&E and CONFORM row
#: (CONFORM refines without a target; A&E stops early only where its target is met), about
#: half of the budget's slack (GPU_RESULTS.md).
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
#: Building a model in its own process: start-up, drawing it on the GPU, casting it to fp16
#: and writing it (2.1 GB, 6.9 GB).
BUILD_ESTIMATE_S = {"sd15": 12.0, "sdxl": 18.0}
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
    Config("flux", "none", 11),
    Config("flux", "attend_and_excite", 13),
    Config("flux", "conform", 13),
    Config("flux", "ebama", 12),
    Config("flux", "syngen", 12),
)


def estimated_total_s(configs=CONFIGS) -> float:
    """The GPU run's estimated seconds: the model builds and every configuration of ``configs``."""
    groups = {c.group for c in configs}
    return sum(v for k, v in BUILD_ESTIMATE_S.items() if k in groups) + sum(c.estimate_s for c in configs)
