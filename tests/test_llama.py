"""LLaMA's block behind flags: RMSNorm against its formula and torch.nn.RMSNorm, SwiGLU against its three
matmuls, the hidden size rule, no biases with --model.bias=False, --model.preset=llama and what flags beside it
do, and checkpoints without the new settings still being today's GPT."""

import pytest
import torch

from helpers import model_config, tiny_config
from mingpt.app.checkpoint import saved_model_config
from mingpt.app.run import train
from mingpt.app.settings import get_config, help_text
from mingpt.errors import UserError
from mingpt.model import GPT, RMSNorm, SwiGLU
from mingpt.model_config import mlp_hidden_size


# -----------------------------------------------------------------------------
# RMSNorm

def test_rmsnorm_equals_formula():
    torch.manual_seed(0)
    norm = RMSNorm(6, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6, dtype=torch.float64))
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    expected = torch.empty_like(x)
    for i in range(3):
        for t in range(4):
            row = x[i, t]
            rms = (sum(v * v for v in row.tolist()) / 6 + 1e-5) ** 0.5
            expected[i, t] = row / rms * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_rmsnorm_equals_torch():
    torch.manual_seed(0)
    ours, theirs = RMSNorm(32, eps=1e-6), torch.nn.RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        weight = torch.randn(32)
        ours.weight.copy_(weight)
        theirs.weight.copy_(weight)
    x = torch.randn(2, 5, 32) * 3
    torch.testing.assert_close(ours(x), theirs(x))


def test_norm_flag_builds_rmsnorm_without_bias():
    model = GPT(model_config(norm="rmsnorm", norm_eps=1e-6))
    norms = [model.transformer.ln_f] + [m for b in model.transformer.h for m in (b.ln_1, b.ln_2)]
    assert all(isinstance(m, RMSNorm) and m.eps == 1e-6 for m in norms)
    assert not any("ln_" in name and name.endswith("bias") for name, _ in model.named_parameters())


# -----------------------------------------------------------------------------
# SwiGLU

def test_swiglu_equals_three_matmuls():
    torch.manual_seed(0)
    mlp = SwiGLU(model_config(mlp="swiglu", mlp_hidden=20, bias=False)).double().eval()
    x = torch.randn(2, 7, 48, dtype=torch.float64)
    gate = x @ mlp.gate_proj.weight.T
    up = x @ mlp.up_proj.weight.T
    expected = (gate / (1 + torch.exp(-gate)) * up) @ mlp.down_proj.weight.T  # silu(z) = z * sigmoid(z)
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize("n_embd, mlp, expected", [
    (48, "gelu", 192),  # 4 * n_embd
    (192, "swiglu", 512),  # 8/3 * 192 = 512 exactly
    (48, "swiglu", 128),  # 8/3 * 48 = 128 exactly, a multiple of 64
    (32, "swiglu", 128),  # 85.3 -> 128
    (96, "swiglu", 256),  # 256 exactly
    (120, "swiglu", 320),  # 320 exactly
    (66, "swiglu", 192),  # 176 -> 192
    (4096, "swiglu", 10944),  # 10922.7 -> 171 * 64
])
def test_mlp_hidden_rule(n_embd, mlp, expected):
    assert mlp_hidden_size(model_config(n_embd=n_embd, mlp=mlp)) == expected
    if n_embd < 1000:  # the layers are built that wide
        model = GPT(model_config(n_embd=n_embd, mlp=mlp, n_query_head=2, n_kv_head=2, n_layer=1))
        block_mlp = model.transformer.h[0].mlp
        assert (block_mlp.gate_proj if mlp == "swiglu" else block_mlp.c_fc).out_features == expected


def test_mlp_hidden_flag_wins():
    model = GPT(model_config(mlp="swiglu", mlp_hidden=40))
    assert model.transformer.h[0].mlp.up_proj.weight.shape == (40, 48)
    assert GPT(model_config(mlp_hidden=40)).transformer.h[0].mlp.c_proj.weight.shape == (48, 40)


def test_swiglu_parameters_close_to_gelu():
    gelu, swiglu = GPT(model_config(n_embd=192)), GPT(model_config(n_embd=192, mlp="swiglu"))
    assert abs(swiglu.num_params() / gelu.num_params() - 1) < 0.01


# -----------------------------------------------------------------------------
# biases

@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_no_bias_leaves_no_bias_parameters(norm, mlp):
    model = GPT(model_config(bias=False, norm=norm, mlp=mlp, n_kv_head=2))
    assert not [name for name, _ in model.named_parameters() if "bias" in name]
    assert all(getattr(m, "bias", None) is None for m in model.modules())
    with_bias = GPT(model_config(norm=norm, mlp=mlp, n_kv_head=2))
    assert sum("bias" in name for name, _ in with_bias.named_parameters()) > 0


def test_no_bias_model_trains_and_decodes_alike():
    """Without biases the attention's stacked projection has a weight alone: the training path (stacked at each
    call) and the evaluation path (the kept stack) give the same logits."""
    torch.manual_seed(0)
    model = GPT(model_config(bias=False, n_kv_head=2, rope=True)).double().eval()
    x = torch.randint(11, (2, 12))
    with torch.no_grad():
        kept, _ = model(x)
    trained, _ = model(x)
    torch.testing.assert_close(kept, trained)


# -----------------------------------------------------------------------------
# the preset

LLAMA = dict(rope=True, pos_emb="none", norm="rmsnorm", mlp="swiglu", bias=False)


def model_settings(*flags):
    config = get_config()
    config.merge_from_args(list(flags))
    return config.model


def test_llama_preset_sets_llamas_choices():
    m = model_settings("--model.preset=llama")
    assert {k: getattr(m, k) for k in LLAMA} == LLAMA
    model = GPT(model_config(preset="llama"))
    assert model.pos_emb == "none" and not hasattr(model.transformer, "wpe")
    assert isinstance(model.transformer.h[0].mlp, SwiGLU) and isinstance(model.transformer.ln_f, RMSNorm)
    assert model.attention_modules()[0].rope


def test_gpt_preset_is_the_defaults():
    defaults, gpt = model_settings(), model_settings("--model.preset=llama", "--model.preset=gpt")
    assert gpt.to_dict() == defaults.to_dict()
    assert defaults.rope is False and defaults.pos_emb is None and defaults.norm == "layernorm"
    assert defaults.mlp == "gelu" and defaults.bias is True


@pytest.mark.parametrize("flags", [
    ["--model.preset=llama", "--model.norm=layernorm", "--model.bias=True"],
    ["--model.norm=layernorm", "--model.bias=True", "--model.preset=llama"],  # wherever the preset stands
])
def test_flags_beside_the_preset_win(flags):
    m = model_settings(*flags)
    assert m.norm == "layernorm" and m.bias is True
    assert m.rope is True and m.mlp == "swiglu" and m.pos_emb == "none"


def test_preset_with_a_position_table_is_one_line():
    config = model_settings("--model.preset=llama", "--model.pos_emb=learned")
    config.vocab_size, config.block_size = 11, 16
    with pytest.raises(UserError, match="--model.rope=True replaces the position table"):
        GPT(config)
    m = model_settings("--model.preset=llama", "--model.rope=False", "--model.pos_emb=learned")
    assert m.pos_emb == "learned" and m.norm == "rmsnorm"


@pytest.mark.parametrize("flag, needle", [
    ("--model.preset=mistral", "--model.preset=mistral must be one of gpt, llama"),
    ("--model.norm=batchnorm", "--model.norm=batchnorm must be one of layernorm, rmsnorm"),
    ("--model.mlp=relu", "--model.mlp=relu must be one of gelu, swiglu"),
    ("--model.norm_eps=0", "--model.norm_eps=0.0 must be > 0"),
    ("--model.mlp_hidden=0", "--model.mlp_hidden=0 must be >= 1"),
])
def test_bad_values_are_one_line(flag, needle):
    with pytest.raises(UserError) as e:
        model_settings(flag).validate("model.")
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("flag", ["--model.bias=maybe", "--model.mlp_hidden=1.5"])
def test_wrong_types_are_refused(flag):
    with pytest.raises(UserError, match=flag.split("=")[0]):
        model_settings(flag)


def test_help_documents_the_preset():
    text = help_text(get_config())
    line = next(line for line in text.splitlines() if "--model.preset" in line)
    for key, value in LLAMA.items():
        assert f"{key}={value}" in line
    assert "wins" in line
    for key in ("--model.norm ", "--model.norm_eps", "--model.mlp ", "--model.mlp_hidden", "--model.bias"):
        assert key in text


def test_preset_run_trains_and_reloads(text_file, tmp_path):
    trainer = train(tiny_config(text_file, tmp_path / "run", "--model.preset=llama", "--trainer.max_iters=4",
                                "--trainer.sample_interval=0"))
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert {k: saved["model_config"][k] for k in LLAMA} == LLAMA
    assert sorted(saved["model"]) == sorted(trainer.model.state_dict())
    assert not any(k.endswith("bias") for k in saved["model"])


# -----------------------------------------------------------------------------
# checkpoints from before these settings

def test_checkpoint_without_the_new_settings_is_todays_gpt():
    old = {"model_type": "gpt", "n_layer": 2, "n_query_head": 4, "n_kv_head": 4, "n_embd": 32, "vocab_size": 11,
           "block_size": 16, "embd_pdrop": 0.1, "resid_pdrop": 0.1, "attn_pdrop": 0.1, "rope": False,
           "pos_emb": None, "window": 0, "attn_impl": "fast", "gqa_scores": "per_head", "rnn_activation": "slide",
           "pretrained_folder": None}
    config = saved_model_config({"model_config": old}, "old/model.pt")
    assert (config.norm, config.mlp, config.bias, config.preset) == ("layernorm", "gelu", True, "gpt")
    shapes = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    # minGPT's block: LayerNorms with biases, a GELU MLP of 4 * n_embd, biased attention projections
    assert shapes["transformer.h.0.ln_1.bias"] == (32,) and shapes["transformer.ln_f.bias"] == (32,)
    assert shapes["transformer.h.0.mlp.c_fc.weight"] == (128, 32) and shapes["transformer.h.0.mlp.c_fc.bias"] == (128,)
    assert shapes["transformer.h.0.attn.q_proj.bias"] == (32,) and shapes["transformer.wpe.weight"] == (16, 32)
