"""
The speedrun's ideas behind flags (issue 32), each against an independent reference: Muon beside AdamW (torch's
update against the Newton-Schulz iteration written out, which parameters each optimizer gets, the schedule, exact
resume), QK-norm, the squared-ReLU MLP, zero-initialised projections, tied embeddings and logit soft-capping
(each against its formula, with the KV cache), the warm-up / stable / decay schedule, the stop at a target
validation loss, torch.compile against eager, recipes (@FILE), the export, and bad input.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import chargpt
from helpers import ROOT, checkout_env, full_forward_greedy_matches, model_config, tiny_config, wandb_runs
from mingpt.app.checkpoint import load_checkpoint
from mingpt.app.files import save_torch
from mingpt.app.run import train
from mingpt.app.settings import config_from_flags, get_config, read_recipe
from mingpt.errors import UserError
from mingpt.model import GPT


def built(**settings):
    torch.manual_seed(0)
    return GPT(model_config(**settings)).eval()


def read_logs(work_dir):
    return json.loads((work_dir / "train_logs.json").read_text())


# -----------------------------------------------------------------------------
# the model's flags, each against its formula

def reference_attention(attn, x):
    """CausalSelfAttention written out with QK-norm: the three projections, torch's F.rms_norm of each query and
    key head with the module's gain, RoPE, each query head against its group's key/value head (repeated), torch's
    causal SDPA, the output projection."""
    B, T, C = x.shape
    hd, nq, nkv = attn.head_dim, attn.n_query_head, attn.n_kv_head
    q = attn.q_proj(x).view(B, T, nq, hd).transpose(1, 2)
    k = attn.k_proj(x).view(B, T, nkv, hd).transpose(1, 2)
    v = attn.v_proj(x).view(B, T, nkv, hd).transpose(1, 2)
    q, k = (F.rms_norm(t, (hd,), attn.qk_norm.weight, attn.qk_norm.eps) for t in (q, k))
    if attn.rope:
        q, k = attn.query_rotary_pe(q), attn.key_rotary_pe(k)
    k, v = (t.repeat_interleave(nq // nkv, dim=1) for t in (k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn.out_proj(y.transpose(1, 2).reshape(B, T, C))


@pytest.mark.parametrize("variant", [dict(), dict(rope=True, n_kv_head=2), dict(rope=True, n_kv_head=1)])
def test_qk_norm_normalises_each_query_and_key_head(variant):
    attn = built(qk_norm=True, **variant).transformer.h[0].attn
    with torch.no_grad():
        attn.qk_norm.weight.copy_(torch.rand(attn.head_dim) + 0.5)  # a gain that is not ones, so it shows
    x = torch.randn(2, 9, 48) * 3  # far from unit RMS, so that a missing norm would show
    torch.testing.assert_close(attn(x), reference_attention(attn, x))
    assert attn.qk_norm.weight.shape == (8,)  # per head dimension, shared by queries and keys
    assert built().transformer.h[0].attn.qk_norm is None


def test_relu2_mlp_is_squared_relu_between_the_two_matrices():
    mlp = built(mlp="relu2").transformer.h[0].mlp
    x = torch.randn(2, 5, 48)
    hidden = mlp.c_fc(x)
    expected = mlp.c_proj(torch.where(hidden > 0, hidden, 0.0) ** 2)
    torch.testing.assert_close(mlp(x), expected)
    assert mlp.c_fc.out_features == 4 * 48  # GELU's width: two matrices as it has
    assert not torch.allclose(built().transformer.h[0].mlp(x), expected)


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_zero_init_projections_make_every_block_the_identity(mlp):
    model = built(zero_init_proj=True, mlp=mlp)
    for name, p in model.named_parameters():
        if name.endswith("weight"):  # (biases start at zero anyway)
            zero = name.endswith(("c_proj.weight", "out_proj.weight", "down_proj.weight"))
            assert bool((p == 0).all()) == zero, name
    idx = torch.randint(11, (2, 7))
    T = model.transformer
    expected = model.lm_head(T.ln_f(T.wte(idx) + T.wpe.weight[:7]))  # the blocks add nothing
    torch.testing.assert_close(model(idx)[0], expected)


def test_tied_embeddings_share_one_matrix():
    tied, untied = built(tie_embeddings=True), built()
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight  # minGPT's default: untied
    assert tied.num_params() == untied.num_params() - 11 * 48
    idx = torch.randint(11, (2, 7))
    T = tied.transformer
    x = T.wte(idx) + T.wpe.weight[:7]
    for block in T.h:
        x = block(x)
    torch.testing.assert_close(tied(idx)[0], T.ln_f(x) @ T.wte.weight.T)
    # the head's gradient reaches the embedding: one matrix, trained from both ends
    tied(idx, idx)[1].backward()
    assert tied.transformer.wte.weight.grad[idx.unique()].abs().sum() > 0
    # the FLOPs count the tied matrix as the head that multiplies (a lookup table is not counted)
    assert tied.flops_per_token(7) == untied.flops_per_token(7)


@pytest.mark.parametrize("cap", [2.0, 0.5])
def test_logit_softcap_is_c_tanh_of_logits_over_c(cap):
    capped, plain = built(logit_softcap=cap), built()
    plain.load_state_dict(capped.state_dict())
    idx, targets = torch.randint(11, (2, 7)), torch.randint(11, (2, 7))
    raw = plain(idx)[0]
    logits, loss = capped(idx, targets)
    torch.testing.assert_close(logits, cap * torch.tanh(raw / cap))
    assert logits.abs().max() < cap
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1)))
    zero = built(logit_softcap=0.0)
    zero.load_state_dict(capped.state_dict())
    assert torch.equal(zero(idx)[0], raw)  # 0 is off, as None


# zero_init_proj is left out: it changes only where the weights start, not what the forward or the cache compute
CACHE_VARIANTS = [dict(qk_norm=True), dict(qk_norm=True, rope=True, n_kv_head=2, window=4), dict(mlp="relu2"),
                  dict(tie_embeddings=True, pos_emb="none", window=6), dict(logit_softcap=1.5, rope=True, n_kv_head=3),
                  dict(qk_norm=True, mlp="relu2", tie_embeddings=True, logit_softcap=3.0, rope=True, n_kv_head=2)]


@pytest.mark.parametrize("variant", CACHE_VARIANTS)
def test_generation_with_the_cache_equals_recomputation(variant):
    model = GPT(model_config(block_size=24, **variant)).double().eval()
    idx = torch.randint(11, (2, 5), generator=torch.Generator().manual_seed(1))
    cached = model.generate(idx, 19, use_cache=True)
    assert torch.equal(cached, model.generate(idx, 19, use_cache=False))
    assert full_forward_greedy_matches(model, cached, 5)


# -----------------------------------------------------------------------------
# Muon beside AdamW

def newton_schulz(G, steps=5, a=3.4445, b=-4.7750, c=2.0315, eps=1e-7):
    """Muon's orthogonalisation (Jordan et al.): the quintic Newton-Schulz iteration X <- a X + (b A + c A^2) X,
    A = X X^T, from G / ||G||_F on the matrix's wide orientation, with torch's documented defaults; in float64."""
    X = G.double()
    tall = X.size(0) > X.size(1)
    X = X.T if tall else X
    X = X / max(float(X.norm()), eps)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def muon_config(**settings):
    C = get_config().trainer
    C.merge_from_dict({"optimizer": "muon", "muon_lr": 0.05, "learning_rate": 1e-3, **settings})
    return C


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = built(tie_embeddings=False)
    optimizer = model.configure_optimizers(muon_config())
    names = {p: n for n, p in model.named_parameters()}
    muon = {names[p] for g in optimizer.optimizers["muon"].param_groups for p in g["params"]}
    adamw_groups = optimizer.optimizers["adamw"].param_groups
    decayed, undecayed = ({names[p] for p in g["params"]} for g in adamw_groups)
    assert muon == {n for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("transformer.h.")}
    assert {"transformer.h.0.attn.q_proj.weight", "transformer.h.1.mlp.c_proj.weight"} <= muon
    assert decayed == {"lm_head.weight"}  # the head: a Linear weight outside the blocks, decayed as before
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
            "transformer.h.0.attn.q_proj.bias"} <= undecayed
    assert muon | decayed | undecayed == set(names.values()) and not muon & (decayed | undecayed)
    assert [g["weight_decay"] for g in adamw_groups] == [0.1, 0.0]
    assert optimizer.optimizers["muon"].param_groups[0]["lr_scale"] == pytest.approx(50)


def test_muon_update_is_newton_schulz_of_nesterov_momentum():
    """Two steps of the run's optimizer on known gradients, against Muon written out: B <- mu B + g, the update
    NS(g + mu B) (Nesterov), decoupled weight decay, the learning rate times sqrt(max(1, rows / cols)); momentum
    is torch's default 0.95. torch runs the iteration in bf16, hence the tolerance; an update that skipped the
    orthogonalisation would be off by far more."""
    model = built()
    C = muon_config(weight_decay=0.1)
    optimizer = model.configure_optimizers(C)
    muon = [p for g in optimizer.optimizers["muon"].param_groups for p in g["params"]]
    start = [p.detach().clone().double() for p in muon]
    g = torch.Generator().manual_seed(0)
    grads = [[torch.randn(p.shape, generator=g) for p in muon] for _ in range(2)]
    for step in grads:
        model.zero_grad()
        for p, grad in zip(muon, step):
            p.grad = grad.clone()
        optimizer.step()
    mu, lr = 0.95, C.muon_lr
    for i, p in enumerate(muon):
        W = unorthogonalised = start[i]
        B = torch.zeros_like(W)
        scale = lr * math.sqrt(max(1, p.size(0) / p.size(1)))
        for step in grads:
            B = mu * B + step[i].double()
            update = step[i].double() + mu * B
            W = W * (1 - lr * C.weight_decay) - scale * newton_schulz(update)
            unorthogonalised = unorthogonalised * (1 - lr * C.weight_decay) - scale * update / update.norm()
        assert (p.detach().double() - W).abs().max() < 0.03 * scale  # bf16's error: about 0.01 of an update
        assert (unorthogonalised - W).abs().max() > 0.2 * scale


def test_muon_follows_the_schedule_scaled_to_muon_lr(text_file, tmp_path):
    trainer = train(tiny_config(text_file, tmp_path / "run", "--trainer.optimizer=muon", "--trainer.muon_lr=0.04",
                                "--trainer.learning_rate=2e-3", "--trainer.max_iters=3", "--trainer.warmup_iters=4",
                                "--trainer.eval_interval=0", "--trainer.sample_interval=0"))
    adamw, muon = (o.param_groups for o in trainer.optimizer.optimizers.values())
    assert trainer.logs["learning_rates"] == pytest.approx([5e-4, 1e-3, 1.5e-3])  # warm-up: it / 4 of the peak
    assert [g["lr"] for g in adamw] == pytest.approx([1.5e-3] * 2)
    assert muon[0]["lr"] == pytest.approx(0.04 * 3 / 4)


def test_muon_trains(text_file, tmp_path):
    losses = train(tiny_config(text_file, tmp_path / "run", "--trainer.optimizer=muon", "--trainer.max_iters=40",
                               "--trainer.eval_interval=0", "--trainer.sample_interval=0",
                               "--trainer.learning_rate=3e-3")).logs["train_losses"]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


MODERN = ["--trainer.optimizer=muon", "--model.qk_norm=True", "--model.mlp=relu2", "--model.zero_init_proj=True",
          "--model.tie_embeddings=True", "--model.logit_softcap=10", "--model.rope=True", "--trainer.lr_schedule=wsd",
          "--trainer.decay_fraction=0.5", "--trainer.lr_decay_iters=8", "--trainer.target_val_loss=0.01"]


def test_every_flag_at_once_resumes_exactly(text_file, tmp_path):
    """Muon's and AdamW's states both in ckpt.pt: a run stopped at iteration 4 and resumed gives the losses and
    weights of the uninterrupted run, bit for bit (dropout on, so the RNG states are part of it)."""
    full = train(tiny_config(text_file, tmp_path / "full", *MODERN))
    train(tiny_config(text_file, tmp_path / "half", "--trainer.max_iters=4", *MODERN))
    state = load_checkpoint(str(tmp_path / "half" / "ckpt.pt"), resume=True)["optimizer"]
    assert set(state) == {"adamw", "muon"}
    assert all("momentum_buffer" in s for s in state["muon"]["state"].values()) and state["muon"]["state"]
    resumed = train(tiny_config(text_file, tmp_path / "half", "--trainer.resume=True", *MODERN))
    assert resumed.logs["train_losses"] == full.logs["train_losses"]
    assert resumed.logs["val_losses"] == full.logs["val_losses"]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    config = json.loads((tmp_path / "half" / "config.json").read_text())
    assert config["trainer"]["optimizer"] == "muon" and config["model"]["tie_embeddings"] is True
    assert config["model"]["logit_softcap"] == 10 and config["trainer"]["lr_schedule"] == "wsd"
    with pytest.raises(UserError, match="--trainer.optimizer=muon"):  # the other optimizer's state cannot go on
        train(tiny_config(text_file, tmp_path / "half", "--trainer.resume=True", "--trainer.max_iters=10",
                          *[f for f in MODERN if "optimizer" not in f]))
    with pytest.raises(UserError, match="qk_norm"):  # the model must be the saved one
        train(tiny_config(text_file, tmp_path / "half", "--trainer.resume=True", "--trainer.max_iters=10",
                          *[f for f in MODERN if "qk_norm" not in f]))


def test_checkpoints_from_before_the_flags_resume(text_file, tmp_path):
    """A ckpt.pt whose settings predate the flags resumes as the run it was: their defaults, every one off."""
    work_dir = tmp_path / "run"
    train(tiny_config(text_file, work_dir, "--trainer.max_iters=4"))
    ckpt = torch.load(work_dir / "ckpt.pt", weights_only=True)
    for key in ("qk_norm", "zero_init_proj", "tie_embeddings", "logit_softcap"):
        del ckpt["model_config"][key]
    for key in ("optimizer", "muon_lr", "decay_fraction", "compile", "target_val_loss"):
        del ckpt["config"]["trainer"][key]
    save_torch(ckpt, str(work_dir / "ckpt.pt"))
    resumed = train(tiny_config(text_file, work_dir, "--trainer.resume=True"))
    assert resumed.iter_num == 8


def test_recurrent_models_refuse_muon(text_file, tmp_path):
    with pytest.raises(UserError, match="--trainer.optimizer=muon"):
        train(tiny_config(text_file, tmp_path / "run", "--model.model_type=rnn", "--trainer.optimizer=muon"))
    assert not (tmp_path / "run").exists()


# -----------------------------------------------------------------------------
# the warm-up / stable / decay schedule

def wsd_lr(it, peak, floor, warmup, total, fraction):
    """Linear warm-up over `warmup` steps, the peak until the last `fraction` of `total`, then a straight line to
    `floor` at step `total`."""
    if it < warmup:
        return peak * (it + 1) / warmup
    start = total * (1 - fraction)
    return peak if it <= start else peak + (floor - peak) * min(1.0, (it - start) / (total * fraction))


@pytest.mark.parametrize("fraction", [0.25, 1.0])
def test_wsd_schedule(text_file, tmp_path, fraction):
    C = tiny_config(text_file, tmp_path / "run", "--trainer.lr_schedule=wsd", f"--trainer.decay_fraction={fraction}",
                    "--trainer.max_iters=20", "--trainer.warmup_iters=3", "--trainer.eval_interval=0",
                    "--trainer.sample_interval=0", "--trainer.min_lr=1e-5")
    run = train(C)
    expected = [wsd_lr(it, 5e-4, 1e-5, 3, 20, fraction) for it in range(20)]
    assert run.logs["learning_rates"] == pytest.approx(expected)
    # resumed with more iterations, the saved decay stays: min_lr from iteration 20 on
    longer = train(tiny_config(text_file, tmp_path / "run", "--trainer.resume=True", "--trainer.lr_schedule=wsd",
                               f"--trainer.decay_fraction={fraction}", "--trainer.max_iters=24",
                               "--trainer.warmup_iters=3", "--trainer.eval_interval=0", "--trainer.sample_interval=0",
                               "--trainer.min_lr=1e-5"))
    assert longer.logs["learning_rates"][20:] == pytest.approx([1e-5] * 4)


# -----------------------------------------------------------------------------
# the stop at a target validation loss

def test_target_val_loss_stops_at_the_first_evaluation_at_or_below(text_file, tmp_path, capsys):
    flags = ["--trainer.max_iters=40", "--trainer.eval_interval=4", "--trainer.sample_interval=0",
             "--trainer.learning_rate=3e-3"]
    free = train(tiny_config(text_file, tmp_path / "free", *flags)).logs["val_losses"]
    at, target = free[3]  # the fourth evaluation's loss: the first at or below it is the fourth or an earlier one
    first = next(it for it, val in free if val <= target)
    capsys.readouterr()
    run = train(tiny_config(text_file, tmp_path / "run", *flags, f"--trainer.target_val_loss={target}"))
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert run.iter_num == first <= at and run.logs["val_losses"] == free[:first // 4]
    logs = read_logs(tmp_path / "run")
    elapsed = dict(logs["eval_elapsed_s"])[first]
    assert logs["target"] == {"val_loss": target, "iter": first, "tokens": first * 8 * 16, "wall_s": elapsed}
    assert 0 < elapsed < 60
    assert last_line == (f"--trainer.target_val_loss={target}: reached at iteration {first} (val loss "
                         f"{dict(free)[first]:.4f}) after {first * 8 * 16:,} tokens and {elapsed:.1f} s")
    assert load_checkpoint(str(tmp_path / "run" / "ckpt.pt"), resume=True)["iter_num"] == first


def test_target_not_reached_runs_to_the_end(text_file, tmp_path, capsys):
    run = train(tiny_config(text_file, tmp_path / "run", "--trainer.target_val_loss=0.01"))
    assert run.iter_num == 8
    best = min(v for _, v in run.logs["val_losses"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == \
        f"--trainer.target_val_loss=0.01: not reached in 8 iterations; best val loss {best:.4f}"
    assert read_logs(tmp_path / "run")["target"] == {"val_loss": 0.01, "iter": None, "tokens": None, "wall_s": None}


@pytest.mark.slow  # an offline wandb run
def test_target_in_the_wandb_summary(text_file, tmp_path):
    run = train(tiny_config(text_file, tmp_path / "run", "--system.wandb=offline", "--trainer.target_val_loss=100"))
    summary = wandb_runs(tmp_path / "run")[-1]["summary"]
    assert run.iter_num == 4
    assert summary["target/iter"] == 4 and summary["target/tokens"] == 4 * 8 * 16
    assert summary["target/wall_s"] == read_logs(tmp_path / "run")["target"]["wall_s"]


# -----------------------------------------------------------------------------
# torch.compile

@pytest.mark.slow  # compiles a model twice (tens of seconds on a CPU)
def test_compiled_training_matches_eager(text_file, tmp_path, capsys):
    """fp32, no dropout: a compiled run stopped at 4 and resumed (compiled again) has the eager run's losses within
    float tolerance; each start's compile time is recorded apart from the iterations' (the first iteration after
    it does not hold it), and the probe is off."""
    flags = ["--model.embd_pdrop=0", "--model.resid_pdrop=0", "--model.attn_pdrop=0", "--trainer.sample_interval=0",
             "--trainer.compile=True", "--system.wandb=offline"]
    eager = train(tiny_config(text_file, tmp_path / "eager", *flags[:4]))
    capsys.readouterr()
    train(tiny_config(text_file, tmp_path / "compiled", *flags, "--trainer.max_iters=4", "--trainer.lr_decay_iters=8"))
    assert "the attention probe is off" in capsys.readouterr().out
    compiled = train(tiny_config(text_file, tmp_path / "compiled", *flags, "--trainer.resume=True"))
    assert compiled.logs["train_losses"] == pytest.approx(eager.logs["train_losses"], rel=1e-4, abs=1e-5)
    assert [v for _, v in compiled.logs["val_losses"]] == \
        pytest.approx([v for _, v in eager.logs["val_losses"]], rel=1e-4, abs=1e-5)
    logs = read_logs(tmp_path / "compiled")
    assert len(logs["compile_s"]) == 2  # one per start (the second finds the first's graphs in this process's cache)
    assert logs["compile_s"][0] > 0 and max(logs["iter_time_ms"]) < 1000 * logs["compile_s"][0] / 2
    assert logs["attention_computation_time"] == []
    assert wandb_runs(tmp_path / "compiled")[-1]["summary"]["perf/compile_s"] == logs["compile_s"][-1]
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["trainer"]["compile"] is True


def run_chargpt(args, env_changes):
    env = {**checkout_env(), "WANDB_MODE": "disabled", **env_changes}
    return subprocess.run([sys.executable, os.path.join(ROOT, "chargpt.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_compile_without_a_compiler_is_refused_before_writing(text_file, tmp_path):
    work_dir = tmp_path / "run"
    proc = run_chargpt([f"--data.input_file={text_file}", f"--system.work_dir={work_dir}", "--trainer.device=cpu",
                        "--trainer.compile=True"], {"CXX": str(tmp_path / "no-such-g++")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "--trainer.compile=True" in line and "no-such-g++" in line and "run without --trainer.compile" in line
    assert not work_dir.exists()


@pytest.mark.slow  # traces the model before the broken compiler fails
def test_compile_that_fails_at_run_time_says_to_run_without_it(text_file, tmp_path):
    """A C++ compiler that answers --version but fails to compile: inductor's failure is one line, exit 2, and
    the run has written nothing."""
    broken = tmp_path / "broken-g++"
    broken.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'g++ 13'; exit 0; }\necho broken >&2\nexit 1\n")
    broken.chmod(0o755)
    work_dir = tmp_path / "run"
    proc = run_chargpt([f"--data.input_file={text_file}", f"--system.work_dir={work_dir}", "--trainer.device=cpu",
                        "--trainer.dtype=float32", "--model.n_layer=1", "--model.n_embd=16", "--model.n_head=4",
                        "--data.block_size=8", "--trainer.batch_size=2", "--trainer.compile=True"],
                       {"CXX": str(broken), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: torch.compile failed") and "run without --trainer.compile" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not work_dir.exists() or not os.listdir(work_dir)


# -----------------------------------------------------------------------------
# recipes: @FILE

def test_recipe_flags_and_flags_after_it(text_file, tmp_path):
    recipe = tmp_path / "recipe.txt"
    recipe.write_text("# a recipe: one flag a line\n\n--model.n_layer=1\n  --trainer.max_iters=3  \n"
                      "--sample.prompt=O God, O God!\ntrainer.learning_rate=1e-3\n--trainer.max_iters=5\n")
    assert read_recipe(str(recipe)) == ["--model.n_layer=1", "--trainer.max_iters=3", "--sample.prompt=O God, O God!",
                                        "trainer.learning_rate=1e-3", "--trainer.max_iters=5"]
    work_dir = tmp_path / "run"
    assert chargpt.main([f"--data.input_file={text_file}", f"--system.work_dir={work_dir}", f"@{recipe}",
                         "--trainer.max_iters=2", "--system.wandb=disabled", "--trainer.device=cpu",
                         "--trainer.sample_interval=0", "--model.n_embd=16", "--model.n_head=4",
                         "--trainer.batch_size=4", "--data.block_size=8"]) == 0
    config = json.loads((work_dir / "config.json").read_text())
    assert config["model"]["n_layer"] == 1 and config["trainer"]["learning_rate"] == 1e-3
    assert config["trainer"]["max_iters"] == 2  # the flag after the recipe wins
    assert config["sample"]["prompt"] == "O God, O God!"  # a line is one argument, spaces and all


def test_a_comment_after_any_value_is_cut_alike(tmp_path):
    recipe = tmp_path / "recipe.txt"
    recipe.write_text("--trainer.max_iters=5   # five\n--sample.prompt=O God!\t# Hamlet\n  # indented\n"
                      "--system.work_dir=out/a#b # a # with no space before it is the value's\n")
    assert read_recipe(str(recipe)) == ["--trainer.max_iters=5", "--sample.prompt=O God!",
                                        "--system.work_dir=out/a#b"]
    config = config_from_flags([f"@{recipe}"])
    assert config.trainer.max_iters == 5 and config.sample.prompt == "O God!" and config.system.work_dir == "out/a#b"


def test_a_recipe_with_a_byte_order_mark_is_read(tmp_path):
    recipe = tmp_path / "recipe.txt"
    recipe.write_text("--model.n_layer=1\n# saved by an editor that marks UTF-8\n", encoding="utf-8-sig")
    assert recipe.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_recipe(str(recipe)) == ["--model.n_layer=1"]
    assert config_from_flags([f"@{recipe}"]).model.n_layer == 1


@pytest.mark.parametrize("content, needle", [
    (None, "no such recipe file"),
    ("--model.n_layer=2\nmodel.n_layer\n", "line 2: 'model.n_layer' is not a --node.key=value flag"),
    ("--model.n_layer=2 --model.n_embd=32\n", None),  # two flags on one line: n_layer's value is "2 --model..."
    ("@other.txt\n", "line 1: '@other.txt'"),
    (b"\xff\xfe", "cannot read the recipe"),
])
def test_bad_recipe_is_one_line(tmp_path, capsys, content, needle):
    recipe = tmp_path / "recipe.txt"
    if isinstance(content, bytes):
        recipe.write_bytes(content)
    elif content is not None:
        recipe.write_text(content)
    work_dir = tmp_path / "run"
    assert chargpt.main([f"@{recipe}", f"--system.work_dir={work_dir}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and (needle or "--model.n_layer") in line
    assert not work_dir.exists()


@pytest.mark.parametrize("name", ["speedrun-1.88.txt", "speedrun-10min.txt"])
def test_committed_recipes_are_valid(name):
    config = config_from_flags([f"@{os.path.join(ROOT, 'recipes', name)}"])
    # the 1.88 track stops at its target; the 10-minute track runs its iterations out
    assert config.trainer.target_val_loss == (1.88 if name == "speedrun-1.88.txt" else None)
    assert config.trainer.sample_interval == 0 and not config.trainer.probe_attention  # nothing but training timed


# -----------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written

@pytest.mark.parametrize("flag, needle", [
    ("--trainer.optimizer=sgd", "--trainer.optimizer=sgd must be one of adamw, muon"),
    ("--trainer.lr_schedule=linear", "--trainer.lr_schedule=linear must be one of cosine, constant, wsd"),
    ("--trainer.decay_fraction=0", "--trainer.decay_fraction=0.0 must be in (0, 1]"),
    ("--trainer.decay_fraction=1.5", "--trainer.decay_fraction=1.5 must be in (0, 1]"),
    ("--trainer.target_val_loss=0", "--trainer.target_val_loss=0.0 must be > 0"),
    ("--trainer.target_val_loss=-1.5", "--trainer.target_val_loss=-1.5 must be > 0"),
    ("--trainer.target_val_loss=abc", "--trainer.target_val_loss: expected float"),
    ("--trainer.target_val_loss=nan", "--trainer.target_val_loss: expected float, got 'nan'"),
    ("--trainer.muon_lr=0", "--trainer.muon_lr=0.0 must be > 0"),
    ("--model.logit_softcap=-1", "--model.logit_softcap=-1.0 must be >= 0"),
    ("--model.mlp=relu", "--model.mlp=relu must be one of gelu, swiglu, relu2"),
    ("--trainer.compile=maybe", "--trainer.compile: expected bool"),
    ("--trainer.lr_schedule=wsd --trainer.min_lr=1", "the wsd schedule decays"),
])
def test_bad_flag_is_one_line_and_writes_nothing(tmp_path, capsys, flag, needle):
    work_dir = tmp_path / "run"
    assert chargpt.main([f"--system.work_dir={work_dir}", *flag.split()]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert needle in line, line
    assert not work_dir.exists()


def test_help_names_the_defaults():
    text = subprocess.run([sys.executable, os.path.join(ROOT, "chargpt.py"), "--help"], capture_output=True,
                          text=True, env=checkout_env()).stdout
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith("--")}
    tie = lines["--model.tie_embeddings"]
    assert "minGPT does not" in tie and "[default: False]" in tie
    assert "adamw | muon" in lines["--trainer.optimizer"] and "[default: 'adamw']" in lines["--trainer.optimizer"]
    assert "2-core CPU" in lines["--trainer.compile"]
    assert "@FILE" in text.splitlines()[0]


# -----------------------------------------------------------------------------
# the export: what Llama / Mistral can and cannot compute

@pytest.mark.slow  # imports transformers
def test_export_ties_the_head_and_refuses_what_llama_cannot_compute(text_file, tmp_path):
    transformers = pytest.importorskip("transformers")
    from mingpt.app.export import export
    train(tiny_config(text_file, tmp_path / "tied", "--model.preset=llama", "--model.tie_embeddings=True",
                      "--model.zero_init_proj=True", "--trainer.optimizer=muon", "--trainer.lr_schedule=wsd"))
    hf = export(tmp_path / "tied", tmp_path / "tied_hf")
    assert hf.config.tie_word_embeddings is True
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "tied_hf").eval()
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    ckpt = load_checkpoint(str(tmp_path / "tied" / "model.pt"))
    config = GPT.get_default_config()
    config.merge_from_dict(ckpt["model_config"])
    ours = GPT(config).eval()
    ours.load_state_dict(ckpt["model"])
    x = torch.randint(config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, ours(x)[0], atol=1e-4, rtol=0)
    for flag in ("--model.qk_norm=True", "--model.mlp=relu2", "--model.logit_softcap=30.0"):
        run = tmp_path / flag.split(".")[1].split("=")[0]
        train(tiny_config(text_file, run, "--model.preset=llama", flag, "--trainer.max_iters=1",
                          "--trainer.sample_interval=0"))
        with pytest.raises(UserError) as e:
            export(run, tmp_path / "out")
        assert f"cannot compute {flag}" in str(e.value) and "\n" not in str(e.value)
        assert not (tmp_path / "out").exists()

