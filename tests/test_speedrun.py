"""
scripts/speedrun.py and scripts/study_modern.py at a tiny scale, and what they measure with (mingpt/experiments/speedrun.py):
the full pass over a split against a model whose loss is known and against each window on its own, the
--data.val_fraction of nanoGPT's split against its prepare.py's formula, the speedrun beside a stand-in nanoGPT
checkout (and the real one when it is beside the project), the study's arms, and their bad options.
"""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, assert_one_line_error, checkout_env, made_up_text, model_config
from mingpt.app.settings import get_config
from mingpt.data.dataset import CharDataset
from mingpt.experiments.speedrun import evaluations, first_at_or_below, full_pass_loss, nanogpt_val_fraction, spread
from mingpt.model import GPT

NANOGPT = os.environ.get("NANOGPT", os.path.join(os.path.dirname(ROOT), "nanoGPT"))


def built(**settings):
    torch.manual_seed(0)
    return GPT(model_config(**settings)).eval()


def script(name, *args, timeout=900):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name), *args], cwd=ROOT,
                          env={**checkout_env(), "WANDB_MODE": "disabled"}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


class Bigram(torch.nn.Module):
    """A model whose loss at a position depends on the previous token alone: any windows that predict every token
    once give the mean of its pair losses."""

    def __init__(self, vocab):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))

    def forward(self, idx, targets):
        logits = self.table[idx]
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


@pytest.mark.parametrize("length, context, batch", [(101, 10, 3), (100, 7, 64), (50, 49, 1), (9, 16, 4)])
def test_full_pass_predicts_every_token_once(length, context, batch):
    ids = torch.randint(5, (length,), generator=torch.Generator().manual_seed(1)).numpy()
    model = Bigram(5)
    pairs = F.cross_entropy(model.table[torch.from_numpy(ids[:-1])], torch.from_numpy(ids[1:]))
    assert full_pass_loss(model, ids, context, batch) == pytest.approx(pairs.item(), rel=1e-6)


def test_full_pass_of_a_gpt_equals_each_window_on_its_own():
    model = built(block_size=16)
    ids = torch.randint(11, (40,), generator=torch.Generator().manual_seed(2)).numpy()
    nats = 0.0
    with torch.no_grad():
        for start in range(0, 39, 16):  # windows of 16 predictions: 16, 16, 7
            x = torch.from_numpy(ids[start:min(start + 16, 39)])[None]
            y = torch.from_numpy(ids[start + 1:min(start + 17, 40)])[None]
            logits = model(x)[0][0]
            nats -= logits.log_softmax(-1).gather(1, y[0][:, None]).sum().item()
    assert full_pass_loss(model, ids, 16, batch_size=2) == pytest.approx(nats / 39, rel=1e-5)


@pytest.mark.parametrize("n", [1115394, 21, 6001, 99999])
def test_the_val_fraction_of_nanogpts_split(n):
    text = "".join("ab"[i % 2] for i in range(n - 1)) + "c"
    fraction = nanogpt_val_fraction(n)
    config = get_config().data
    config.merge_from_dict({"val_fraction": fraction, "block_size": 1})
    dataset = CharDataset(config, text)
    assert dataset.characters("val") == n - int(n * 0.9) == len(text[int(n * 0.9):])  # nanoGPT's prepare.py
    assert dataset.tokens.counts["train"]["tokens"] == int(n * 0.9)
    if n == 1115394:
        assert int(n * 0.1) == n - int(n * 0.9) - 1  # 0.1 would hold out one character fewer




def test_evaluation_lines_and_the_first_at_the_target():
    lines = [(0.5, "step 0: train loss 4.1000, val loss 4.2000"), (1.0, "iter 4: loss 3.1, lr 1e-3"),
             (2.0, "iter 4: train loss 2.0000, val loss 1.9000, val 2.7 bits/char"),
             (3.0, "step 250: train loss 1.9000, val loss 1.8800"), (4.0, "step 500: train loss 1.8, val loss 1.85")]
    assert evaluations(lines, "nanoGPT") == [(0.5, 0, 4.2), (3.0, 250, 1.88), (4.0, 500, 1.85)]
    assert evaluations(lines, "chargpt") == [(2.0, 4, 1.9)]
    assert first_at_or_below(evaluations(lines, "nanoGPT"), 1.88) == (3.0, 250, 1.88)  # at, not only below
    assert first_at_or_below(evaluations(lines, "chargpt"), 1.88) is None
    assert spread([3, None, 1, 2]) == {"median": 2, "low": 1, "high": 3, "n": 3}


# -----------------------------------------------------------------------------
# scripts/speedrun.py

# a stand-in nanoGPT checkout: the files the script needs, a prepare.py that splits as nanoGPT's does, a train.py
# that prints nanoGPT's evaluation lines (the second at the target) and saves a checkpoint of a model whose
# full-pass loss is ln(vocab size): a uniform one
FAKE = {
    "configurator.py": "",
    "config/train_shakespeare_char.py": "",
    "data/shakespeare_char/prepare.py": """
import os, pickle
import numpy as np
here = os.path.dirname(__file__)
data = open(os.path.join(here, "input.txt")).read()
chars = sorted(set(data))
stoi = {c: i for i, c in enumerate(chars)}
n = len(data)
for name, part in (("train", data[:int(n * 0.9)]), ("val", data[int(n * 0.9):])):
    np.array([stoi[c] for c in part], dtype=np.uint16).tofile(os.path.join(here, name + ".bin"))
pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi},
            open(os.path.join(here, "meta.pkl"), "wb"))
""",
    "model.py": """
from dataclasses import dataclass
import torch
import torch.nn.functional as F

@dataclass
class GPTConfig:
    vocab_size: int = 10

class GPT(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.table = torch.nn.Parameter(torch.zeros(config.vocab_size, config.vocab_size))

    def forward(self, idx, targets=None):
        logits = self.table[idx]
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
""",
    "train.py": """
import os, pickle, sys, time
import torch
from model import GPT, GPTConfig
assert os.path.isfile("configurator.py") and os.path.isfile("config/train_shakespeare_char.py")
with open(os.environ["FAKE_NANOGPT_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
vocab = pickle.load(open("data/shakespeare_char/meta.pkl", "rb"))["vocab_size"]
print("step 0: train loss 4.0000, val loss 4.0000")
time.sleep(0.2)
print("step 4: train loss 1.9000, val loss 1.8800")
os.makedirs("out-shakespeare-char")
model = GPT(GPTConfig(vocab_size=vocab))
torch.save({"model": model.state_dict(), "model_args": {"vocab_size": vocab}}, "out-shakespeare-char/ckpt.pt")
""",
}
TINY = ["--model.n_layer=1", "--model.n_embd=32", "--model.n_head=4", "--trainer.batch_size=4"]


@pytest.fixture
def fake_nanogpt(tmp_path):
    root = tmp_path / "nanoGPT"
    for name, text in FAKE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(made_up_text(3000))
    return path


def checkout_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.slow  # six training runs through chargpt.py
def test_speedrun_beside_a_stand_in_nanogpt(fake_nanogpt, corpus, tmp_path, monkeypatch):
    log = tmp_path / "nanogpt_argv.txt"
    monkeypatch.setenv("FAKE_NANOGPT_LOG", str(log))
    before = checkout_files(fake_nanogpt)
    out = tmp_path / "out"
    proc = script("speedrun.py", f"--nanogpt={fake_nanogpt}", f"--corpus={corpus}", f"--out={out}", "--scale=quick",
                  "--", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkout_files(fake_nanogpt) == before  # nothing written into the checkout, not even __pycache__
    argv = log.read_text().splitlines()
    assert argv == [argv[0]] * 3 and argv[0].startswith(
        "config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1 "
        "--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 "
        "--lr_decay_iters=2000 --dropout=0.0 --max_iters=8")  # the documented command, then the quick scale's
    rows = read_csv(out / "runs.csv")
    assert [r["track"] for r in rows] == ["nanoGPT", "1.88", "10min"] * 3
    assert [r["seed"] for r in rows if r["track"] == "1.88"] == ["0", "1", "2"]
    vocab = len(set(corpus.read_text()))
    for r in rows:
        assert float(r["full_val"]) > 0 and float(r["wall_s"]) > 0 and r["evaluations"] != "0"
        if r["track"] == "nanoGPT":
            assert r["target_iter"] == "4" and 0.2 < float(r["target_s"]) <= float(r["wall_s"])
            assert float(r["full_val"]) == pytest.approx(math.log(vocab), abs=1e-4)
        else:
            assert r["last_iter"] == "8" and r["target_s"] == ""  # 8 iterations come nowhere near 1.88
    summary = read_csv(out / "summary.csv")
    assert [s["track"] for s in summary] == ["nanoGPT", "1.88", "10min"]
    nano = summary[0]
    walls = sorted(float(r["wall_s"]) for r in rows if r["track"] == "nanoGPT")
    assert float(nano["wall_s_median"]) == walls[1] and float(nano["wall_s_low"]) == walls[0]
    report = json.loads((out / "speedrun.json").read_text())
    assert report["torch"] == torch.__version__ and set(report["goals"]) == {"1.88", "10min"}
    assert report["val_fraction"] == nanogpt_val_fraction(3000)
    assert "nanoGPT's CPU command" in proc.stdout and torch.__version__ in proc.stdout
    assert "goal of track 1.88: not met" in proc.stdout


@pytest.mark.slow  # nanoGPT's own train.py and prepare.py, and our runs
@pytest.mark.skipif(not os.path.isfile(os.path.join(NANOGPT, "train.py")), reason="no nanoGPT beside the project")
def test_speedrun_beside_nanogpt(corpus, tmp_path):
    before = checkout_files(Path(NANOGPT))
    out = tmp_path / "out"
    proc = script("speedrun.py", f"--nanogpt={NANOGPT}", f"--corpus={corpus}", f"--out={out}", "--scale=quick",
                  "--tracks", "1.88", "--", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkout_files(Path(NANOGPT)) == before
    rows = read_csv(out / "runs.csv")
    nano = [r for r in rows if r["track"] == "nanoGPT"]
    assert len(nano) == 3 and all(r["evaluations"] == "3" and r["last_iter"] == "8" for r in nano)
    assert len({r["full_val"] for r in nano}) == 1  # nanoGPT seeds itself: the same model each time


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "1", "2"], "at least 3 different seeds"),
    (["--seeds", "1", "1", "2"], "at least 3 different seeds"),
    (["--nanogpt=/no/such/folder"], "not a nanoGPT checkout"),
    (["--tracks", "2.0"], "invalid choice: '2.0'"),
    (["--recipe", "1.88=/no/such/recipe.txt", "--skip-nanogpt"], "no such recipe file"),
    (["--recipe", "fast=recipes/speedrun-1.88.txt"], "TRACK=PATH"),
    (["--eval-context=0", "--skip-nanogpt"], "--eval-context=0 must be >= 1"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--skip-nanogpt", "--corpus=/no/such.txt"], "--corpus /no/such.txt: no such file"),
    (["--skip-nanogpt", "--", "--trainer.optimizer=sgd"], "--trainer.optimizer=sgd"),
    (["--skip-nanogpt", "--eval-context=100"], "--data.block_size=64 is below --eval-context 100"),
])
def test_speedrun_bad_options_are_one_line(args, needle, corpus, tmp_path):
    proc = script("speedrun.py", f"--out={tmp_path / 'out'}", f"--corpus={corpus}", *args)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "out").exists()


# -----------------------------------------------------------------------------
# scripts/study_modern.py

@pytest.mark.slow  # fourteen training runs
def test_study_modern_arms(corpus, tmp_path):
    recipe = tmp_path / "recipe.txt"
    recipe.write_text("# Muon and ReLU^2, not the soft-cap\n--trainer.optimizer=muon\n--model.mlp=relu2\n")
    proc = script("study_modern.py", "--scale=quick", f"--out={tmp_path}", f"--corpus={corpus}", "--seeds", "0", "1",
                  "--ideas", "muon", "relu2", "logit_softcap", "--wandb=disabled", f"--recipe={recipe}",
                  f"--results={tmp_path / 'results'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(os.listdir(tmp_path / "results" / "modern" / "quick")) == 14 + 1  # a record per run, the plan
    folder = tmp_path / "modern" / "quick"
    summary = read_csv(folder / "summary.csv")
    # the recipe uses Muon and ReLU^2, not the soft-cap: nothing to remove there
    assert [s["variant"] for s in summary] == ["recipe", "recipe - muon", "recipe - relu2", "default",
                                              "default + muon", "default + relu2", "default + logit_softcap"]
    assert all(s["seeds"] == "2" for s in summary)
    assert float(summary[0]["change_from_baseline"]) == 0 and float(summary[3]["change_from_baseline"]) == 0
    final = read_csv(folder / "final.csv")
    assert len(final) == 14 and {f["seed"] for f in final} == {"0", "1"}
    curves = read_csv(folder / "curves.csv")
    assert {"arm", "variant", "iter", "tokens", "wall_s", "val_loss"} <= set(curves[0])
    commands = (folder / "commands.txt").read_text().splitlines()
    removed = next(c for c in commands if "runs/recipe_muon_seed_0" in c)
    assert "--trainer.optimizer=muon" in removed and removed.index("--trainer.optimizer=muon") < \
        removed.index("--trainer.optimizer=adamw")  # the recipe's flag, then the one that removes it
    added = next(c for c in commands if "runs/default_muon_seed_0" in c)
    assert "--trainer.muon_lr=0.02" in added and "--trainer.lr_schedule=cosine" in added
    with open(folder / "modern.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, needle", [
    (["--recipe=/no/such/recipe.txt"], "no such recipe file"),
    (["--ideas", "adam"], "invalid choice: 'adam'"),
    (["--seeds", "-1"], "--seeds=-1 must be >= 0"),
    (["--scale=huge"], "invalid choice: 'huge'"),
])
def test_study_modern_bad_options_are_one_line(args, needle, tmp_path):
    proc = script("study_modern.py", f"--out={tmp_path / 'out'}", *args)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "out").exists()
