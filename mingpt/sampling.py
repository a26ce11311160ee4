"""
The sampler behind every model's generate: greedy, or sampled after temperature, top-k and nucleus (top-p)
filtering, one token per sequence.
"""

import torch
from torch.nn import functional as F


def check_sampling(temperature, top_k, top_p):
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None), got {top_p}")


def sample_next(logits, temperature=1.0, do_sample=False, top_k=None, top_p=None, generator=None):
    """Pick one token id per row of logits (B, vocab): greedy, or sampled after temperature, top-k and
    nucleus (top-p) filtering. Returns (B, 1)."""
    if not do_sample or temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    ids = None  # the token id of each column once logits are cut to the top k or sorted
    if top_k is not None and top_k < logits.size(-1):
        logits, ids = torch.topk(logits, top_k)  # (B, k), most likely first: only these can be drawn
    if top_p is not None:
        if ids is None:
            logits, ids = torch.sort(logits, descending=True)
        probs = F.softmax(logits, dim=-1)
        # keep the smallest prefix whose probability reaches top_p: drop a token when the tokens before it
        # already reach it
        logits = logits.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    # an exponential race draws what torch.multinomial(probs, 1) draws, with three small operations instead of
    # its checks and cumulative sum: with E_i ~ Exp(1), E_i / p_i ~ Exp(p_i), and the smallest of independent
    # exponentials is i with probability p_i / sum(p). E is kept above 0 so that a dropped token (p = 0) never
    # reads 0 / 0
    race = torch.empty_like(probs).exponential_(generator=generator).clamp_min_(torch.finfo(probs.dtype).tiny)
    choice = (probs / race).argmax(dim=-1, keepdim=True)
    return choice if ids is None else ids.gather(-1, choice)
