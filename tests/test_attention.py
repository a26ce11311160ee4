"""Attention: grouped-query attention against loops and torch's MultiheadAttention, the sliding window (naive,
banded and SDPA kernels agree), causality and dropout of the whole model, the probes, and the attention-dropout
mask (rate, independence, mean, gradient)."""

import math

import pytest
import torch
import torch.nn.functional as F

from helpers import DEVICES, model_config
from mingpt.app.probes import AttentionProbe, profile_peak_memory, timed
from mingpt.attention import attend, attention_dropout, attention_mask, banded_attention, dropped, fast_attention, \
    naive_attention, window_block_size
from mingpt.model import CausalSelfAttention, GPT, GroupedQueryAttention


# -----------------------------------------------------------------------------
# grouped-query attention

def reference_attention(attn, x, window=0, group_sum=False):
    """Explicit loops over heads, straight from the definitions, using `attn`'s weights."""
    B, T, C = x.shape
    nq, nkv, hd = attn.n_query_head, attn.n_kv_head, attn.head_dim
    g = nq // nkv
    q = (x @ attn.q_proj.weight.T + attn.q_proj.bias).view(B, T, nq, hd)
    k = (x @ attn.k_proj.weight.T + attn.k_proj.bias).view(B, T, nkv, hd)
    v = (x @ attn.v_proj.weight.T + attn.v_proj.bias).view(B, T, nkv, hd)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    if window:
        allowed &= torch.ones(T, T, dtype=torch.bool).triu(-(window // 2))
    heads = []
    for i in range(nq):
        kv = i // g
        if group_sum:
            scores = sum(q[:, :, kv * g + j] @ k[:, :, kv].transpose(1, 2) for j in range(g)) / math.sqrt(hd)
        else:
            scores = q[:, :, i] @ k[:, :, kv].transpose(1, 2) / math.sqrt(hd)
        scores = scores.masked_fill(~allowed, float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ v[:, :, kv])
    y = torch.cat(heads, dim=-1)
    return y @ attn.out_proj.weight.T + attn.out_proj.bias


@pytest.mark.parametrize("n_kv_head", [1, 2, 3, 6])
@pytest.mark.parametrize("impl", ["naive", "fast"])
def test_gqa_matches_loop_reference(n_kv_head, impl):
    torch.manual_seed(0)
    attn = GroupedQueryAttention(model_config(n_kv_head=n_kv_head, attn_impl=impl)).double().eval()
    x = torch.randn(2, 10, 48, dtype=torch.float64)
    torch.testing.assert_close(attn(x), reference_attention(attn, x))
    assert attn.k_proj.weight.shape == (n_kv_head * 8, 48)
    assert attn.k_proj.weight.numel() * (6 // n_kv_head) == attn.q_proj.weight.numel()
    assert attn.v_proj.weight.numel() * (6 // n_kv_head) == attn.q_proj.weight.numel()


@pytest.mark.parametrize("impl", ["naive", "fast"])
def test_group_sum_scores_formula(impl):
    torch.manual_seed(0)
    attn = GroupedQueryAttention(model_config(n_kv_head=2, gqa_scores="group_sum", attn_impl=impl)).double().eval()
    x = torch.randn(2, 9, 48, dtype=torch.float64)
    summed = attn(x)
    torch.testing.assert_close(summed, reference_attention(attn, x, group_sum=True))
    attn.gqa_scores = "per_head"
    assert (summed - attn(x)).abs().max() > 1e-3  # the writeup's summed maps are a different function


def test_mha_equals_torch_multihead_attention():
    torch.manual_seed(0)
    cfg = model_config()
    csa = CausalSelfAttention(cfg).double().eval()
    gqa = GroupedQueryAttention(cfg).double().eval()
    gqa.load_state_dict(csa.state_dict())
    ref = torch.nn.MultiheadAttention(48, 6, batch_first=True).double().eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([csa.q_proj.weight, csa.k_proj.weight, csa.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([csa.q_proj.bias, csa.k_proj.bias, csa.v_proj.bias]))
        ref.out_proj.weight.copy_(csa.out_proj.weight)
        ref.out_proj.bias.copy_(csa.out_proj.bias)
    x = torch.randn(3, 12, 48, dtype=torch.float64)
    causal = torch.ones(12, 12, dtype=torch.bool).triu(1)  # True = masked, torch's convention
    expected, _ = ref(x, x, x, attn_mask=causal, need_weights=False)
    torch.testing.assert_close(csa(x), expected)
    torch.testing.assert_close(gqa(x), expected)


# -----------------------------------------------------------------------------
# sliding window

def test_writeup_window_mask():
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(attention_mask(6, 6, window=4), expected)
    assert torch.equal(attention_mask(6, 6, window=0), torch.ones(6, 6, dtype=torch.bool).tril())


@pytest.mark.parametrize("impl", ["naive", "fast"])
def test_window_gradient_support(impl):
    torch.manual_seed(0)
    w, T = 6, 40
    attn = CausalSelfAttention(model_config(window=w, rope=True, n_kv_head=2, attn_impl=impl)).double().eval()
    x = torch.randn(1, T, 48, dtype=torch.float64, requires_grad=True)
    y = attn(x)
    for t in (0, 2, 3, 17, 39):
        (grad,) = torch.autograd.grad(y[0, t].sum(), x, retain_graph=True)
        nonzero = grad[0].abs().sum(-1) > 0
        expected = torch.zeros(T, dtype=torch.bool)
        expected[max(0, t - w // 2):t + 1] = True
        assert torch.equal(nonzero, expected), t


def window_cases():
    for window in (0, 8, 20, 70):
        bs = window_block_size(window)
        for T in (bs - 5, bs, 2 * bs + 3):
            yield window, T


@pytest.mark.parametrize("window, T", list(window_cases()))
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("n_kv_head", [1, 2, 6])
@pytest.mark.parametrize("device", DEVICES)
def test_naive_and_fast_agree(window, T, rope, n_kv_head, device):
    torch.manual_seed(0)
    naive = CausalSelfAttention(model_config(window=window, rope=rope, n_kv_head=n_kv_head, attn_impl="naive"))
    fast = CausalSelfAttention(model_config(window=window, rope=rope, n_kv_head=n_kv_head, attn_impl="fast"))
    fast.load_state_dict(naive.state_dict())
    naive, fast = naive.to(device), fast.to(device)
    x = torch.randn(2, T, 48, requires_grad=True, device=device)
    y_naive, y_fast = naive(x), fast(x)
    torch.testing.assert_close(y_fast, y_naive, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y_naive)
    (gx_naive, *gw_naive) = torch.autograd.grad(y_naive, [x, *naive.parameters()], g)
    (gx_fast, *gw_fast) = torch.autograd.grad(y_fast, [x, *fast.parameters()], g)
    torch.testing.assert_close(gx_fast, gx_naive, rtol=1e-4, atol=1e-5)
    for a, b in zip(gw_fast, gw_naive):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_kv_head", [1, 2, 3, 6])
@pytest.mark.parametrize("window, T_k", [(0, 1), (0, 37), (8, 5), (8, 37)])
def test_single_query_attention_matches_loop(n_kv_head, window, T_k):
    """Decoding one token (the query is the newest of T_k positions) against a loop over query heads that reads
    key/value head i // (6 // n_kv_head) with the window mask."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 6, 1, 8), torch.randn(2, n_kv_head, T_k, 8), torch.randn(2, n_kv_head, T_k, 8)
    visible = attention_mask(1, T_k, window)[0]
    expected = torch.empty_like(q)
    for i in range(6):
        kv = i // (6 // n_kv_head)
        scores = (k[:, kv, visible] @ q[:, i, 0, :, None])[..., 0] / math.sqrt(8)  # (2, visible keys)
        expected[:, i, 0] = (scores.softmax(-1)[..., None] * v[:, kv, visible]).sum(1)
    torch.testing.assert_close(fast_attention(q, k, v, window), expected, rtol=1e-5, atol=1e-5)


def test_banded_equals_sdpa_with_mask():
    """The banded kernel against torch's own attention with an explicit window mask."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 100, 8), torch.randn(2, 4, 100, 8), torch.randn(2, 4, 100, 8)
    mask = attention_mask(100, 100, window=20)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(banded_attention(q, k, v, 20), expected, rtol=1e-5, atol=1e-5)


# -----------------------------------------------------------------------------
# whole model

@pytest.mark.parametrize("variant", [
    dict(), dict(rope=True, n_kv_head=2), dict(pos_emb="sinusoidal", window=8), dict(pos_emb="none", n_kv_head=1),
    dict(rope=True, window=4, attn_impl="naive"), dict(n_kv_head=3, gqa_scores="group_sum"),
])
def test_model_is_causal(variant):
    torch.manual_seed(0)
    model = GPT(model_config(**variant)).eval()
    idx = torch.randint(11, (2, 30))
    changed = idx.clone()
    changed[:, 20] = (changed[:, 20] + 1) % 11
    a, b = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert (a[:, 20:] - b[:, 20:]).abs().max() > 1e-4


def test_dropout_train_vs_eval():
    torch.manual_seed(0)
    model = GPT(model_config(embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.1, rope=True, window=8))
    idx = torch.randint(11, (2, 20))
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0], rtol=0, atol=0)
    model.train()
    assert (model(idx)[0] - model(idx)[0]).abs().max() > 1e-4
    for attn in model.attention_modules():  # attention-weight dropout alone also acts, in both paths
        attn.resid_dropout.p = 0.0
    for impl in ("naive", "fast"):
        model.transformer.drop.p = 0.0
        for block in model.transformer.h:
            block.mlp.dropout.p = 0.0
            block.attn.attn_impl = impl
        assert (model(idx)[0] - model(idx)[0]).abs().max() > 1e-4


# -----------------------------------------------------------------------------
# probes

@pytest.mark.parametrize("device", DEVICES)
def test_probe_in_training(device):
    """The trainer's probe on each device: a time for every layer and memory the core keeps for backward (on CUDA
    allocated by the call, with a peak at least as high)."""
    torch.manual_seed(0)
    model = GPT(model_config(attn_impl="naive")).to(device).train()
    probe = AttentionProbe(model)
    idx = torch.randint(11, (4, 32), device=device)
    model(idx, idx)[1].backward()
    time_ms, memory_mib, peak_mib = probe.reading()
    scores_mib = 4 * 6 * 32 * 32 * 4 / 2**20  # (B, H, T, T) fp32 probabilities, which backward needs
    assert time_ms > 0 and memory_mib >= scores_mib
    assert (peak_mib is None) == (device == "cpu") and (peak_mib is None or peak_mib >= memory_mib)


@pytest.mark.parametrize("device", DEVICES)
def test_probe_reads_training_steps_alone(device, monkeypatch):
    """Evaluation and sampling keep the last training step's readings (and leave the allocator's peak counter
    alone); on CUDA a probed call reads the allocator's statistics twice, once before it and once after."""
    torch.manual_seed(0)
    model = GPT(model_config(attn_impl="naive")).to(device).train()
    probe = AttentionProbe(model)
    idx = torch.randint(11, (4, 32), device=device)
    stats_reads = []
    if device == "cuda":
        original = torch.cuda.memory.memory_stats

        def counted(*args, **kwargs):
            stats_reads.append(1)
            return original(*args, **kwargs)
        monkeypatch.setattr(torch.cuda.memory, "memory_stats", counted)  # what memory_allocated & co. call
        monkeypatch.setattr(torch.cuda, "memory_stats", counted)
    model(idx, idx)[1].backward()
    readings = [probe.readings[attn] for attn in model.attention_modules()]
    assert len(stats_reads) == (2 * len(readings) if device == "cuda" else 0)
    model.eval()
    model(idx, idx)
    model.generate(idx[:1, :4], 5)
    assert all(probe.readings[attn] is reading for attn, reading in zip(model.attention_modules(), readings))


def test_probes_on_cpu():
    q, k, v = torch.randn(1, 2, 256, 16), torch.randn(1, 2, 256, 16), torch.randn(1, 2, 256, 16)
    y, reading = timed(attend, q, k, v)
    torch.testing.assert_close(y, attend(q, k, v))
    assert reading.time_ms > 0 and reading.memory_mib == 0  # nothing needs grad: autograd saves nothing
    assert reading.peak_mib is None  # no allocator counters on a CPU
    score_bytes = 2 * 256 * 256 * 4
    # on CPU the probe's memory is what autograd saves for backward: the naive path keeps its (B, H, T, T)
    # probabilities, the fused kernel only q, k, v, the output and a row statistic
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    naive_mib = timed(attend, q, k, v, 0, "naive")[1].memory_mib
    fused_mib = timed(attend, q, k, v, 0, "fast")[1].memory_mib
    assert score_bytes / 2**20 <= naive_mib < 4 * (score_bytes + 4 * q.nbytes) / 2**20
    assert fused_mib < naive_mib / 4
    naive_peak = profile_peak_memory(naive_attention, q, k, v)
    assert naive_peak >= score_bytes
    banded_peak = profile_peak_memory(banded_attention, q, k, v, 16)
    assert banded_peak < naive_peak / 2


@pytest.mark.parametrize("n_kv_head", [1, 2, 3])
def test_naive_gqa_saves_kv_at_n_kv_head_size(n_kv_head):
    """What the naive path keeps for backward holds K and V themselves, never copies repeated over the query
    heads (which a broadcast matmul would make, and which would inflate the memory the probe reports)."""
    B, n_q, T, hd = 2, 6, 20, 8
    q = torch.randn(B, n_q, T, hd, requires_grad=True)
    k, v = (torch.randn(B, n_kv_head, T, hd, requires_grad=True) for _ in range(2))
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        naive_attention(q, k, v)
    storages = {t.untyped_storage().data_ptr() for t in saved}
    assert k.untyped_storage().data_ptr() in storages and v.untyped_storage().data_ptr() in storages
    repeats = [x.detach().repeat_interleave(n_q // n_kv_head, dim=1).flatten().sort().values for x in (k, v)]
    repeated_kv = [t for t in saved if t.numel() == B * n_q * T * hd and  # in any layout
                   any(torch.equal(t.detach().flatten().sort().values, r) for r in repeats)]
    assert not repeated_kv


# -----------------------------------------------------------------------------
# attention dropout: the cheap mask (tests/test_dropout.py) on the attention weights

def test_attention_dropout_keeps_the_mean_and_its_gradient_is_the_mask():
    """E[dropout(att) @ v] = att @ v, and the gradient through it is the kept weights' 1 / (1 - p) on the kept
    positions and 0 on the dropped ones (checked by finite differences in float64 with the mask fixed by a seed)."""
    torch.manual_seed(0)
    att = torch.rand(64, 256, 256)
    v = torch.ones(64, 256, 1)
    ratio = (attention_dropout(att, v, 0.1) / (att @ v)).mean().item()
    assert abs(ratio - 1) < 2e-3

    att = torch.rand(2, 5, 7, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)

    def same_mask(att, v):
        torch.manual_seed(1)
        return attention_dropout(att, v, 0.3)
    assert torch.autograd.gradcheck(same_mask, (att, v))
    torch.manual_seed(1)
    drop = dropped(att.shape, 0.3)
    (grad,) = torch.autograd.grad(same_mask(att, v).sum(), att)
    expected = v.sum(-1)[:, None, :].expand_as(att) / (1 - round(0.3 * 2**15) / 2**15)
    torch.testing.assert_close(grad, expected.masked_fill(drop, 0.0))


@pytest.mark.parametrize("impl, window", [("naive", 0), ("fast", 0), ("fast", 8)])
def test_attention_dropout_in_the_core(impl, window):
    """Through the core: outputs of the dropped path average to those without dropout, and the fraction of
    weights dropped is p."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))
    exact = attend(q, k, v, window, impl, 0.0)
    mean = sum(attend(q, k, v, window, impl, 0.2) for _ in range(4000)) / 4000
    torch.testing.assert_close(mean, exact, atol=0.05, rtol=0)
