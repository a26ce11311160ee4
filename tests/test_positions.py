"""Positions: RoPE against the writeup's rotation matrix, the sinusoidal table's formula, the learned table's
limit."""

import math

import pytest
import torch

from helpers import model_config
from mingpt.attention import sinusoidal_table
from mingpt.model import GPT, RotaryPositionalEmbeddings


# -----------------------------------------------------------------------------
# RoPE

def rotation_matrix(d, m, base=10_000):
    """The writeup's block-diagonal R_(Theta,m), with the pairs (i, i + d/2) of the rotate-half layout."""
    R = torch.zeros(d, d, dtype=torch.float64)
    h = d // 2
    for i in range(1, h + 1):
        theta = base ** (-2 * (i - 1) / d)
        c, s = math.cos(m * theta), math.sin(m * theta)
        a, b = i - 1, i - 1 + h
        R[a, a], R[a, b], R[b, a], R[b, b] = c, -s, s, c
    return R


def test_rope_equals_rotation_matrix():
    d, T = 8, 5
    rope = RotaryPositionalEmbeddings(d).double()
    assert rope.d == d
    x = torch.randn(2, 3, T, d, dtype=torch.float64)
    expected = torch.stack([x[:, :, t] @ rotation_matrix(d, t + 1).T for t in range(T)], dim=2)
    torch.testing.assert_close(rope(x), expected)
    # with an offset, positions continue where a cache left off
    torch.testing.assert_close(rope(x[:, :, 2:], offset=2), expected[:, :, 2:])


def test_rope_d2_small_case():
    rope = RotaryPositionalEmbeddings(2)
    x = torch.tensor([1.0, 0.0]).expand(1, 1, 3, 2)
    out = rope(x)[0, 0]
    for m in (1, 2, 3):  # theta_1 = 1, so position m rotates (1, 0) to (cos m, sin m)
        torch.testing.assert_close(out[m - 1], torch.tensor([math.cos(m), math.sin(m)]))


def test_rope_relative_and_norm():
    d = 16
    rope = RotaryPositionalEmbeddings(d).double()
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    seq_q = q.expand(1, 1, 40, d)
    seq_k = k.expand(1, 1, 40, d)
    rq, rk = rope(seq_q)[0, 0], rope(seq_k)[0, 0]
    scores = rq @ rk.T  # scores[m, n]
    for delta in (-7, 0, 3, 11):
        diag = torch.diagonal(scores, offset=-delta)  # all (m, n) with m - n = delta
        torch.testing.assert_close(diag, diag[0].expand_as(diag))
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, -3)[0])
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(40))
    # the cache grows for a longer input and agrees with what it had
    longer = rope(q.expand(1, 1, 100, d))[0, 0]
    torch.testing.assert_close(longer[:40], rq)


# -----------------------------------------------------------------------------
# sinusoidal and learned tables

def test_sinusoidal_table_formula():
    table = sinusoidal_table(10, 6)
    for p in range(10):
        for i in range(3):
            angle = p / 10_000 ** (2 * i / 6)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_learned_table_refuses_long_input():
    model = GPT(model_config(block_size=16))
    with pytest.raises(ValueError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    rope_model = GPT(model_config(block_size=16, rope=True))
    assert rope_model(torch.zeros(1, 40, dtype=torch.long))[0].shape == (1, 40, 11)
