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


def test_the_diverged_run_is_marked_failed_on_wandb(text_file, tmp_path):
    proc = run_cli(*tiny_flags(text_file, tmp_path / "run", "--trainer.max_iters=200", *DIVERGE),
                   "--system.wandb=offline")
    assert proc.returncode == 3
    assert wandb_runs(tmp_path / "run")[-1]["exit_code"] == 3


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
    # rank 0 exits with 3 first (the other waits for it to say why); torchrun then ends rank 1 if it still runs
    codes = {line.split()[2] for line in proc.stderr.splitlines() if line.strip().startswith("exitcode")}
    assert "3" in codes and codes <= {"3", "-15"}
    saved = torch.load(run / "ckpt.pt", weights_only=False)
    assert saved["iter_num"] == 2
    assert_all_finite(run)


# -----------------------------------------------------------------------------
# half precision

@pytest.mark.parametrize("capability, expected", [((6, 0), torch.float16), ((7, 0), torch.float16),
                                                  ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                                  ((9, 0), torch.bfloat16)])
def test_auto_dtype_on_cuda_is_bf16_only_where_it_is_native(capability, expected):
    """Pascal, Volta and Turing (a P100, a V100, Colab's T4) have no bf16 units: float16 with loss scaling there;
    Ampere and Hopper multiply bf16 natively."""
    from mingpt.device import auto_dtype
    assert auto_dtype("cuda", capability) == expected


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, False, torch.bfloat16), (False, True, torch.bfloat16),
                                                        (False, False, torch.float32)])
def test_auto_dtype_on_cpu_and_elsewhere(monkeypatch, amx, avx512_bf16, expected):
    from mingpt.device import auto_dtype
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert auto_dtype("cpu") == expected
    assert auto_dtype("mps") == torch.float16


def test_float16_trains_as_float32_does_within_its_precision(text_file, tmp_path):
    """Eight steps of a tiny model on the CPU, no dropout: float16 autocast with loss scaling gives float32's losses
    within 1% (float16 keeps 11 significant bits: its matmuls round at about 5e-4 relative), and no step is
    skipped at the scaler's initial scale of 65536 for losses of this size."""
    flags = ["--model.embd_pdrop=0", "--model.resid_pdrop=0", "--model.attn_pdrop=0", "--trainer.sample_interval=0"]
    fp32 = train(tiny_config(text_file, tmp_path / "fp32", *flags))
    fp16 = train(tiny_config(text_file, tmp_path / "fp16", *flags, "--trainer.dtype=float16"))
    assert fp16.dtype_name == "float16" and fp32.dtype_name == "float32"
    assert fp16.logs["train_losses"] == pytest.approx(fp32.logs["train_losses"], rel=1e-2)
    assert [v for _, v in fp16.logs["val_losses"]] == pytest.approx([v for _, v in fp32.logs["val_losses"]], rel=1e-2)
    assert fp16.logs["skipped_steps"] == [0] * 8 and fp16.logs["loss_scales"] == [65536.0] * 8
    assert fp32.logs["loss_scales"] == [] and fp32.logs["skipped_steps"] == []


def test_an_overflowing_float16_step_is_skipped_not_divergence(text_file, tmp_path, monkeypatch):
    """A scale so large that the scaled gradients overflow float16: the scaler skips those steps and halves the
    scale until they fit; the run goes on (that is loss scaling by design), and its weights stay finite."""
    class Huge(torch.amp.GradScaler):
        def __init__(self, device="cuda", **kwargs):
            super().__init__(device, init_scale=2.0 ** 40, **kwargs)
    monkeypatch.setattr(torch.amp, "GradScaler", Huge)
    trainer = train(tiny_config(text_file, tmp_path / "run", "--trainer.dtype=float16", "--trainer.max_iters=40",
                                "--trainer.sample_interval=0"))
    skipped, scales = trainer.logs["skipped_steps"], trainer.logs["loss_scales"]
    assert 0 < sum(skipped) < 40 and skipped[0] == 1 and skipped[-1] == 0
    for k in range(1, 40):  # each skip halves the scale; a taken step keeps it (growth comes every 2000 steps)
        assert scales[k] == scales[k - 1] * (0.5 if skipped[k] else 1)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_the_scalers_state_resumes_exactly(text_file, tmp_path):
    """Stopped at 4 and resumed: the float16 run's losses, loss scales and final scaler state are the straight
    run's, to the bit (same machine, same kernels)."""
    flags = ["--trainer.dtype=float16", "--trainer.sample_interval=0", "--trainer.checkpoint_interval=4"]
    straight = train(tiny_config(text_file, tmp_path / "straight", *flags))
    train(tiny_config(text_file, tmp_path / "resumed", *flags, "--trainer.max_iters=4", "--trainer.lr_decay_iters=8"))
    resumed = train(tiny_config(text_file, tmp_path / "resumed", *flags, "--trainer.resume=True"))
    assert resumed.logs["train_losses"] == straight.logs["train_losses"]
    assert resumed.logs["loss_scales"] == straight.logs["loss_scales"]
    assert resumed.scaler.state_dict() == straight.scaler.state_dict()
    saved = torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=False)
    assert saved["scaler"] == straight.scaler.state_dict()


def test_float16_where_autocast_has_none_is_one_line(text_file, tmp_path, monkeypatch):
    """What a build or device without float16 autocast says (torch warns that it disables autocast): one line,
    exit 2, nothing written."""
    import warnings
    real = torch.autocast

    def no_half(device_type, dtype=None, **kwargs):
        if dtype == torch.float16:
            warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.")
        return real(device_type, dtype=dtype, **kwargs)
    monkeypatch.setattr(torch, "autocast", no_half)
    from mingpt.errors import UserError
    with pytest.raises(UserError, match=r"--trainer.dtype=float16: autocast cannot run torch.float16 on cpu"):
        train(tiny_config(text_file, tmp_path / "run", "--trainer.dtype=float16"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags", [["--trainer.optimizer=muon"], ["--trainer.grad_accum_steps=2"]])
def test_float16_with_muon_and_accumulation_trains_and_samples(text_file, tmp_path, flags):
    """float16 beside Muon's own bf16 Newton-Schulz, and over accumulated micro-batches: the loss falls, the
    cached sample works from the float16 run's weights."""
    trainer = train(tiny_config(text_file, tmp_path / "run", "--trainer.dtype=float16", "--trainer.max_iters=30",
                                "--trainer.learning_rate=3e-3", "--trainer.lr_schedule=constant", *flags))
    losses = trainer.logs["train_losses"]
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5 and sum(trainer.logs["skipped_steps"]) == 0
    assert trainer.logs["samples"][-1]["text"].startswith("O God, O God!")

