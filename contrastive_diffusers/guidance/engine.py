"""The guidance engine: moves latents along the gradient of a method's loss on attention maps.

One :class:`Guider` serves one generation call. At a guided step it runs the UNet on the
conditional branch of the whole batch at once (through ``scheduler.scale_model_input``),
reads the recorded maps, evaluates the method's loss per image in float32, and updates
each image's latents with its own gradient. Updates whose gradient is not finite are
skipped and reported instead of turning latents into NaN.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .attention import AttentionRecorder, ForwardComplete, default_attn_res, recording_processors, select_layers
from .maps import token_window
from .methods import GuidanceMethod

logger = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """What guidance did at one denoising step (per image lists)."""

    step: int
    timestep: float
    step_size: float
    loss: list[float]
    refinement_iterations: list[int] = field(default_factory=list)
    updated: list[bool] = field(default_factory=list)
    skipped_nonfinite: list[bool] = field(default_factory=list)
    loss_after_update: list[float] | None = None


@dataclass
class GuidanceConditioning:
    """The conditional-branch inputs of the guidance forward, one row per image."""

    encoder_hidden_states: torch.Tensor
    groups: Sequence[Sequence[Any]]
    prompt_lengths: Sequence[int]
    prompts: Sequence[str]
    added_cond_kwargs: dict | None = None
    cross_attention_kwargs: dict | None = None
    timestep_cond: torch.Tensor | None = None

    def __post_init__(self):
        n = self.encoder_hidden_states.shape[0]
        for name in ("groups", "prompt_lengths", "prompts"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for a batch of {n} images")

    def rows(self, index: list[int]) -> "GuidanceConditioning":
        """The conditioning of the images ``index`` only (every per-image tensor sliced)."""
        picked = torch.tensor(index, device=self.encoder_hidden_states.device)

        def take(x):
            return x.index_select(0, picked.to(x.device)) if isinstance(x, torch.Tensor) else x

        return GuidanceConditioning(
            take(self.encoder_hidden_states),
            [self.groups[i] for i in index],
            [self.prompt_lengths[i] for i in index],
            [self.prompts[i] for i in index],
            None if self.added_cond_kwargs is None else {k: take(v) for k, v in self.added_cond_kwargs.items()},
            self.cross_attention_kwargs,
            take(self.timestep_cond),
        )


@contextmanager
def _frozen_parameters(parameters: Sequence[torch.nn.Parameter]):
    """No gradient bookkeeping for the weights while guiding; restores the flags after.
    ``parameters`` is listed once per call (``module.parameters()`` walks every submodule)."""
    trainable = [p for p in parameters if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


@contextmanager
def _checkpointing_off(modules: Sequence[torch.nn.Module]):
    """Gradient checkpointing off in ``modules`` while guiding: its backward recomputes each
    block after the recording has ended (and, truncated, raises again), so the recomputed block
    saves other tensors than the first pass did and torch aborts. The guidance forward keeps its
    activations instead; the flags are restored after."""
    for m in modules:
        m.gradient_checkpointing = False
    try:
        yield
    finally:
        for m in modules:
            m.gradient_checkpointing = True


def layerwise_casting_hooks(model: torch.nn.Module) -> list[tuple[torch.nn.Module, Any]]:
    """``(layer, hook)`` for each layer of ``model`` under diffusers' ``enable_layerwise_casting``."""
    found = []
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook("layerwise_casting") if registry is not None else None
        if hook is not None:
            found.append((module, hook))
    return found


@contextmanager
def _compute_dtype_kept(cast_layers: Sequence[tuple[torch.nn.Module, Any]]):
    """Layerwise casting stores weights in a small dtype (float8) and casts each layer to its
    compute dtype for its forward only, back right after; the guidance backward would then find
    its saved weights in the storage dtype. While guiding, the cast layers keep the compute
    dtype (the same values: float8 holds nothing bf16, fp16 or fp32 cannot) and go back to the
    storage dtype after, so a guided step needs the compute dtype's memory for those weights."""
    storage = [hook.storage_dtype for _, hook in cast_layers]
    for _, hook in cast_layers:
        hook.storage_dtype = hook.compute_dtype  # its post_forward casts to storage_dtype
    try:
        yield
    finally:
        for (layer, hook), dtype in zip(cast_layers, storage):
            hook.storage_dtype = dtype
            layer.to(dtype=dtype, non_blocking=hook.non_blocking)


def checkpointed_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of ``model`` with gradient checkpointing on (``enable_gradient_checkpointing``)."""
    return [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]


def resolve_window_mode(method: GuidanceMethod, tokenizers: Sequence) -> str:
    """``auto``: ``all`` (diffusers' ``[1:-1]``) when every tokenizer pads with its end token,
    ``prompt`` when one pads with a real token (SD 2.x, SDXL)."""
    if method.token_window != "auto":
        return method.token_window
    for tok in tokenizers:
        if tok is not None and tok.pad_token_id != tok.eos_token_id:
            return "prompt"
    return "all"


def lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The PEFT adapter layers of ``model`` (``scaling``: adapter name -> scale)."""
    return [m for m in model.modules() if isinstance(getattr(m, "scaling", None), dict) and hasattr(m, "scale_layer")]


@contextmanager
def stopping_early(adapter_layers: Sequence[torch.nn.Module]):
    """Runs a guidance forward that may stop after its last recorded layer (:class:`ForwardComplete`).
    diffusers before 0.37 scales the LoRA layers by the call's ``scale`` at the top of the
    forward and unscales them only at its very end, outside a ``finally``: a stopped forward
    left them scaled, compounding on every guided step and outliving the call. Their scalings
    are put back."""
    saved = [dict(m.scaling) for m in adapter_layers]
    try:
        yield
    except ForwardComplete:
        for layer, scaling in zip(adapter_layers, saved):
            layer.scaling.update(scaling)


def _offload_hooked(module: torch.nn.Module) -> bool:
    """Under accelerate's hooks (model offload) or diffusers' group offloading, whose prefetching
    learns the order of the layers from the first forward."""
    registry = getattr(module, "_diffusers_hook", None)
    return hasattr(module, "_hf_hook") or any("offload" in name for name in getattr(registry, "hooks", {}))


def can_truncate(truncate_forward: bool, model) -> bool:
    """Whether to cut the guidance forward after the last recorded layer: it changes nothing in
    the loss, but is left off under offloading hooks, which expect whole forwards."""
    return truncate_forward and not any(_offload_hooked(m) for m in model.modules())


class Guider:
    """Applies ``method`` during one generation; see the module docstring.

    ``attn_res`` ``None`` reads the maps of :func:`~.attention.default_attn_res`.
    """

    def __init__(
        self,
        method: GuidanceMethod,
        unet,
        scheduler,
        conditioning: GuidanceConditioning,
        latent_hw: tuple[int, int],
        attn_res: tuple[int, int] | None,
        num_inference_steps: int,
        window_mode: str = "all",
        record_loss_after_update: bool = False,
        keep_attention_maps: bool = False,
        truncate_forward: bool = True,
    ):
        self.unet = unet
        self.weights = list(unet.parameters())  # listed once: walking the modules costs ms per step
        self.checkpointed = checkpointed_modules(unet)
        self.cast_layers = layerwise_casting_hooks(unet)
        self.scheduler = scheduler
        if attn_res is None:
            attn_res = default_attn_res(unet, latent_hw)
        self.attn_res = tuple(int(s) for s in attn_res)
        self.layer_names = select_layers(unet, latent_hw, self.attn_res)
        self.truncate_forward = can_truncate(truncate_forward, unet)
        self.adapter_layers = lora_layers(unet) if self.truncate_forward else []
        self.recorder = AttentionRecorder(
            self.attn_res, stop_after=len(self.layer_names) if self.truncate_forward else None
        )
        # the method's schedule: fractions -> this run's step indices
        self._start_run(method, conditioning, method.schedule, num_inference_steps, window_mode,
                        conditioning.encoder_hidden_states.shape[1], record_loss_after_update, keep_attention_maps)

    def _start_run(self, method, conditioning, schedule, num_inference_steps: int, window_mode: str,
                   num_tokens: int, record_loss_after_update: bool, keep_attention_maps: bool) -> None:
        """The state every guider keeps (UNet or MMDiT): the method, its resolved schedule, the
        token windows, the records; the prompts' token groups checked against the method."""
        self.method = method
        self.cond = conditioning
        self.schedule = schedule.resolve(num_inference_steps)
        self.step_sizes = self.schedule.step_sizes(num_inference_steps)
        self.window_mode = window_mode
        self.record_loss_after_update = record_loss_after_update
        self.keep_attention_maps = keep_attention_maps
        self.records: list[StepRecord] = []
        self.attention_maps: dict[int, torch.Tensor] = {}
        self.previous_maps: torch.Tensor | None = None
        self.windows = [token_window(window_mode, n, num_tokens) for n in conditioning.prompt_lengths]
        for groups, prompt in zip(conditioning.groups, conditioning.prompts, strict=True):
            method.validate_groups(groups, prompt)

    # ------------------------------------------------------------------ forward + loss
    #: Whether :meth:`_forward_maps` can run a subset of the batch (the MMDiT guider's forward
    #: is the pipeline's closure over the whole batch).
    forwards_row_subsets = True

    def _forward_maps(self, latents: torch.Tensor, t, rows: list[int] | None = None) -> torch.Tensor:
        """The maps of the images ``rows`` (all for ``None``; ``latents`` holds just those rows)."""
        cond = self.cond if rows is None else self.cond.rows(rows)
        model_input = self.scheduler.scale_model_input(latents, t)
        with self.recorder.recording():
            with stopping_early(self.adapter_layers):
                self.unet(
                    model_input,
                    t,
                    encoder_hidden_states=cond.encoder_hidden_states,
                    timestep_cond=cond.timestep_cond,
                    added_cond_kwargs=cond.added_cond_kwargs,
                    cross_attention_kwargs=cond.cross_attention_kwargs,
                    return_dict=False,
                )
            return self.recorder.aggregate()

    def _losses(self, maps: torch.Tensor, rows: list[int] | None = None) -> torch.Tensor:
        per_image = []
        for k, b in enumerate(range(maps.shape[0]) if rows is None else rows):
            previous = None
            if self.method.uses_previous_maps and self.previous_maps is not None:
                previous = self.previous_maps[b]
            per_image.append(
                self.method.loss(
                    maps[k], self.cond.groups[b], self.windows[b], self.cond.prompt_lengths[b], previous
                )
            )
        return torch.stack(per_image).float()

    def losses(self, latents: torch.Tensor, t, rows: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image losses at ``latents`` (with the graph to ``latents``) and the maps; with
        ``rows``, of those images only (``latents`` still the whole batch)."""
        if rows is None:
            maps = self._forward_maps(latents, t)
            return self._losses(maps), maps
        maps = self._forward_maps(latents[rows], t, rows)
        return self._losses(maps, rows), maps

    def _descend(self, latents, losses, step_size, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """One masked gradient step; rows with a non-finite gradient or loss stay put."""
        total = (losses * mask).sum()
        if total.requires_grad:
            (grad,) = torch.autograd.grad(total, latents)
        else:  # a loss constant in the latents (e.g. NT-Xent without a positive pair)
            grad = torch.zeros_like(latents)
        finite = torch.isfinite(grad).flatten(1).all(1) & torch.isfinite(losses.detach())
        move = mask.bool() & finite
        grad = torch.where(move.view(-1, *[1] * (grad.dim() - 1)), grad, torch.zeros_like(grad))
        updated = (latents.detach().float() - step_size * grad.float()).to(latents.dtype)
        return updated, (mask.bool() & ~finite)

    # ------------------------------------------------------------------ one denoising step
    @contextmanager
    def _guiding(self):
        """Gradients on, the UNet's weights frozen, the recording processors installed; all
        restored on exit, also when anything inside raises."""
        with (
            torch.enable_grad(),
            _frozen_parameters(self.weights),
            _checkpointing_off(self.checkpointed),
            _compute_dtype_kept(self.cast_layers),
            recording_processors(self.unet, self.layer_names, self.recorder),
        ):
            yield

    def _refine(self, z, t, losses, maps, target: float | None, step_size: float):
        """Attend-and-Excite's iterative refinement: update the images whose loss is above
        ``target`` (every image for ``None``) until none is or ``refinement_iterations``
        updates were made. Returns the refined latents with their losses and maps (the
        regular update starts from them), the iterations per image and the skipped updates."""
        batch = z.shape[0]
        iterations = torch.zeros(batch, dtype=torch.long)
        skipped = torch.zeros(batch, dtype=torch.bool, device=z.device)
        active = torch.ones(batch, dtype=torch.bool, device=z.device)
        if target is not None:
            active &= losses.detach() > target
        count = 0
        while bool(active.any()) and count < self.schedule.refinement_iterations:
            if count > 0:  # the first iteration reuses the caller's forward
                z = z.detach().requires_grad_(True)
                if self.forwards_row_subsets and not bool(active.all()):
                    # Only the images still above their target: the others would be masked out
                    # of the update after a forward and backward of their own (as diffusers'
                    # pipeline, which refines one image at a time, never runs them).
                    rows = active.nonzero().flatten().tolist()
                    row_losses, _ = self.losses(z, t, rows)
                    losses = losses.detach().index_put((torch.tensor(rows, device=losses.device),), row_losses)
                else:
                    losses, maps = self.losses(z, t)
            if not losses.requires_grad:
                break  # constant in the latents (no positive pair yet): nothing to refine
            count += 1
            z, bad = self._descend(z, losses, step_size, active.to(losses.dtype))
            skipped |= bad
            iterations += active.cpu().long()
            if target is not None:
                active &= losses.detach() > target
        if count > 0:  # the loss at the refined latents drives the regular update
            z = z.detach().requires_grad_(True)
            losses, maps = self.losses(z, t)
        return z, losses, maps, iterations.tolist(), skipped

    def step(self, latents: torch.Tensor, t, step_index: int) -> torch.Tensor:
        """Guide ``latents`` at denoising step ``step_index`` (timestep ``t``)."""
        if not self.schedule.is_active(step_index):
            return latents
        step_size = float(self.step_sizes[step_index])
        batch = latents.shape[0]
        iterations, updated = [0] * batch, [False] * batch
        loss_after = None
        # torch.inference_mode() (a common wrapper of pipeline calls) turns gradients off in a
        # way enable_grad cannot lift; the loop's latents are then inference tensors, which
        # autograd refuses: guide outside it, on a normal copy.
        with torch.inference_mode(False), self._guiding():
            skipped = torch.zeros(batch, dtype=torch.bool, device=latents.device)
            z = latents.detach().clone().requires_grad_(True)
            losses, maps = self.losses(z, t)
            if self.schedule.refines_at(step_index):
                target = self.schedule.refinement[step_index]
                z, losses, maps, iterations, skipped = self._refine(z, t, losses, maps, target, step_size)
            loss = losses.detach().cpu().tolist()
            if self.schedule.updates_at(step_index):
                mask = (losses.detach() != 0).to(losses.dtype)
                z, bad = self._descend(z, losses, step_size, mask)
                skipped |= bad
                updated = (mask.bool() & ~bad).cpu().tolist()
            z = z.detach()
            if self.record_loss_after_update:
                loss_after = self.losses(z, t)[0].detach().cpu().tolist()
        record = StepRecord(
            step=step_index,
            timestep=float(t),
            step_size=step_size,
            loss=loss,
            refinement_iterations=iterations,
            updated=updated,
            skipped_nonfinite=skipped.cpu().tolist(),
            loss_after_update=loss_after,
        )
        if any(record.skipped_nonfinite):
            logger.warning(
                "Guidance step %d: skipped the update of image(s) %s whose gradient was not finite.",
                step_index,
                [b for b, s in enumerate(record.skipped_nonfinite) if s],
            )
        self.records.append(record)
        self.previous_maps = maps.detach()
        if self.keep_attention_maps:
            self.attention_maps[step_index] = maps.detach().cpu()
        return z
