"""Numerics: the gradient norm a run logs (train/grad_norm, whether the step was clipped), and a run that diverges:
it stops at that step with one line and exit status 3, and what it had saved stays as it was (fresh, resumed, and
under torchrun with a NaN in one process's gradient)."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, run_cli, tiny_config, wandb_runs
from mingpt.app.run import train

DIVERGE = ["--trainer.learning_rate=1e4", "--trainer.grad_norm_clip=0", "--trainer.lr_schedule=constant"]


def tiny_flags(text_file, work_dir, *flags):
    return [f"--data.input_file={text_file}", f"--system.work_dir={work_dir}", "--system.wandb=disabled",
            "--data.block_size=16", "--model.n_layer=1", "--model.n_embd=32", "--model.n_query_head=4",
            "--trainer.batch_size=8", "--trainer.eval_interval=4", "--trainer.eval_iters=2",
            "--trainer.checkpoint_interval=4", "--trainer.sample_interval=4", "--trainer.warmup_iters=0",
            "--trainer.device=cpu", "--trainer.dtype=float32", *flags]


def digests(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(os.listdir(folder))
            if name.endswith((".pt", ".json", ".txt")) and name not in ("args.txt", "config.json")}


def assert_all_finite(folder):
    for name in ("model.pt", "ckpt.pt"):
        if (folder / name).exists():
            saved = torch.load(folder / name, weights_only=False)
            assert all(torch.isfinite(t).all() for t in saved["model"].values()), name


def test_the_logged_grad_norm_is_clip_grad_norm_s_own(text_file, tmp_path, monkeypatch):
    returned = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        returned.append(clip(parameters, max_norm, *args, **kwargs).item())
        return torch.tensor(returned[-1])
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    trainer = train(tiny_config(text_file, tmp_path / "run", "--trainer.grad_norm_clip=0.5", "--system.wandb=offline"))
    logs = json.loads((tmp_path / "run" / "train_logs.json").read_text())
    assert logs["grad_norms"] == returned and len(returned) == 8
    assert logs["clipped"] == [int(n > 0.5) for n in returned] and trainer.grad_norm == returned[-1]
    history = [row for row in wandb_runs(tmp_path / "run")[-1]["history"] if "train/grad_norm" in row]
    assert [row["train/grad_norm"] for row in history] == pytest.approx(returned)
    assert [row["train/clipped"] for row in history] == logs["clipped"]


def test_without_clipping_the_norm_is_the_gradients_own(text_file, tmp_path):
    """grad_norm_clip=0: nothing is scaled, and the norm is that of the gradients themselves."""
    trainer = train(tiny_config(text_file, tmp_path / "run", "--trainer.grad_norm_clip=0", "--trainer.max_iters=1"))
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    assert trainer.logs["grad_norms"] == [pytest.approx(expected, rel=1e-5)] and trainer.logs["clipped"] == [0]


def test_the_console_line_has_the_norm_and_the_time_left(text_file, tmp_path):
    proc = run_cli(*tiny_flags(text_file, tmp_path / "run", "--trainer.max_iters=8", "--trainer.log_interval=4"))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("iter ") and "grad norm" in line]
    assert len(lines) == 2 and all(line.endswith("s left") for line in lines)
    assert lines[-1].endswith(", 0m00s left")


def one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training diverged at iteration "), proc.stderr
    return lines[0]


def test_a_fresh_run_that_diverges_stops_with_status_3_and_writes_nothing_non_finite(text_file, tmp_path):
    proc = run_cli(*tiny_flags(text_file, tmp_path / "run", "--trainer.max_iters=200", *DIVERGE))
    assert proc.returncode == 3
    line = one_error_line(proc)
    assert "--trainer.learning_rate" in line and "--trainer.grad_norm_clip" in line and "float32" in line
    assert_all_finite(tmp_path / "run")
    logs = json.loads((tmp_path / "run" / "train_logs.json").read_text()) if (tmp_path / "run" /
                                                                             "train_logs.json").exists() else None
    if logs:
        assert all(torch.isfinite(torch.tensor(logs["train_losses"])))


def test_a_resumed_run_that_diverges_leaves_the_good_checkpoint_as_it_was(text_file, tmp_path):
    run = tmp_path / "run"
    good = run_cli(*tiny_flags(text_file, run, "--trainer.max_iters=8", "--trainer.lr_schedule=constant"))
    assert good.returncode == 0, good.stderr
    before = digests(run)
    proc = run_cli(*tiny_flags(text_file, run, "--trainer.max_iters=200", "--trainer.resume=True", *DIVERGE))
    assert proc.returncode == 3
    assert f"{run / 'ckpt.pt'} still holds iteration 8" in one_error_line(proc)
    assert digests(run) == before
    assert_all_finite(run)


@pytest.mark.slow  # two processes under torchrun
def test_a_nan_in_one_process_gradient_stops_every_process(text_file, tmp_path):
    """Rank 1's gradient turns NaN at its third step: DDP's all-reduce carries it to rank 0, both stop at that step
    with status 3 (no process waits for another), and the checkpoint of iteration 2 is intact."""
    script = tmp_path / "nan_in_rank_1.py"
    script.write_text(
        "import runpy, sys, torch\n"
        "import mingpt.trainer as T\n"
        "step = T.Trainer.step\n"
        "def poisoned(self, x, y):\n"
        "    hooks = []\n"
        "    if self.processes.rank == 1 and self.iters_done == 2:\n"
        "        p = next(self.model.parameters())\n"
        "        hooks.append(p.register_hook(lambda g: g * float('nan')))\n"
        "    try:\n"
        "        return step(self, x, y)\n"
        "    finally:\n"
        "        for h in hooks: h.remove()\n"
        "T.Trainer.step = poisoned\n"
        f"sys.argv = [{os.path.join(ROOT, 'chargpt.py')!r}] + sys.argv[1:]\n"
        f"runpy.run_path({os.path.join(ROOT, 'chargpt.py')!r}, run_name='__main__')\n")
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               *tiny_flags(text_file, run, "--trainer.max_iters=10", "--trainer.checkpoint_interval=2")]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})
    assert proc.returncode != 0 and "training diverged at iteration 3" in proc.stderr, proc.stderr[-2000:]
    assert [line.split()[2] for line in proc.stderr.splitlines() if line.strip().startswith("exitcode")] == ["3", "3"]
    saved = torch.load(run / "ckpt.pt", weights_only=False)
    assert saved["iter_num"] == 2
    assert_all_finite(run)
