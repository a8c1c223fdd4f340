"""The contrastive LoRA objectives on hand-made numbers, and the curriculum's stage logic."""

import math

import pytest
import torch

from contrastive_diffusers.training.curriculum import Curriculum
from contrastive_diffusers.training.objectives import (
    consistency_dco,
    contrastive_infonce,
    denoising_mse,
    pair_margin,
    per_sample_error,
    preference_margin,
)


def test_per_sample_error_and_mse():
    pred = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])  # (2, 1, 2)
    target = torch.tensor([[[0.0, 0.0]], [[3.0, 1.0]]])
    e = per_sample_error(pred, target)
    assert e.tolist() == [2.5, 5.0]  # (1 + 4) / 2, (9 + 1) / 2
    assert denoising_mse(e).item() == pytest.approx(3.75)
    with pytest.raises(ValueError, match="differ in shape"):
        per_sample_error(pred, target[:1])


def test_infonce_pair_only_is_a_logistic_on_the_error_gap():
    e_pos, e_neg = torch.tensor([1.0, 2.0]), torch.tensor([1.5, 1.0])
    loss = contrastive_infonce(e_pos, e_neg, temperature=0.5, in_batch_negatives=False)
    # -log(exp(-e+/τ) / (exp(-e+/τ) + exp(-e-/τ))) = log(1 + exp((e+ - e-)/τ))
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(2.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_infonce_with_in_batch_negatives():
    e_pos, e_neg = torch.tensor([1.0, 2.0]), torch.tensor([1.5, 1.0])
    loss = contrastive_infonce(e_pos, e_neg, temperature=0.5, in_batch_negatives=True)
    # row i: positive -e+_i against every negative -e-_1, -e-_2 (τ = 0.5)
    row0 = -(-2.0) + math.log(math.exp(-2.0) + math.exp(-3.0) + math.exp(-2.0))
    row1 = -(-4.0) + math.log(math.exp(-4.0) + math.exp(-3.0) + math.exp(-2.0))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert row0 == pytest.approx(0.8620, abs=1e-4) and row1 == pytest.approx(2.4076, abs=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        contrastive_infonce(e_pos, e_neg, temperature=0)


def test_preference_margin_hand_computed():
    e_pos, e_neg = torch.tensor([0.50, 0.40]), torch.tensor([0.60, 0.40])
    ref_pos, ref_neg = torch.tensor([0.51, 0.40]), torch.tensor([0.59, 0.40])
    loss = preference_margin(e_pos, e_neg, ref_pos, ref_neg, beta=100.0)
    # sample 0: (0.50-0.51) - (0.60-0.59) = -0.02 -> -log σ(2) ; sample 1: 0 -> log 2
    expected = (math.log1p(math.exp(-2.0)) + math.log(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # equal to the reference everywhere: log 2 (the start of LoRA training, B = 0)
    assert preference_margin(e_pos, e_neg, e_pos, e_neg).item() == pytest.approx(math.log(2))


def test_preference_margin_gradient_skips_the_reference():
    e_pos = torch.tensor([0.5], requires_grad=True)
    ref = torch.tensor([0.5], requires_grad=True)
    preference_margin(e_pos, torch.tensor([0.5]), ref, torch.tensor([0.5]), beta=10.0).backward()
    assert e_pos.grad.item() == pytest.approx(10.0 * 0.5)  # β σ(0)
    assert ref.grad is None


def test_dco_consistency_hand_computed():
    e_model, e_ref = torch.tensor([0.100, 0.102]), torch.tensor([0.101, 0.101])
    loss = consistency_dco(e_model, e_ref)  # β = 1000: inside = +1 and -1
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-3)


def test_pair_margin():
    margin, accuracy = pair_margin(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 1.0, 3.5]))
    assert margin.item() == pytest.approx((1.0 - 1.0 + 0.5) / 3)
    assert accuracy.item() == pytest.approx(2 / 3)


def test_curriculum_budgets_and_advance_rule():
    c = Curriculum([1, 2, 3], [2, 1, 2])
    seen = [c.step_done(s)["stage"] for s in range(1, 6)]
    assert seen == [1, 1, 2, 3, 3] and c.finished
    assert Curriculum.split([1, 2, 3], 7).budgets == [2, 2, 3]

    c = Curriculum([1, 2], [10, 10], metric="pair_accuracy", threshold=0.75, check_every=2)
    values = iter([0.5, 0.8])
    logs = [c.step_done(s, lambda: next(values)) for s in (1, 2, 3, 4)]
    assert [l["stage"] for l in logs] == [1, 1, 1, 1]
    assert logs[1]["stage_metric"] == 0.5 and logs[3]["advanced"] and c.stage == 2 and c.start_step == 4
    restored = Curriculum([1, 2], [10, 10])
    restored.restore(c.state())
    assert (restored.index, restored.start_step) == (1, 4)
    loss_rule = Curriculum([1], [10], metric="val_loss", threshold=0.2)
    assert loss_rule.step_done(1, lambda: 0.1)["advanced"] and loss_rule.finished
    with pytest.raises(ValueError, match="one --stage_steps value per stage"):
        Curriculum([1, 2], [3])
    with pytest.raises(ValueError, match="different|same pair folder"):
        restored.restore({"index": 0, "start_step": 0, "stages": [1, 3]})
