"""Generation: the KV cache against recomputing the context (greedy tokens identical), rolling windows past
block_size, cache sizes, top-k / top-p sampling."""

import pytest
import torch

from helpers import DEVICES, full_forward_greedy_matches, model_config
from mingpt.model import GPT
from mingpt.sampling import sample_next


# -----------------------------------------------------------------------------
# generation

POSITIONS = [dict(), dict(pos_emb="sinusoidal"), dict(pos_emb="none"), dict(rope=True)]


def generation_model(block_size=24, **variant):
    torch.manual_seed(0)
    return GPT(model_config(block_size=block_size, **variant)).double().eval()


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("window", [0, 4])
@pytest.mark.parametrize("n_kv_head", [1, 2, 6])
@pytest.mark.parametrize("impl", ["naive", "fast"])
@pytest.mark.parametrize("device", DEVICES)
def test_cached_equals_uncached_greedy(position, window, n_kv_head, impl, device):
    model = generation_model(window=window, n_kv_head=n_kv_head, attn_impl=impl, **position).to(device)
    idx = torch.randint(11, (2, 5)).to(device)
    cached = model.generate(idx, 19, use_cache=True)  # 24 tokens: exactly block_size
    assert cached.shape == (2, 24)
    assert torch.equal(cached, model.generate(idx, 19, use_cache=False))
    assert torch.equal(cached, model.generate(idx, 19, do_sample=True, top_k=1))  # top_k=1 is greedy
    assert torch.equal(cached, model.generate(idx, 19, do_sample=True, temperature=0.0))


@pytest.mark.parametrize("position", [dict(rope=True), dict(pos_emb="none")])
@pytest.mark.parametrize("n_kv_head", [1, 3])
def test_rolling_window_past_block_size(position, n_kv_head):
    model = generation_model(block_size=16, window=6, n_kv_head=n_kv_head, **position)
    seq = model.generate(torch.randint(11, (2, 3)), 60, use_cache=True)
    assert seq.shape == (2, 63)
    assert full_forward_greedy_matches(model, seq, 3)
    caches = model.new_caches()
    model(seq[:, :10], caches=caches)
    model(seq[:, 10:11], caches=caches)
    small = sum(c.nbytes() for c in caches)
    for t in range(11, 63):
        model(seq[:, t:t + 1], caches=caches)
    assert sum(c.nbytes() for c in caches) == small  # memory does not grow with the generation
    assert caches[0].k.shape == (2, n_kv_head, 4, 8)  # w//2 + 1 positions


def test_full_attention_without_table_keeps_block_size_in_view():
    """Past block_size, a RoPE model decodes on with its last block_size positions in view: the same as a full
    forward pass in which each token sees itself and the block_size - 1 tokens before it."""
    model = generation_model(block_size=12, rope=True, n_kv_head=2)
    seq = model.generate(torch.randint(11, (1, 4)), 40, use_cache=True)
    same_weights_window = GPT(model_config(block_size=12, rope=True, n_kv_head=2, window=2 * 11)).double().eval()
    same_weights_window.load_state_dict(model.state_dict())
    assert full_forward_greedy_matches(same_weights_window, seq, 4)


@pytest.mark.parametrize("variant", [dict(rope=True, window=6), dict(rope=True), dict(), dict(window=5)])
def test_cache_fed_in_chunks_equals_full_forward(variant):
    """Feeding a sequence through the caches in chunks of any size gives the logits of one full pass."""
    model = generation_model(block_size=40, n_kv_head=2, **variant)
    idx = torch.randint(11, (2, 40))
    expected = model(idx)[0]
    caches = model.new_caches()
    chunks, start = [], 0
    for size in (5, 1, 1, 3, 7, 1, 10, 2, 1, 9):
        chunks.append(model(idx[:, start:start + size], caches=caches)[0])
        start += size
    torch.testing.assert_close(torch.cat(chunks, dim=1), expected)


def test_table_model_crops_past_block_size():
    model = generation_model(block_size=12)
    idx = torch.randint(11, (1, 4))
    assert torch.equal(model.generate(idx, 30, use_cache=True), model.generate(idx, 30, use_cache=False))


@pytest.mark.parametrize("n_kv_head", [1, 2, 3, 6])
def test_cache_stores_only_kv_heads(n_kv_head):
    model = generation_model(n_kv_head=n_kv_head)
    caches = model.new_caches()
    model(torch.randint(11, (3, 20)), caches=caches)
    # 2 (k and v) x layers x batch x kv heads x block_size positions x head size x 8 bytes (float64)
    assert sum(c.nbytes() for c in caches) == 2 * 2 * 3 * n_kv_head * 24 * 8 * 8


def nucleus_support(probs, p):
    """Reference: the smallest set of most likely tokens whose probability reaches p."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, total = set(), 0.0
    for i in order:
        kept.add(i)
        total += probs[i]
        if total >= p - 1e-12:
            break
    return kept


@pytest.mark.parametrize("p", [0.3, 0.5, 0.79, 0.8, 0.81, 0.97, 1.0])
def test_top_p_keeps_smallest_set(p):
    probs = [0.05, 0.5, 0.15, 0.3]
    logits = torch.tensor([probs]).log().expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    drawn = set(sample_next(logits, do_sample=True, top_p=p, generator=g).flatten().tolist())
    assert drawn == nucleus_support(probs, p)


@pytest.mark.parametrize("sampling", [dict(), dict(top_k=3), dict(top_p=0.9), dict(top_k=3, top_p=0.7),
                                      dict(temperature=0.5)])
def test_sampling_draws_the_filtered_softmax(sampling):
    """Each token's frequency over many draws matches its probability under the reference filter: softmax of
    logits / temperature, restricted to the k most likely and then to the nucleus, renormalised."""
    probs = torch.tensor([0.05, 0.4, 0.1, 0.25, 0.2])
    temperature = sampling.get("temperature", 1.0)
    p = probs ** (1 / temperature)
    p = p / p.sum()
    kept = sorted(range(len(p)), key=lambda i: -p[i])[:sampling.get("top_k", len(p))]
    if "top_p" in sampling:  # the nucleus of what top-k kept, renormalised
        in_top_k = [p[i].item() / p[kept].sum().item() if i in kept else 0.0 for i in range(len(p))]
        kept = sorted(nucleus_support(in_top_k, sampling["top_p"]))
    n = 40_000
    drawn = sample_next(probs.log().expand(n, -1), do_sample=True, generator=torch.Generator().manual_seed(0),
                        **sampling).flatten()
    expected = torch.zeros(len(p))
    expected[kept] = p[kept] / p[kept].sum()
    frequency = torch.bincount(drawn, minlength=len(p)) / n
    # binomial standard error at n = 40,000 is at most 0.0025; 5 of them
    assert (frequency - expected).abs().max() < 0.0125, (frequency, expected)


def test_sampling_is_reproducible_and_checked():
    model = generation_model(rope=True, window=8)
    idx = torch.randint(11, (1, 3))
    a = model.generate(idx, 30, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(1))
    b = model.generate(idx, 30, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(1))
    c = model.generate(idx, 30, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    for bad in (dict(top_p=0.0), dict(top_p=1.5), dict(top_k=0), dict(temperature=-1.0)):
        with pytest.raises(ValueError):
            model.generate(idx, 2, do_sample=True, **bad)
