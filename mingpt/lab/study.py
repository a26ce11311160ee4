"""
What every experiment script in scripts/ shares: scales, training runs through mingpt.lab.run, and the files a
study leaves in out/experiments/<study>/:

  commands.txt      the exact chargpt.py command of every training run, and the script's own command
  <name>.csv        every number the study measured
  <name>.png        its plots
  study.json        study name, scale, what the scale changed, machine, torch version, date

Runs go to wandb (offline unless logged in) in one group per study and scale (e.g. gqa_cost-cpu), each named
<study>-<scale>/<setting> with the config it trained with; an `analysis` run of the study's own settings holds
its figures, its tables (every CSV) and the last sample of each training run.
"""

import csv
import os
import re
import shlex
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mingpt.lab.bench import median_after_warmup
from mingpt.lab.dashboard import WandbRun
from mingpt.lab.errors import fail
from mingpt.lab.files import machine_info, save_json, write_csv
from mingpt.lab.plots import loss_curve_figure
from mingpt.lab.run import train
from mingpt.lab.sampling import sample_tokens
from mingpt.lab.settings import get_config

# What each scale changes from the course's chargpt run (gpt-mini: 6 layers, n_embd 192, batch 64, block 128,
# 600 iterations, constant learning rate 5e-4). Studies keep the iteration schedule and the comparison.
SCALES = {
    "quick": dict(flags=["--model.n_layer=2", "--model.n_embd=48", "--trainer.batch_size=8", "--data.block_size=32",
                         "--trainer.eval_iters=2"],
                  iters=lambda n: max(4, n // 40),
                  note="smoke test: 2 layers, n_embd 48, batch 8, block 32, iterations / 40"),
    "cpu": dict(flags=["--trainer.batch_size=16", "--trainer.eval_iters=10"], iters=lambda n: n,
                note="the course's model and iteration schedule with batch 16 instead of 64 (a quarter of the "
                     "tokens per iteration)"),
    "full": dict(flags=[], iters=lambda n: n, note="the course's settings"),
}
COURSE_FLAGS = ["--trainer.lr_schedule=constant"]


class Study:

    def __init__(self, name, scale, root="out/experiments", wandb=None):
        if scale not in SCALES:
            fail(f"--scale {scale}: choose one of {', '.join(SCALES)}")
        self.name, self.scale = name, scale
        self.dir = os.path.join(root, name)
        self.group = f"{name}-{scale}"  # wandb's group: the scales of one study stay apart
        self.wandb = wandb
        os.makedirs(self.dir, exist_ok=True)
        self.commands = ["python " + " ".join(shlex.quote(a) for a in sys.argv)]
        self.started = time.time()

    def iters(self, course_iters):
        """The number of iterations this scale runs for a step the course runs `course_iters` iterations."""
        return SCALES[self.scale]["iters"](course_iters)

    def run_dir(self, run):
        return os.path.join(self.dir, "runs", re.sub("[^A-Za-z0-9]+", "_", run).strip("_"))

    def train(self, run, flags, course_iters=600):
        """Train one run of the study; returns its trainer (model and logs). `flags` are chargpt.py flags."""
        flags = COURSE_FLAGS + SCALES[self.scale]["flags"] + [
            f"--trainer.max_iters={self.iters(course_iters)}",
            f"--trainer.eval_interval={max(1, self.iters(course_iters) // 6)}",
            f"--system.work_dir={self.run_dir(run)}", f"--system.wandb_group={self.group}",
            f"--system.wandb_name={self.group}/{run}", f"--system.wandb_tags={self.name},{self.scale}"] + list(flags)
        if self.wandb:
            flags.append(f"--system.wandb={self.wandb}")
        self.commands.append("python chargpt.py " + " ".join(shlex.quote(f) for f in flags))
        config = get_config()
        config.merge_from_args(flags)
        return train(config)

    def path(self, filename):
        return os.path.join(self.dir, filename)

    def save_csv(self, name, rows):
        write_csv(rows, self.path(name + ".csv"))

    def save_figure(self, fig, name):
        fig.tight_layout()
        fig.savefig(self.path(name + ".png"), dpi=110)
        plt.close(fig)

    def finish(self, summary=None):
        """Write commands.txt and study.json; send the figures, tables and samples to wandb."""
        with open(self.path("commands.txt"), "w") as f:
            f.write("\n".join(self.commands) + "\n")
        info = {"study": self.name, "scale": self.scale, "scale_note": SCALES[self.scale]["note"],
                "scale_flags": COURSE_FLAGS + SCALES[self.scale]["flags"], "machine": machine_info(),
                "seconds": round(time.time() - self.started, 1), "date": time.strftime("%Y-%m-%d"), **(summary or {})}
        save_json(info, self.path("study.json"))
        system = get_config().system
        system.wandb, system.wandb_group, system.wandb_tags = self.wandb, self.group, f"{self.name},{self.scale}"
        run = WandbRun(system, info, self.dir, job_type="analysis", name=f"{self.group}/analysis")
        files = sorted(os.listdir(self.dir))
        tables = {name[:-4]: read_table(self.path(name)) for name in files if name.endswith(".csv")}
        samples = self.final_samples()
        if samples:
            tables["samples"] = (["run", "sample"], samples)
        run.log_files({name[:-4]: self.path(name) for name in files if name.endswith(".png")}, tables)
        run.finish()
        print(f"{self.name} ({self.scale}): wrote {self.dir}")

    def final_samples(self):
        """[run folder, last sample] of each training run that wrote samples."""
        runs = os.path.join(self.dir, "runs")
        rows = []
        for run in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
            path = os.path.join(runs, run, "samples.txt")
            if os.path.exists(path):
                with open(path) as f:
                    rows.append([run, f.read().rsplit("---\n", 1)[-1].strip()])
        return rows


def read_table(path):
    """A CSV as (columns, rows), numbers as floats."""
    def value(text):
        try:
            return float(text)
        except ValueError:
            return text
    with open(path) as f:
        columns, *rows = list(csv.reader(f))
    return columns, [[value(v) for v in row] for row in rows]


def compare_runs(study, variants, title, course_iters=600):
    """Train each variant ({label: flags}); write curves.csv, final.csv and loss.png; return the trainers."""
    trainers, curve_rows, final_rows = {}, [], []
    for label, flags in variants.items():
        t0 = time.time()
        trainer = study.train(label, flags, course_iters)
        trainers[label] = trainer
        logs = trainer.logs
        for i, loss in enumerate(logs["train_losses"], start=1):
            curve_rows.append({"run": label, "iter": i, "train_loss": loss})
        final_rows.append({"run": label, "iters": len(logs["train_losses"]),
                           "final_train_loss": logs["train_losses"][-1],
                           "eval_train_loss": logs["eval_train_losses"][-1][1],
                           "val_loss": logs["val_losses"][-1][1],
                           "seconds": round(time.time() - t0, 1),
                           "ms_per_iter": median_after_warmup(logs["iter_time_ms"])})
    study.save_csv("curves", curve_rows)
    study.save_csv("final", final_rows)
    curves = {label: list(enumerate(t.logs["train_losses"], start=1)) for label, t in trainers.items()}
    study.save_figure(loss_curve_figure(curves, f"{title} ({study.scale} scale)"), "loss")
    return trainers, final_rows


def final_sample(trainer, config_sample=None, seed=0):
    """A sample from a trained run with the chargpt defaults (prompt "O God, O God!", top_k=10)."""
    C = config_sample or get_config().sample
    vocab = trainer.train_dataset.vocab
    return C.prompt + "".join(sample_tokens(trainer.model, vocab, C, trainer.device, seed))


def samples_table(samples):
    """{run: sample text} -> a Markdown table with one column per run, the samples side by side."""
    cells = [text.replace("\n", "<br>").replace("|", "\\|") for text in samples.values()]
    return f"| {' | '.join(samples)} |\n|{'---|' * len(samples)}\n| {' | '.join(cells)} |\n"


def study_args(description, argv=None, extra=None):
    """The options every study takes (--scale, --out, --wandb), and those `extra(parser)` adds; a bad one is one
    line, exit 2."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.error = fail
    if extra:
        extra(parser)
    parser.add_argument("--scale", choices=list(SCALES), default="quick")
    parser.add_argument("--out", default="out/experiments", help="folder that gets <study>/")
    parser.add_argument("--wandb", choices=["online", "offline", "disabled"], default=None,
                        help="wandb mode (default: online with a login, else offline)")
    return parser.parse_args(argv)

