"""
Data-parallel training under torchrun (`python -m torch.distributed.run`, gloo on the CPU, one thread per process)
against one process: with dropout 0, 1 process, 2 processes and 1 process with grad_accum_steps=2 follow the same
losses and end with the same weights; rank 0 alone writes and prints; a run resumes on another number of
processes; bad input under torchrun is one line.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, assert_one_line_error, made_up_text, run_cli
from mingpt.app.checkpoint import load_checkpoint
from mingpt.distributed import Processes, micro_batch_size
from mingpt.errors import UserError

TINY = ["--system.wandb=disabled", "--data.block_size=16", "--model.n_layer=2", "--model.n_query_head=4",
        "--model.n_kv_head=2", "--model.n_embd=32", "--trainer.batch_size=8", "--trainer.eval_iters=2",
        "--trainer.warmup_iters=2", "--trainer.lr_decay_iters=20", "--trainer.log_interval=1",
        "--trainer.eval_interval=5", "--trainer.sample_interval=0", "--trainer.device=cpu",
        "--model.embd_pdrop=0", "--model.resid_pdrop=0", "--model.attn_pdrop=0", "--system.num_threads=1",
        "--trainer.dtype=float32"]
TOLERANCE = 1e-5  # fp32's reduction order: a mean of two half-batch means is not bit-equal to one mean (and auto
# would be bf16 on a CPU with native bf16, whose 8-bit mantissa is no ground for 1e-5)


def torchrun(*args, nproc=2, cwd=ROOT, timeout=300):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               os.path.join(ROOT, "chargpt.py"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def cli(*args, **kwargs):
    proc = run_cli(*args, **kwargs)
    assert proc.returncode == 0, proc.stderr
    return proc


def logs(work_dir):
    with open(os.path.join(work_dir, "train_logs.json")) as f:
        return json.load(f)


def assert_same_run(a, b):
    la, lb = logs(a), logs(b)
    assert len(la["train_losses"]) == len(lb["train_losses"])
    torch.testing.assert_close(torch.tensor(la["train_losses"]), torch.tensor(lb["train_losses"]),
                               rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(torch.tensor(la["val_losses"]), torch.tensor(lb["val_losses"]), rtol=0, atol=TOLERANCE)
    wa, wb = (load_checkpoint(os.path.join(d, "model.pt"))["model"] for d in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=TOLERANCE, msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three 20-iteration runs of the same tiny model: one process, two under torchrun, one process
    accumulating two micro-batches; and the torchrun process's output."""
    root = tmp_path_factory.mktemp("ddp")
    text = root / "tiny.txt"
    text.write_text(made_up_text())
    flags = [f"--data.input_file={text}", *TINY, "--trainer.max_iters=20"]
    cli(*flags, f"--system.work_dir={root / 'one'}")
    two = torchrun(*flags, f"--system.work_dir={root / 'two'}")
    assert two.returncode == 0, two.stderr
    cli(*flags, f"--system.work_dir={root / 'accum'}", "--trainer.grad_accum_steps=2")
    return {"root": root, "flags": flags, "two": two}


@pytest.mark.slow
def test_two_processes_follow_one(runs):
    assert_same_run(runs["root"] / "one", runs["root"] / "two")


@pytest.mark.slow
def test_gradient_accumulation_follows_one_batch(runs):
    assert_same_run(runs["root"] / "one", runs["root"] / "accum")


@pytest.mark.slow
def test_rank_zero_alone_prints_and_writes(runs):
    """Each line is printed once (not once per rank); the folder has one set of run files and no wandb files; the
    checkpoint holds the plain model's keys and samples on one process."""
    out = runs["two"].stdout
    assert out.count("number of parameters") == 1 and out.count("iter 20: loss") == 1
    assert out.count("running on device cpu") == 1
    work_dir = runs["root"] / "two"
    assert sorted(os.listdir(work_dir)) == ["args.txt", "ckpt.pt", "config.json", "model.pt", "tokenizer.json",
                                         "train_logs.json"]
    assert not any(key.startswith("module.") for key in load_checkpoint(str(work_dir / "model.pt"))["model"])
    sampled = cli(f"--system.work_dir={work_dir}", "--sample.only=True", "--sample.max_new_tokens=10",
                  "--sample.prompt=the king")
    assert sampled.stdout.startswith("the king")


@pytest.mark.slow
def test_resume_on_another_number_of_processes(runs):
    """10 iterations on 2 processes, resumed on 1 for 10 more: the 20 losses and weights of one process; and the
    other way round."""
    root, flags = runs["root"], runs["flags"]
    first = torchrun(*flags, f"--system.work_dir={root / 'two_then_one'}", "--trainer.max_iters=10")
    assert first.returncode == 0, first.stderr
    cli(*flags, f"--system.work_dir={root / 'two_then_one'}", "--trainer.resume=True")
    assert_same_run(root / "one", root / "two_then_one")

    cli(*flags, f"--system.work_dir={root / 'one_then_two'}", "--trainer.max_iters=10")
    second = torchrun(*flags, f"--system.work_dir={root / 'one_then_two'}", "--trainer.resume=True")
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stdout
    assert_same_run(root / "one", root / "one_then_two")


@pytest.mark.slow
@pytest.mark.parametrize("flag, needles", [
    ("--trainer.max_iters=-1", ["--trainer.max_iters"]),
    ("--trainer.batch_size=7", ["--trainer.batch_size=7", "2 process(es)", "--trainer.grad_accum_steps=1"]),
])
def test_bad_input_under_torchrun_is_one_line(tmp_path, text_file, flag, needles):
    proc = torchrun(f"--data.input_file={text_file}", *TINY, f"--system.work_dir={tmp_path / 'run'}", flag,
                    timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr  # rank 0's line; rank 1 is silent
    for needle in needles:
        assert needle in errors[0]
    assert 'File "' + os.path.join(ROOT, "chargpt.py") not in proc.stderr  # no rank's traceback
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, needles", [
    (["--trainer.batch_size=6", "--trainer.grad_accum_steps=4"], ["batch_size=6", "1 process", "grad_accum_steps=4"]),
    (["--trainer.grad_accum_steps=0"], ["--trainer.grad_accum_steps"]),
    (["--trainer.grad_accum_steps=1.5"], ["--trainer.grad_accum_steps"]),
])
def test_batch_that_does_not_split_is_one_line(tmp_path, text_file, flags, needles):
    proc = run_cli(f"--data.input_file={text_file}", *TINY, f"--system.work_dir={tmp_path / 'run'}", *flags)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "run").exists()


def test_micro_batch_size():
    assert micro_batch_size(64, 1, 1) == 64
    assert micro_batch_size(64, 4, 2) == 8
    assert micro_batch_size(2, 1, 2) == 1
    for batch, accum, world in [(1, 1, 2), (6, 4, 1), (12, 2, 4)]:
        with pytest.raises(UserError, match=f"batch_size={batch} "):
            micro_batch_size(batch, accum, world)


def test_without_torchrun_nothing_distributed_starts(tmp_path, text_file):
    from helpers import tiny_config
    from mingpt.app.run import train
    assert not Processes({}).launched
    assert Processes({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}).device_for("cuda") == "cuda:1"
    train(tiny_config(text_file, tmp_path / "run", "--trainer.max_iters=2"))
    assert not torch.distributed.is_initialized()


@pytest.mark.slow
@pytest.mark.parametrize("model_flags", [
    ["--model.rope=True", "--model.window=8"],  # TINY's GQA too; rotary tables grow on rank 0 alone as it samples
    ["--model.model_type=rnn"],
    ["--model.model_type=birnn_invalid"],
    ["--model.model_type=birnn_prefix"],
], ids=["gpt", "rnn", "birnn_invalid", "birnn_prefix"])
def test_every_model_type_trains_under_torchrun(tmp_path, text_file, model_flags):
    """Two processes train each model type with rank 0 sampling past block_size between steps and evaluating."""
    work_dir = tmp_path / "run"
    proc = torchrun(f"--data.input_file={text_file}", *TINY, *model_flags, f"--system.work_dir={work_dir}",
                    "--trainer.max_iters=4", "--trainer.sample_interval=2", "--trainer.eval_interval=2",
                    "--sample.max_new_tokens=24", timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert len(logs(work_dir)["train_losses"]) == 4
    assert proc.stdout.count("--- iter") == 0 and proc.stdout.count("O God, O God!") == 2  # the samples of 2 and 4


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    processes = Processes({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})
    with pytest.raises(UserError, match=r"2 processes .* 1 GPU"):
        processes.device_for("cuda")
    assert processes.device_for("cpu") == "cpu"


@pytest.mark.parametrize("model_flags", [["--model.rope=True"], ["--model.pos_emb=sinusoidal"],
                                         ["--model.model_type=rnn"], ["--model.model_type=birnn_prefix"]])
def test_no_buffer_holds_state(tmp_path, text_file, model_flags):
    """DistributedDataParallel does not broadcast buffers (Processes.wrap): that is right only while every buffer
    is derived from the settings, which is what leaving it out of the state dict says."""
    from helpers import tiny_config
    from mingpt.app.settings import build_model
    config = tiny_config(text_file, tmp_path, *model_flags).model
    config.vocab_size, config.block_size = 11, 16
    model = build_model(config)
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}


@pytest.mark.parametrize("environ", [{}, {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}],
                         ids=["one process", "torchrun"])
def test_the_cuda_device_is_selected_and_given_to_the_process_group(monkeypatch, environ):
    """On cuda:1, the current device becomes cuda:1 (the probe's CUDA events record on its stream), and nccl's
    process group is told its device rather than guessing it."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", torch.device(device))))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, **kwargs: calls.append((backend, kwargs)))
    Processes(environ).start("cuda:1")
    expected = [("set_device", torch.device("cuda:1"))]
    if environ:
        expected.append(("nccl", {"device_id": torch.device("cuda:1")}))
    assert calls == expected
    if not environ:  # torch.cuda.set_device refuses a device without an index; plain "cuda" is the current one
        calls.clear()
        Processes(environ).start("cuda")
        assert calls == []
