"""
What a run does around its training loop: Ctrl-C saves a resumable checkpoint, a resume keeps the saved run's
learning-rate schedule and says what changed, logs behind the checkpoint are repaired, a run shorter than the
sample interval still samples, and sampling prints the sample alone on stdout.
"""

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, made_up_text, run_cli, tiny_config, wandb_runs
from mingpt.app.checkpoint import load_checkpoint
from mingpt.app.probes import profile_peak_memory
from mingpt.app.run import train
from mingpt.attention import naive_attention
from mingpt.errors import UserError

TINY = ["--system.wandb=disabled", "--data.block_size=16", "--model.n_layer=2", "--model.n_query_head=4",
        "--model.n_kv_head=2", "--model.n_embd=32", "--trainer.batch_size=8", "--trainer.eval_iters=2",
        "--trainer.lr_schedule=constant", "--trainer.log_interval=1", "--trainer.eval_interval=0",
        "--trainer.sample_interval=0", "--trainer.checkpoint_interval=0", "--system.num_threads=1"]


def cosine_lr(it, peak, floor, warmup, decay):
    """The schedule's formula, written out: linear warm-up over `warmup` steps, cosine down to `floor` at `decay`."""
    if it < warmup:
        return peak * (it + 1) / warmup
    progress = min(1.0, (it - warmup) / (decay - warmup))
    return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (peak - floor)


def read_logs(work_dir):
    return json.loads((work_dir / "train_logs.json").read_text())


@pytest.mark.slow  # trains or samples in chargpt.py subprocesses
def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    """SIGINT mid-run: exit 130, no traceback, ckpt.pt at the last whole iteration, the wandb run ended with exit
    code 130; resuming it gives the losses of a run that was never interrupted (dropout on, so the RNG states are
    part of it)."""
    text = tmp_path / "tiny.txt"
    text.write_text(made_up_text())
    args = [sys.executable, os.path.join(ROOT, "chargpt.py"), f"--data.input_file={text}", *TINY]
    proc = subprocess.Popen(args + [f"--system.work_dir={tmp_path / 'cut'}", "--trainer.max_iters=100000",
                                    "--system.wandb=offline"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    for line in proc.stdout:
        if line.startswith("iter 3:"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--trainer.resume=True" in err
    cut = load_checkpoint(str(tmp_path / "cut" / "ckpt.pt"), resume=True)["iter_num"]
    assert cut >= 3
    said = [line for line in err.splitlines() if line.startswith("interrupted")]  # once, not twice
    assert said == [f"interrupted: {tmp_path / 'cut' / 'ckpt.pt'} holds iteration {cut}; continue with "
                    f"--trainer.resume=True"]
    assert [run["exit_code"] for run in wandb_runs(tmp_path / "cut")] == [130]  # shows as crashed, not finished
    total = cut + 3
    resumed = subprocess.run(args + [f"--system.work_dir={tmp_path / 'cut'}", f"--trainer.max_iters={total}",
                                     "--trainer.resume=True"], capture_output=True, text=True, timeout=300)
    straight = subprocess.run(args + [f"--system.work_dir={tmp_path / 'straight'}", f"--trainer.max_iters={total}"],
                              capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr + straight.stderr
    # exact: the same ops on the same machine in the same order, with the RNG states restored
    assert read_logs(tmp_path / "cut")["train_losses"] == read_logs(tmp_path / "straight")["train_losses"]


@pytest.fixture
def finished(tmp_path, text_file):
    """A cosine run of 8 iterations (warm-up 2) that has reached its end."""
    work_dir = tmp_path / "run"
    train(tiny_config(text_file, work_dir))
    return work_dir, text_file


def test_resume_with_more_iterations_keeps_the_schedule(finished):
    work_dir, text_file = finished
    C = tiny_config(text_file, work_dir).trainer
    longer = train(tiny_config(text_file, work_dir, "--trainer.resume=True", "--trainer.max_iters=12"))
    assert longer.logs["learning_rates"][8:] == pytest.approx([C.min_lr] * 4)  # the saved decay ended at 8


def test_resume_with_lr_decay_iters_follows_the_new_schedule(finished):
    work_dir, text_file = finished
    C = tiny_config(text_file, work_dir).trainer
    run = train(tiny_config(text_file, work_dir, "--trainer.resume=True", "--trainer.max_iters=16",
                            "--trainer.lr_decay_iters=16"))
    expected = [cosine_lr(it, C.learning_rate, C.min_lr, C.warmup_iters, 16) for it in range(8, 16)]
    assert run.logs["learning_rates"][8:] == pytest.approx(expected)


def test_resume_applies_and_records_changed_optimizer_settings(finished, capsys):
    work_dir, text_file = finished
    run = train(tiny_config(text_file, work_dir, "--trainer.resume=True", "--trainer.max_iters=10",
                            "--trainer.betas=(0.8,0.9)", "--trainer.weight_decay=0.2"))
    groups = run.optimizer.param_groups
    assert [g["betas"] for g in groups] == [(0.8, 0.9)] * 2
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0]  # biases, norms and embeddings stay undecayed
    out = capsys.readouterr().out
    assert "--trainer.betas changed from (0.9, 0.95) to (0.8, 0.9)" in out
    changed = read_logs(work_dir)["resumes"][-1]
    assert changed["iter"] == 8 and changed["changed"]["betas"] == [[0.9, 0.95], [0.8, 0.9]]
    assert json.loads((work_dir / "config.json").read_text())["trainer"]["betas"] == [0.8, 0.9]


def test_resume_at_max_iters_trains_nothing_and_repairs_the_logs(finished, capsys):
    """A kill between the checkpoint's rename and the logs' left train_logs.json an iteration behind."""
    work_dir, text_file = finished
    logs = read_logs(work_dir)
    behind = {**logs, "train_losses": logs["train_losses"][:-1], "val_losses": logs["val_losses"][:-1]}
    (work_dir / "train_logs.json").write_text(json.dumps(behind))
    model_before = (work_dir / "model.pt").read_bytes()
    train(tiny_config(text_file, work_dir, "--trainer.resume=True"))
    assert "nothing to train" in capsys.readouterr().out
    assert read_logs(work_dir)["train_losses"] == logs["train_losses"]
    assert read_logs(work_dir)["val_losses"] == logs["val_losses"]
    assert (work_dir / "model.pt").read_bytes() == model_before


def test_resume_below_the_checkpoint_is_refused(finished):
    work_dir, text_file = finished
    with pytest.raises(UserError, match="iteration 8, past --trainer.max_iters=4"):
        train(tiny_config(text_file, work_dir, "--trainer.resume=True", "--trainer.max_iters=4"))


def test_short_run_samples_at_the_end(tmp_path, text_file):
    work_dir = tmp_path / "run"
    train(tiny_config(text_file, work_dir, "--trainer.max_iters=3", "--trainer.sample_interval=200"))
    samples = (work_dir / "samples.txt").read_text()
    assert samples.startswith("--- iter 3 ---\nO God, O God!") and samples.count("--- iter") == 1


def test_warmup_longer_than_the_run_warns(tmp_path, text_file, capsys):
    train(tiny_config(text_file, tmp_path / "run", "--trainer.max_iters=3", "--trainer.warmup_iters=10"))
    assert "warmup_iters=10" in capsys.readouterr().err


@pytest.mark.slow  # trains or samples in chargpt.py subprocesses
def test_sample_prints_the_sample_alone_on_stdout(finished):
    work_dir, _ = finished
    proc = run_cli(f"--system.work_dir={work_dir}", "--sample.only=True", "--sample.prompt=the king",
                   "--sample.max_new_tokens=30", "--model.rope=True", "--model.n_layer=5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("the king") and len(proc.stdout) == len("the king") + 30 + 1  # and "\n"
    assert "number of parameters" in proc.stderr
    assert "--model.rope" in proc.stderr and "--model.n_layer" in proc.stderr  # ignored, and said so


def test_profiler_prints_nothing(capfd):
    q = torch.randn(1, 2, 32, 8)
    assert profile_peak_memory(naive_attention, q, q, q) > 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""
