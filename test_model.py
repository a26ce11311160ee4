"""
The test suite: `python test_model.py` (or `pytest`). Each test checks behaviour against something independent
of the code under test: the formulas of the writeup, a naive loop, or torch's own modules. Unit tests make
their own small texts; only the end-to-end tests at the bottom read the real corpus (input.txt).
"""

import itertools
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mingpt.attention import attend, attention_mask, banded_attention, fast_attention, naive_attention, \
    profile_peak_memory, timed_attend, window_block_size
from mingpt.data import CharDataset, Vocabulary, read_text
from mingpt.model import GPT, CausalSelfAttention, GroupedQueryAttention, RotaryPositionalEmbeddings, \
    sample_next, sinusoidal_table
from mingpt.rnn import ElmanRNN
from mingpt.run import build_model, get_config, load_checkpoint, train
from mingpt.utils import CfgNode, UserError, atomic_open, parse_value, save_json

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "input.txt")


# -----------------------------------------------------------------------------
# helpers

def made_up_text(n_chars=6000, seed=0):
    """A small text with structure a tiny model can learn: words from a short list."""
    g = torch.Generator().manual_seed(seed)
    words = ["the ", "king ", "queen ", "shall ", "speak ", "now, ", "and ", "we ", "go. ", "O ", "God! "]
    out = []
    while sum(map(len, out)) < n_chars:
        out.append(words[int(torch.randint(len(words), (1,), generator=g))])
    return "".join(out)[:n_chars]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(made_up_text())
    return str(path)


def tiny_config(text_file, work_dir, *flags):
    config = get_config()
    config.merge_from_args([
        f"--data.input_file={text_file}", f"--system.work_dir={work_dir}", "--system.wandb=disabled",
        "--data.block_size=16", "--model.n_layer=2", "--model.n_query_head=4", "--model.n_kv_head=2",
        "--model.n_embd=32", "--trainer.batch_size=8", "--trainer.max_iters=8", "--trainer.eval_interval=4",
        "--trainer.eval_iters=2", "--trainer.log_interval=4", "--trainer.sample_interval=4",
        "--trainer.checkpoint_interval=4", "--trainer.warmup_iters=2", *flags])
    return config


def model_config(**overrides):
    C = GPT.get_default_config()
    settings = dict(vocab_size=11, block_size=64, n_layer=2, n_query_head=6, n_kv_head=6, n_embd=48,
                    embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    C.merge_from_dict({**settings, **overrides})
    return C


def run_cli(*args, cwd=HERE, timeout=600):
    return subprocess.run([sys.executable, os.path.join(HERE, "chargpt.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# -----------------------------------------------------------------------------
# flags

def test_parse_value_kinds():
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("5e-4") == 5e-4
    assert parse_value("True") is True and parse_value("true") is True
    assert parse_value("False") is False and parse_value("false") is False
    assert parse_value("None") is None
    assert parse_value("(0.9,0.99)") == (0.9, 0.99)
    assert parse_value("./out/x") == "./out/x"
    assert parse_value("/tmp/x") == "/tmp/x"
    assert parse_value("hello") == "hello"


def test_merge_from_args_every_kind():
    c = get_config()
    c.merge_from_args(["--trainer.max_iters=7", "trainer.learning_rate=1e-3", "--model.rope=true",
                       "--model.pretrained_folder=./out/x", "--system.work_dir=/tmp/x", "--trainer.betas=(0.8,0.9)",
                       "--trainer.lr_decay_iters=None", "--trainer.weight_decay=0", "--system.wandb_group=g1",
                       "--data.input_file=123"])
    assert c.trainer.max_iters == 7 and c.trainer.learning_rate == 1e-3 and c.model.rope is True
    assert c.model.pretrained_folder == "./out/x" and c.system.work_dir == "/tmp/x"
    assert c.trainer.betas == (0.8, 0.9) and c.trainer.lr_decay_iters is None
    assert c.trainer.weight_decay == 0.0 and isinstance(c.trainer.weight_decay, float)
    assert c.system.wandb_group == "g1"
    assert c.data.input_file == "123"  # a string setting keeps the text as written


@pytest.mark.parametrize("flag, needles", [
    ("--model.n_heads=4", ["unknown config key --model.n_heads", "--model.n_query_head"]),
    ("--trainer.max_iter=4", ["--trainer.max_iters"]),
    ("--nonsense.key=1", ["unknown config key"]),
    ("--trainer.max_iters=abc", ["--trainer.max_iters", "expected int"]),
    ("--trainer.max_iters=2.5", ["expected int"]),
    ("--model.rope=1", ["--model.rope", "expected bool"]),
    ("--trainer.betas=0.9", ["--trainer.betas", "tuple"]),
    ("--model.block_size=256", ["--model.block_size", "--data.block_size"]),
    ("--model.vocab_size=3", ["--model.vocab_size", "set from the data"]),
    ("--trainer", ["--node.key=value"]),
])
def test_flag_errors(flag, needles):
    with pytest.raises(UserError) as e:
        get_config().merge_from_args([flag])
    for needle in needles:
        assert needle in str(e.value)


@pytest.mark.parametrize("flags, needle", [
    (["--model.n_embd=50"], "n_embd=50 must be divisible by --model.n_query_head=6"),
    (["--model.n_kv_head=4"], "must be a multiple of --model.n_kv_head=4"),
    (["--model.window=-2"], "--model.window=-2 must be >= 0"),
    (["--model.rope=True", "--model.pos_emb=learned"], "--model.rope=True replaces the position table"),
    (["--model.pos_emb=alibi"], "--model.pos_emb=alibi must be one of"),
    (["--model.attn_impl=flash"], "--model.attn_impl=flash must be one of"),
])
def test_model_flag_checks(flags, needle):
    config = model_config()
    config.n_query_head, config.n_kv_head, config.n_embd = 6, 6, 48
    wrapper = CfgNode(model=config)
    wrapper.merge_from_args(flags)
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        GPT(config)


def test_help_lists_every_key():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for key, value, _ in get_config().flat():
        assert f"--{key}" in proc.stdout
    assert "[default: 3407]" in proc.stdout


# -----------------------------------------------------------------------------
# data

def test_dataset_split_and_round_trip():
    text = made_up_text(2000)
    config = CharDataset.get_default_config()
    config.block_size = 8
    ds = CharDataset(config, text)
    assert ds.vocab.itos == sorted(set(text))
    assert ds.vocab.decode(ds.vocab.encode(text)) == text
    train, val = ds.splits["train"], ds.splits["val"]
    assert len(val) == int(len(text) * 0.1) and len(train) + len(val) == len(text)
    assert ds.vocab.decode(val) == text[-len(val):]  # validation is the last 10%, never trained on
    g = torch.Generator().manual_seed(0)
    x, y = ds.get_batch("val", 50, g)
    assert x.shape == y.shape == (50, 8)
    val_text = text[-len(val):]
    for row_x, row_y in zip(x, y):
        window = ds.vocab.decode(row_x)
        assert window in val_text and ds.vocab.decode(row_y)[:-1] == window[1:]
    with pytest.raises(UserError, match="not in the vocabulary"):
        ds.vocab.encode("Zebra~")
    x0, y0 = ds[5]  # minGPT's Dataset interface: the training text from index 5
    assert "".join(ds.itos[int(i)] for i in x0) == text[5:13] and ds.stoi[text[6]] == int(y0[0])
    assert len(ds) == len(train) - 8


def test_dataset_too_short(tmp_path):
    config = CharDataset.get_default_config()
    config.block_size = 64
    with pytest.raises(UserError, match="too short for one block"):
        CharDataset(config, "abc" * 100)


def test_read_text_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        read_text(str(empty))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world")
    with pytest.raises(UserError, match="byte offset 6"):
        read_text(str(bad))
    with pytest.raises(UserError, match="--data.input_file"):
        read_text(str(tmp_path / "missing.txt"), download_url="http://127.0.0.1:9/none", timeout=1)


# -----------------------------------------------------------------------------
# utils

def test_atomic_write_interrupted_keeps_old_file(tmp_path):
    path = tmp_path / "logs.json"
    save_json({"version": 1}, str(path))
    with pytest.raises(RuntimeError):
        with atomic_open(str(path)) as f:
            f.write('{"version": 2, "half')
            raise RuntimeError("killed half-way")
    assert json.loads(path.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["logs.json"]  # no temporary file left behind


# -----------------------------------------------------------------------------
# training, checkpoints, resume

def test_loss_falls(text_file, tmp_path):
    config = tiny_config(text_file, tmp_path / "run", "--trainer.max_iters=60", "--trainer.eval_interval=0",
                         "--trainer.sample_interval=0", "--trainer.learning_rate=3e-3")
    trainer = train(config)
    losses = trainer.logs["train_losses"]
    assert len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5


def test_run_files_and_checkpoint_round_trip(text_file, tmp_path):
    work_dir = tmp_path / "run"
    trainer = train(tiny_config(text_file, work_dir))
    for name in ("args.txt", "config.json", "model.pt", "ckpt.pt", "train_logs.json", "samples.txt"):
        assert (work_dir / name).is_file(), name
    logs = json.loads((work_dir / "train_logs.json").read_text())
    assert len(logs["train_losses"]) == 8 and len(logs["attention_computation_time"]) == 8
    assert [it for it, _ in logs["val_losses"]] == [4, 8]
    assert (work_dir / "samples.txt").read_text().count("O God, O God!") == 2

    ckpt = load_checkpoint(str(work_dir / "model.pt"))
    config = GPT.get_default_config()
    config.merge_from_dict(ckpt["model_config"])
    model = GPT(config)
    model.load_state_dict(ckpt["model"])
    model.eval()
    trainer.model.eval()
    x = torch.tensor([Vocabulary(ckpt["vocab"]).encode("the king shall")])
    torch.testing.assert_close(model(x)[0], trainer.model(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("schedule", [["--trainer.lr_schedule=constant"], ["--trainer.lr_decay_iters=8"]])
def test_exact_resume(text_file, tmp_path, schedule):
    full = train(tiny_config(text_file, tmp_path / "full", *schedule))
    train(tiny_config(text_file, tmp_path / "half", "--trainer.max_iters=4", *schedule))
    resumed = train(tiny_config(text_file, tmp_path / "half", "--trainer.resume=True", *schedule))
    assert resumed.logs["train_losses"] == full.logs["train_losses"]  # bit for bit
    assert resumed.logs["val_losses"] == full.logs["val_losses"]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_errors(text_file, tmp_path):
    with pytest.raises(UserError, match="no resume checkpoint"):
        train(tiny_config(text_file, tmp_path / "none", "--trainer.resume=True"))
    train(tiny_config(text_file, tmp_path / "run", "--trainer.max_iters=2"))
    with pytest.raises(UserError, match="n_embd"):
        train(tiny_config(text_file, tmp_path / "run", "--trainer.resume=True", "--model.n_embd=64"))


@pytest.mark.parametrize("position", [[], ["--model.rope=True"], ["--model.pos_emb=sinusoidal"]])
def test_context_extension_from_pretrained(text_file, tmp_path, position):
    short = train(tiny_config(text_file, tmp_path / "short", *position))
    long_config = tiny_config(text_file, tmp_path / "long", "--data.block_size=32", "--trainer.max_iters=0",
                              f"--model.pretrained_folder={tmp_path / 'short'}", *position)
    extended = train(long_config).model
    old, new = short.model.state_dict(), extended.state_dict()
    for key, value in old.items():
        if key == "transformer.wpe.weight":
            assert new[key].shape == (32, 32)
            assert torch.equal(new[key][:16], value)  # existing rows copied, new rows freshly initialised
            assert not torch.equal(new[key][16:], torch.zeros(16, 32))
        else:
            assert torch.equal(new[key], value), key
    with pytest.raises(UserError, match="own --system.work_dir"):
        train(tiny_config(text_file, tmp_path / "short", f"--model.pretrained_folder={tmp_path / 'short'}"))
    with pytest.raises(UserError, match=r"weight has shape \(\d+, 32\) but this model needs \(\d+, 64\)"):
        train(tiny_config(text_file, tmp_path / "wide", "--model.n_embd=64",
                          f"--model.pretrained_folder={tmp_path / 'short'}", *position))


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable"):
        load_checkpoint(str(path))


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
def test_naive_and_fast_agree(window, T, rope, n_kv_head):
    torch.manual_seed(0)
    naive = CausalSelfAttention(model_config(window=window, rope=rope, n_kv_head=n_kv_head, attn_impl="naive"))
    fast = CausalSelfAttention(model_config(window=window, rope=rope, n_kv_head=n_kv_head, attn_impl="fast"))
    fast.load_state_dict(naive.state_dict())
    x = torch.randn(2, T, 48, requires_grad=True)
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

def test_sinusoidal_table_formula():
    table = sinusoidal_table(10, 6)
    for p in range(10):
        for i in range(3):
            angle = p / 10_000 ** (2 * i / 6)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


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


def test_learned_table_refuses_long_input():
    model = GPT(model_config(block_size=16))
    with pytest.raises(ValueError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    rope_model = GPT(model_config(block_size=16, rope=True))
    assert rope_model(torch.zeros(1, 40, dtype=torch.long))[0].shape == (1, 40, 11)


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
def test_cached_equals_uncached_greedy(position, window, n_kv_head, impl):
    model = generation_model(window=window, n_kv_head=n_kv_head, attn_impl=impl, **position)
    idx = torch.randint(11, (2, 5))
    cached = model.generate(idx, 19, use_cache=True)  # 24 tokens: exactly block_size
    assert cached.shape == (2, 24)
    assert torch.equal(cached, model.generate(idx, 19, use_cache=False))
    assert torch.equal(cached, model.generate(idx, 19, do_sample=True, top_k=1))  # top_k=1 is greedy
    assert torch.equal(cached, model.generate(idx, 19, do_sample=True, temperature=0.0))


def full_forward_greedy_matches(model, seq, prompt_len):
    """Each generated token is the argmax of one full forward pass over the whole sequence."""
    logits, _ = model(seq)
    return torch.equal(logits[:, prompt_len - 1:-1].argmax(-1), seq[:, prompt_len:])


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


# -----------------------------------------------------------------------------
# recurrent baselines

def test_elman_rnn_shapes_and_equations():
    torch.manual_seed(0)
    rnn = ElmanRNN(3, 5, 2, activation="tanh").double()
    assert rnn.W_hh.shape == (5, 5) and rnn.W_hx.shape == (5, 3) and rnn.W_yh.shape == (2, 5)
    assert rnn.b_h.shape == (5,) and rnn.b_y.shape == (2,)
    x, h0 = torch.randn(4, 7, 3, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    y, h = rnn(x, h0)
    assert y.shape == (4, 7, 2) and h.shape == (4, 7, 5)
    prev = h0
    for t in range(7):  # the writeup's equations, one step at a time
        prev = torch.tanh(prev @ rnn.W_hh.T + x[:, t] @ rnn.W_hx.T + rnn.b_h)
        torch.testing.assert_close(h[:, t], prev)
        torch.testing.assert_close(y[:, t], prev @ rnn.W_yh.T + rnn.b_y)


def test_writeup_question_1_1_both_bits_seen():
    """Weights for which y_t = 1 exactly when each of the two input bits has been 1 at some step <= t."""
    rnn = ElmanRNN(2, 2, 1, activation="slide", output_activation="slide")
    with torch.no_grad():
        rnn.W_hh.copy_(torch.eye(2))  # remember what was seen ...
        rnn.W_hx.copy_(torch.eye(2))  # ... and add what is seen now; slide caps it at 1
        rnn.b_h.zero_()
        rnn.W_yh.copy_(torch.tensor([[1.0, 1.0]]))
        rnn.b_y.fill_(-1.0)  # slide(h_1 + h_2 - 1) is 1 only when both are 1
    for T in range(1, 7):
        seqs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2 * T))).view(-1, T, 2)
        y, _ = rnn(seqs)
        seen = seqs.cummax(dim=1).values  # bit i seen at some step <= t
        expected = (seen[..., 0] * seen[..., 1])
        assert torch.equal(y[..., 0], expected)


def rnn_config(model_type, activation="tanh"):
    C = model_config(model_type=model_type, rnn_activation=activation, n_embd=16)
    return C


def prediction_changes(model, position):
    """Which positions' predictions change when the token at `position` changes."""
    torch.manual_seed(1)
    idx = torch.randint(11, (1, 12))
    changed = idx.clone()
    changed[0, position] = (changed[0, position] + 1) % 11
    a, b = model(idx)[0][0], model(changed)[0][0]
    return ((a - b).abs().sum(-1) > 1e-9).tolist()


@pytest.mark.parametrize("model_type, valid", [("rnn", True), ("birnn_prefix", True), ("birnn_invalid", False)])
def test_birnn_validity(model_type, valid):
    torch.manual_seed(0)
    model = build_model(rnn_config(model_type)).double().eval()
    changes = prediction_changes(model, 6)
    # logits[t] is the prediction of token t+1: a valid model's predictions up to token 6 ignore token 6
    assert not any(changes[:6]) == valid
    assert all(changes[6:])
    if not valid:
        assert any(prediction_changes(model, 9)[:9])  # it reads later tokens, not only the next one


def test_birnn_prefix_equals_rerunning_each_prefix():
    torch.manual_seed(0)
    model = build_model(rnn_config("birnn_prefix")).double().eval()
    idx = torch.randint(11, (2, 9))
    logits = model(idx)[0]
    for t in range(9):  # logits[t] predicts token t+1 from a BiRNN run over tokens 0..t alone
        x = model.wte(idx[:, :t + 1])
        _, f = model.forward_rnn(x)
        _, g = model.backward_rnn(x.flip(1))
        expected = model.head(torch.cat([f[:, -1], g[:, -1]], dim=-1))
        torch.testing.assert_close(logits[:, t], expected)


@pytest.mark.parametrize("model_type", ["rnn", "birnn_prefix"])
def test_recurrent_generation_matches_forward(model_type):
    torch.manual_seed(0)
    model = build_model(rnn_config(model_type)).double().eval()
    seq = model.generate(torch.randint(11, (2, 3)), 20)
    assert seq.shape == (2, 23)
    assert full_forward_greedy_matches(model, seq, 3)


@pytest.mark.parametrize("activation", ["slide", "tanh"])
def test_rnn_trains_with_the_same_trainer(text_file, tmp_path, activation):
    work_dir = tmp_path / "rnn"
    trainer = train(tiny_config(text_file, work_dir, "--model.model_type=rnn", f"--model.rnn_activation={activation}",
                                "--trainer.max_iters=40", "--trainer.learning_rate=1e-2", "--model.n_embd=48",
                                "--trainer.eval_interval=20"))
    losses = trainer.logs["train_losses"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    proc = run_cli(f"--system.work_dir={work_dir}", "--sample.only=True", "--sample.prompt=the",
                   "--sample.max_new_tokens=20")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("the")


# -----------------------------------------------------------------------------
# probes

def test_probes_on_cpu():
    q, k, v = torch.randn(1, 2, 256, 16), torch.randn(1, 2, 256, 16), torch.randn(1, 2, 256, 16)
    y, ms, mb = timed_attend(q, k, v)
    torch.testing.assert_close(y, attend(q, k, v))
    assert ms > 0 and mb is None  # no allocator counter on CPU
    score_bytes = 2 * 256 * 256 * 4
    naive_peak = profile_peak_memory(naive_attention, q, k, v)
    assert naive_peak >= score_bytes
    banded_peak = profile_peak_memory(banded_attention, q, k, v, 16)
    assert banded_peak < naive_peak / 2


# -----------------------------------------------------------------------------
# end to end (the real corpus)

needs_corpus = pytest.mark.skipif(not os.path.exists(CORPUS), reason="input.txt (tiny-shakespeare) not in place")


@needs_corpus
def test_chargpt_end_to_end(tmp_path):
    work_dir = tmp_path / "e2e"
    proc = run_cli(f"--system.work_dir={work_dir}", "--system.wandb=offline", "--model.n_layer=2",
                   "--model.n_embd=48", "--model.rope=True", "--model.n_kv_head=2", "--trainer.batch_size=8",
                   "--data.block_size=32", "--trainer.max_iters=6", "--trainer.eval_interval=3",
                   "--trainer.eval_iters=2", "--trainer.log_interval=2", "--trainer.sample_interval=3")
    assert proc.returncode == 0, proc.stderr
    assert "iter 6: train loss" in proc.stdout and "O God, O God!" in proc.stdout
    logs = json.loads((work_dir / "train_logs.json").read_text())
    assert len(logs["train_losses"]) == 6 and logs["train_losses"][0] == pytest.approx(math.log(65), rel=0.1)
    config = json.loads((work_dir / "config.json").read_text())
    assert config["model"]["vocab_size"] == 65 and config["model"]["rope"] is True
    assert (work_dir / "wandb").is_dir()  # offline run, no login, no network, no prompt


@needs_corpus
def test_cli_bad_input(tmp_path):
    assert_one_line_error(run_cli(f"--data.input_file={tmp_path}/missing.txt",
                                  f"--system.work_dir={tmp_path}/x"), "missing.txt", "--data.input_file")
    assert_one_line_error(run_cli("--model.n_heads=3"), "--model.n_query_head")
    assert_one_line_error(run_cli("--model.n_kv_head=4", f"--system.work_dir={tmp_path}/x",
                                  "--system.wandb=disabled"), "--model.n_kv_head=4")
    assert_one_line_error(run_cli(f"--system.work_dir={tmp_path}/none", "--trainer.resume=True",
                                  "--system.wandb=disabled"), "resume")


def test_sample_command(text_file, tmp_path):
    work_dir = tmp_path / "run"
    train(tiny_config(text_file, work_dir, "--model.rope=True", "--model.window=8"))
    before = {p.name: p.stat().st_mtime_ns for p in work_dir.iterdir()}
    args = [f"--system.work_dir={work_dir}", "--sample.only=True", "--sample.prompt=the king",
            "--sample.max_new_tokens=40", "--sample.top_p=0.9"]
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    text = first.stdout.strip().splitlines()[-1]
    assert text.startswith("the king") and len(text) >= len("the king") + 30
    assert first.stdout == second.stdout  # same seed, same sample
    assert {p.name: p.stat().st_mtime_ns for p in work_dir.iterdir()} == before  # nothing written
    assert_one_line_error(run_cli(*args[:2], "--sample.prompt=ROMEO~"), "not in the vocabulary")
    assert_one_line_error(run_cli(f"--system.work_dir={tmp_path}/none", "--sample.only=True"), "no model.pt")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.pt").write_bytes(b"garbage")
    assert_one_line_error(run_cli(f"--system.work_dir={tmp_path}/bad", "--sample.only=True"), "not a readable")


# -----------------------------------------------------------------------------
# experiments (each study at its quick scale, then the report built from them)

COMPARE = {"final": {"run", "iters", "final_train_loss", "eval_train_loss", "val_loss", "seconds", "ms_per_iter"},
           "curves": {"run", "iter", "train_loss"}}
STUDIES = {  # study -> (training runs it makes, {table: columns it must have}, its plots, rows of final.csv)
    "rope": (2, COMPARE, ["loss"], ["learned positions", "RoPE"]),
    "context_extension": (4, {"final": {"run", "switch_iter", "val_loss_at_32", "val_loss_at_64"},
                              "curves": {"run", "iter", "block_size", "train_loss"}}, ["loss"],
                          ["learned positions", "RoPE"]),
    "gqa_cost": (4, {"cost": {"n_kv_head", "attention_ms", "attention_peak_mb_per_head",
                              "attention_peak_mb_group_sum", "kv_cache_bytes", "cached_tokens_per_s"}}, ["cost"], None),
    "gqa_loss": (2, COMPARE, ["loss"], ["MHA (n_kv_head=6)", "GQA (n_kv_head=2)"]),
    "window": (4, {**COMPARE, "cost": {"N", "window", "naive_ms", "fast_ms", "sdpa_causal_ms", "naive_peak_bytes",
                                       "fast_peak_bytes", "sdpa_causal_peak_bytes"}}, ["loss", "cost"],
               ["full causal", "w=64", "w=32", "w=16"]),
    "positions": (4, {**COMPARE, "length": {"run", "length", "val_loss"}}, ["loss", "length", "tables"],
                  ["learned", "sinusoidal", "RoPE", "none"]),
    "rnn": (5, COMPARE, ["loss"], ["Transformer", "Elman RNN (slide)", "Elman RNN (tanh)",
                                   "BiRNN on prefixes (valid)", "BiRNN one pass (invalid)"]),
    "attention_analysis": (0, {"checks": {"check", "value", "expect"}}, ["angle_fit"], None),
}


@pytest.fixture(scope="module")
def quick_studies(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    for name in STUDIES:
        proc = subprocess.run([sys.executable, os.path.join(HERE, "scripts", f"study_{name}.py"), "--scale=quick",
                               f"--out={out}", "--wandb=disabled"], cwd=HERE, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
    return out


def read_csv(path):
    import csv
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_png(path):
    import matplotlib.image
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 100 and width > 100


@needs_corpus
@pytest.mark.parametrize("name", list(STUDIES))
def test_study_quick_outputs(quick_studies, name):
    trainings, tables, plots, runs = STUDIES[name]
    folder = quick_studies / name
    for table, columns in tables.items():
        rows = read_csv(folder / f"{table}.csv")
        assert rows and columns <= set(rows[0]), table
    if runs:
        assert [row["run"] for row in read_csv(folder / "final.csv")] == runs
    for plot in plots:
        assert_png(folder / f"{plot}.png")
    info = json.loads((folder / "study.json").read_text())
    assert info["scale"] == "quick" and "torch" in info["machine"]
    commands = (folder / "commands.txt").read_text().splitlines()
    assert commands[0].startswith("python ") and len(commands) == 1 + trainings
    assert all(c.startswith("python chargpt.py ") for c in commands[1:])


@needs_corpus
def test_study_findings_at_quick_scale(quick_studies):
    """What the studies must show even at the smoke-test scale."""
    cost = read_csv(quick_studies / "gqa_cost" / "cost.csv")
    cache = {int(r["n_kv_head"]): int(r["kv_cache_bytes"]) for r in cost}
    assert all(cache[n] * 6 == cache[6] * n for n in cache)  # exactly proportional to n_kv_head
    window = read_csv(quick_studies / "window" / "cost.csv")
    assert all(float(r["fast_peak_bytes"]) < float(r["naive_peak_bytes"]) for r in window)
    length = read_csv(quick_studies / "positions" / "length.csv")
    beyond = [r for r in length if int(r["length"]) > 32]
    assert all((r["val_loss"] == "") == (r["run"] in ("learned", "sinusoidal")) for r in beyond)
    checks = {r["check"][:3]: float(r["value"]) for r in read_csv(quick_studies / "attention_analysis" / "checks.csv")}
    assert checks["1. "] < 1e-12 and checks["2b."] == 0 and checks["2c."] > 1e-3 and checks["2d."] < 1e-12
    assert checks["3. "] > 1e-4
    r2 = [float(r["value"]) for r in read_csv(quick_studies / "attention_analysis" / "checks.csv")
          if r["check"].startswith("4.")]
    assert r2[0] < 0.1 and r2[1] > 0.8  # concatenated cannot fit the angle, additive can


@needs_corpus
def test_report_builds_from_quick_studies(quick_studies, tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(HERE, "scripts", "report.py"),
                           f"--experiments={quick_studies}", f"--report={tmp_path / 'REPORT.md'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "REPORT.md").read_text()
    for name in STUDIES:
        assert f"## {name} (quick scale)" in report
        plot = STUDIES[name][2][0]
        assert_png(tmp_path / "report" / f"{name}_quick_{plot}.png")
        assert f"](report/{name}_quick_{plot}.png)" in report


if __name__ == "__main__":
    sys.exit(pytest.main([os.path.abspath(__file__), "-q"]))
