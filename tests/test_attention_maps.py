"""
Attention maps (mingpt/app/attention_maps.py, scripts/attention_maps.py, --trainer.attention_maps_interval): the
weights against a softmax computed here from each layer's input by the definitions (projections, RoPE's rotation,
an einsum of the scores, the causal and window masks), and against the model's own output (the weights times the
values give what the layer returns); rows sum to 1 and masked keys get exactly 0; one map per key/value group under
group_sum; the model is left as it was; the figure; the script's bad input; the maps a run logs to wandb.
"""

import math
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from helpers import ROOT, assert_one_line_error, checkout_env, model_config, snapshot, tiny_config, wandb_runs
from mingpt.app.attention_maps import attention_maps, plot_attention_maps
from mingpt.app.probes import AttentionProbe
from mingpt.app.run import train
from mingpt.data.tokenizer import CharTokenizer
from mingpt.errors import UserError
from mingpt.model import GPT
from mingpt.rnn import RNNLM

TOKENIZER = CharTokenizer(list("abcdefghijk"))  # model_config's 11 tokens
PROMPT = "".join(TOKENIZER.tokens[i] for i in torch.randint(11, (40,), generator=torch.Generator().manual_seed(1)))


def sharp_gpt(**settings):
    """A small GPT whose attention is far from uniform (queries scaled up), in eval mode."""
    torch.manual_seed(0)
    model = GPT(model_config(**settings)).eval()
    with torch.no_grad():
        for attn in model.attention_modules():
            attn.q_proj.weight.mul_(30)
    return model


def rotated(x, base=10_000):
    """RoPE by its definition: the pair (x_i, x_(i+d/2)) at position m = 1..T turned by m * base^(-2i/d)."""
    T, d = x.shape[-2:]
    theta = base ** (-2 * torch.arange(d // 2, dtype=torch.float64) / d)
    angle = torch.arange(1, T + 1, dtype=torch.float64)[:, None] * theta  # (T, d/2)
    a, b = x[..., :d // 2], x[..., d // 2:]
    return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], dim=-1)


def allowed(T, window):
    """(T, T): query t sees key j when j <= t and, with a window, t - j <= window // 2."""
    return torch.tensor([[j <= t and (not window or t - j <= window // 2) for j in range(T)] for t in range(T)])


def layer_inputs_and_outputs(model, ids):
    """Each attention module's input (T, C) and output (T, C) in one forward pass, read by hooks."""
    seen = []
    hooks = [attn.register_forward_hook(lambda m, args, out: seen.append((args[0][0], out[0])))
             for attn in model.attention_modules()]
    with torch.no_grad():
        model(ids)
    for hook in hooks:
        hook.remove()
    return seen


def reference_weights(attn, x, group_sum):
    """(n_maps, T, T) in float64 from the layer's input x (T, C): per query head, or per key/value head with the
    group's queries summed."""
    T = x.size(0)
    nq, nkv, hd = attn.n_query_head, attn.n_kv_head, attn.head_dim
    x = x.double()
    q = (x @ attn.q_proj.weight.double().T + attn.q_proj.bias.double()).view(T, nq, hd).transpose(0, 1)
    k = (x @ attn.k_proj.weight.double().T + attn.k_proj.bias.double()).view(T, nkv, hd).transpose(0, 1)
    if attn.rope:
        q, k = rotated(q), rotated(k)
    g = nq // nkv
    if group_sum:
        q, kv_of_map = q.view(nkv, g, T, hd).sum(1), torch.arange(nkv)
    else:
        kv_of_map = torch.arange(nq) // g
    scores = torch.einsum("htd,hsd->hts", q, k[kv_of_map]) / math.sqrt(hd)
    scores = scores.masked_fill(~allowed(T, attn.window), float("-inf"))
    return torch.softmax(scores, dim=-1)


VARIANTS = [  # n_kv_head (of 6 query heads), window, rope, attn_impl, gqa_scores
    (6, 0, False, "fast", "per_head"),
    (2, 0, True, "fast", "per_head"),
    (1, 16, True, "fast", "per_head"),
    (2, 8, False, "naive", "per_head"),
    (2, 8, True, "naive", "group_sum"),
    (3, 8, False, "fast", "group_sum"),
]


@pytest.mark.parametrize("n_kv_head, window, rope, impl, gqa_scores", VARIANTS)
def test_maps_are_the_softmax_of_q_and_k_and_what_the_model_attends_with(n_kv_head, window, rope, impl, gqa_scores):
    model = sharp_gpt(n_kv_head=n_kv_head, window=window, rope=rope, attn_impl=impl, gqa_scores=gqa_scores)
    maps = attention_maps(model, TOKENIZER, PROMPT)
    T, group_sum = len(PROMPT), gqa_scores == "group_sum"
    n_maps = n_kv_head if group_sum else 6
    assert maps.weights.shape == (2, n_maps, T, T) and maps.tokens == list(PROMPT) and maps.cropped == 0
    assert maps.group_sum == group_sum and maps.window == window
    ids = torch.tensor([TOKENIZER.encode(PROMPT)])
    for layer, (attn, (x, out)) in enumerate(zip(model.attention_modules(), layer_inputs_and_outputs(model, ids))):
        expected = reference_weights(attn, x, group_sum)
        torch.testing.assert_close(maps.weights[layer].double(), expected, atol=1e-5, rtol=1e-4)
        # the weights times the values give the layer's output: every query head of a group uses its group's map
        v = (x @ attn.v_proj.weight.T + attn.v_proj.bias).view(T, n_kv_head, attn.head_dim).transpose(0, 1)
        g = 6 // n_kv_head
        per_head = maps.weights[layer].repeat_interleave(g, dim=0) if group_sum else maps.weights[layer]
        y = per_head @ v.repeat_interleave(g, dim=0)  # (6, T, hd)
        torch.testing.assert_close(attn.out_proj(y.transpose(0, 1).reshape(T, -1)), out, atol=1e-5, rtol=1e-4)
    assert expected.max() > 0.9  # the maps are sharp: a weak test would pass on uniform ones


@pytest.mark.parametrize("window", [0, 8])
def test_rows_sum_to_one_and_masked_keys_get_exactly_zero(window):
    maps = attention_maps(sharp_gpt(n_kv_head=2, window=window), TOKENIZER, PROMPT)
    hidden = ~allowed(len(PROMPT), window)
    torch.testing.assert_close(maps.weights.sum(-1), torch.ones(maps.weights.shape[:-1]))
    assert torch.all(maps.weights[..., hidden] == 0)
    assert torch.all(maps.weights[..., ~hidden] > 0)


def test_group_sum_gives_one_map_per_group_and_per_head_maps_differ():
    summed = attention_maps(sharp_gpt(n_kv_head=2, gqa_scores="group_sum"), TOKENIZER, PROMPT)
    per_head = attention_maps(sharp_gpt(n_kv_head=2), TOKENIZER, PROMPT)
    assert summed.weights.size(1) == 2 and per_head.weights.size(1) == 6
    assert (per_head.weights[:, 0] - per_head.weights[:, 1]).abs().max() > 0.1  # heads of one group: own maps


def test_the_model_is_left_as_it_was():
    model = sharp_gpt(n_kv_head=2, window=8, rope=True)
    ids = torch.tensor([TOKENIZER.encode(PROMPT)])
    before = model(ids)[0]
    probe = AttentionProbe(model)  # a wrapper installed from outside stays installed
    wrapped = [attn.core for attn in model.attention_modules()]
    model.train()
    rng = torch.get_rng_state()
    attention_maps(model, TOKENIZER, PROMPT)
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert [attn.core for attn in model.attention_modules()] == wrapped
    probe.remove()
    model.eval()
    attention_maps(model, TOKENIZER, PROMPT)
    assert all("core" not in attn.__dict__ for attn in model.attention_modules())
    assert torch.equal(model(ids)[0], before)


def test_a_long_prompt_is_cropped_to_its_last_tokens():
    model = sharp_gpt(rope=True)
    long = PROMPT * 2  # 80 tokens
    maps = attention_maps(model, TOKENIZER, long, max_tokens=30)
    assert maps.cropped == 50 and maps.tokens == list(long[-30:])
    torch.testing.assert_close(maps.weights, attention_maps(model, TOKENIZER, long[-30:]).weights)
    assert attention_maps(model, TOKENIZER, PROMPT * 2).cropped == 80 - 64  # no further than block_size


def test_bad_prompts_and_models_are_one_line_errors():
    model = sharp_gpt()
    with pytest.raises(UserError, match="the prompt is empty"):
        attention_maps(model, TOKENIZER, "")
    with pytest.raises(UserError, match="the prompt: characters 'Z' are not in the vocabulary"):
        attention_maps(model, TOKENIZER, "abZ")
    rnn = RNNLM(model_config(model_type="rnn"))
    with pytest.raises(UserError, match="RNNLM has no attention"):
        attention_maps(rnn, TOKENIZER, PROMPT)


def test_the_figure_has_a_panel_per_layer_and_map_and_names_the_kv_heads():
    maps = attention_maps(sharp_gpt(n_kv_head=2, window=8), TOKENIZER, PROMPT)
    fig = plot_attention_maps(maps)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 * 6 and len(fig.axes) == 2 * 6 + 1  # and the colour bar
    assert [ax.get_title() for ax in panels[:6]] == [f"head {h} \u00b7 kv {h // 3}" for h in range(6)]
    assert all(len(ax.lines) == 1 for ax in panels)  # the window's edge
    assert panels[0].get_yticklabels()[0].get_text() == PROMPT[0]
    panels = [ax for ax in plot_attention_maps(maps, layers=[1], heads=[0, 5]).axes if ax.images]
    assert [(ax.get_ylabel(), ax.get_title()) for ax in panels] == [("layer 1\nquery", "head 0 \u00b7 kv 0"),
                                                                    ("", "head 5 \u00b7 kv 1")]
    summed = attention_maps(sharp_gpt(n_kv_head=2, gqa_scores="group_sum"), TOKENIZER, PROMPT)
    titles = [ax.get_title() for ax in plot_attention_maps(summed).axes[:2]]
    assert titles == ["kv 0: heads 0-2 summed", "kv 1: heads 3-5 summed"]
    with pytest.raises(UserError, match="layer 2 is out of range: the model has 2 layers"):
        plot_attention_maps(maps, layers=[2])
    with pytest.raises(UserError, match="head -1 is out of range: the model has 6 query heads"):
        plot_attention_maps(maps, heads=[-1])
    with pytest.raises(UserError, match="head 2 is out of range: the model has 2 key/value groups"):
        plot_attention_maps(summed, heads=[2])


# -----------------------------------------------------------------------------
# scripts/attention_maps.py

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    (root / "tiny.txt").write_text("the king and the queen shall speak now, and we go. O God! " * 100)
    run = root / "run"
    train(tiny_config(str(root / "tiny.txt"), run, "--model.window=8", "--model.rope=True", "--data.block_size=64",
                      "--trainer.sample_interval=0"))
    return run


def draw(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "attention_maps.py"), *map(str, args)],
                          env=checkout_env(), capture_output=True, text=True, timeout=120)


def test_script_writes_the_figure_into_the_run_folder(trained_run):
    (trained_run / "attention_maps.png").unlink(missing_ok=True)
    proc = draw(trained_run, "--prompt", "the king shall speak now, and we go. O God! " * 4, "--layers", "1")
    assert proc.returncode == 0, proc.stderr
    assert "the prompt has 176 tokens; the maps show its last 64" in proc.stderr
    assert "window 8, RoPE; 64 tokens" in proc.stdout
    with Image.open(trained_run / "attention_maps.png") as image:
        assert image.format == "PNG" and image.width > image.height  # one row of four heads


@pytest.mark.parametrize("args, needle", [
    (["--prompt", ""], "the prompt is empty"),
    (["--prompt", "ROMEO"], "characters 'EMR' are not in the vocabulary"),
    (["--layers", "2"], "layer 2 is out of range"),
    (["--heads", "0", "4"], "head 4 is out of range: the model has 4 query heads"),
    (["--layers", "abc"], "argument --layers: invalid int value: 'abc'"),
    (["--heads"], "argument --heads: expected at least one argument"),
])
def test_script_bad_input_is_one_line_and_writes_nothing(trained_run, args, needle):
    (trained_run / "attention_maps.png").unlink(missing_ok=True)
    before = snapshot(trained_run)
    assert_one_line_error(draw(trained_run, *args), needle)
    assert snapshot(trained_run) == before


def test_script_without_a_model_is_one_line(tmp_path):
    assert_one_line_error(draw(tmp_path), "no model.pt at", "RUN_DIR names a trained run's folder")
    assert os.listdir(tmp_path) == []


# -----------------------------------------------------------------------------
# --trainer.attention_maps_interval

def test_a_run_logs_the_maps_to_wandb_and_trains_as_without(tmp_path, text_file, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    logged = train(tiny_config(text_file, tmp_path / "maps", "--system.wandb=offline",
                               "--trainer.attention_maps_interval=3"))
    (run,) = wandb_runs(tmp_path / "maps")
    rows = [row for row in run["history"] if "attention/maps/path" in row]  # the record's keys, flattened
    assert [row["_step"] for row in rows] == [3, 6, 8]  # every 3 steps and at the end (max_iters=8)
    files = next((tmp_path / "maps" / "wandb").glob("offline-run-*")) / "files"
    for row in rows:
        with Image.open(files / row["attention/maps/path"]) as png:
            assert row["attention/maps/_type"] == "image-file" and png.format == "PNG"
            assert png.size == (row["attention/maps/width"], row["attention/maps/height"])

    def never(*args):
        raise AssertionError("the maps were computed with the interval at 0")
    monkeypatch.setattr("mingpt.app.run.attention_maps", never)
    plain = train(tiny_config(text_file, tmp_path / "plain", "--system.wandb=offline"))
    (run,) = wandb_runs(tmp_path / "plain")
    assert not any(key.startswith("attention/") for row in run["history"] for key in row)
    assert plain.logs["train_losses"] == logged.logs["train_losses"]  # the maps leave training untouched


@pytest.mark.parametrize("value", ["-1", "1.5", "often"])
def test_an_interval_that_is_not_a_count_is_one_line(tmp_path, capsys, value):
    import chargpt
    work_dir = tmp_path / "run"
    assert chargpt.main([f"--trainer.attention_maps_interval={value}", f"--system.work_dir={work_dir}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--trainer.attention_maps_interval" in lines[0]
    assert not work_dir.exists()


def test_maps_of_a_model_without_attention_are_refused_before_any_write(tmp_path, text_file):
    with pytest.raises(UserError, match="--model.model_type=rnn has no attention to draw"):
        train(tiny_config(text_file, tmp_path / "rnn", "--model.model_type=rnn",
                          "--trainer.attention_maps_interval=2"))
    assert not (tmp_path / "rnn").exists()
