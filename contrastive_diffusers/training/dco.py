"""DCO: Direct Consistency Optimization for personalization (Lee et al., 2024), LoRA on the
shared loop and the same code as EvoGen.

    accelerate launch -m contrastive_diffusers.training.dco \\
        --pretrained_model_name_or_path stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --train_data_dir my_dog/ --output_dir out/dco-dog

(also ``contrastive-diffusers train dco ...``). The data is a folder of reference images with
captions (``metadata.jsonl`` rows ``{"file_name", "text"}``, e.g. "a photo of sks dog on a
couch"; the framework's ``data.py`` format, no placeholder token needed). The loss keeps the
fine-tuned model consistent with the reference images RELATIVE to the frozen base model:

    −log σ(−β·(‖ε_θ(x_t, c) − ε‖² − ‖ε_ref(x_t, c) − ε‖²))     (β = ``--dco_beta``, 1000)

with the reference ε_ref the same UNet with its LoRA adapters disabled, under
``torch.no_grad()`` (one UNet pass with gradients and one without per sample). The errors
are per sample (mean over its elements), the log-sigmoid taken per sample and averaged; the
official code (``kyungmnlee/dco``) averages the errors over the batch first, which is the
same at its default batch of 1 (ours too).
``--objective denoise`` is the DreamBooth-style LoRA baseline (denoising MSE only). Output: LoRA
weights for stock ``pipe.load_lora_weights``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from types import MappingProxyType

from .data import DataError, ImageCaptions, load_examples
from .entry import run_main
from .lora import LoraMethod
from .objectives import consistency_dco, denoising_mse, per_sample_error
from .trainer import Trainer


class DCO(LoraMethod):
    name = "dco"
    description = "DCO: LoRA personalization with a consistency loss against the frozen base model."
    defaults = MappingProxyType(
        {
            "learning_rate": 5e-5,
            "scale_lr": False,
            "train_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "max_train_steps": 1000,
            "flip_p": 0.0,
            # the authors' LoRA rank, weight decay and text-encoder rate (kyungmnlee/dco customize.py)
            "rank": 32,
            "adam_weight_decay": 1e-4,
            "text_encoder_lr": 5e-6,
        }
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        g = parser.add_argument_group("DCO")
        g.add_argument("--dco_beta", type=float, default=1000.0, help="β of the consistency loss.")
        g.add_argument(
            "--objective",
            default="dco",
            choices=("dco", "denoise"),
            help="dco: the consistency loss; denoise: DreamBooth-style LoRA (the denoising MSE only, no "
            "reference pass), the baseline DCO is compared with.",
        )

    def validate(self, parser, args) -> None:
        super().validate(parser, args)
        if args.dco_beta <= 0:
            parser.error(f"--dco_beta must be positive, got {args.dco_beta}")

    def load_data(self, trainer: Trainer):
        args = trainer.args
        trainer.examples = load_examples(args.train_data_dir, None)
        # DCO learns no new token: a "{}" slot (a ReVersion text.json) would be trained as text
        slotted = [e.path.name for e in trainer.examples if any("{}" in c for c in e.captions)]
        if slotted:
            raise DataError(
                f"{', '.join(slotted[:5])} in {args.train_data_dir} have captions with a '{{}}' slot, which DCO "
                "trains as written (it learns no new token); write the full captions, e.g. 'a photo of sks dog'."
            )
        return ImageCaptions(trainer.examples, args.resolution, args.center_crop, args.flip_p,
                             squash=args.image_fit == "squash")

    def loss(self, trainer: Trainer, batch: dict):
        captions = list(batch["captions"])
        hidden, pooled = self.encode(trainer, captions)
        noisy, timesteps, target, kwargs = trainer.noisy_latents(batch, pooled)
        e_model = per_sample_error(self.forward(trainer, noisy, timesteps, hidden, kwargs), target)
        if trainer.args.objective == "denoise":
            loss = denoising_mse(e_model)
            return loss, {"loss": loss.detach(), "denoise_loss": loss.detach()}
        e_ref = per_sample_error(self.reference(trainer, captions, hidden, noisy, timesteps, kwargs), target)
        loss = consistency_dco(e_model, e_ref, trainer.args.dco_beta)
        return loss, {
            "loss": loss.detach(),
            "denoise_loss": denoising_mse(e_model).detach(),
            "reference_denoise_loss": e_ref.mean().detach(),
        }


def main(argv: Sequence[str] | None = None, prog: str = "python -m contrastive_diffusers.training.dco") -> int:
    return run_main(DCO(), argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
