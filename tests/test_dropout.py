"""Dropout with the cheap CPU mask (mingpt/attention.py) is still dropout with probability p: the mask's rate and
independence at every draw position, and the module's rate, scale, mean and gradient beside torch's nn.Dropout."""

import math

import pytest
import torch
from torch import nn

from mingpt.attention import Dropout, dropped


@pytest.mark.parametrize("p", [0.1, 0.5, 0.03])
def test_dropout_mask_rate_and_independence(p):
    """The drop rate is p (to 1/32768) at each of the four 16-bit positions a draw can come from, and draws are
    uncorrelated with their neighbours."""
    torch.manual_seed(0)
    n = 4_000_000
    mask = dropped((n,), p).float()
    sigma = math.sqrt(p * (1 - p) / (n // 4))
    for position in range(4):  # the top quarter of each int64 has its sign bit cleared: no bias there
        assert abs(mask[position::4].mean().item() - p) < 5 * sigma
    neighbours = (mask[1:] * mask[:-1]).mean().item()  # P(both dropped) = p^2 for independent draws
    assert abs(neighbours - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / n)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_module_matches_torch_dropout_in_law(p):
    """Like nn.Dropout: each element is zeroed with probability p and the rest are multiplied by 1 / (1 - p), so
    the mean is kept; the drop rate agrees with nn.Dropout's within sampling error."""
    torch.manual_seed(0)
    x = torch.ones(256, 128, 96)
    ours, theirs = Dropout(p)(x), nn.Dropout(p)(x)
    sigma = math.sqrt(p * (1 - p) / x.numel())
    for y in (ours, theirs):
        assert abs((y == 0).float().mean().item() - p) < 5 * sigma
    torch.testing.assert_close(ours[ours != 0], torch.full_like(ours[ours != 0], 1 / (1 - p)), rtol=1e-4, atol=0)
    assert abs(ours.mean().item() - 1) < 5 * sigma / (1 - p)


def test_dropout_module_gradient_is_its_mask():
    """The gradient is the forward's own scaled mask (finite differences in float64, the mask fixed by a seed)."""
    x = torch.randn(4, 6, 5, dtype=torch.float64, requires_grad=True)
    layer = Dropout(0.3)

    def same_mask(x):
        torch.manual_seed(2)
        return layer(x)
    assert torch.autograd.gradcheck(same_mask, (x,))
    (grad,) = torch.autograd.grad(same_mask(x).sum(), x)
    torch.testing.assert_close(grad, same_mask(torch.ones_like(x)))


def test_dropout_module_off_and_dtype():
    """Evaluation mode and p = 0 pass x through; a bf16 input stays bf16 (autocast's linear outputs)."""
    x = torch.randn(8, 16)
    layer = Dropout(0.2).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
    assert Dropout(0.2)(x.bfloat16()).dtype == torch.bfloat16
