"""Guidance losses: pure functions of one image's attention maps and its token groups.

Every function takes ``maps`` of shape ``(h, w, tokens)`` (raw attention probabilities,
averaged over heads and recorded layers, float32) and token positions, and returns a
scalar tensor. None of them edits ``maps``. Groups are given as :class:`TokenGroup`
objects or anything with ``noun``, ``modifiers`` and ``positions`` tuples.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .maps import smooth, text_softmax, token_map

_EPS = 1e-12


# --------------------------------------------------------------------------- Attend-and-Excite
def subject_max_attention(
    maps: torch.Tensor,
    subjects: Sequence[tuple[int, ...]],
    window: tuple[int, int],
    temperature: float = 100.0,
    kernel_size: int = 3,
    sigma: float = 0.5,
) -> torch.Tensor:
    """Max over pixels of each subject's smoothed, token-softmaxed map: ``(num_subjects,)``."""
    probs = text_softmax(maps, window, temperature)
    stacked = torch.stack([token_map(probs, s) for s in subjects])
    return smooth(stacked, kernel_size, sigma).flatten(1).max(dim=1).values


def attend_and_excite_loss(
    maps: torch.Tensor,
    subjects: Sequence[tuple[int, ...]],
    window: tuple[int, int],
    temperature: float = 100.0,
    kernel_size: int = 3,
    sigma: float = 0.5,
) -> torch.Tensor:
    """``max_s max(0, 1 - max_pixel(smooth(softmax(100 * maps)[s])))`` (Chefer et al. 2023).

    The most neglected subject sets the loss; a word of several pieces is the sum of its
    pieces' maps.
    """
    peaks = subject_max_attention(maps, subjects, window, temperature, kernel_size, sigma)
    return (1.0 - peaks).clamp_min(0.0).max()


# --------------------------------------------------------------------------- CONFORM
def nt_xent(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Multi-positive NT-Xent with cosine similarity, as pytorch-metric-learning's ``NTXentLoss``.

    For every ordered pair ``(a, p)``, ``a != p``, with equal labels:
    ``-log(e^{s_ap/t} / (e^{s_ap/t} + sum_{n: label_n != label_a} e^{s_an/t}))``;
    the loss is the mean over those pairs (zero when there is no positive pair).
    """
    z = F.normalize(embeddings.float(), dim=1)
    sim = z @ z.T / temperature
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    if not positive.any():
        return sim.new_zeros(())
    negative = ~same
    # log-sum-exp over the anchor's negatives, per anchor (-inf when it has none).
    neg_lse = torch.logsumexp(sim.masked_fill(~negative, float("-inf")), dim=1)
    a, p = positive.nonzero(as_tuple=True)
    pos = sim[a, p]
    denominator = torch.logaddexp(pos, neg_lse[a])
    return (denominator - pos).mean()


def conform_embeddings(
    maps: torch.Tensor,
    groups: Sequence,
    window: tuple[int, int],
    temperature: float = 100.0,
    softmax_normalize: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One embedding per token of every group (its smoothed, flattened map) and its group label.

    Every piece of a word of several pieces is a member of its own, as in the authors' code,
    which takes the groups as lists of token positions.
    """
    probs = text_softmax(maps, window, temperature) if softmax_normalize else maps
    positions, labels = [], []
    for label, group in enumerate(groups):
        for word in (*group.modifiers, group.noun):
            positions.extend(word)
            labels.extend([label] * len(word))
    stacked = smooth(probs[..., positions].movedim(-1, 0), kernel_size, sigma).flatten(1)
    return stacked, torch.tensor(labels, device=maps.device)


def conform_loss(
    maps: torch.Tensor,
    groups: Sequence,
    window: tuple[int, int],
    previous_maps: torch.Tensor | None = None,
    temperature: float = 0.5,
    softmax_temperature: float = 100.0,
    softmax_normalize: bool = True,
    kernel_size: int = 3,
    sigma: float = 0.5,
) -> torch.Tensor:
    """CONFORM (Meral et al. 2024): NT-Xent over token maps, one label per group.

    Tokens of a group attract, tokens of different groups repel; when ``previous_maps``
    (the maps of the previous denoising step) are given, each token's previous map joins
    as one more member of its group.
    """
    args = (window, softmax_temperature, softmax_normalize, kernel_size, sigma)
    embeddings, labels = conform_embeddings(maps, groups, *args)
    if previous_maps is not None:
        prev_embeddings, prev_labels = conform_embeddings(previous_maps.detach(), groups, *args)
        embeddings = torch.cat([embeddings, prev_embeddings])
        labels = torch.cat([labels, prev_labels])
    return nt_xent(embeddings, labels, temperature)


# --------------------------------------------------------------------------- EBAMA / SynGen helpers
def _spatial_distributions(maps: torch.Tensor) -> torch.Tensor:
    """Every token's map as a distribution over pixels: ``(tokens, h*w)``."""
    flat = maps.float().flatten(0, 1).T
    return flat / flat.sum(dim=1, keepdim=True).clamp_min(_EPS)


def _cosine_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(p, q, dim=-1, eps=_EPS)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.clamp_min(_EPS).log() - q.clamp_min(_EPS).log())).sum(-1)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``(KL(p||q) + KL(q||p)) / 2`` over the last dimension."""
    return 0.5 * (_kl(p, q) + _kl(q, p))


def _word_distance(dist, dists: torch.Tensor, a: tuple[int, ...], b: tuple[int, ...]) -> torch.Tensor:
    """Distance between two words: the largest over all pairs of their pieces (SynGen's code)."""
    return torch.stack([dist(dists[i], dists[j]) for i in a for j in b]).max()


def _summed_piece_distance(dist, dists: torch.Tensor, a: tuple[int, ...], b: tuple[int, ...]) -> torch.Tensor:
    """Distance from word ``a`` to word ``b``: per piece of ``a`` the largest distance to a
    piece of ``b``, summed over ``a``'s pieces (EBAMA's code for its cosine distance)."""
    return torch.stack([torch.stack([dist(dists[i], dists[j]) for j in b]).max() for i in a]).sum()


def _outside_tokens(group, prompt_length: int) -> list[int]:
    """The prompt's own tokens (no start/end/padding) that are not in ``group``."""
    inside = set(group.positions)
    return [i for i in range(1, prompt_length + 1) if i not in inside]


def _mean_distance_to(dist, dists: torch.Tensor, word: tuple[int, ...], others: list[int]) -> torch.Tensor:
    if not others:
        return dists.new_zeros(())
    other = dists[others]
    # Per outside token, the largest distance over the word's pieces; then the mean over tokens.
    per_piece = torch.stack([dist(dists[i].expand_as(other), other) for i in word])
    return per_piece.max(dim=0).values.mean()


# --------------------------------------------------------------------------- EBAMA
def ebama_binding_loss(maps: torch.Tensor, groups: Sequence, prompt_length: int) -> torch.Tensor:
    """Object-conditioned binding: for each object ``n`` and modifier ``m``,
    ``d(m, n) - mean_o d(n, o)`` with ``d`` the cosine distance between spatial maps and
    ``o`` ranging over the prompt's tokens outside the object's group; an object without
    modifiers contributes its repulsion term once. Summed over objects. Words of several
    pieces as in the authors' code: ``d(m, n)`` sums over ``m``'s pieces the largest
    distance to a piece of ``n``; ``d(n, o)`` is the largest over ``n``'s pieces."""
    dists = _spatial_distributions(maps)
    total = dists.new_zeros(())
    for group in groups:
        repel = _mean_distance_to(_cosine_distance, dists, group.noun, _outside_tokens(group, prompt_length))
        if not group.modifiers:
            total = total - repel
        for modifier in group.modifiers:
            total = total + _summed_piece_distance(_cosine_distance, dists, modifier, group.noun) - repel
    return total


def intensity_loss(
    maps: torch.Tensor,
    groups: Sequence,
    window: tuple[int, int],
    temperature: float = 100.0,
    kernel_size: int = 3,
    sigma: float = 0.5,
) -> torch.Tensor:
    """``-sum_objects max_pixel(smooth(softmax(100 * maps)[noun]))``: rewards every object
    being strongly attended somewhere (the noun's first piece, as in EBAMA's code)."""
    nouns = [(group.noun[0],) for group in groups]
    return -subject_max_attention(maps, nouns, window, temperature, kernel_size, sigma).sum()


def ebama_loss(
    maps: torch.Tensor,
    groups: Sequence,
    window: tuple[int, int],
    prompt_length: int,
    intensity_weight: float = 0.5,
    temperature: float = 100.0,
    kernel_size: int = 3,
    sigma: float = 0.5,
) -> torch.Tensor:
    """EBAMA (Zhang et al. 2024): binding loss + ``intensity_weight`` * intensity regulariser."""
    binding = ebama_binding_loss(maps, groups, prompt_length)
    intensity = intensity_loss(maps, groups, window, temperature, kernel_size, sigma)
    return binding + intensity_weight * intensity


# --------------------------------------------------------------------------- SynGen
def syngen_loss(maps: torch.Tensor, groups: Sequence, prompt_length: int) -> torch.Tensor:
    """SynGen (Rassin et al. 2023): for each (modifier ``m``, noun ``n``) pair,
    ``S(m, n) - (mean_o S(n, o) + mean_o S(m, o)) / 2`` with ``S`` the symmetric KL between
    spatial distributions and ``o`` the prompt tokens outside the group. Summed over pairs;
    groups without modifiers add nothing."""
    dists = _spatial_distributions(maps)
    total = dists.new_zeros(())
    for group in groups:
        outside = _outside_tokens(group, prompt_length)
        noun_repel = _mean_distance_to(symmetric_kl, dists, group.noun, outside)
        for modifier in group.modifiers:
            attract = _word_distance(symmetric_kl, dists, modifier, group.noun)
            modifier_repel = _mean_distance_to(symmetric_kl, dists, modifier, outside)
            total = total + attract - 0.5 * (noun_repel + modifier_repel)
    return total
