"""Training through mingpt.app.run.train: loss, the files of a run, checkpoints, exact resume, context extension
from a pretrained run, atomic writes."""

import json
import math
import os

import pytest
import torch

from helpers import DEVICES, tiny_config
from mingpt.app.checkpoint import load_checkpoint
from mingpt.app.files import save_json
from mingpt.app.run import train
from mingpt.app.sample_text import sample
from mingpt.data.tokenizer import CharTokenizer
from mingpt.errors import UserError
from mingpt.model import GPT
from mingpt.utils import atomic_open


# -----------------------------------------------------------------------------
# training, checkpoints, resume

def test_loss_falls(text_file, tmp_path):
    config = tiny_config(text_file, tmp_path / "run", "--trainer.max_iters=60", "--trainer.eval_interval=0",
                         "--trainer.sample_interval=0", "--trainer.learning_rate=3e-3")
    trainer = train(config)
    losses = trainer.logs["train_losses"]
    assert len(losses) == 60
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:5]) / 5


def cpu_flags():
    """The CPU's feature flags as the kernel lists them (empty where there is no /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line for line in f if line.startswith("flags")), ":").split(":")[1].split())
    except OSError:
        return set()


@pytest.mark.parametrize("device", DEVICES)
def test_training_on_device_samples_on_cpu(text_file, tmp_path, device, capsys):
    """Train on each device with dtype=auto: bf16 autocast where the hardware has native bf16 (CUDA; a CPU whose
    flags include AMX tiles or AVX512-BF16), fp32 elsewhere; the loss falls, and the model.pt it saves samples
    on the CPU."""
    trainer = train(tiny_config(text_file, tmp_path / "run", f"--trainer.device={device}", "--trainer.dtype=auto",
                                "--trainer.max_iters=30", "--trainer.eval_interval=0", "--trainer.sample_interval=0",
                                "--trainer.learning_rate=3e-3"))
    losses = trainer.logs["train_losses"]
    native = device == "cuda" or bool(cpu_flags() & {"amx_tile", "avx512_bf16"})
    assert trainer.dtype_name == ("bfloat16" if native else "float32")
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    capsys.readouterr()
    sample(tiny_config(text_file, tmp_path / "run", "--sample.only=True", "--sample.max_new_tokens=20",
                       "--sample.prompt=the king"))
    assert capsys.readouterr().out.startswith("the king")


@pytest.mark.parametrize("amx, avx512_bf16, dtype, expected", [
    (True, False, "auto", "bfloat16"), (False, True, "auto", "bfloat16"), (False, False, "auto", "float32"),
    (True, True, "float32", "float32"), (False, False, "bfloat16", "bfloat16")])
def test_auto_dtype_on_cpu_follows_native_bf16(text_file, tmp_path, monkeypatch, amx, avx512_bf16, dtype, expected):
    """auto is bf16 autocast on a CPU exactly when torch reports AMX tiles or AVX512-BF16; an explicit dtype wins.
    The training step then runs its matmuls in that dtype."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    trainer = train(tiny_config(text_file, tmp_path / "run", f"--trainer.dtype={dtype}", "--trainer.max_iters=1",
                                "--trainer.eval_interval=0", "--trainer.sample_interval=0"))
    assert trainer.dtype_name == expected
    with trainer.autocast():
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == getattr(torch, expected)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dtype"] == expected


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
    x = torch.tensor([CharTokenizer(ckpt["vocab"]).encode("the king shall")])
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


def evaluate_with_items(trainer):
    """Trainer.evaluate as a loop of .item() calls, summing Python floats (one process, fp32)."""
    gen = torch.Generator()
    gen.manual_seed(trainer.iter_num)
    trainer.model.eval()
    splits = []
    with torch.no_grad():
        for split in ("train", "val"):
            losses, nats, chars = [], 0.0, 0
            for _ in range(trainer.config.eval_iters):
                x, y, covered = trainer.train_dataset.get_eval_batch(split, trainer.config.batch_size, gen)
                for xm, ym, cm in trainer.share(x, y, covered):
                    loss = trainer.model(xm, ym)[1]
                    losses.append(loss.item())
                    nats += loss.item() * ym.numel()
                    chars += int(cm.sum())
            splits.append((sum(losses) / len(losses), nats, chars))
    trainer.model.train()
    (train_loss, _, _), (val, val_nats, val_chars) = splits
    return {"train": train_loss, "val": val, "val_bpc": val_nats / (math.log(2) * val_chars)}


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_reads_the_device_once_per_split(text_file, tmp_path, monkeypatch, device):
    """Evaluation sums on the device and reads back once per split, and gives the loop of .item() calls' values
    bit for bit (a seed's losses do not change)."""
    trainer = train(tiny_config(text_file, tmp_path / "run", "--trainer.max_iters=2", "--trainer.grad_accum_steps=2",
                                f"--trainer.device={device}"))
    expected = evaluate_with_items(trainer)
    reads = []
    for name in ("item", "tolist", "__int__", "__float__", "__bool__"):
        def counted(self, *args, _original=getattr(torch.Tensor, name), _name=name):
            reads.append(_name)
            return _original(self, *args)
        monkeypatch.setattr(torch.Tensor, name, counted)
    result = trainer.evaluate()
    monkeypatch.undo()
    assert result == expected
    assert reads == ["tolist", "tolist"]


@pytest.mark.parametrize("device", DEVICES[1:])  # CUDA alone: a CPU's matmuls are timed by the host clock
def test_cuda_matmul_peak_is_timed_by_cuda_events(device, monkeypatch):
    """The peak behind MFU: on a fast GPU a host clock around each matmul adds its launch and synchronisation, so
    it under-reads the peak; the CUDA path times a loop with events instead."""
    import mingpt.experiments.bench

    def host_clock(*args, **kwargs):
        raise AssertionError("a CUDA matmul timed by the host clock")
    monkeypatch.setattr(mingpt.experiments.bench, "time_ms", host_clock)
    assert mingpt.experiments.bench.matmul_peak_flops(device) > 0
