"""The model card (``README.md``) written beside trained weights, as diffusers' training
examples write one: YAML metadata (base model, library, tags) and a body saying what was
trained, on which data, for how many steps, with which command, and how to load it.

The metadata block is huggingface_hub's ``ModelCardData`` (the Hub reads it); the body is
written here because diffusers' training template leaves its sections to be filled by hand.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic_io import write_text_atomic

CARD_FILE = "README.md"


@dataclass(frozen=True)
class CardFacts:
    """What a model card states about one training run."""

    base_model: str
    method: str
    description: str
    data: str
    num_examples: int
    steps: int
    command: list[str]
    #: How to load the weights (a Python snippet).
    usage: str
    tokens: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


def card_text(facts: CardFacts) -> str:
    """The card's Markdown, metadata block first."""
    from huggingface_hub import ModelCardData

    tags = ["diffusers", "contrastive-diffusers", facts.method.replace("_", "-")]
    tags.append("textual-inversion" if facts.tokens else "lora")
    meta = ModelCardData(base_model=facts.base_model, library_name="diffusers", tags=tags).to_yaml()
    lines = [
        "---",
        meta,
        "---",
        "",
        f"# {facts.method} weights for {facts.base_model}",
        "",
        facts.description,
        "",
        "## Training",
        "",
        f"- Base model: `{facts.base_model}`",
        f"- Method: `{facts.method}`",
        f"- Data: `{facts.data}` ({facts.num_examples} examples)",
        f"- Optimizer steps: {facts.steps}",
    ]
    if facts.tokens:
        lines.append(f"- Learned tokens: {', '.join(f'`{t}`' for t in facts.tokens)}")
    for key, value in facts.settings.items():
        lines.append(f"- {key}: `{value}`")
    lines += [
        "",
        "Command:",
        "",
        "```bash",
        shlex.join(facts.command),
        "```",
        "",
        "## How to use",
        "",
        "```python",
        facts.usage,
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(folder, facts: CardFacts) -> Path:
    """Write ``README.md`` into ``folder`` (replacing an earlier card); returns its path."""
    path = Path(folder) / CARD_FILE
    write_text_atomic(path, card_text(facts))
    return path


def token_usage(base_model: str, folder: Path) -> str:
    return (
        "from diffusers import DiffusionPipeline\n"
        "from contrastive_diffusers.training import load_learned_embeds\n\n"
        f"pipe = DiffusionPipeline.from_pretrained({str(base_model)!r})\n"
        f"load_learned_embeds(pipe, {str(folder)!r})  # or pipe.load_textual_inversion(<file>) per token"
    )


def lora_usage(base_model: str, folder: Path) -> str:
    return (
        "from diffusers import DiffusionPipeline\n\n"
        f"pipe = DiffusionPipeline.from_pretrained({str(base_model)!r})\n"
        f"pipe.load_lora_weights({str(folder)!r})"
    )


def write_run_card(trainer, folder, usage: str, settings: dict | None = None) -> Path:
    """The card of a run of the shared loop (``trainer``: :class:`~.trainer.Trainer`) at its
    current step, written into ``folder`` beside the weights; ``settings``: the method's own
    to list beside the common ones."""
    args = trainer.args
    command = getattr(args, "command", None) or [f"python -m contrastive_diffusers.training.{trainer.method.name}"]
    facts = CardFacts(
        base_model=str(args.pretrained_model_name_or_path),
        method=trainer.method.name,
        description=trainer.method.description,
        data=str(args.train_data_dir),
        num_examples=len(trainer.data),
        steps=int(getattr(trainer, "global_step", 0)),
        command=list(command),
        usage=usage,
        tokens=list(args.placeholder_tokens),
        settings={
            "learning_rate": getattr(trainer, "effective_lr", args.learning_rate),
            "train_batch_size": args.train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "resolution": args.resolution,
            "seed": getattr(trainer, "seed", args.seed),
            **(settings or {}),
        },
    )
    return write_model_card(folder, facts)
