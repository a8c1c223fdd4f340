"""LoRA fine-tuning on the shared training loop: the pieces EvoGen and DCO have in common.

:class:`LoraMethod` is the :class:`~.method.TrainingMethod` strategy that trains LoRA adapters (peft, via
``unet.add_adapter``; with ``--train_text_encoder`` also on the text encoder(s)) instead of
token rows. The frozen base weights stay in the mixed-precision dtype, the LoRA weights are
float32 (``cast_training_params``). The prepared module is :class:`LoraModules` (so that
accelerate / DDP see the trainable parameters); accelerate checkpoints hold only the LoRA
weights (``lora_state.safetensors``, through ``register_save_state_pre_hook``), and the output
is written by ``StableDiffusion[XL]Pipeline.save_lora_weights`` in the diffusers format::

    pipe = StableDiffusionPipeline.from_pretrained(base)
    pipe.load_lora_weights(output_dir)          # pytorch_lora_weights.safetensors

The reference model of the preference objectives is the same UNet with its adapters disabled
(:func:`adapters_disabled`), run under ``torch.no_grad()``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .card import lora_usage, write_run_card
from .data import mix_seed
from .method import TrainingMethod
from .trainer import Trainer

#: diffusers' file name for LoRA weights (``load_lora_weights`` reads it from a folder).
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"

UNET_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
LORA_STATE_FILE = "lora_state.safetensors"


class LoraModules(nn.Module):
    """The UNet (and the text encoders when they are trained) as one module for ``prepare``.
    ``forward`` runs the UNet; :meth:`encode` the text encoders."""

    def __init__(self, unet, text_encoders, train_text_encoder: bool, sdxl: bool):
        super().__init__()
        self.unet = unet
        self.train_text_encoder = train_text_encoder
        self.sdxl = sdxl
        if train_text_encoder:
            self.text_encoders = nn.ModuleList(text_encoders)
        else:
            self._frozen_encoders = tuple(text_encoders)  # not registered: not trained

    def encoders(self):
        return list(self.text_encoders) if self.train_text_encoder else list(self._frozen_encoders)

    def forward(self, noisy, timesteps, hidden, added_cond_kwargs=None):
        return self.unet(noisy, timesteps, hidden, added_cond_kwargs=added_cond_kwargs).sample

    def encode(self, input_ids: list[torch.Tensor]):
        """``(encoder_hidden_states, pooled or None)`` as the UNet takes them."""
        encoders = self.encoders()
        context = contextlib.nullcontext() if self.train_text_encoder else torch.no_grad()
        with context:
            if not self.sdxl:
                return encoders[0](input_ids[0].to(encoders[0].device))[0], None
            hidden, pooled = [], None
            for encoder, ids in zip(encoders, input_ids):
                out = encoder(ids.to(encoder.device), output_hidden_states=True)
                hidden.append(out.hidden_states[-2])
                pooled = out[0]
            return torch.cat(hidden, dim=-1), pooled

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The trainable (LoRA) tensors by parameter name, float32 CPU copies."""
        return {n: p.detach().float().cpu().clone() for n, p in self.named_parameters() if p.requires_grad}


def _set_adapters_enabled(module: nn.Module, enabled: bool) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for layer in module.modules():
        if isinstance(layer, BaseTunerLayer):
            layer.enable_adapters(enabled)


@contextlib.contextmanager
def adapters_disabled(*modules):
    """The base model: every peft LoRA layer of the modules off inside, back on afterwards
    (diffusers' ``unet.disable_adapters()`` does the same for the UNet)."""
    for module in modules:
        _set_adapters_enabled(module, False)
    try:
        yield
    finally:
        for module in modules:
            _set_adapters_enabled(module, True)


class LoraMethod(TrainingMethod):
    """Base of the LoRA methods: options, adapters, checkpoint hooks, diffusers-format output."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("LoRA")
        g.add_argument("--rank", type=int, default=4, help="LoRA rank r.")
        g.add_argument("--lora_alpha", type=float, default=None, help="LoRA alpha (default: the rank, scale 1).")
        g.add_argument(
            "--train_text_encoder", action="store_true", help="Also train LoRA on the text encoder(s)."
        )
        g.add_argument(
            "--text_encoder_lr",
            type=float,
            default=None,
            help="Learning rate of the text encoders' LoRA with --train_text_encoder; None: --learning_rate's "
            "(as in diffusers' DreamBooth LoRA scripts, --scale_lr does not scale it).",
        )

    def validate(self, parser, args) -> None:
        if args.placeholder_tokens or args.initializer_tokens:
            parser.error(
                f"{parser.prog} trains LoRA weights, not token embeddings; drop --placeholder_token(s) and "
                "--initializer_token(s)"
            )
        if args.rank < 1:
            parser.error(f"--rank must be a positive integer, got {args.rank}")
        if args.lora_alpha is None:
            args.lora_alpha = float(args.rank)
        if args.lora_alpha <= 0:
            parser.error(f"--lora_alpha must be positive, got {args.lora_alpha}")
        if args.text_encoder_lr is not None and args.text_encoder_lr <= 0:
            parser.error(f"--text_encoder_lr must be positive, got {args.text_encoder_lr}")
        if not args.train_text_encoder:
            if args.text_encoder_lr != parser.get_default("text_encoder_lr"):
                parser.error("--text_encoder_lr is the text encoders' rate; add --train_text_encoder to train them")
            args.text_encoder_lr = None  # nothing it applies to (and no setting a resume compares)

    def adopt_checkpoint(self, trainer: Trainer, settings: dict | None) -> None:
        # A checkpoint from before --text_encoder_lr (or a run continued from one) trained the
        # text encoders at --learning_rate, in one optimizer group: continue it that way (its
        # optimizer state has one group).
        args = trainer.args
        if args.text_encoder_lr is not None and (settings is None or settings.get("text_encoder_lr") is None):
            trainer.accelerator.print(
                f"{trainer.resume_path} predates --text_encoder_lr: its text encoders go on at --learning_rate.")
            args.text_encoder_lr = None

    def optimizer_groups(self, trainer: Trainer, lr: float) -> list[dict]:
        module, rate = trainer.model, trainer.args.text_encoder_lr
        if not module.train_text_encoder or rate is None:
            return super().optimizer_groups(trainer, lr)
        trainable = [p for p in module.unet.parameters() if p.requires_grad]
        encoders = [p for p in module.text_encoders.parameters() if p.requires_grad]
        return [{"params": trainable, "lr": lr}, {"params": encoders, "lr": rate, "name": "text_encoder"}]

    # ---------------------------------------------------------------- framework hooks
    def build_trainable(self, trainer: Trainer) -> nn.Module:
        from diffusers.training_utils import cast_training_params

        args, m = trainer.args, trainer.models
        # The LoRA A matrices are drawn from the run's seed (--seed, or the one drawn and
        # recorded: resolve_seed runs first), so the recorded seed reproduces the adapters.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(trainer.seed, 0x10AA))
            self._add_adapters(args, m)
        trained = [m.unet] + (list(m.text_encoders) if args.train_text_encoder else [])
        # LoRA weights in float32 whatever the mixed precision (the frozen base keeps its dtype).
        cast_training_params(trained, dtype=torch.float32)
        module = LoraModules(m.unet, m.text_encoders, args.train_text_encoder, m.sdxl)
        self._register_checkpoint_hooks(trainer)
        return module

    def _add_adapters(self, args, m) -> None:
        from peft import LoraConfig

        m.unet.add_adapter(
            LoraConfig(
                r=args.rank,
                lora_alpha=args.lora_alpha,
                init_lora_weights="gaussian",
                target_modules=list(UNET_TARGETS),
            )
        )
        if args.train_text_encoder:
            from peft import inject_adapter_in_model

            for encoder in m.text_encoders:
                # peft directly: transformers 5's ``add_adapter`` requires peft >= 0.22.
                config = LoraConfig(
                    r=args.rank,
                    lora_alpha=args.lora_alpha,
                    init_lora_weights="gaussian",
                    target_modules=list(TEXT_TARGETS),
                )
                inject_adapter_in_model(config, encoder, adapter_name="default")
                encoder.peft_config = {"default": config}  # what get_peft_model_state_dict reads

    def _register_checkpoint_hooks(self, trainer: Trainer) -> None:
        """accelerate checkpoints keep only the LoRA tensors (not the frozen multi-GB base)."""
        from safetensors.torch import load_file, save_file

        acc = trainer.accelerator

        def mine(model) -> bool:
            return isinstance(acc.unwrap_model(model), LoraModules)

        def save_hook(models, weights, output_dir):
            for k in reversed(range(len(models))):
                if mine(models[k]):
                    if acc.is_main_process:
                        save_file(acc.unwrap_model(models[k]).lora_state(), str(Path(output_dir) / LORA_STATE_FILE))
                    if weights:
                        weights.pop(k)

        def load_hook(models, input_dir):
            for k in reversed(range(len(models))):
                if mine(models[k]):
                    module = acc.unwrap_model(models.pop(k))
                    state = load_file(str(Path(input_dir) / LORA_STATE_FILE))
                    params = dict(module.named_parameters())
                    if set(state) != {n for n, p in params.items() if p.requires_grad}:
                        raise ValueError(
                            f"{input_dir}/{LORA_STATE_FILE} holds other LoRA weights than this run trains "
                            "(different --rank, --train_text_encoder or model?); resume with the same options."
                        )
                    with torch.no_grad():
                        for name, value in state.items():
                            params[name].copy_(value.to(params[name].device, params[name].dtype))

        acc.register_save_state_pre_hook(save_hook)
        acc.register_load_state_pre_hook(load_hook)

    def save_output(self, trainer: Trainer, folder: Path, final: bool) -> list[Path]:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        m = trainer.models
        unet = trainer.accelerator.unwrap_model(m.unet)

        def layers(module):
            return convert_state_dict_to_diffusers(get_peft_model_state_dict(module))

        def metadata(module):
            # rank and alpha travel with the weights: without them load_lora_weights assumes
            # alpha = rank, and a run with --lora_alpha != --rank would load at the wrong scale
            config = getattr(module, "peft_config", {}).get("default")
            return config.to_dict() if config is not None else None

        kwargs = {"unet_lora_layers": layers(unet), "unet_lora_adapter_metadata": metadata(unet)}
        if trainer.args.train_text_encoder:
            kwargs["text_encoder_lora_layers"] = layers(m.text_encoders[0])
            kwargs["text_encoder_lora_adapter_metadata"] = metadata(m.text_encoders[0])
            if m.sdxl:
                kwargs["text_encoder_2_lora_layers"] = layers(m.text_encoders[1])
                kwargs["text_encoder_2_lora_adapter_metadata"] = metadata(m.text_encoders[1])
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        pipeline_class = StableDiffusionXLPipeline if m.sdxl else StableDiffusionPipeline
        # Written beside, then renamed: a run killed while saving never leaves half a weights file.
        with tempfile.TemporaryDirectory(dir=folder, prefix=".saving-") as staging:
            pipeline_class.save_lora_weights(staging, safe_serialization=True, **kwargs)
            os.replace(Path(staging) / LORA_WEIGHTS_FILE, folder / LORA_WEIGHTS_FILE)
        rate = trainer.args.text_encoder_lr
        card = write_run_card(trainer, folder, lora_usage(trainer.args.pretrained_model_name_or_path, folder),
                              {"text_encoder_lr": rate} if rate is not None else None)
        return [folder / LORA_WEIGHTS_FILE, card]

    def intermediate_folder(self, step: int) -> str:
        return f"lora-steps-{step}"

    def learned_rows(self, trainer: Trainer) -> list[torch.Tensor]:
        return []

    def result_message(self, result) -> str:
        return f"Trained {self.name} in {result.global_step} steps; weights in {result.output_dir}"

    # ---------------------------------------------------------------- helpers for the losses
    def encode(self, trainer: Trainer, captions):
        return trainer.unwrapped.encode(trainer.tokenize(captions))

    def forward(self, trainer: Trainer, noisy, timesteps, hidden, kwargs):
        """The trainable UNet through the prepared (DDP) module."""
        with self.unet_context(trainer):
            return trainer.model(noisy, timesteps, hidden.to(trainer.weight_dtype), kwargs.get("added_cond_kwargs"))

    @torch.no_grad()
    def reference(self, trainer: Trainer, captions, hidden, noisy, timesteps, kwargs):
        """The frozen base model's prediction (adapters disabled, no gradient). ``hidden`` is the
        text encoding of ``captions`` (recomputed here with the base encoder when it is trained)."""
        m = trainer.models
        modules = [trainer.accelerator.unwrap_model(m.unet)]
        if trainer.args.train_text_encoder:
            modules += list(m.text_encoders)
        # Under the same autocast as the trained forward (accelerate wraps the prepared
        # module in it): otherwise at equal weights e_theta != e_ref under fp16 on a GPU.
        with adapters_disabled(*modules), trainer.accelerator.autocast():
            if trainer.args.train_text_encoder:  # the base text encoding too
                hidden, pooled = self.encode(trainer, captions)
                if pooled is not None:
                    kwargs = dict(kwargs)
                    kwargs["added_cond_kwargs"] = dict(kwargs["added_cond_kwargs"], text_embeds=pooled.to(trainer.weight_dtype))
            return m.unet(noisy, timesteps, hidden.to(trainer.weight_dtype), **kwargs).sample

    def run_record(self) -> dict:
        return {"lora_targets": list(UNET_TARGETS)}
