"""
The attention core that every attention module in mingpt/model.py calls, the positions it rotates queries and keys
by (RoPE), the KV cache it decodes with, and the dropout the models use.

Queries come as (B, n_query_head, T_q, hd) and keys/values as (B, n_kv_head, T_k, hd). Query head i reads
key/value head i // (n_query_head // n_kv_head) (grouped-query attention, Ainslie et al.); n_kv_head equal to
n_query_head is plain multi-head attention, n_kv_head = 1 is multi-query attention. The last T_q keys are the
queries' own positions, so the same code serves training (T_q = T_k) and decoding with a cache.

A sliding window of size w lets query t see keys j with t - w//2 <= j <= t (w = 0: every earlier key).

Dropout on the attention weights (training) zeroes each weight with probability p and scales the rest by
1 / (1 - p). Its random mask is the costly part on a CPU, where torch has no fused attention-dropout kernel:
`dropped` (below) draws it from a quarter as many random numbers as `bernoulli_` would, and
`fast_attention` uses the written-out core with it there instead of SDPA's math fallback (which draws with
`bernoulli_`).

Two implementations give the same numbers:
- `naive_attention` is the writeup's math done literally: score matrix, mask, softmax, dropout, @ V. It
  materialises (T_q, T_k) scores per head, which is what the course's memory probe measures.
- `fast_attention` uses torch's fused `F.scaled_dot_product_attention` for full causal attention and, for a
  window, `banded_attention`: queries in blocks, each block against only the keys its window can reach, so
  time and memory grow as T * w rather than T^2.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import nn

# -----------------------------------------------------------------------------
# dropout with a cheap random mask on the CPU: torch draws dropout's mask with `bernoulli_`, one random float per
# element, which costs more than the rest of dropout together; `dropped` draws it from a quarter as many numbers

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
    it draws a quarter of the random numbers); on other devices and under torch.compile (which cannot trace
    `random_`, and fuses torch's own mask) it is nn.Dropout, and out of training it returns x itself."""

    def forward(self, x):
        if not (self.training and self.p):
            return x  # evaluation and decoding: no call into torch at all, 13 of them per decoded token
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return super().forward(x)
        scale = x.new_tensor(kept_scale(self.p))  # x's dtype, so bf16 stays bf16
        return x * torch.where(dropped(x.shape, self.p), 0.0, scale)


# -----------------------------------------------------------------------------
# the attention core


def attention_mask(T_q, T_k, window=0, device=None):
    """(T_q, T_k) bool, True where a query may attend a key. Query row r sits at position T_k - T_q + r."""
    t = torch.arange(T_k - T_q, T_k, device=device)[:, None]
    j = torch.arange(T_k, device=device)[None, :]
    allowed = j <= t
    if window:
        allowed &= t - j <= window // 2
    return allowed


def mask_bias(allowed, dtype):
    """A mask as a term added to the scores: 0 where `allowed`, -inf elsewhere. Adding it is one pass over the
    scores where masked_fill is two (forward and backward)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def attention_dropout(att, v, p):
    """dropout(att, p) @ v with the mask from `dropped`: the kept weights' 1 / (1 - p) is applied to the smaller
    product (..., T_q, hd) rather than to att (..., T_q, T_k)."""
    y = att.masked_fill(dropped(att.shape, p, att.device), 0.0) @ v
    return y * kept_scale(p)


def attention_probs(q, k, window=0):
    """naive_attention's weights: scores, mask, softmax, as (B, n_kv, g*T_q, T_k) with the g query heads of each
    group stacked as rows against their shared key/value head (row i*T_q + t: query head h*g + i at position t).
    The lab's attention maps (mingpt/app/attention_maps.py) draw these very numbers."""
    T_q, hd = q.size(2), q.size(3)
    groups = q.size(1) // k.size(1)
    # a group's query heads become rows of one matmul against their shared key/value head: K and V are read,
    # and saved for backward, at n_kv_head size (a broadcast matmul would materialise g copies of them)
    q = rearrange(q, "b (h g) t d -> b h (g t) d", g=groups) / math.sqrt(hd)  # the scale on q: fewer elements
    att = q @ k.transpose(-2, -1)  # (B, n_kv, g*T_q, T_k)
    allowed = attention_mask(T_q, k.size(2), window, q.device).repeat(groups, 1)  # (g*T_q, T_k)
    return F.softmax(att + mask_bias(allowed, att.dtype), dim=-1)


def naive_attention(q, k, v, window=0, dropout_p=0.0):
    att = attention_probs(q, k, window)  # (B, n_kv, g*T_q, T_k)
    y = attention_dropout(att, v, dropout_p) if dropout_p else att @ v  # (B, n_kv, g*T_q, hd)
    return rearrange(y, "b h (g t) d -> b (h g) t d", g=q.size(1) // k.size(1))


def window_block_size(window):
    """Queries per block in `banded_attention`; each block reads block + window//2 keys."""
    return max(window // 2, 32)


def banded_attention(q, k, v, window, dropout_p=0.0):
    """Sliding-window attention in O(T * w) time and memory, for T_q = T_k = T.

    The T queries are cut into blocks of `bs`; block n (positions n*bs .. n*bs+bs-1) can only reach keys
    n*bs - w//2 .. n*bs+bs-1, a window of L = bs + w//2 keys. Keys are padded by w//2 on the left and
    `unfold` takes the overlapping windows as a view, so the scores are (T/bs) blocks of (bs, L)."""
    B, n_q, T, hd = q.shape
    groups = n_q // k.size(1)
    span, bs = window // 2, window_block_size(window)
    n_blocks = -(-T // bs)
    pad = n_blocks * bs - T
    L = bs + span
    q = F.pad(q, (0, 0, 0, pad))
    k = F.pad(k, (0, 0, span, pad)).unfold(2, L, bs)  # (B, n_kv, n_blocks, hd, L)
    v = F.pad(v, (0, 0, span, pad)).unfold(2, L, bs)
    # the group's query heads become extra rows of each block: one matmul per kv head, no K/V copies
    q = rearrange(q, "b (h g) (n s) d -> b h n (g s) d", g=groups, s=bs) / math.sqrt(hd)
    att = q @ k  # (B, n_kv, n_blocks, g*bs, L)
    row = torch.arange(bs, device=q.device)[:, None]
    col = torch.arange(L, device=q.device)[None, :]
    key_pos = torch.arange(n_blocks, device=q.device)[:, None, None] * bs - span + col  # (n_blocks, 1, L)
    allowed = (col >= row) & (col <= row + span) & (key_pos >= 0)  # (n_blocks, bs, L)
    att = att + mask_bias(allowed.repeat(1, groups, 1), att.dtype)
    att = F.softmax(att, dim=-1)
    v = v.transpose(-2, -1)
    y = attention_dropout(att, v, dropout_p) if dropout_p else att @ v  # (B, n_kv, n_blocks, g*bs, hd)
    return rearrange(y, "b h n (g s) d -> b (h g) (n s) d", g=groups)[:, :, :T]


def fast_attention(q, k, v, window=0, dropout_p=0.0):
    T_q, T_k = q.size(-2), k.size(-2)
    hides = window and window // 2 < T_k - 1  # the window hides some earlier key from some query
    if hides and T_q == T_k:
        return banded_attention(q, k, v, window, dropout_p)
    if dropout_p and q.device.type == "cpu" and not torch.compiler.is_compiling():  # SDPA's CPU dropout is its
        # math path with a bernoulli_ mask (which a compiled graph fuses)
        return naive_attention(q, k, v, window, dropout_p)
    if T_q == 1 and not hides:
        # decoding one token: a group's query heads become query rows against their shared key/value head,
        # one small attention per kv head (cheaper than SDPA's enable_gqa at this size)
        B, n_q, _, hd = q.shape
        rows = q.reshape(B, k.size(1), n_q // k.size(1), hd)  # (B, nkv, group, hd)
        return F.scaled_dot_product_attention(rows, k, v, dropout_p=dropout_p).reshape(B, n_q, 1, hd)
    mask = None
    if hides or 1 < T_q < T_k:
        mask = attention_mask(T_q, T_k, window, q.device)
    # T_q == T_k is plain causal
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=mask is None,
                                          enable_gqa=q.size(1) != k.size(1))


IMPLEMENTATIONS = {"naive": naive_attention, "fast": fast_attention}


def scored_queries(q, k, gqa_scores="per_head"):
    """The queries that attention scores against k: q itself (B, n_query_head, T_q, hd), or under group_sum each
    group's queries summed (B, n_kv_head, T_q, hd), one map per key/value head."""
    groups = q.size(1) // k.size(1)
    if gqa_scores == "group_sum" and groups > 1:
        return reduce(q, "b (h g) t d -> b h t d", "sum", g=groups)
    return q


def attend(q, k, v, window=0, impl="fast", dropout_p=0.0, gqa_scores="per_head"):
    """Causal (optionally windowed, grouped-query) attention; returns (B, n_query_head, T_q, hd).

    gqa_scores="group_sum" is the writeup's formula S_i = sum_j Q_(i,j) K_i^T / sqrt(d_k): the query heads of a
    group share one attention map. The score is linear in the query, so summing the group's queries first gives
    exactly that sum; every query head of the group then returns the group's output."""
    queries = scored_queries(q, k, gqa_scores)
    y = IMPLEMENTATIONS[impl](queries, k, v, window, dropout_p)
    if queries is q:
        return y
    return repeat(y, "b h t d -> b (h g) t d", g=q.size(1) // k.size(1))


# -----------------------------------------------------------------------------
# positions: rotary embeddings of queries and keys, the fixed sinusoidal table


class RotaryPositionalEmbeddings(nn.Module):
    """Rotary position embeddings in the rotate-half layout.

    For x of shape (B, n_head, T, d), the pair (x_i, x_(i+d/2)) at position m is rotated by the angle
    m * theta_i with theta_i = base^(-2(i-1)/d), i = 1..d/2, and positions m = 1..T as in the writeup (plus
    `offset` when decoding with a cache). The dot product of a rotated query at m and a rotated key at n then
    depends only on m - n. cos/sin are cached and the cache grows when a longer input arrives."""

    def __init__(self, d, base=10_000):
        super().__init__()
        if d % 2:
            raise ValueError(f"rotary embeddings need an even head size, got {d}; change n_embd or n_query_head")
        self.d = d
        self.base = base
        self.register_buffer("theta", base ** (-torch.arange(0, d, 2, dtype=torch.float) / d), persistent=False)
        self.register_buffer("cos_cached", torch.empty(0, d), persistent=False)
        self.register_buffer("sin_cached", torch.empty(0, d), persistent=False)

    def _build_cache(self, length):
        length = max(length, 2 * self.cos_cached.size(0))  # grow geometrically: decoding adds one position a step
        with torch.inference_mode(False):  # a cache grown while generating must still serve training
            m = torch.arange(1, length + 1, dtype=self.theta.dtype, device=self.theta.device)
            angles = torch.outer(m, self.theta)  # (length, d/2)
            angles = torch.cat([angles, angles], dim=-1)  # (length, d): pair i and i + d/2 share an angle
            # rotating (x_i, x_(i+d/2)) gives x * cos + (-x_(i+d/2), x_i) * sin; the second vector is x rolled
            # by d/2 with the first half negated, and the sign goes into the cached sin
            sign = torch.cat([-torch.ones(self.d // 2), torch.ones(self.d // 2)]).to(angles)
            self.cos_cached, self.sin_cached = angles.cos(), angles.sin() * sign

    def forward(self, x, offset=0):
        end = offset + x.size(-2)
        if end > self.cos_cached.size(0):
            self._build_cache(end)
        cos, sin = self.cos_cached[offset:end], self.sin_cached[offset:end]
        if cos.dtype != x.dtype:
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return torch.addcmul(x * cos, x.roll(self.d // 2, dims=-1), sin)


def sinusoidal_table(n_positions, n_embd):
    """The fixed position table of "Attention is all you need": PE(p, 2i) = sin(p / 10000^(2i/C)),
    PE(p, 2i+1) = cos(p / 10000^(2i/C)), positions p = 0..n_positions-1."""
    p = torch.arange(n_positions, dtype=torch.float)[:, None]
    inv_freq = 10_000 ** (-torch.arange(0, n_embd, 2, dtype=torch.float) / n_embd)
    table = torch.zeros(n_positions, n_embd)
    table[:, 0::2] = torch.sin(p * inv_freq)
    table[:, 1::2] = torch.cos(p * inv_freq)[:, :n_embd // 2]
    return table


# -----------------------------------------------------------------------------
# decoding


class KVCache:
    """One layer's keys and values for decoding: ring buffers of (B, n_kv_head, capacity, hd), holding only the
    n_kv_head heads that exist, never the repeated ones, allocated once, so memory stays constant however long
    the generation runs. A window w needs capacity w//2 + 1 (a token and the w//2 before it); a model with full
    attention gets the context it may look at (block_size)."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.k = self.v = None
        self.pos = 0  # absolute position of the next token

    def reset(self):
        """Forget every position; the buffers stay allocated for the next sequence of the same shape."""
        self.pos = 0

    def _newest(self, buf, n):
        """The newest n cached positions, oldest first."""
        ordered = buf[:, :, :self.pos] if self.pos <= self.capacity else buf.roll(-(self.pos % self.capacity), 2)
        return ordered[:, :, ordered.size(2) - n:]

    def update(self, k, v):
        """Store the new positions' k, v (B, n_kv, T, hd) and return the keys/values the new queries may see,
        oldest first: up to capacity - 1 cached positions, then the new ones."""
        T = k.size(2)
        if self.k is None:
            shape = (*k.shape[:2], self.capacity, k.size(3))
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        if T == 1:  # decoding: one write into the ring; a single query may see every slot, in any order
            slot = self.pos % self.capacity
            self.k.narrow(2, slot, 1).copy_(k)  # narrow + copy_: the cheapest write, it runs every token
            self.v.narrow(2, slot, 1).copy_(v)
            self.pos += 1
            n = min(self.pos, self.capacity)
            return self.k.narrow(2, 0, n), self.v.narrow(2, 0, n)
        keep = min(self.pos, self.capacity - 1)
        k_all = torch.cat([self._newest(self.k, keep), k], dim=2)
        v_all = torch.cat([self._newest(self.v, keep), v], dim=2)
        m = min(T, self.capacity)
        slots = torch.arange(self.pos + T - m, self.pos + T, device=k.device) % self.capacity
        self.k.index_copy_(2, slots, k[:, :, -m:])
        self.v.index_copy_(2, slots, v[:, :, -m:])
        self.pos += T
        return k_all, v_all

    def nbytes(self):
        return 0 if self.k is None else self.k.nbytes + self.v.nbytes

