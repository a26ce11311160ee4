"""The recurrent baselines: the writeup's Elman RNN, question 1.1, the invalid and valid bidirectional RNN
language models, generation and training with the same trainer."""

import itertools

import pytest
import torch

from helpers import full_forward_greedy_matches, model_config, run_cli, tiny_config
from mingpt.app.checkpoint import load_state_into
from mingpt.app.probes import AttentionProbe
from mingpt.app.run import train
from mingpt.app.settings import build_model
from mingpt.rnn import ElmanRNN


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
        assert torch.equal(y[..., 0], expected)  # exact: every value is a small integer, exact in float32


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


@pytest.mark.parametrize("model_type", ["gpt", "rnn", "birnn_invalid", "birnn_prefix"])
def test_every_model_has_the_language_model_interface(model_type):
    """What the trainer and a run call on any model (mingpt.model.LanguageModel), with the same meaning for all."""
    model = build_model(model_config(model_type=model_type, n_embd=16, n_query_head=4, n_kv_head=2))
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert AttentionProbe(model).reading() == (None, None, None)  # no training step yet
    gpt = model_type == "gpt"
    assert (model.pos_emb is not None, model.kv_cache_bytes() is not None, len(model.attention_modules()) > 0) \
        == (gpt, gpt, gpt)
    assert (model.flops_per_token(8) is not None) == (model_type in ("gpt", "rnn"))


@pytest.mark.parametrize("model_type", ["gpt", "rnn", "birnn_invalid", "birnn_prefix"])
def test_every_parameter_gets_a_gradient(model_type):
    """DistributedDataParallel stops at the second step when a parameter gets no gradient."""
    model = build_model(model_config(model_type=model_type, n_embd=16, n_query_head=4, n_kv_head=2))
    idx = torch.randint(11, (2, 8))
    model(idx, idx)[1].backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_birnn_checkpoint_with_the_output_layers_it_never_read_loads():
    model = build_model(rnn_config("birnn_prefix"))
    state = {key: value.clone() for key, value in model.state_dict().items()}
    old = {**state, **{key: torch.zeros(16, 16) for key in ("forward_rnn.W_yh", "backward_rnn.W_yh")},
           **{key: torch.zeros(16) for key in ("forward_rnn.b_y", "backward_rnn.b_y")}}
    fresh = build_model(rnn_config("birnn_prefix"))
    load_state_into(fresh, old, "old model.pt")
    for key, value in state.items():
        assert torch.equal(fresh.state_dict()[key], value)
