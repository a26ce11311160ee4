"""
Dropout with a cheap random mask on the CPU.

Dropout zeroes each element with probability p and scales the rest by 1 / (1 - p). On a CPU its cost is the
random mask: torch draws it with `bernoulli_`, one random float per element, which takes more time than the rest
of dropout together. `dropped` draws the same kind of mask from a quarter as many random numbers, and `Dropout` is
nn.Dropout with that mask on the CPU (torch's own kernel elsewhere: CUDA's is fused). The attention core uses
`dropped` for the attention weights (mingpt/attention.py).
"""

import math

import torch
from torch import nn

DROP_LEVELS = 2 ** 15  # a dropout draw is a 15-bit number: p is rounded to a multiple of 1/32768


def kept_scale(p):
    """What dropout multiplies the kept elements by, 1 / (1 - rate), for the rate at which `dropped` drops: p
    rounded to a multiple of 1 / DROP_LEVELS."""
    return 1 / (1 - round(p * DROP_LEVELS) / DROP_LEVELS)


def dropped(shape, p, device=None):
    """A bool mask of `shape`, True (drop) for each element independently with probability p rounded to a
    multiple of 1 / DROP_LEVELS. torch's generator fills a quarter as many int64s (63 random bits each); each of
    their 16-bit quarters, its top bit cleared, is one uniform draw in [0, 2^15)."""
    n = math.prod(shape)
    words = torch.empty(-(-n // 4), dtype=torch.int64, device=device).random_().view(torch.int16)[:n]
    return ((words & (DROP_LEVELS - 1)) < round(p * DROP_LEVELS)).view(shape)


class Dropout(nn.Dropout):
    """nn.Dropout whose mask comes from `dropped` when training on a CPU (faster there, forward and backward, as
    it draws a quarter of the random numbers); on other devices it is nn.Dropout, and out of training it returns x
    itself."""

    def forward(self, x):
        if not (self.training and self.p):
            return x  # evaluation and decoding: no call into torch at all, 13 of them per decoded token
        if x.device.type != "cpu":
            return super().forward(x)
        scale = x.new_tensor(kept_scale(self.p))  # x's dtype, so bf16 stays bf16
        return x * torch.where(dropped(x.shape, self.p), 0.0, scale)
