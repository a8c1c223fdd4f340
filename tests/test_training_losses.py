"""Training losses, timestep sampling and word lists on hand-made numbers."""

import math

import pytest
import torch

from contrastive_diffusers.training.losses import (
    attention_mask,
    denoising_loss,
    masked_denoising_loss,
    prompt_contrastive_loss,
    steering_loss,
)
from contrastive_diffusers.training.mcpl import bind_pairs, token_labels
from contrastive_diffusers.training.reversion import excluded_token_ids, negative_token_ids
from contrastive_diffusers.training.timesteps import (
    relation_focal_probabilities,
    sample_timestep,
)
from contrastive_diffusers.training.vocabulary import PREPOSITIONS, STOP_WORDS


# ----------------------------------------------------------------------------- steering (ReVersion)
def test_steering_loss_by_hand():
    anchor = torch.tensor([2.0, 0.0])  # normalised to (1, 0)
    positives = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # cosine 1 and 0
    negatives = torch.tensor([[-1.0, 0.0]])  # cosine -1
    loss = steering_loss(anchor, positives, negatives, temperature=1.0)
    expected = math.log(math.e + 1 + math.exp(-1)) - math.log(math.e + 1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # temperature 0.5 doubles the logits
    loss = steering_loss(anchor, positives, negatives, temperature=0.5)
    expected = math.log(math.exp(2) + 1 + math.exp(-2)) - math.log(math.exp(2) + 1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_steering_loss_pools_the_batch_positives_as_the_authors_code_does():
    """One InfoNCE per batch: ReVersion's calculate_steer_loss takes the relation embedding once
    and every positive token of the batch (num_positives x batch rows) in one numerator, every
    negative token occurrence in the denominator."""
    anchor = torch.tensor([1.0, 0.0])
    positives = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # example 1's preposition, example 2's
    negatives = torch.tensor([[0.0, -1.0], [0.0, -1.0]])  # one word twice: counted twice
    t = 0.5
    numerator = math.log(math.exp(1 / t) + math.exp(0))
    expected = math.log(math.exp(1 / t) + 1 + 2 * math.exp(0)) - numerator
    assert steering_loss(anchor, positives, negatives, t).item() == pytest.approx(expected, rel=1e-6)
    # not the mean of one InfoNCE per example (what an earlier version computed)
    per_example = [steering_loss(anchor, positives[b:b + 1], negatives, t).item() for b in range(2)]
    assert abs(sum(per_example) / 2 - expected) > 0.1
    assert steering_loss(anchor, positives, None).item() == 0.0
    assert steering_loss(anchor, positives, torch.empty(0, 2)).item() == 0.0


def test_steering_gradient_pulls_anchor_towards_positives():
    anchor = torch.tensor([1.0, 1.0], requires_grad=True)
    loss = steering_loss(anchor, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    loss.backward()
    step = -anchor.grad
    assert step[0] > 0 and step[1] < 0


# ----------------------------------------------------------------------------- PromptCL (MCPL)
def _reference_promptcl(features, labels, t):
    f = torch.nn.functional.normalize(features, dim=-1)
    losses = []
    for i in range(len(f)):
        others = [j for j in range(len(f)) if j != i]
        pos = [j for j in others if labels[j] == labels[i]]
        if not pos:
            continue
        num = sum(math.exp(float(f[i] @ f[j]) / t) for j in pos)
        den = sum(math.exp(float(f[i] @ f[j]) / t) for j in others)
        losses.append(-math.log(num / den))
    return sum(losses) / len(losses)


def test_prompt_contrastive_loss_official_pairing_by_hand():
    """MCPL's code: rows (caption, token) flattened; row i's one positive is row i - B (mod B*n)."""
    from contrastive_diffusers.training.losses import prompt_contrastive_loss_official

    torch.manual_seed(0)
    features = torch.randn(4, 2, 3)  # B = 4 captions, n = 2 tokens
    t = 0.3
    rows = torch.nn.functional.normalize(features.reshape(8, 3), dim=-1)
    total = 0.0
    for i in range(8):
        j = (i - 4) % 8  # the same token two captions away: (b, w) -> (b - 2, w)
        assert i % 2 == j % 2
        others = [float(rows[i] @ rows[k]) / t for k in range(8) if k != i]
        total += -float(rows[i] @ rows[j]) / t + math.log(sum(math.exp(v) for v in others))
    assert prompt_contrastive_loss_official(features, t).item() == pytest.approx(total / 8, rel=1e-5)
    # the other copies of a token are negatives: not the label pairing's loss
    labels = torch.tensor([0, 1] * 4)
    assert prompt_contrastive_loss(features.reshape(8, 3), labels, t).item() != pytest.approx(total / 8, rel=1e-3)


def test_prompt_contrastive_loss_by_hand():
    features = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])  # item 2 has no positive: not an anchor
    loss = prompt_contrastive_loss(features, labels, temperature=1.0)
    assert loss.item() == pytest.approx(math.log(math.e + 1) - 1, rel=1e-6)


@pytest.mark.parametrize("batch,tokens", [(3, 2), (5, 3), (1, 4), (2, 3)])
def test_prompt_contrastive_loss_pairs_by_label_for_any_batch(batch, tokens):
    """Views x batch x tokens items in any order; batch sizes that are not multiples of the
    token count (the official code's mis-pairing case) give the reference value."""
    torch.manual_seed(batch * 10 + tokens)
    views = 2
    labels = torch.arange(tokens).repeat(views * batch)
    features = torch.randn(len(labels), 8, requires_grad=True)
    loss = prompt_contrastive_loss(features, labels, 0.2)
    assert loss.item() == pytest.approx(_reference_promptcl(features.detach(), labels.tolist(), 0.2), rel=1e-5)
    perm = torch.randperm(len(labels))
    assert prompt_contrastive_loss(features[perm], labels[perm], 0.2).item() == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()  # attached to the graph: the features receive gradients
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_prompt_contrastive_loss_without_positives_is_zero_and_attached():
    features = torch.randn(3, 4, requires_grad=True)
    loss = prompt_contrastive_loss(features, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0 and loss.requires_grad


def test_bind_adjectives_share_the_noun_label():
    tokens = ["<brown>", "<ball>", "<white>", "<box>"]
    assert token_labels(tokens, bind_pairs("<brown>:<ball>, <white>:<box>")) == [1, 1, 3, 3]
    assert token_labels(tokens, []) == [0, 1, 2, 3]
    with pytest.raises(Exception, match="adjective"):
        bind_pairs("<brown>")


# ----------------------------------------------------------------------------- denoising and AttnMask
def test_masked_denoising_loss_averages_over_every_element_as_the_official_code():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]]]])
    ones = torch.ones(1, 1, 2, 2)
    assert masked_denoising_loss(pred, target, ones).item() == pytest.approx(denoising_loss(pred, target).item())
    left = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    # errors 1 and 9 inside the mask in both channels, zero outside: (1 + 9) * 2 / 8 elements
    assert masked_denoising_loss(pred, target, left).item() == pytest.approx((1 + 9) * 2 / 8)
    soft = torch.full((1, 1, 2, 2), 0.5)  # a soft mask multiplies prediction and target: error x 0.25
    assert masked_denoising_loss(pred, target, soft).item() == pytest.approx(0.25 * (1 + 4 + 9 + 16) / 4)
    with pytest.raises(ValueError, match="does not fit"):
        masked_denoising_loss(pred, target, torch.ones(1, 1, 4, 4))


def test_attention_mask_sums_the_tokens_and_divides_by_the_maximum():
    maps = torch.zeros(3, 2, 2, 5)
    maps[0, 0, 0, 1] = 0.6  # token 1: top-left
    maps[0, 1, 1, 2] = 0.2  # token 2: bottom-right, a third of token 1's peak
    maps[0, 0, 1, 1] = maps[0, 0, 1, 2] = 0.1  # both tokens a little at top-right: 0.2 summed
    maps[0, :, :, 3] = 0.9  # a token that is not learned: ignored
    maps[2, :, :, 4] = 0.7  # sample 2's learned token has no attention at all
    selected = torch.zeros(3, 5, dtype=torch.bool)
    selected[0, 1] = selected[0, 2] = True
    selected[2, 1] = True  # sample 1 selects nothing
    soft = attention_mask(maps, selected, (2, 2), threshold=None)
    assert soft[0, 0].flatten().tolist() == pytest.approx([1.0, 1 / 3, 0.0, 1 / 3])  # (0.6, 0.2, 0, 0.2) / 0.6
    hard = attention_mask(maps, selected, (2, 2), threshold=0.3)
    assert hard[0, 0].tolist() == [[1.0, 1.0], [0.0, 1.0]]  # 1/3 > 0.3
    assert attention_mask(maps, selected, (2, 2), threshold=0.34)[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert hard[1].eq(1).all() and hard[2].eq(1).all()  # no token / no attention: the plain loss
    big = attention_mask(maps, selected, (4, 4), threshold=None)  # nearest: each map cell becomes a 2x2 block
    assert big.shape == (3, 1, 4, 4) and big[0, 0, :2, :2].eq(1).all() and big[0, 0, 2:, :2].eq(0).all()
    assert not attention_mask(maps.requires_grad_(), selected, (2, 2)).requires_grad


def test_token_softmax_of_the_official_readme_leaves_nothing_masked():
    """The bound in attention_mask's docstring: after a softmax over 77 tokens, any pixel keeps
    more than 0.3 of the maximum, whatever the attention."""
    probs = torch.zeros(1, 8, 8, 77)
    probs[..., 0] = 1.0  # everything on the start token ...
    probs[0, 3, 3, 0], probs[0, 3, 3, 5] = 0.0, 1.0  # ... except one pixel, all on a learned token
    selected = torch.zeros(1, 77, dtype=torch.bool)
    selected[0, 5] = True
    assert attention_mask(probs, selected, (8, 8)).sum() == 1  # the official mask without that softmax
    softened = attention_mask(probs.softmax(-1), selected, (8, 8), threshold=None)
    bound = 77 / (math.e * (76 + math.e))
    assert softened.min().item() >= bound - 1e-6 and bound > 0.3
    assert attention_mask(probs.softmax(-1), selected, (8, 8)).eq(1).all()


# ----------------------------------------------------------------------------- timesteps
def test_relation_focal_probabilities():
    p = relation_focal_probabilities(1000, 0.5)
    assert p.sum().item() == pytest.approx(1.0)
    assert torch.all(p[1:] >= p[:-1])  # more weight on noisier steps
    assert (p[-1] / p[0]).item() == pytest.approx((1 - 0.5 * math.cos(math.pi * 999 / 1000)) / (1 - 0.5), rel=1e-9)
    # p(t) ∝ 1 - α cos(π t / T): exact ratio between two chosen steps
    assert (p[500] / p[0]).item() == pytest.approx((1 - 0.5 * math.cos(math.pi / 2)) / (1 - 0.5), rel=1e-12)
    assert torch.allclose(relation_focal_probabilities(10, 0.0), torch.full((10,), 0.1, dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha"):
        relation_focal_probabilities(10, 1.0)


def test_sampled_timesteps_follow_the_distribution():
    T = 1000
    p = relation_focal_probabilities(T, 0.5).float()
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_timestep(T, g, p) for _ in range(20000)])
    quarters = torch.stack([((draws >= q * 250) & (draws < (q + 1) * 250)).float().mean() for q in range(4)])
    expected = torch.stack([p[q * 250 : (q + 1) * 250].sum() for q in range(4)])
    assert torch.allclose(quarters, expected, atol=0.012)
    assert expected[3] / expected[0] > 2.5  # the last quarter is drawn ~2.8x as often as the first
    uniform = torch.tensor([sample_timestep(T, g) for _ in range(4000)])
    assert uniform.min() >= 0 and uniform.max() < T and abs(uniform.float().mean().item() - 499.5) < 20


# ----------------------------------------------------------------------------- words
def test_preposition_basis_and_negative_tokens():
    from contrastive_diffusers.models.tiny_tokenizers import tiny_tokenizer

    # the authors' lists: 56 prepositions, NLTK's 127 English stop words
    assert len(PREPOSITIONS) == 56 == len(set(PREPOSITIONS)) and all(" " not in w for w in PREPOSITIONS)
    assert len(STOP_WORDS) == 127 == len(set(STOP_WORDS))
    assert {"amidst", "astride", "versus"} <= set(PREPOSITIONS) and "during" not in PREPOSITIONS
    tok = tiny_tokenizer()
    tok.add_tokens(["<R>"])
    excluded = excluded_token_ids(tok, ["<R>"], PREPOSITIONS)
    captions = ["a cat <R> the basket!", "Two cats <R> a red box, 3 times <|endoftext|>"]
    negatives = negative_token_ids(tok, captions, excluded)
    # every other token, each occurrence: punctuation and numbers too, as in the authors' code
    expected = [t for c in captions for t in tok(c, add_special_tokens=False).input_ids if t not in excluded]
    assert negatives == expected
    words = tok.convert_ids_to_tokens(negatives)
    assert words[0] == "cat</w>" and {"!</w>", "3</w>", ",</w>"} <= set(words) and words.count("cat</w>") == 1
    assert not {"a</w>", "the</w>", "<R>", tok.eos_token} & set(words)
