"""Training losses as pure functions over tensors.

- :func:`denoising_loss` / :func:`masked_denoising_loss`: the diffusion MSE, optionally
  restricted to a spatial mask (MCPL's AttnMask).
- :func:`attention_mask`: that mask, from cross-attention maps of the learned tokens.
- :func:`steering_loss`: ReVersion's multi-positive InfoNCE on token embeddings.
- :func:`prompt_contrastive_loss`: MCPL's PromptCL, a multi-positive InfoNCE over
  text-encoder outputs grouped by label.

Both contrastive losses use the "positives summed inside the log" form:
``-log(sum_pos exp(s/t) / sum_all exp(s/t))`` on cosine similarities ``s``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def denoising_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in float32 (the prediction may be bf16/fp16)."""
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


def masked_denoising_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MCPL's masked loss: prediction and target both multiplied by ``mask`` (``(B, 1, H, W)``,
    broadcast over channels), then the squared error averaged over ALL elements, as the
    official code does (``ddpm.py``: ``model_output`` and ``target`` through the mask, then
    ``.mean([1, 2, 3])``). Outside the mask the error counts as zero, so a smaller mask gives
    a smaller loss (and leaves PromptCL relatively more weight); a soft mask weighs the error
    by its square. A mask of ones gives :func:`denoising_loss`."""
    if mask.dim() != pred.dim() or mask.shape[0] != pred.shape[0] or mask.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"Mask of shape {tuple(mask.shape)} does not fit predictions of shape {tuple(pred.shape)}.")
    mask = mask.float()
    return (((pred.float() - target.float()) * mask) ** 2).mean()


def attention_mask(
    maps: torch.Tensor,
    selected: torch.Tensor,
    size: tuple[int, int],
    threshold: float | None = 0.3,
) -> torch.Tensor:
    """MCPL's AttnMask: where the learned tokens attend, as the official code computes it
    (``LocalMask`` in its ``p2p_ldm_utils.py``).

    ``maps`` is ``(B, h, w, L)`` (cross-attention averaged over heads and layers), ``selected``
    a ``(B, L)`` boolean marking each sample's learned-token positions. The selected tokens'
    maps are summed, resized to ``size`` (nearest), divided by their maximum; ``threshold``
    gives a hard 0/1 mask (``map > threshold``), ``None`` the soft map. A sample with no
    selected token, or no attention on them, gets a mask of ones (the plain loss). The result
    is ``(B, 1, H, W)``, detached: the mask chooses where the denoising loss applies, it is not
    itself optimised.

    Two things of the official code are left out. Its README's runs add a softmax over the
    tokens before the sum (``--presudo_words_softmax``); softmaxed probabilities all lie in
    ``[1/(L-1+e), e/L]``, so every pixel keeps at least ``L/(e(L-1+e))`` (0.36 for 77 tokens)
    of the maximum and a 0.3 threshold masks nothing: that run is the unmasked loss. And it
    ORs every sample's mask with the batch's first (Prompt-to-Prompt's base prompt, another
    image in training).
    """
    if maps.dim() != 4 or selected.shape != (maps.shape[0], maps.shape[-1]):
        raise ValueError(
            f"attention_mask needs maps (B, h, w, L) and selected (B, L); got {tuple(maps.shape)} and "
            f"{tuple(selected.shape)}."
        )
    maps = maps.detach().float()
    summed = (maps * selected[:, None, None, :].to(maps.dtype)).sum(-1, keepdim=True).permute(0, 3, 1, 2)
    summed = F.interpolate(summed, size=size, mode="nearest")
    peak = summed.amax(dim=(2, 3), keepdim=True)
    usable = peak.flatten() > 0
    out = torch.ones(maps.shape[0], 1, *size, device=maps.device)
    if usable.any():
        norm = summed[usable] / peak[usable]
        out[usable] = (norm > threshold).float() if threshold is not None else norm
    return out


def steering_loss(
    anchor: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None,
    temperature: float = 0.07,
) -> torch.Tensor:
    """ReVersion's steering loss: one multi-positive InfoNCE between the normalised relation-token
    embedding ``anchor`` ``(D,)`` and every positive row ``(P, D)`` (the token pieces of the
    prepositions drawn for the whole batch, pooled as the authors' code pools them), against
    the negative rows ``(N, D)`` (``None`` or empty: none):
    ``-log(sum_p e^{a.p/t} / (sum_p e^{a.p/t} + sum_n e^{a.n/t}))`` on unit vectors. Without
    negatives the loss is 0 (nothing to push away from).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if anchor.dim() != 1 or positives.dim() != 2 or positives.shape[0] == 0 or positives.shape[1] != anchor.shape[0]:
        raise ValueError(
            f"steering_loss: anchor {tuple(anchor.shape)} and positives {tuple(positives.shape)} do not match "
            "(need (D,) and (P, D) with P >= 1)."
        )
    a = F.normalize(anchor.float(), dim=-1)
    pos = F.normalize(positives.float(), dim=-1) @ a / temperature
    logits = pos
    if negatives is not None and negatives.numel() > 0:
        logits = torch.cat([pos, F.normalize(negatives.float(), dim=-1) @ a / temperature])
    return torch.logsumexp(logits, dim=0) - torch.logsumexp(pos, dim=0)


def prompt_contrastive_loss_official(features: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """PromptCL as MCPL's official code computes it: ``features`` ``(B, n, D)``, the ``n``
    contrasted tokens of each of ``B`` captions in caption order (with bind-adjective, the
    captions' adjectives appended as ``B`` more rows). The rows are flattened caption by
    caption; each row's one positive is the row ``B`` places before it (cyclically: the same
    token two captions away at ``B = 4, n = 2``), every other row is in the denominator, the
    other copies of the same token included:
    ``mean_i(-s(i, pos(i))/t + logsumexp_{j != i} s(i, j)/t)`` on cosine similarities."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if features.dim() != 3 or features.shape[1] == 0:
        raise ValueError(f"prompt_contrastive_loss_official needs features (B, n, D); got {tuple(features.shape)}.")
    rows = features.shape[0] * features.shape[1]
    f = F.normalize(features.reshape(rows, -1).float(), dim=-1)
    eye = torch.eye(rows, dtype=torch.bool, device=f.device)
    positive = eye.roll(shifts=rows // features.shape[1], dims=0)
    sim = (f @ f.T).masked_fill(eye, -9e15) / temperature
    return (-sim[positive] + torch.logsumexp(sim, dim=-1)).mean()


def prompt_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """PromptCL: multi-positive InfoNCE over ``features`` ``(M, D)`` with integer ``labels`` ``(M,)``.

    Every item is an anchor; its positives are the other items with the same label, all other
    items are in the denominator: ``-log(sum_pos e^{s/t} / sum_{j != i} e^{s/t})`` on cosine
    similarities. The loss is the mean over anchors that have at least one positive (0, still
    attached to the graph, if none has). Items are compared by label, never by their place
    in the batch, so any batch size and any number of tokens per sample pair correctly.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"prompt_contrastive_loss needs features (M, D) and labels (M,); got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}."
        )
    f = F.normalize(features.float(), dim=-1)
    sim = f @ f.T / temperature
    m = f.shape[0]
    eye = torch.eye(m, dtype=torch.bool, device=f.device)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    has_positive = positive.any(1)
    if not has_positive.any():
        return features.sum() * 0.0
    sim = sim.masked_fill(eye, float("-inf"))
    log_all = torch.logsumexp(sim, dim=1)
    log_pos = torch.logsumexp(sim.masked_fill(~positive, float("-inf")), dim=1)
    return (log_all - log_pos)[has_positive].mean()
