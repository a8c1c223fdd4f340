"""MCPL: learn several concept tokens at once from image-sentence pairs (Jin et al., 2024).

    accelerate launch -m contrastive_diffusers.training.mcpl \\
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --train_data_dir data/ball_box --placeholder_tokens "<brown>,<ball>,<white>,<box>" \\
        --initializer_tokens "brown,ball,white,box" --bind_adjectives "<brown>:<ball>,<white>:<box>"

Captions (``metadata.jsonl``) contain the placeholder tokens; which words of a sentence are
learned is the caption's choice, which gives MCPL's variants:

- all words: ``"a <brown> <ball> <on> a <white> <box>"``;
- nouns only: ``"a brown <ball> on a white <box>"``;
- per-image relation words: each image's caption has its own relation token
  (``"<ball> <on-1> <box>"``, ``"<ball> <beside-2> <box>"``), with one initializer each.

Each step encodes ``--promptcl_views`` differently templated views of every caption
(``"{}"``, ``"a photo of {}"``, ...). The UNet is conditioned on the first view and:

- AttnMask (``--attn_mask hard|soft|none``): cross-attention maps of the learned tokens
  (``--attn_tokens``, default all; the official ``--attn_words``) at
  ``--attn_res`` (default :func:`mask_attn_res`: latent/4 but not coarser than 16x16, i.e.
  16x16 for SD at 512 px, 32x32 for SDXL at 1024 px, 16x16 on a 16x16 latent; the official
  code reads 16x16 maps of LDM's 32x32 latent), averaged over heads and layers, summed over
  the learned tokens, resized to the latent (nearest), divided by the maximum and thresholded
  at ``--attn_mask_threshold`` (0.3), or used soft (:func:`losses.attention_mask`); prediction
  and target are multiplied by the mask and the squared error averaged over every element
  (:func:`losses.masked_denoising_loss`), as the official code does. The mask is detached.
- PromptCL: InfoNCE (``--promptcl_temperature``) over the text-encoder outputs at every
  position of the ``--promptcl_tokens`` (default all; the official ``--presudo_words_infonce``)
  in every view of every caption in the batch; items with the same token are positives, all
  others negatives, whatever the batch size and token count, as the paper describes it.
  Never detached: it trains the token rows through the text encoder. (The official code's
  "views" are the batch items, one randomly templated caption each, and it pairs each anchor
  with exactly one positive, the item ``batch`` places further in its flattened order, and
  counts every other copy of the same token as a negative: the same at batch 2, but at its
  default batch 4 two of an anchor's three copies push it away, and at a batch that is not a
  multiple of the token count the "positive" is another token. ``--promptcl_pairing
  official`` computes it that way, over the first view of each caption.)
- Bind adjective (``--bind_adjectives "<adj>:<noun>,..."``): an adjective token shares its
  noun's label, so each noun's positives include its own adjective.

Loss = masked denoising + ``--promptcl_weight`` x PromptCL. Defaults: the official README's
run with the attention mask ("Regularisation-2": τ = 0.3, weight 7.5e-4, threshold 0.3);
its run without the mask uses τ = 0.2 and weight 5e-4. At these weights PromptCL moves the
token rows little: on the embedded ShapesWorld model its gradient on them was 0.2-0.4% of
the denoising loss's (at weight 1: 4-8 times).

Under several processes PromptCL contrasts the items of each process's own micro-batch (as
the official code does per GPU), so N processes with batch b are not exactly one process
with batch N*b for MCPL (ReVersion's steering negatives, by contrast, are gathered over
processes).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import warnings
from collections.abc import Sequence
from types import MappingProxyType

import torch

from ..guidance.attention import (
    AttentionRecorder,
    nearest_attn_res,
    recording_processors,
    select_layers,
)
from .args import comma_list
from .entry import run_main
from .losses import (
    attention_mask,
    denoising_loss,
    masked_denoising_loss,
    prompt_contrastive_loss,
    prompt_contrastive_loss_official,
)
from .tokens import TokenMethod
from .trainer import Trainer

#: View templates for PromptCL (written for this project); ``{}`` is the whole caption.
VIEW_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of {}",
    "a rendering of {}",
    "a close-up photo of {}",
    "a cropped photo of {}",
    "a bright photo of {}",
    "a good photo of {}",
    "an image of {}",
)


def bind_pairs(text: str) -> list[tuple[str, str]]:
    """``"<a>:<n>,<b>:<m>"`` -> ``[("<a>", "<n>"), ("<b>", "<m>")]``."""
    pairs = []
    for item in comma_list(text):
        adjective, sep, noun = item.partition(":")
        if not sep or not adjective.strip() or not noun.strip():
            raise argparse.ArgumentTypeError(f"--bind_adjectives items are '<adjective>:<noun>', got {item!r}")
        pairs.append((adjective.strip(), noun.strip()))
    return pairs


def token_labels(tokens: Sequence[str], binds: Sequence[tuple[str, str]]) -> list[int]:
    """PromptCL label per token: its own index, or its noun's when bound as an adjective."""
    labels = list(range(len(tokens)))
    index = {t: i for i, t in enumerate(tokens)}
    for adjective, noun in binds:
        labels[index[adjective]] = labels[index[noun]]
    return labels


class MCPL(TokenMethod):
    name = "mcpl"
    description = "MCPL: learn several concept tokens at once with attention masking and prompt contrastive learning."
    defaults = MappingProxyType(
        {
            "learning_rate": 5e-4,
            "scale_lr": True,
            "train_batch_size": 2,
            "gradient_accumulation_steps": 2,
            "max_train_steps": 3000,
            "flip_p": 0.0,
            "max_grad_norm": 0.0,  # the authors' code clips no gradient
            "image_fit": "squash",  # the authors' loader resizes the whole image
        }
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("MCPL")
        g.add_argument(
            "--attn_mask",
            default="hard",
            choices=("hard", "soft", "none"),
            help="Restrict the denoising loss to where the learned tokens attend.",
        )
        g.add_argument("--attn_mask_threshold", type=float, default=0.3, help="Threshold of the hard mask.")
        g.add_argument(
            "--attn_res",
            type=int,
            default=None,
            help="Side of the attention maps used; None: latent/4 but at least 16 (mask_attn_res).",
        )
        g.add_argument("--promptcl_weight", type=float, default=7.5e-4,
                       help="Weight of the PromptCL loss (0 disables); the official run without the mask: 5e-4.")
        g.add_argument("--promptcl_temperature", type=float, default=0.3,
                       help="InfoNCE temperature τ of PromptCL; the official run without the mask: 0.2.")
        g.add_argument("--promptcl_views", type=int, default=2, help="Templated views of each caption per step.")
        g.add_argument(
            "--promptcl_pairing",
            choices=("label", "official"),
            default="label",
            help="label: every other copy of a token (all views, all captions) is a positive, as the paper "
            "describes PromptCL; official: as the official code, each copy's one positive is the copy of its "
            "token the batch size further back in the flattened (caption, token) order, the other copies are "
            "negatives, over the first view of each caption (with --bind_adjectives: the adjectives appended).",
        )
        g.add_argument(
            "--view_templates",
            type=lambda s: [t.strip() for t in s.split("|") if t.strip()],
            default=None,
            help="'|'-separated templates with '{}' for the caption; None: a built-in list of 8.",
        )
        g.add_argument(
            "--attn_tokens",
            type=comma_list,
            default=None,
            help="Placeholder tokens whose maps make the mask (the official --attn_words); default: all.",
        )
        g.add_argument(
            "--promptcl_tokens",
            type=comma_list,
            default=None,
            help="Placeholder tokens PromptCL contrasts (the official --presudo_words_infonce); default: all.",
        )
        g.add_argument(
            "--bind_adjectives",
            type=bind_pairs,
            default=[],
            help="'<adj>:<noun>,...': each adjective token is a positive of its noun token.",
        )

    def validate(self, parser, args) -> None:
        super().validate(parser, args)
        templates = args.view_templates if args.view_templates is not None else list(VIEW_TEMPLATES)
        bad = [t for t in templates if "{}" not in t]
        if bad:
            parser.error(f"--view_templates need '{{}}' for the caption: {bad[0]!r}")
        if not 1 <= args.promptcl_views <= len(templates):
            parser.error(
                f"--promptcl_views must be between 1 and the number of templates ({len(templates)}), got {args.promptcl_views}"
            )
        if args.promptcl_weight < 0 or args.promptcl_temperature <= 0:
            parser.error("--promptcl_weight must be >= 0 and --promptcl_temperature > 0")
        if not 0.0 <= args.attn_mask_threshold < 1.0:
            parser.error(f"--attn_mask_threshold must be in [0, 1), got {args.attn_mask_threshold}")
        known = set(args.placeholder_tokens)
        for option in ("attn_tokens", "promptcl_tokens"):
            unknown = [t for t in getattr(args, option) or [] if t not in known]
            if unknown:
                parser.error(f"--{option} names {unknown[0]!r}, which is not a placeholder token ({', '.join(known)})")
        if args.attn_tokens and args.attn_mask == "none":
            parser.error("--attn_tokens choose the mask's tokens, and --attn_mask none makes no mask; drop one")
        if args.promptcl_tokens and args.promptcl_weight == 0:
            parser.error("--promptcl_tokens choose PromptCL's tokens, and --promptcl_weight 0 turns it off; drop one")
        for adjective, noun in args.bind_adjectives:
            for token in (adjective, noun):
                if token not in known:
                    parser.error(
                        f"--bind_adjectives names {token!r}, which is not a placeholder token ({', '.join(known)})"
                    )
            if adjective == noun:
                parser.error(f"--bind_adjectives binds {adjective!r} to itself")
        self.templates = templates

    def setup(self, trainer: Trainer) -> None:
        args, m = trainer.args, trainer.models
        ids = dict(zip(args.placeholder_tokens, trainer.infos[0].token_ids))

        def chosen(tokens):
            return torch.tensor([ids[t] for t in (tokens or args.placeholder_tokens)], device=trainer.device)

        self.attn_ids, self.promptcl_ids = chosen(args.attn_tokens), chosen(args.promptcl_tokens)
        if args.promptcl_pairing == "official":
            self._official_setup(trainer, ids)
        labels = token_labels(args.placeholder_tokens, args.bind_adjectives)
        self.label_of = {tid: lab for tid, lab in zip(trainer.infos[0].token_ids, labels)}
        tok = m.tokenizers[0]
        limit = tok.model_max_length - 2
        for example in trainer.examples:
            for caption in example.captions:
                longest = max(
                    len(tok(t.replace("{}", caption), add_special_tokens=False).input_ids) for t in self.templates
                )
                if longest > limit:
                    raise ValueError(
                        f"With its longest view template the caption {caption!r} of {example.path.name} has {longest} "
                        f"tokens; the text encoder sees {limit}. Shorten it or pass shorter --view_templates."
                    )
        self._stack = contextlib.ExitStack()
        self.recorder = None
        if args.attn_mask != "none":
            scale = 2 ** (len(m.vae.config.block_out_channels) - 1)
            latent = args.resolution // scale
            self.attn_res = args.attn_res or mask_attn_res(m.unet, latent)
            self.layers = select_layers(m.unet, (latent, latent), (self.attn_res, self.attn_res))
            self.recorder = StepRecorder((self.attn_res, self.attn_res))
            self._stack.enter_context(recording_processors(m.unet, self.layers, self.recorder))
            # Active for the whole step (forward and backward), so that gradient checkpointing
            # recomputes the recorded layers with the same explicit attention.
            self.recorder.active = True

    def _official_setup(self, trainer: Trainer, ids: dict) -> None:
        """The official pairing reads each caption's contrasted tokens as one row of a
        ``(captions, n)`` grid: every caption must hold the same number of them (and as many
        bound adjectives), or rows would pair other tokens."""
        args = trainer.args
        adjectives = {adjective for adjective, _ in args.bind_adjectives}
        pseudo = [t for t in (args.promptcl_tokens or args.placeholder_tokens) if t not in adjectives]
        pseudo_set, adjective_set = {ids[t] for t in pseudo}, {ids[t] for t in adjectives}
        self.pseudo_ids = torch.tensor(sorted(pseudo_set), device=trainer.device)
        self.adjective_ids = torch.tensor(sorted(adjective_set), device=trainer.device) if adjectives else None
        tok = trainer.models.tokenizers[0]
        counts = set()
        for example in trainer.examples:
            for caption in example.captions:
                caption_ids = tok(caption, add_special_tokens=False).input_ids
                n = sum(i in pseudo_set for i in caption_ids)
                n_adjectives = sum(i in adjective_set for i in caption_ids)
                if n == 0 or (adjectives and n_adjectives != n):
                    raise ValueError(
                        f"--promptcl_pairing official needs every caption to hold the contrasted tokens "
                        f"({', '.join(pseudo)}){' and as many bound adjectives' if adjectives else ''}; "
                        f"{caption!r} of {example.path.name} holds {n}{f' and {n_adjectives}' if adjectives else ''}. "
                        "Use --promptcl_pairing label for captions that differ."
                    )
                counts.add(n)
        if len(counts) > 1:
            raise ValueError(
                f"--promptcl_pairing official needs the same number of contrasted tokens in every caption; the "
                f"captions hold {sorted(counts)}. Use --promptcl_pairing label for captions that differ."
            )
        (n,) = counts
        if args.train_batch_size % n:
            warnings.warn(
                f"--promptcl_pairing official at batch {args.train_batch_size} with {n} contrasted tokens per caption "
                "pairs each token with a copy of another token, as the official code does at such a batch; use a "
                f"batch that is a multiple of {n} (the official default: 4 with 2 tokens).", stacklevel=2)

    def _label_promptcl(self, hidden: torch.Tensor, ids: torch.Tensor, size: int, temperature: float):
        """PromptCL as the paper describes it: every copy of a token in every view and caption."""
        rows, cols = torch.isin(ids, self.promptcl_ids).nonzero(as_tuple=True)
        labels = torch.tensor([self.label_of[int(t)] for t in ids[rows, cols].tolist()], device=hidden.device)
        return prompt_contrastive_loss(hidden[rows, cols], labels, temperature)

    def _official_promptcl(self, hidden: torch.Tensor, ids: torch.Tensor, size: int, temperature: float):
        """PromptCL with the official code's pairing over the first view of each caption."""
        first = hidden[:size]
        features = first[torch.isin(ids[:size], self.pseudo_ids)].reshape(size, -1, first.shape[-1])
        if self.adjective_ids is not None:
            adjectives = first[torch.isin(ids[:size], self.adjective_ids)].reshape(size, -1, first.shape[-1])
            features = torch.cat([features, adjectives])
        return prompt_contrastive_loss_official(features, temperature)

    def teardown(self, trainer: Trainer) -> None:
        if getattr(self, "recorder", None) is not None:
            self.recorder.active = False
        if hasattr(self, "_stack"):
            self._stack.close()
        super().teardown(trainer)

    def validation_context(self, trainer: Trainer):
        return _Paused(self.recorder)

    def views(self, trainer: Trainer, batch: dict) -> list[str]:
        """``promptcl_views`` templated captions per example, view-major (view 0 of every
        example first); templates drawn per example without repetition."""
        n = trainer.args.promptcl_views
        chosen = [
            torch.randperm(len(self.templates), generator=g)[:n].tolist()
            for g in trainer.generators(batch["positions"], 5)
        ]
        return [
            self.templates[chosen[b][v]].replace("{}", caption)
            for v in range(n)
            for b, caption in enumerate(batch["captions"])
        ]

    def loss(self, trainer: Trainer, batch: dict):
        args = trainer.args
        size = len(batch["captions"])
        captions = self.views(trainer, batch)
        ids = trainer.tokenize(captions)
        hidden, pooled = trainer.encode(ids)
        if self.recorder is not None:
            self.recorder.clear()
        pred, target = trainer.denoise(batch, hidden[:size], None if pooled is None else pooled[:size])
        logs = {}
        if self.recorder is not None:
            maps = self.recorder.aggregate()
            self.recorder.seal()
            threshold = args.attn_mask_threshold if args.attn_mask == "hard" else None
            masked = torch.isin(ids[0][:size], self.attn_ids)  # (B, L): the mask's tokens in view 0
            mask = attention_mask(maps, masked, tuple(pred.shape[-2:]), threshold)
            denoise = masked_denoising_loss(pred, target, mask)
            logs["mask_fraction"] = mask.mean().detach()
        else:
            denoise = denoising_loss(pred, target)
        loss = denoise
        logs["denoise_loss"] = denoise.detach()
        if args.promptcl_weight > 0:
            promptcl = self._official_promptcl if args.promptcl_pairing == "official" else self._label_promptcl
            cl = promptcl(hidden, ids[0], size, args.promptcl_temperature)
            loss = loss + args.promptcl_weight * cl
            logs["promptcl_loss"] = cl.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    def run_record(self) -> dict:
        return {
            "view_templates": getattr(self, "templates", list(VIEW_TEMPLATES)),
            "attn_res": getattr(self, "attn_res", None),
            "attn_layers": getattr(self, "layers", []),
        }


#: The side of the maps MCPL's official code masks with (LDM at 256 px: a 32x32 latent, maps 16x16).
MASK_MIN_SIDE = 16


def mask_attn_res(unet, latent: int) -> int:
    """The default map side of the attention mask: ``latent / 4`` (16 on SD's 64x64 latents,
    32 on SDXL's 128x128), but not coarser than the official code's 16x16, nor finer than the
    latent; then the nearest size the UNet has.

    The guidance default (:func:`default_attn_res`, plain ``latent / 4``) gives 8x8 maps on a
    16x16 latent. Upsampled to the latent, those do not outline objects: on the embedded
    ShapesWorld model, with the initializer words of two-object scenes, the hard mask at 0.3
    covered 89-93% of the latent at every noise level, and held the objects' pixels no more
    often than the background's (recall = coverage; objects cover 21%). The 16x16 maps of the
    same model do localise at low noise (t = 100, threshold 0.5: 12% of the latent, 72% of it
    on the objects) though at high noise they spread too.
    """
    side = min(latent, max(math.ceil(latent / 4), MASK_MIN_SIDE))
    return nearest_attn_res(unet, (latent, latent), (side, side))[0]


class StepRecorder(AttentionRecorder):
    """The recorder of MCPL's training step: maps are recorded in the forward and read once.

    With gradient checkpointing the backward re-runs the forward of every checkpointed block;
    the recorded layers then compute the same explicit attention again (the recomputed tensors
    must match the forward's) but, once the step's maps are read (:meth:`seal`), record
    nothing. Maps recorded in the recomputation would be a second copy per layer per step,
    kept with the autograd graph of their block until the next step's :meth:`clear`.
    """

    def __init__(self, attn_res: tuple[int, int]):
        super().__init__(attn_res)
        self.sealed = False

    def record(self, name: str, probs: torch.Tensor, batch: int, heads: int) -> None:
        if not self.sealed:
            super().record(name, probs, batch, heads)

    def seal(self) -> None:
        """Drop the maps (read already) and record nothing until :meth:`clear`."""
        self.maps = {}
        self.sealed = True

    def clear(self) -> None:
        super().clear()
        self.sealed = False


class _Paused:
    """Deactivates a recorder for the duration (validation images use the original attention)."""

    def __init__(self, recorder):
        self.recorder = recorder

    def __enter__(self):
        self.was = self.recorder is not None and self.recorder.active
        if self.recorder is not None:
            self.recorder.active = False

    def __exit__(self, *exc):
        if self.recorder is not None:
            self.recorder.active = self.was
            self.recorder.clear()
        return False


def main(argv: Sequence[str] | None = None, prog: str = "python -m contrastive_diffusers.training.mcpl") -> int:
    return run_main(MCPL(), argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
