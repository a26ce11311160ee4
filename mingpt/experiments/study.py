"""
What every study in scripts/ shares: its options, its scales, and a plan of runs carried out so that its results
outlive the process. Each training run (and each measurement that trains nothing) leaves a record in
results/<study>/<scale>/ (mingpt/experiments/records.py); a study started again skips every run whose record is there,
on this machine or another, and continues an interrupted run from its checkpoint where the run's folder is still
there. `--max-minutes M` starts only the runs that fit in what is left of M minutes, stops a run that will not
(its checkpoint kept for the next start), and says how to go on.

  results/<study>/<scale>/study.json   the plan of the last start: its command and its runs' record files, in order
  results/<study>/<scale>/*.json       one record per run
  out/experiments/<study>/<scale>/     the runs' folders (runs/), the tables (*.csv) and figures (*.png) built from
                                       the records (mingpt/experiments/study_report.py), commands.txt

Runs go to wandb (offline unless logged in) in one group per study and scale (e.g. gqa_cost-cpu), each named
<study>-<scale>/<setting> with the config it trained with; an `analysis` run of the study's own settings holds
its figures, its tables and the sample of each training run.
"""

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from typing import Callable, NamedTuple

from mingpt.app.dashboard import WandbRun
from mingpt.app.files import check_writable_folder, save_json, write_csv
from mingpt.app.run import train
from mingpt.app.sample_text import sample_tokens
from mingpt.app.settings import get_config
from mingpt.errors import fail
from mingpt.errors import UserError
from mingpt.experiments.bench import median_after_warmup
from mingpt.experiments.records import DamagedRecord, measurement_record, read_record, record_key, record_name, \
    run_record, slug, write_record
from mingpt.experiments.study_report import section

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
EVALUATIONS = 6  # per run: also its checkpoints, so that a kill loses at most a sixth of a run


class TrainingRun(NamedTuple):
    """One training run of a study's plan: chargpt.py flags after the scale's, and the iterations the course
    gives it. measure(trainer) -> the study's own numbers for the run, kept in its record's `final`."""
    label: str
    flags: list
    course_iters: int = 600
    measure: Callable = None
    needs: str = None  # the label of an earlier run whose trained folder this one starts from


class Measurement(NamedTuple):
    """A measurement of a study's plan that trains nothing: compute() -> (rows, extra), kept in its record's
    `final`. params: what it depends on besides the scale (part of its record's key)."""
    label: str
    compute: Callable
    params: tuple = ()


class OutOfTime(Exception):
    """--max-minutes is spent: the study stops between runs (or at a run's checkpoint)."""


def study_args(description, argv=None, extra=None):
    """The options every study takes, and those `extra(parser)` adds; a bad one is one line, exit 2, before
    anything trains or is written."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.error = fail
    if extra:
        extra(parser)
    parser.add_argument("--scale", choices=list(SCALES), default="quick")
    parser.add_argument("--results", default="results",
                        help="folder of the runs' records: results/<study>/<scale>/ (default: results)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="start only the runs that fit in this many minutes, then stop and say how to go on")
    parser.add_argument("--out", default="out/experiments", help="folder that gets <study>/<scale>/: the runs' "
                                                                 "folders, tables and figures")
    parser.add_argument("--corpus", help="the text to train on (default: chargpt's, input.txt)")
    parser.add_argument("--wandb", choices=["online", "offline", "disabled"], default=None,
                        help="wandb mode (default: online with a login, else offline)")
    args = parser.parse_args(argv)
    if args.max_minutes is not None and not args.max_minutes > 0:
        fail(f"--max-minutes={args.max_minutes:g}: give a positive number of minutes")
    for flag, folder in (("--results", args.results), ("--out", args.out)):
        try:
            check_writable_folder(folder, flag)
        except UserError as e:
            fail(e)
    if args.corpus is not None and not os.path.exists(args.corpus):
        fail(f"--corpus={args.corpus} does not exist; give a text file or a folder of *.txt files")
    return args


class Study:

    def __init__(self, name, args):
        self.name, self.scale, self.args = name, args.scale, args
        self.records = os.path.join(args.results, name, args.scale)
        self.dir = os.path.join(args.out, name, args.scale)
        self.group = f"{name}-{args.scale}"  # wandb's group: the scales of one study stay apart
        self.command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        self.commands = [self.command]
        self.started = time.time()
        self.deadline = None if args.max_minutes is None else self.started + 60 * args.max_minutes
        self.made = 0  # runs and measurements made by this start
        self.out_of_time = False  # set by the budget guard when it stops a run

    def iters(self, course_iters):
        """The number of iterations this scale runs for a step the course runs `course_iters` iterations."""
        return SCALES[self.scale]["iters"](course_iters)

    def flags(self, item):
        """The chargpt.py flags of a planned training run, its output folders aside."""
        corpus = [f"--data.input_file={self.args.corpus}"] if self.args.corpus else []
        iters = self.iters(item.course_iters)
        return COURSE_FLAGS + SCALES[self.scale]["flags"] + [
            f"--trainer.max_iters={iters}", f"--trainer.eval_interval={max(1, iters // EVALUATIONS)}"] + \
            corpus + list(item.flags)

    def run_dir(self, label, flags):
        return os.path.join(self.dir, "runs", f"{slug(label)}-{record_key(flags)}")

    def output_flags(self, label, flags, iters):
        out = [f"--system.work_dir={self.run_dir(label, flags)}",
               f"--trainer.checkpoint_interval={max(1, iters // EVALUATIONS)}",
               f"--system.wandb_group={self.group}", f"--system.wandb_name={self.group}/{label}",
               f"--system.wandb_tags={self.name},{self.scale}"]
        return out + ([f"--system.wandb={self.args.wandb}"] if self.args.wandb else [])

    # -------------------------------------------------------------------------------------------------------------
    # the plan

    def run(self, plan):
        """Carry out the plan (TrainingRun and Measurement items, in order); returns {label: record}. Stops the
        program with one line when --max-minutes is spent or on Ctrl-C; the records written stay valid."""
        keys = [record_key(self.flags(i) if isinstance(i, TrainingRun) else self.measurement_flags(i)) for i in plan]
        manifest = {"study": self.name, "scale": self.scale, "scale_note": SCALES[self.scale]["note"],
                    "command": self.command, "runs": [record_name(i.label, k) for i, k in zip(plan, keys)]}
        records, self.plan = {}, {item.label: item for item in plan}
        for k, (item, key) in enumerate(zip(plan, keys), start=1):
            where = f"[{self.name} {self.scale}] run {k} of {len(plan)}, {item.label}"
            record = self.recorded(item.label, key)
            if record is not None:
                print(f"{where}: recorded in {os.path.join(self.records, record_name(item.label, key))}; "
                      f"not made again")
            else:
                try:
                    record = self.train(item, where, plan[k:]) if isinstance(item, TrainingRun) else \
                        self.measure(item, where)
                except OutOfTime:
                    self.stop_for_time(plan, records, k)
                except KeyboardInterrupt:
                    print(f"[{self.name} {self.scale}] interrupted: {len(records)} of {len(plan)} runs recorded "
                          f"in {self.records}; the run in progress goes on from its checkpoint with: "
                          f"{self.command}", file=sys.stderr)
                    sys.exit(130)
            records[item.label] = record
            if len(records) == 1:  # once the first run has found its data and settings good
                save_json(manifest, os.path.join(self.records, "study.json"))
        print(f"[{self.name} {self.scale}] {len(plan)} of {len(plan)} runs recorded in {self.records} "
              f"({self.made} made by this start, in {duration(time.time() - self.started)})")
        return records

    def recorded(self, label, key):
        """The record of this run, or None (a damaged one is said in one line and its run trained again)."""
        path = os.path.join(self.records, record_name(label, key))
        if not os.path.exists(path):
            return None
        try:
            return read_record(path)
        except DamagedRecord as e:
            print(f"warning: {path} {e}; training that run again and writing its record anew", file=sys.stderr)
            return None

    def seconds_per_iter(self):
        """The median wall seconds per iteration of this study's runs recorded at this scale (None: none yet)."""
        rates = []
        for name in os.listdir(self.records) if os.path.isdir(self.records) else []:
            if name.endswith(".json") and name != "study.json":
                try:
                    record = read_record(os.path.join(self.records, name))
                except DamagedRecord:
                    continue
                if record["kind"] == "run" and record.get("wall_s") and record["final"]["iter"]:
                    rates.append(record["wall_s"] / record["final"]["iter"])
        return statistics.median(rates) if rates else None

    def expected_s(self, items):
        rate = self.seconds_per_iter()
        if rate is None:
            return None
        return sum(rate * config_iters(self.flags(i)) for i in items if isinstance(i, TrainingRun))

    def stop_for_time(self, plan, records, k):
        left = self.expected_s(plan[k - 1:])
        estimate = f" (about {duration(left)})" if left else ""
        print(f"[{self.name} {self.scale}] --max-minutes={self.args.max_minutes:g} spent: {len(records)} of "
              f"{len(plan)} runs done, {len(plan) - len(records)} left{estimate}; go on with: {self.command}")
        sys.exit(0)

    # -------------------------------------------------------------------------------------------------------------
    # one run

    def trained_folder(self, label):
        """The folder of an earlier run of the plan, trained again first where it is not there whole (its record
        can come from another machine)."""
        item = self.plan[label]
        flags = self.flags(item)
        folder = self.run_dir(label, flags)
        logs = os.path.join(folder, "train_logs.json")
        if not (os.path.exists(logs) and len(read_json(logs)["train_losses"]) == config_iters(flags)):
            self.train(item, f"[{self.name} {self.scale}] {label} (needed by the next run)", [])
        return folder

    def train(self, item, where, after):
        """Train one planned run (from its checkpoint where its folder has one) and write its record."""
        if item.needs is not None:
            self.trained_folder(item.needs)
        flags = self.flags(item)
        config = get_config()
        config.merge_from_args(flags)
        iters = config.trainer.max_iters
        expected = self.expected_s([item])
        left = self.expected_s(after)
        if self.deadline is not None and expected is not None and time.time() + expected > self.deadline:
            raise OutOfTime
        estimate = "" if expected is None else f" (expected {duration(expected)}" + (
            f"; {duration(left)} more after it)" if left else ")")
        print(f"{where}: training{estimate}")
        full = flags + self.output_flags(item.label, flags, iters)
        work_dir = self.run_dir(item.label, flags)
        resume = os.path.exists(os.path.join(work_dir, "ckpt.pt"))
        config.merge_from_args(full[len(flags):] + (["--trainer.resume=True"] if resume else []))
        command = "python chargpt.py " + " ".join(shlex.quote(f) for f in full)
        self.commands.append(command)
        t0 = time.time()
        try:
            trainer = train(config, callbacks=[("on_batch_end", self.budget_guard())])
        except UserError as e:
            again = f" (or delete {work_dir} to train the run from its start)" if resume else ""
            fail(f"{e}{again}")
        except KeyboardInterrupt:
            if self.out_of_time:
                raise OutOfTime from None
            raise
        self.made += 1
        numbers = item.measure(trainer) if item.measure else {}
        numbers["ms_per_iter"] = median_after_warmup(trainer.logs["iter_time_ms"])
        tokens_per_iter = config.trainer.batch_size * trainer.train_dataset.get_block_size()
        record = run_record(item.label, command, full, read_json(os.path.join(work_dir, "config.json")), trainer.logs,
                            tokens_per_iter, numbers, final_sample(trainer))
        record = read_record(write_record(record, self.records))  # as the report will read it
        print(f"{where}: done in {time.time() - t0:.0f} s (val loss {record['final']['val_loss']:.4f})")
        return record

    def budget_guard(self):
        """An on_batch_end callback that stops the run (its checkpoint saved, for the next start) once the deadline
        has come, or at its fifth iteration when the pace of its first ones says it cannot end before it."""
        times = []

        def guard(trainer):
            if self.deadline is None:
                return
            now = time.time()
            times.append(now)
            pace = (times[-1] - times[0]) / 4 if len(times) == 5 else 0
            if now >= self.deadline or now + pace * (trainer.config.max_iters - trainer.iters_done) > self.deadline:
                self.out_of_time = trainer.stop_requested = True
        return guard

    def measurement_flags(self, item):
        """What a measurement's record key is made of: the study, the measurement, the scale and its params."""
        return [f"{self.name}:{item.label}", f"--scale={self.scale}", *map(str, item.params)]

    def measure(self, item, where):
        print(f"{where}: measuring")
        t0 = time.time()
        rows, extra = item.compute()
        record = measurement_record(item.label, self.command, self.measurement_flags(item), rows, time.time() - t0,
                                    extra)
        self.made += 1
        return read_record(write_record(record, self.records))

    # -------------------------------------------------------------------------------------------------------------
    # the tables and figures

    def finish(self, records):
        """The study's tables, figures and samples, built from its records as the report builds them, in
        out/experiments/<study>/<scale>/ and in the wandb analysis run; commands.txt."""
        built = section(self.name, self.scale, records)
        os.makedirs(self.dir, exist_ok=True)
        for name, rows in built.tables.items():
            write_csv(rows, os.path.join(self.dir, name + ".csv"))
        for name, fig in built.figures.items():
            fig.savefig(os.path.join(self.dir, name + ".png"), dpi=110)
        with open(os.path.join(self.dir, "commands.txt"), "w") as f:
            f.write("\n".join(self.commands) + "\n")
        info = {"study": self.name, "scale": self.scale, "scale_note": SCALES[self.scale]["note"],
                "records": self.records, "seconds": round(time.time() - self.started, 1),
                "date": time.strftime("%Y-%m-%d")}
        system = get_config().system
        system.wandb, system.wandb_group, system.wandb_tags = self.args.wandb, self.group, f"{self.name},{self.scale}"
        run = WandbRun(system, info, self.dir, job_type="analysis", name=f"{self.group}/analysis")
        tables = {name: table_columns(rows) for name, rows in built.tables.items()}
        if built.samples:
            tables["samples"] = (["run", "sample"], [[label, text] for label, text in built.samples.items()])
        run.log_files({name: os.path.join(self.dir, name + ".png") for name in built.figures}, tables)
        run.finish()
        print(f"{self.name} ({self.scale}): records in {self.records}, tables and figures in {self.dir}")
        return built


def duration(seconds):
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table_columns(rows):
    """Rows (dicts) as (columns, rows of values)."""
    columns = list(rows[0])
    return columns, [[row[c] for c in columns] for row in rows]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def config_iters(flags):
    config = get_config()
    config.merge_from_args(flags)
    return config.trainer.max_iters


def final_sample(trainer, config_sample=None, seed=0):
    """A sample from a trained run with the chargpt defaults (prompt "O God, O God!", top_k=10)."""
    C = config_sample or get_config().sample
    vocab = trainer.train_dataset.vocab
    return C.prompt + "".join(sample_tokens(trainer.model, vocab, C, trainer.device, seed))
