"""Training the ShapesWorld models from scratch: ``python -m contrastive_diffusers.shapes.train``
(the command the model card records).

Phases (each timed and logged; every random choice comes from a generator seeded by
``(seed, phase)``, or from the global RNG, reseeded when the CLIP is built (T5's dropout in the
MMDiT format), so the same seed and arguments give the same weights on the same device):

1. data: ``--num_scenes`` captioned scenes of the training split (colour-shape pairs from
   ``shapes.prompts.training_pairs`` only; caption kinds mixed by ``--kind_weights``), each
   scene drawn to match its caption exactly (``shapes.captions.scenes_for``) and rendered once;
2. ``vae``: ``AutoencoderKL`` with L1 + L2 reconstruction and a small KL term; then
   ``scaling_factor = 1 / std`` of the training latents, so the UNet sees unit variance;
3. ``unet``: ``UNet2DConditionModel`` and ``CLIPTextModel`` trained jointly with the v loss on
   SD 1.x's DDPM schedule rescaled to zero terminal SNR (``--noise_schedule zero_snr``, the
   default; ``sd`` is SD's schedule with the epsilon loss), min-SNR-gamma weighting,
   ``--caption_dropout`` empty captions for classifier-free guidance, EMA of both (the EMA
   weights are saved); fp32 by default,
   ``--mixed_precision bf16`` autocasts the forward passes (fp32 master weights, optimiser and
   loss): 1.28 instead of 1.45 s per step at batch 64 on a 2-core AVX512-BF16 CPU, but the one
   full run with it (together with 1,700 steps and a 0.4 single-object share) drew a clearly
   worse model (single-object success 0.69 instead of 0.85, on SD's schedule), so the shipped
   recipe does not use it;
4. ``clip``: a ``CLIPModel`` trained with image-caption InfoNCE whose candidates include each
   image's hard negatives (``shapes.captions.negatives_for``: swapped colours / shapes,
   replaced colour / shape, wrong relation or count); its caption retrieval against those
   negatives is measured on fresh renders (training pairs and held-out pairs);
5. ``--eval``: the test split's prompts at ``--eval_seeds`` seeds with the trained pipeline
   (no guidance), checked by the oracle, per category.

Output folder: a ``StableDiffusionPipeline`` (``model_index.json``, ``vae/``, ``unet/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``; safetensors; no safety checker), the
world's CLIP in ``clip/`` (``CLIPModel`` + ``CLIPProcessor``), ``training_log.json`` and a
model card ``README.md`` written from the log.

``--format mmdit`` trains a Stable Diffusion 3-format model instead (the UNet recipe above is
``--format unet``, the default, unchanged): phase 3 becomes ``transformer``, an
``SD3Transformer2DModel`` trained jointly with two CLIP text encoders and a T5 encoder with SD3's
rectified-flow loss (:mod:`.flow`; architecture in :mod:`.mmdit`; ``--transformer_steps``,
``--transformer_lr``, ``--flow_shift``), the VAE gets a ``shift_factor`` as SD3's has, and the
folder is a ``StableDiffusion3Pipeline`` with a ``FlowMatchEulerDiscreteScheduler``.

A run saves each finished phase and, every ``--checkpointing_steps`` steps, the phase in
progress (:mod:`.checkpoints`): the same command in the same folder resumes a killed run to
the weights an uninterrupted one makes; a folder holding anything else is refused. Plain torch,
not accelerate: one process on one device (accelerate's multi-process and state checkpointing
need a prepared ``Accelerator``), and ``--device cuda`` is all a lent GPU needs. The architectures are data in :mod:`contrastive_diffusers.shapes.model`.

Modules, one per job: ``data`` (scenes and captions), ``optim`` (the loop every phase
shares), ``autoencoder``, ``denoiser``, ``flow`` and ``world_clip`` (the phases), ``mmdit`` (the
MMDiT format's architecture and pipeline), ``checkpoints`` (resuming), ``finalize`` (stored
weights and evaluation), ``card`` (the model card), ``run`` (command line and driver).
"""

from .data import DEFAULT_KIND_WEIGHTS, ShapesData, make_data
from .run import build_parser, main, train

__all__ = ["DEFAULT_KIND_WEIGHTS", "ShapesData", "build_parser", "main", "make_data", "train"]
