"""
minGPT's public API, used as code written for karpathy's minGPT uses it: GPT.get_default_config with model_type
presets and n_head, Trainer(config, model, train_dataset) on a torch Dataset of (x, y) pairs with its callback
attributes, set_seed, setup_logging, CfgNode. The references are independent of the code: parameter counts from
the sizes' formula (and GPT-2's published 124,439,808), a cross entropy computed here, a task the model must learn.
"""

import json
import math
import os
import pickle
import random
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from helpers import assert_one_line_error, run_cli
from mingpt.app.settings import get_config
from mingpt.config import CfgNode as CN
from mingpt.errors import UserError
from mingpt.model import GPT
from mingpt.trainer import Trainer
from mingpt.utils import set_seed, setup_logging

# minGPT's presets: (n_layer, n_head, n_embd), the sizes of its model.py
PRESETS = {"openai-gpt": (12, 12, 768), "gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024),
           "gpt2-large": (36, 20, 1280), "gpt2-xl": (48, 25, 1600), "gopher-44m": (8, 16, 512),
           "gpt-mini": (6, 6, 192), "gpt-micro": (4, 4, 128), "gpt-nano": (3, 3, 48)}


class SortDataset(Dataset):
    """minGPT's demo task: read `length` digits, then write them sorted; the loss only counts the sorted half."""

    def __init__(self, split, length=6, num_digits=3):
        self.split, self.length, self.num_digits = split, length, num_digits

    def __len__(self):
        return 10000

    def get_vocab_size(self):
        return self.num_digits

    def get_block_size(self):
        return self.length * 2 - 1

    def __getitem__(self, idx):
        while True:
            inp = torch.randint(self.num_digits, size=(self.length,), dtype=torch.long)
            if ("test" if hash(pickle.dumps(inp.tolist())) % 4 == 0 else "train") == self.split:
                break
        cat = torch.cat((inp, torch.sort(inp)[0]))
        x, y = cat[:-1].clone(), cat[1:].clone()
        y[:self.length - 1] = -1
        return x, y


def expected_params(n_layer, n_embd, vocab_size, block_size):
    """GPT-2's parameters from its sizes: per block two LayerNorms, q/k/v/out projections and a 4x MLP, all with
    biases; the token and position tables, the final LayerNorm; the head separately (minGPT does not tie it)."""
    C = n_embd
    block = 2 * 2 * C + 4 * (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    body = n_layer * block + vocab_size * C + block_size * C + 2 * C
    return body, vocab_size * C


@pytest.mark.parametrize("model_type", list(PRESETS))
def test_presets_have_minGPTs_sizes_and_parameter_counts(model_type):
    config = GPT.get_default_config()
    config.model_type = model_type
    config.vocab_size, config.block_size = 50257, 1024
    with torch.device("meta"):  # the sizes without the memory: gpt2-xl has 1.6B parameters
        model = GPT(config)
    n_layer, n_head, n_embd = PRESETS[model_type]
    attn = model.transformer.h[0].attn
    assert (len(model.transformer.h), attn.n_query_head, attn.n_kv_head, model.transformer.wte.embedding_dim) == \
        (n_layer, n_head, n_head, n_embd)
    body, head = expected_params(n_layer, n_embd, 50257, 1024)
    assert model.num_params() == body + head
    if model_type == "gpt2":
        assert body == 124_439_808  # GPT-2 small as OpenAI published it


def test_explicit_sizes_win_over_the_preset_from_python_and_flags():
    config = GPT.get_default_config()
    config.model_type, config.n_layer = "gpt-nano", 2
    config.vocab_size, config.block_size = 11, 8
    model = GPT(config)
    assert (len(model.transformer.h), model.transformer.h[0].attn.n_query_head) == (2, 3)
    flags = get_config()
    flags.merge_from_args(["--model.n_embd=64", "--model.model_type=gpt-micro"])  # the order does not matter
    flags.validate()
    assert (flags.model.n_layer, flags.model.n_query_head, flags.model.n_embd) == (4, 4, 64)


def test_n_head_is_the_query_heads():
    config = GPT.get_default_config()
    config.n_head = 4
    assert config.n_query_head == 4 and config.n_head == 4
    flags = get_config()
    flags.merge_from_args(["--model.n_head=3", "--model.n_embd=48"])
    assert flags.model.n_query_head == 3
    assert "n_head" not in flags.model.to_dict()  # one setting, two names: config.json holds it once


def test_a_misspelt_key_is_an_error_not_a_silent_value():
    config = GPT.get_default_config()
    with pytest.raises(UserError, match="unknown config key n_heads; did you mean n_head") as e:
        config.n_heads = 4
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="unknown config key learning_rat"):
        Trainer.get_default_config().learning_rat = 1e-3
    free = CN()  # minGPT's free-form node (projects/adder's C.system) takes any key
    free.seed, free.work_dir = 3407, "out"
    with pytest.raises(UserError, match="unknown config key"):
        GPT.get_default_config().merge_from_dict({"n_layers": 2})


def test_unknown_preset_is_one_line():
    assert_one_line_error(run_cli("--model.model_type=gpt-giant"), "--model.model_type=gpt-giant", "gpt-nano")


def test_set_seed_seeds_python_numpy_and_torch():
    draws = []
    for _ in range(2):
        set_seed(7)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(()))))
    assert draws[0] == draws[1]


def test_setup_logging_writes_args_and_config(tmp_path, monkeypatch):
    C = CN()
    C.system = CN(work_dir=str(tmp_path / "run"), seed=1)
    C.model = GPT.get_default_config()
    monkeypatch.setattr(sys, "argv", ["adder.py", "--system.seed=1"])
    setup_logging(C)
    assert (tmp_path / "run" / "args.txt").read_text() == "adder.py --system.seed=1"
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["system"] == {"work_dir": str(tmp_path / "run"), "seed": 1} and saved["model"]["n_layer"] == 6


def sort_trainer(dropout=0.1, **settings):
    set_seed(3407)
    data = SortDataset("train")
    config = GPT.get_default_config()
    config.model_type, config.vocab_size, config.block_size = "gpt-nano", 3, data.get_block_size()
    config.embd_pdrop = config.resid_pdrop = config.attn_pdrop = dropout
    model = GPT(config)
    train_config = Trainer.get_default_config()
    train_config.learning_rate, train_config.num_workers, train_config.device = 5e-4, 0, "cpu"
    train_config.dtype = "float32"
    for key, value in settings.items():
        setattr(train_config, key, value)
    return Trainer(train_config, model, data), model


@pytest.mark.slow  # 500 steps of the demo's model
def test_a_dataset_driven_trainer_learns_minGPTs_sort_task():
    trainer, model = sort_trainer(max_iters=500)
    seen = []
    trainer.set_callback("on_batch_end", lambda t: seen.append((t.iter_num, t.iter_dt, t.loss.item())))
    trainer.run()
    assert [s[0] for s in seen] == list(range(500)) and all(dt > 0 for _, dt, _ in seen)  # minGPT's: from 0
    assert seen[-1][2] < 0.3 * seen[0][2]
    model.eval()
    test = SortDataset("test")
    inp = torch.stack([test[i][0][:6] for i in range(200)])
    with torch.no_grad():
        out = model.generate(inp, 6, do_sample=False)[:, 6:]
    assert (out == inp.sort(dim=1).values).all(dim=1).float().mean() > 0.9


def test_the_step_loss_is_the_whole_batch_and_ignores_minus_one_targets():
    trainer, model = sort_trainer(0.0, max_iters=1, grad_accum_steps=2, lr_schedule="constant")
    x, y = trainer.get_batch("train", 64)
    with torch.no_grad():
        logits, _ = model(x)
    keep = y != -1
    expected = torch.nn.functional.cross_entropy(logits[keep], y[keep])  # here: every batch row has 6 targets
    trainer.get_batch = lambda split, batch_size, generator=None: (x, y)
    trainer.run()
    assert isinstance(trainer.loss, torch.Tensor)
    torch.testing.assert_close(trainer.loss, expected, atol=1e-5, rtol=0)
    assert trainer.device == "cpu" and trainer.iter_time > 0


def test_max_iters_none_trains_until_stopped_at_the_peak_rate():
    trainer, _ = sort_trainer(max_iters=None, warmup_iters=3, lr_schedule="cosine")

    class Enough(Exception):
        pass

    def stop_at_12(t):
        if t.iter_num == 12:
            raise Enough
    trainer.set_callback("on_batch_end", stop_at_12)
    with pytest.raises(Enough):
        trainer.run()
    assert trainer.iter_num == 12 and trainer.iters_done == 13  # minGPT's index of the step, and the steps taken
    assert [trainer.lr_at(i) for i in (0, 2, 3, 10_000)] == pytest.approx([5e-4 / 3, 5e-4, 5e-4, 5e-4])


def test_the_trainers_defaults_are_minGPTs():
    """minGPT's trainer/get_default_config, value for value (karpathy/minGPT mingpt/trainer.py); what this trainer
    adds is off: a constant rate, fp32, no compile, no accumulation."""
    C = Trainer.get_default_config()
    minGPT = dict(device="auto", num_workers=4, max_iters=None, batch_size=64, learning_rate=3e-4, betas=(0.9, 0.95),
                  weight_decay=0.1, grad_norm_clip=1.0)
    assert {key: getattr(C, key) for key in minGPT} == minGPT
    assert (C.lr_schedule, C.dtype, C.compile, C.grad_accum_steps, C.optimizer) == \
        ("constant", "float32", False, 1, "adamw")


def test_a_minGPT_project_sees_iter_num_from_0_and_only_minGPTs_line(capsys):
    """projects/adder evaluates `if trainer.iter_num % 500 == 0`: with 501 steps that is twice, at 0 and at 500 (here
    % 10 in 11 steps). The trainer prints minGPT's device line and nothing else."""
    trainer, _ = sort_trainer(max_iters=11)
    assert capsys.readouterr().out == "running on device cpu\n"
    scored = []
    trainer.set_callback("on_batch_end", lambda t: scored.append(t.iter_num) if t.iter_num % 10 == 0 else None)
    trainer.run()
    assert scored == [0, 10] and trainer.iter_num == 11
    assert capsys.readouterr().out == ""


def test_callbacks_add_set_and_trigger():
    trainer, _ = sort_trainer(max_iters=2)
    calls = []
    trainer.add_callback("on_batch_end", lambda t: calls.append("a"))
    trainer.add_callback("on_batch_end", lambda t: calls.append("b"))
    trainer.trigger_callbacks("on_batch_end")
    trainer.set_callback("on_batch_end", lambda t: calls.append("c"))
    trainer.run()
    assert calls == ["a", "b", "c", "c"]


def test_chargpt_accepts_minGPTs_model_types(tmp_path, text_file):
    proc = run_cli(f"--data.input_file={text_file}", f"--system.work_dir={tmp_path}/run", "--system.wandb=disabled",
                   "--model.model_type=gpt-nano", "--trainer.max_iters=2", "--trainer.device=cpu",
                   "--data.block_size=16", "--trainer.batch_size=4", "--trainer.sample_interval=0")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert (saved["model_type"], saved["n_layer"], saved["n_query_head"], saved["n_embd"]) == ("gpt-nano", 3, 3, 48)
    assert math.isfinite(json.loads((tmp_path / "run" / "train_logs.json").read_text())["train_losses"][-1])
    assert os.path.exists(tmp_path / "run" / "model.pt")
