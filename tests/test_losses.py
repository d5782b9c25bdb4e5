"""The WSPO and AuxConf losses against values worked out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from cong.training.losses import aux_coef_at, auxconf_loss, token_logps, wspo_loss

log = math.log


def test_wspo_loss_by_hand():
    """Row 1 has 3 tokens and a padding token, row 2 has 2 tokens; the batch mean is over rows."""
    beta, pad = 0.1, 5.0  # the padding values are nonsense on purpose: the mask must drop them
    policy = torch.tensor([[log(0.5), log(0.25), log(0.8), pad], [log(0.5), log(0.5), pad, pad]])
    strong_ref = torch.tensor([[log(0.25), log(0.25), log(0.4), pad], [log(0.5), log(0.25), pad, pad]])
    weak_aligned = torch.tensor([[log(0.6), log(0.3), log(0.9), pad], [log(0.2), log(0.4), pad, pad]])
    weak_base = torch.tensor([[log(0.3), log(0.3), log(0.3), -pad], [log(0.4), log(0.4), -pad, -pad]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])

    # Row 1: beta*log(0.5/0.25) - log(0.6/0.3), beta*0 - 0, beta*log(0.8/0.4) - log(0.9/0.3)
    row1 = ((beta * log(2) - log(2)) ** 2 + 0.0**2 + (beta * log(2) - log(3)) ** 2) / 3
    # Row 2: beta*0 - log(0.2/0.4), beta*log(0.5/0.25) - 0
    row2 = ((0 - log(0.5)) ** 2 + (beta * log(2) - 0) ** 2) / 2
    loss = wspo_loss(policy, strong_ref, weak_aligned, weak_base, mask, beta)
    assert loss.item() == pytest.approx((row1 + row2) / 2, rel=1e-6)


def test_wspo_loss_is_zero_when_the_policy_moved_like_the_weak_pair_over_beta():
    base = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    shift = torch.tensor([[0.4, -0.1, 0.2]])
    mask = torch.ones(1, 3)
    loss = wspo_loss(base + shift / 0.1, base, base + shift, base, mask, beta=0.1)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)


def test_token_logps_are_shifted_and_zero_where_ignored():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, log(2)], [9.0, 9.0, 9.0]]])
    labels = torch.tensor([[-100, 2, -100]])  # position 0 predicts labels[1], position 1 predicts labels[2]
    expected = 3.0 - log(math.e + math.e**2 + math.e**3)
    assert token_logps(logits, labels).tolist() == [[pytest.approx(expected, rel=1e-6), 0.0]]


def test_auxconf_loss_by_hand():
    """Token 1: label 1, argmax 0; token 2: label 1 = argmax; token 3 is ignored."""
    coef = 0.25
    logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 3.0, 0.0], [5.0, 0.0, 0.0]]])
    labels = torch.tensor([[1, 1, -100]])
    lse1 = log(math.e**2 + math.e + 1)
    token1 = -(1 - coef) * (1.0 - lse1) - coef * (2.0 - lse1)
    token2 = -(3.0 - log(2 + math.e**3))
    assert auxconf_loss(logits, labels, coef).item() == pytest.approx((token1 + token2) / 2, rel=1e-6)


def test_auxconf_loss_without_coef_is_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    labels[0, :2] = -100
    expected = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1))
    assert auxconf_loss(logits, labels, 0.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_auxconf_target_gets_no_gradient():
    """Against a fixed soft target q, d(loss)/d(logits) = (softmax - q) / tokens, and 0 on ignored tokens."""
    torch.manual_seed(0)
    coef = 0.5
    logits = torch.randn(1, 4, 6, requires_grad=True)
    labels = torch.tensor([[3, 0, -100, 5]])
    auxconf_loss(logits, labels, coef).backward()

    keep = labels != -100
    target = (1 - coef) * F.one_hot(labels.clamp(min=0), 6) + coef * F.one_hot(logits.detach().argmax(-1), 6)
    expected = (logits.detach().softmax(-1) - target) * keep.unsqueeze(-1) / keep.sum()
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize(
    ("step", "ramp_fraction", "expected"),
    [(0, 0.1, 0.0), (5, 0.1, 0.25), (10, 0.1, 0.5), (60, 0.1, 0.5), (0, 0.0, 0.5), (100, 1.0, 0.5)],
)
def test_aux_coef_ramps_linearly_then_stays(step, ramp_fraction, expected):
    assert aux_coef_at(step, 100, 0.5, ramp_fraction) == pytest.approx(expected)
