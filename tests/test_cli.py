"""chargpt.py end to end: a short training run on the real corpus, one-line errors for bad input, the sample
command; scripts/check_gpu.py where there is no GPU."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, assert_one_line_error, checkout_env, needs_corpus, run_cli, tiny_config
from mingpt.app.run import train


# -----------------------------------------------------------------------------
# end to end (the real corpus)

@pytest.mark.slow
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


@pytest.mark.slow
@needs_corpus
def test_cli_bad_input(tmp_path):
    assert_one_line_error(run_cli(f"--data.input_file={tmp_path}/missing.txt",
                                  f"--system.work_dir={tmp_path}/x"), "missing.txt", "--data.input_file")
    assert_one_line_error(run_cli("--model.n_heads=3"), "--model.n_query_head")
    assert_one_line_error(run_cli("--model.n_kv_head=4", f"--system.work_dir={tmp_path}/x",
                                  "--system.wandb=disabled"), "--model.n_kv_head=4")
    assert_one_line_error(run_cli(f"--system.work_dir={tmp_path}/none", "--trainer.resume=True",
                                  "--system.wandb=disabled"), "resume")


@pytest.mark.slow  # trains, then samples in four chargpt.py subprocesses
def test_main_returns_the_user_error_status(capsys):
    """chargpt.main, called as a function, returns 2 for bad input and prints one line (no SystemExit)."""
    import chargpt
    assert chargpt.main(["--trainer.max_iters=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --trainer.max_iters=-1")


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: scripts/check_gpu.py checks it")
def test_check_gpu_without_cuda():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "check_gpu.py")], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, env=checkout_env())
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.count("\n") == 1 and "no CUDA" in proc.stdout


def test_the_runner_lists_every_test_file():
    """test_model.py's index names every file of tests/."""
    with open(os.path.join(ROOT, "test_model.py")) as f:
        index = f.read()
    files = sorted(n for n in os.listdir(os.path.join(ROOT, "tests")) if n.startswith("test_") and n.endswith(".py"))
    assert [n for n in files if f"tests/{n} " not in index] == []


def check_gpu_script():
    """scripts/check_gpu.py as a module, for its parts that run without a GPU."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("check_gpu", os.path.join(ROOT, "scripts", "check_gpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_gpu_goes_on_past_a_check_that_raises(capsys):
    script = check_gpu_script()

    def broken():
        raise RuntimeError("CUDA error: an illegal memory access\nmore lines")
    results = script.run_checks([("first", broken), ("second", lambda: [("second", True, "1 ms")])])
    assert results == [{"check": "first", "passed": False, "figure": "RuntimeError: CUDA error: an illegal memory "
                                                                    "access"},
                       {"check": "second", "passed": True, "figure": "1 ms"}]
    assert capsys.readouterr().out.splitlines()[0].startswith("FAIL first: RuntimeError")


def test_check_gpu_subprocesses_have_a_time_out(monkeypatch, tmp_path):
    """A hung subprocess (a stuck nccl rendezvous) cannot hang the checks: each has a time-out."""
    script = check_gpu_script()
    timeouts = []

    def run(*args, **kwargs):
        timeouts.append(kwargs.get("timeout"))
        return subprocess.CompletedProcess(args, 1, "", "")
    monkeypatch.setattr(script.subprocess, "run", run)
    script.check_torchrun(str(tmp_path))
    script.check_device_tests()
    assert len(timeouts) == 3 and all(timeouts)


def test_check_gpu_wants_generated_text_and_as_many_losses():
    script = check_gpu_script()
    prompt = "O God, O God!"
    assert not script.samples_after(prompt + "\n", prompt, 50)  # the echoed prompt alone
    assert script.samples_after(prompt + "x" * 50 + "\n", prompt, 50)
    assert script.compare_losses([2.0, 1.5], [2.0, 1.5 + 1e-5])[0]
    passed, figure = script.compare_losses([2.0, 1.5], [2.0])
    assert not passed and figure == "the plain run logged 2 losses, the torchrun one 1"
