"""Losses and map operations on hand-made maps, against values computed by hand."""

import math

import pytest
import torch

from contrastive_diffusers.guidance import losses
from contrastive_diffusers.guidance.maps import gaussian_kernel, smooth, text_softmax, token_window
from contrastive_diffusers.guidance.tokens import TokenGroup

# 1-D weights of the originals' kernel at sigma 0.5: exp(-(d / (2 * 0.5))^2) = exp(-d^2), normalised.
EDGE = math.exp(-1) / (1 + 2 * math.exp(-1))  # 0.21194
MID = 1 / (1 + 2 * math.exp(-1))  # 0.57612


def group(*word_positions):
    return TokenGroup(words=tuple(f"w{p}" for p in word_positions), word_positions=tuple((p,) for p in word_positions))


def test_gaussian_kernel_matches_hand_values():
    k = gaussian_kernel(3, 0.5)
    assert k.sum().item() == pytest.approx(1.0)
    assert k[1, 1].item() == pytest.approx(MID * MID, abs=1e-6)
    assert k[0, 0].item() == pytest.approx(EDGE * EDGE, abs=1e-6)
    assert k[0, 1].item() == pytest.approx(EDGE * MID, abs=1e-6)
    assert EDGE == pytest.approx(0.21194, abs=1e-5) and MID == pytest.approx(0.57612, abs=1e-5)


def test_smooth_impulse_with_reflect_padding():
    impulse = torch.zeros(3, 3)
    impulse[1, 1] = 1.0
    out = smooth(impulse)
    assert out[1, 1].item() == pytest.approx(MID**2, abs=1e-6)
    # Reflect padding mirrors the centre into all four corners of a corner pixel's window.
    assert out[0, 0].item() == pytest.approx(4 * EDGE**2, abs=1e-6)
    # ... and into two edge taps of an edge pixel's window.
    assert out[0, 1].item() == pytest.approx(2 * EDGE * MID, abs=1e-6)
    assert out.shape == (3, 3)
    # the smallest maps reflect padding allows: a side longer than half the kernel
    assert smooth(torch.ones(2, 5)).shape == (2, 5)
    with pytest.raises(ValueError, match="1x4 attention maps are too small for the smoothing kernel of size 3"):
        smooth(torch.ones(1, 4))
    with pytest.raises(ValueError, match="kernel_size below 4"):
        smooth(torch.ones(2, 2), kernel_size=5)


def test_text_softmax_window_and_zeros_outside():
    maps = torch.tensor([[[0.0, 0.01, 0.02, 0.5]]])  # (1, 1, 4)
    out = text_softmax(maps, (1, 3), temperature=100.0)
    e1, e2 = math.exp(1), math.exp(2)
    assert out[0, 0].tolist() == pytest.approx([0.0, e1 / (e1 + e2), e2 / (e1 + e2), 0.0], abs=1e-6)


def test_token_window_modes():
    assert token_window("all", 5, 77) == (1, 76)
    assert token_window("prompt", 5, 77) == (1, 6)
    with pytest.raises(ValueError, match="Unknown token window"):
        token_window("bogus", 5, 77)


def _ae_maps():
    """3x3 maps over 5 tokens: token 2 peaks (0.05) at the centre pixel, the rest are zero."""
    maps = torch.zeros(3, 3, 5)
    maps[1, 1, 2] = 0.05
    return maps


def test_attend_and_excite_loss_hand_computed():
    maps = _ae_maps()
    window = (1, 4)  # positions 1..3, as diffusers' [1:-1] for 5 tokens
    p_peak = math.exp(5) / (math.exp(5) + 2)  # token 2 at the centre; 1/3 elsewhere
    p_low = 1 / (math.exp(5) + 2)  # token 3 at the centre
    centre = MID**2
    # Token 2: its smoothed map peaks at the centre.
    peak2 = centre * p_peak + (1 - centre) / 3
    # Token 3: lowest weight on the centre is at a corner (4 * EDGE^2).
    corner = 4 * EDGE**2
    peak3 = corner * p_low + (1 - corner) / 3
    got = losses.subject_max_attention(maps, [(2,), (3,)], window)
    assert got.tolist() == pytest.approx([peak2, peak3], abs=1e-5)
    loss = losses.attend_and_excite_loss(maps, [(2,), (3,)], window)
    assert loss.item() == pytest.approx(max(1 - peak2, 1 - peak3), abs=1e-5)
    assert losses.attend_and_excite_loss(maps, [(2,)], window).item() == pytest.approx(1 - peak2, abs=1e-5)


def test_attend_and_excite_loss_is_zero_when_fully_attended():
    maps = torch.zeros(3, 3, 5)
    maps[..., 2] = 1.0  # token 2 wins every pixel after x100 softmax
    assert losses.attend_and_excite_loss(maps, [(2,)], (1, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_multi_piece_subject_sums_pieces():
    maps = torch.zeros(3, 3, 6)
    probs = text_softmax(maps, (1, 5))
    assert probs[0, 0, 1].item() == pytest.approx(0.25)
    # Two pieces of one word: their probabilities add up (0.5 everywhere after smoothing).
    assert losses.subject_max_attention(maps, [(2, 3)], (1, 5)).item() == pytest.approx(0.5, abs=1e-6)


def test_nt_xent_hand_values():
    tau = 0.5
    emb = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # cos: s01 = 1, s02 = s12 = 0
    labels = torch.tensor([0, 0, 1])
    expected = math.log(1 + math.exp(-1 / tau))  # each anchor: -log(e^2 / (e^2 + e^0))
    assert losses.nt_xent(emb, labels, tau).item() == pytest.approx(expected, abs=1e-6)

    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])  # s02 = s12 = 1/sqrt(2)
    expected = math.log(1 + math.exp((1 / math.sqrt(2) - 1) / tau))
    assert losses.nt_xent(emb, labels, tau).item() == pytest.approx(expected, abs=1e-6)

    # No positive pair at all: nothing to pull together.
    assert losses.nt_xent(emb, torch.tensor([0, 1, 2]), tau).item() == 0.0


def test_nt_xent_averages_over_ordered_positive_pairs():
    tau = 1.0
    # Two labels; anchor 0 has positive 1 (s=1) and negative 2 (s=0); label-1 members 2,3 equal.
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # Every ordered positive pair: -log(e^1 / (e^1 + 2 e^0)).
    expected = -math.log(math.e / (math.e + 2))
    assert losses.nt_xent(emb, labels, tau).item() == pytest.approx(expected, abs=1e-6)


def test_conform_loss_uniform_maps_gives_log_counts():
    maps = torch.full((4, 4, 8), 0.1)
    groups = [group(1, 2), group(4, 5)]
    # All embeddings identical: each anchor has 1 positive and 2 negatives -> log 3.
    assert losses.conform_loss(maps, groups, (1, 7)).item() == pytest.approx(math.log(3), abs=1e-5)
    # With the previous step's maps: 3 positives and 4 negatives per anchor -> log 5.
    got = losses.conform_loss(maps, groups, (1, 7), previous_maps=maps.clone())
    assert got.item() == pytest.approx(math.log(5), abs=1e-5)


def test_conform_loss_prefers_separated_groups():
    separated = torch.zeros(4, 4, 8)
    separated[:2, :, 1] = separated[:2, :, 2] = 0.05  # group A on the top half
    separated[2:, :, 4] = separated[2:, :, 5] = 0.05  # group B on the bottom half
    mixed = torch.zeros(4, 4, 8)
    mixed[:2, :, 1] = mixed[:2, :, 5] = 0.05  # attributes swapped across the objects
    mixed[2:, :, 4] = mixed[2:, :, 2] = 0.05
    groups = [group(1, 2), group(4, 5)]
    good = losses.conform_loss(separated, groups, (1, 7), softmax_normalize=False)
    bad = losses.conform_loss(mixed, groups, (1, 7), softmax_normalize=False)
    assert good.item() < bad.item()


def test_ebama_binding_hand_values():
    # 1x2 maps, prompt tokens 1..4; group: modifier 1, noun 2; outside tokens 3 and 4.
    maps = torch.zeros(1, 2, 6)
    maps[0, :, 1] = torch.tensor([1.0, 0.0])
    maps[0, :, 2] = torch.tensor([1.0, 0.0])
    maps[0, :, 3] = torch.tensor([0.0, 1.0])
    maps[0, :, 4] = torch.tensor([1.0, 1.0])
    d_n3 = 1.0  # orthogonal
    d_n4 = 1 - 1 / math.sqrt(2)  # cos([1,0],[.5,.5]) = 1/sqrt(2)
    expected = 0.0 - (d_n3 + d_n4) / 2
    got = losses.ebama_binding_loss(maps, [group(1, 2)], prompt_length=4)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # A noun without modifiers contributes its repulsion once.
    got = losses.ebama_binding_loss(maps, [group(2)], prompt_length=4)
    d_n1 = 0.0
    assert got.item() == pytest.approx(-(d_n1 + d_n3 + d_n4) / 3, abs=1e-6)


def test_intensity_and_ebama_total_hand_values():
    # Spatially constant maps: smoothing changes nothing and all spatial distributions are equal.
    maps = torch.zeros(2, 2, 6)
    maps[..., 1] = 0.02
    maps[..., 2] = 0.01
    maps[..., 3:5] = 0.005
    window = (1, 5)  # logits 100 * v over positions 1..4 = [2, 1, 0.5, 0.5]
    p_noun = math.e / (math.exp(2) + math.e + 2 * math.exp(0.5))
    assert losses.intensity_loss(maps, [group(1, 2)], window).item() == pytest.approx(-p_noun, abs=1e-6)
    total = losses.ebama_loss(maps, [group(1, 2)], window, prompt_length=4, intensity_weight=0.5)
    assert total.item() == pytest.approx(0.0 + 0.5 * -p_noun, abs=1e-6)


def test_symmetric_kl_hand_value():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert losses.symmetric_kl(p, q).item() == pytest.approx((kl_pq + kl_qp) / 2, abs=1e-6)


def test_syngen_loss_hand_value():
    maps = torch.zeros(1, 2, 5)
    maps[0, :, 1] = torch.tensor([0.5, 0.5])  # modifier
    maps[0, :, 2] = torch.tensor([0.9, 0.1])  # noun
    maps[0, :, 3] = torch.tensor([0.5, 0.5])  # the only outside token
    s = losses.symmetric_kl(torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])).item()
    expected = s - 0.5 * (s + 0.0)  # attract(m, n) - (repel(n, o) + repel(m, o)) / 2
    assert losses.syngen_loss(maps, [group(1, 2)], prompt_length=3).item() == pytest.approx(expected, abs=1e-6)
    assert losses.syngen_loss(maps, [group(2)], prompt_length=3).item() == 0.0


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, g: losses.attend_and_excite_loss(m, [x.noun for x in g], (1, 7)),
        lambda m, g: losses.conform_loss(m, g, (1, 7), previous_maps=m * 0.5),
        lambda m, g: losses.ebama_loss(m, g, (1, 7), prompt_length=6),
        lambda m, g: losses.syngen_loss(m, g, prompt_length=6),
    ],
    ids=["ae", "conform", "ebama", "syngen"],
)
def test_losses_do_not_edit_maps_and_give_finite_gradients(fn):
    torch.manual_seed(0)
    maps = torch.rand(4, 4, 8).softmax(-1).requires_grad_(True)
    before = maps.detach().clone()
    groups = [group(1, 2), group(4, 5)]
    first = fn(maps, groups)
    second = fn(maps, groups)
    assert torch.equal(maps.detach(), before)
    assert first.item() == second.item()  # no state carried between calls
    (grad,) = torch.autograd.grad(first, maps)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_losses_in_float32_from_half_maps():
    maps = torch.rand(4, 4, 8).softmax(-1).half()
    loss = losses.syngen_loss(maps, [group(1, 2)], prompt_length=6)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_multi_piece_words_take_the_max_over_pieces_per_outside_token():
    # Noun of two pieces (2, 3); outside tokens 4 and 5. Per outside token the larger of the
    # pieces' distances counts, then the mean over tokens (SynGen's / EBAMA's convention).
    maps = torch.zeros(1, 2, 7)
    maps[0, :, 1] = torch.tensor([1.0, 0.0])  # modifier
    maps[0, :, 2] = torch.tensor([1.0, 0.0])  # noun piece a
    maps[0, :, 3] = torch.tensor([0.0, 1.0])  # noun piece b
    maps[0, :, 4] = torch.tensor([1.0, 0.0])  # like piece a
    maps[0, :, 5] = torch.tensor([0.0, 1.0])  # like piece b
    groups = [TokenGroup(words=("m", "n"), word_positions=((1,), (2, 3)))]
    # d(m, noun) = max(d(m, a), d(m, b)) = 1; repel = mean(max(0, 1), max(1, 0)) = 1.
    got = losses.ebama_binding_loss(maps, groups, prompt_length=5)
    assert got.item() == pytest.approx(1.0 - 1.0, abs=1e-6)


def test_ebama_multi_piece_modifier_sums_over_its_pieces():
    # EBAMA's code (cosine distance): per modifier piece the largest distance to a noun piece,
    # summed over the modifier's pieces. Modifier pieces 1, 2; noun pieces 3, 4; no outside token.
    maps = torch.zeros(1, 2, 6)
    maps[0, :, 1] = torch.tensor([1.0, 0.0])
    maps[0, :, 2] = torch.tensor([1.0, 1.0])
    maps[0, :, 3] = torch.tensor([1.0, 0.0])
    maps[0, :, 4] = torch.tensor([0.0, 1.0])
    half = 1 - 1 / math.sqrt(2)  # cosine distance of [1,1] to [1,0] or [0,1]
    two_piece_noun = TokenGroup(words=("m", "n"), word_positions=((1, 2), (3, 4)))
    # piece 1: max(0, 1) = 1; piece 2: max(half, half) = half.
    assert losses.ebama_binding_loss(maps, [two_piece_noun], 4).item() == pytest.approx(1 + half, abs=1e-6)
    one_piece_noun = TokenGroup(words=("m", "n"), word_positions=((1, 2), (3,)))
    # piece 1 to noun: 0; piece 2 to noun: half. (One max over all pairs would give half too;
    # two equal pieces tell the rules apart:)
    assert losses.ebama_binding_loss(maps, [one_piece_noun], 3).item() == pytest.approx(half, abs=1e-6)
    maps[0, :, 1] = torch.tensor([1.0, 1.0])
    assert losses.ebama_binding_loss(maps, [one_piece_noun], 3).item() == pytest.approx(2 * half, abs=1e-6)


def test_conform_pieces_are_members_of_their_own():
    # CONFORM's code takes token positions: a word of two pieces gives two members.
    maps = torch.full((4, 4, 8), 0.1)
    groups = [TokenGroup(words=("m", "n"), word_positions=((1, 2), (3,))), group(4, 5)]
    embeddings, labels = losses.conform_embeddings(maps, groups, (1, 7))
    assert labels.tolist() == [0, 0, 0, 1, 1] and embeddings.shape == (5, 16)
    # Identical embeddings: group A's 6 ordered positive pairs see 2 negatives (log 3), group
    # B's 2 see 3 (log 4).
    expected = (6 * math.log(3) + 2 * math.log(4)) / 8
    assert losses.conform_loss(maps, groups, (1, 7)).item() == pytest.approx(expected, abs=1e-5)
