"""
karpathy's nanoGPT and minGPT checked out beside the project, which scripts/bench_train.py, bench_data.py and
speedrun.py measure this project against: a checkout named by a flag and checked for the files those scripts run
(one line and exit 2 when one is missing, before anything is measured), and its programs run where they lie, never
copied, each from a folder of its own with links to what it reads and without bytecode, so that nothing is written
into the checkout. Every run is measured by mingpt.experiments.bench.run_measured; a failed one is one line and exit 2.
"""

import importlib.util
import os
import sys

import torch

from mingpt.errors import fail
from mingpt.experiments.bench import run_measured

# unbuffered, so that each line is timed as it is printed; no __pycache__ beside the checkout's modules
PEER_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


class Checkout:
    """A checkout of karpathy/<name> at `folder`, given by the option `flag`, with every file of `files` (name and
    files: the subclass's); `otherwise` is what the user can do instead of giving one, for the error."""

    def __init__(self, folder, flag, otherwise=""):
        missing = next((f for f in self.files if not os.path.isfile(os.path.join(folder, f))), None)
        if missing:
            fail(f"{flag}={folder}: not a {self.name} checkout (no {missing}); pass a checkout of "
                 f"karpathy/{self.name} (git clone https://github.com/karpathy/{self.name}){otherwise}")
        self.folder = os.path.abspath(folder)

    def script(self, path):
        return os.path.join(self.folder, path)

    def run(self, command, cwd, env=None):
        """`command`, a program of the checkout, run from `cwd` and measured (MeasuredRun); one line and exit 2 if
        it fails."""
        run = run_measured(command, cwd=cwd, env={**PEER_ENV, **(env or {})})
        if run.status:
            fail(f"{self.name}'s {os.path.basename(command[1])} exited with status {run.status}: {run.last_line()}")
        return run


class NanoGPT(Checkout):
    """karpathy/nanoGPT: its character-level data prepared by its own prepare.py, its train.py, and the model of a
    checkpoint it wrote, built by its own model.py."""

    name = "nanoGPT"
    files = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py",
             "data/shakespeare_char/prepare.py")

    def prepare(self, corpus, data):
        """Its data/shakespeare_char/prepare.py on `corpus`: run in data/shakespeare_char (made here) through a link,
        beside a link to the corpus as the input.txt it reads, so that train.bin, val.bin and meta.pkl are written
        there. `data` is then what a run of train.py reads as its data/."""
        where = os.path.join(data, "shakespeare_char")
        os.makedirs(where)
        os.symlink(self.script("data/shakespeare_char/prepare.py"), os.path.join(where, "prepare.py"))
        os.symlink(os.path.abspath(corpus), os.path.join(where, "input.txt"))
        return self.run([sys.executable, "prepare.py"], cwd=where)

    def train_command(self, args):
        return [sys.executable, self.script("train.py"), *args]

    def train(self, args, data, run_dir):
        """Its train.py with `args` in `run_dir` (made here), which links its config/, configurator.py and `data`
        (prepared): it reads them, and writes its out_dir, from there."""
        os.makedirs(run_dir)
        for name in ("config", "configurator.py"):
            os.symlink(self.script(name), os.path.join(run_dir, name))
        os.symlink(os.path.abspath(data), os.path.join(run_dir, "data"))
        return self.run(self.train_command(args), cwd=run_dir)

    def model(self, path):
        """The model of the checkpoint at `path`, built by its own model.py (read where it lies, no bytecode)."""
        spec = importlib.util.spec_from_file_location("nanogpt_model", self.script("model.py"))
        module = importlib.util.module_from_spec(spec)
        writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        try:
            spec.loader.exec_module(module)
        finally:
            sys.dont_write_bytecode = writes
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = module.GPT(module.GPTConfig(**ckpt["model_args"]))
        model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
        return model


class MinGPT(Checkout):
    """karpathy/minGPT: its projects/chargpt."""

    name = "minGPT"
    files = ("projects/chargpt/chargpt.py",)

    def chargpt(self, args, corpus, cwd):
        """Its projects/chargpt/chargpt.py with `args` from `cwd`, where it reads input.txt (a link to `corpus`,
        made here) and writes out/chargpt, with its own mingpt package, not this project's."""
        os.symlink(os.path.abspath(corpus), os.path.join(cwd, "input.txt"))
        return self.run([sys.executable, self.script("projects/chargpt/chargpt.py"), *args], cwd=cwd,
                        env={"PYTHONPATH": self.folder})
