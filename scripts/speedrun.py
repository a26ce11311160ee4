"""
The speedrun of issue 32: two tracks of chargpt recipes measured side by side with karpathy's nanoGPT in one run,
on tiny-shakespeare characters with nanoGPT's split (the last 10%), every row the median of at least 3 seeds:

- 1.88: the wall time to a validation loss of 1.88, nanoGPT's documented CPU result (recipes/speedrun-1.88.txt,
  which stops there: --trainer.target_val_loss); the goal is at most a quarter of the wall time of nanoGPT's CPU
  command, measured in the same run;
- 10min: the lowest validation loss within 10 minutes of wall time (recipes/speedrun-10min.txt); the goal is a
  full-pass validation loss of at most 1.50 in at most 600 s.

    python scripts/speedrun.py --nanogpt ../nanoGPT                       # both tracks, seeds 0 1 2, nanoGPT beside
    python scripts/speedrun.py --nanogpt ../nanoGPT --tracks 1.88 --seeds 0 1 2 3 4
    python scripts/speedrun.py --skip-nanogpt --recipe 1.88=recipes/try.txt   # a candidate recipe on its own
    python scripts/speedrun.py --skip-nanogpt --scale quick                # a smoke test of the machinery
    python scripts/speedrun.py --nanogpt ../nanoGPT -- --system.num_threads=2   # chargpt flags for our runs

nanoGPT runs where it lies and is never copied: its data/shakespeare_char/prepare.py runs in a temporary folder
(through a link, beside a link to the corpus), so that train.bin and val.bin are written there, and its train.py
runs from another temporary folder with links to its config/ and configurator.py, without bytecode files, so that
nothing is written into the checkout. Its command is the one the issue measured from its README's CPU advice:

    train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1
        --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
        --lr_decay_iters=2000 --dropout=0.0

It seeds itself (1337) and has no seed flag: its runs (one per seed) vary in time, not in loss. Ours is
`chargpt.py @RECIPE` with --data.val_fraction set so that its validation split is nanoGPT's (0.1 would hold out
one character fewer: mingpt.experiments.speedrun.nanogpt_val_fraction), checked token by token against nanoGPT's val.bin.

The clock: each run is a subprocess timed from its launch to its exit (start-up, data, compile, every evaluation
and the checkpoint included), each line it prints time-stamped; the time to the target is the moment the first
evaluation line at or below it appears, the same clock for both programs. The evaluation: during training each
program's own estimate over random windows of the validation split (nanoGPT's command: 20 batches of 12 x 64
tokens; a recipe: its --trainer.eval_iters batches of its batch_size x block_size, 10 in both recipes), which is
what stops a run at the target; the final number of every run is a full pass over the validation split, the same
for both (mingpt.experiments.speedrun.full_pass_loss: every token predicted once, windows of --eval-context tokens,
nanoGPT's block size by default, fp32), of the model the run ends with (nanoGPT: the checkpoint it writes at its
last evaluation that improved), timed apart from the run.

Writes to --out (default out/speedrun): runs.csv (every run), summary.csv (median, low, high of each row of the
table), speedrun.json (those, the machine, torch, the commands and the goals) and runs/ (our runs' folders).
"""

import argparse
import os
import pickle
import shlex
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

from mingpt.app.checkpoint import load_checkpoint, load_state_into, saved_model_config
from mingpt.app.files import machine_info, save_json, write_csv
from mingpt.app.settings import build_model, config_from_flags
from mingpt.config import at_least
from mingpt.data.dataset import CharDataset
from mingpt.errors import check_script_args, fail
from mingpt.experiments.bench import run_measured
from mingpt.experiments.peers import NanoGPT
from mingpt.experiments.speedrun import evaluations, first_at_or_below, full_pass_loss, nanogpt_val_fraction, spread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARGPT = os.path.join(ROOT, "chargpt.py")
TARGET = 1.88  # nanoGPT's README: its CPU command reaches a validation loss of about 1.88
BUDGET_S = 600
GOAL_LOSS = 1.50  # nanoGPT's 10.7M-parameter model reaches 1.47 on an A100 after 5000 iterations
TRACKS = {"1.88": "recipes/speedrun-1.88.txt", "10min": "recipes/speedrun-10min.txt"}
NANOGPT_FLAGS = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
                 "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                 "--lr_decay_iters=2000", "--dropout=0.0"]
NANOGPT_BLOCK = 64
# --scale quick, a smoke test: a few iterations and small evaluations on each side (after every other flag)
QUICK = {"chargpt": ["--trainer.max_iters=8", "--trainer.eval_interval=4", "--trainer.eval_iters=2"],
         "nanoGPT": ["--max_iters=8", "--lr_decay_iters=8", "--eval_interval=4", "--eval_iters=2"]}


class NanoGPTRuns:
    """nanoGPT's CPU command from the checkout `nano` (mingpt.experiments.peers.NanoGPT), on its data prepared from `corpus`
    in the temporary folder `tmp`."""

    def __init__(self, nano, corpus, tmp):
        self.nano, self.tmp = nano, tmp
        self.data = os.path.join(tmp, "nanogpt-data", "data")
        nano.prepare(corpus, self.data)
        prepared = os.path.join(self.data, "shakespeare_char")
        self.val_ids = np.fromfile(os.path.join(prepared, "val.bin"), dtype=np.uint16)
        with open(os.path.join(prepared, "meta.pkl"), "rb") as f:  # written just now, by its prepare.py
            itos = pickle.load(f)["itos"]
        self.tokens = [itos[i] for i in range(len(itos))]
        self.args = ["config/train_shakespeare_char.py", *NANOGPT_FLAGS]

    def run(self, index, scale_flags, context):
        """One run of its CPU command in a folder of its own: the row of runs.csv."""
        run_dir = os.path.join(self.tmp, f"nanogpt-{index}")
        run = self.nano.train(self.args + scale_flags, self.data, run_dir)
        ckpt = os.path.join(run_dir, "out-shakespeare-char", "ckpt.pt")
        model = self.nano.model(ckpt) if os.path.exists(ckpt) else None
        return row("nanoGPT", "nanoGPT's CPU command", 1337, run.wall_s, evaluations(run.lines, "nanoGPT"), model,
                   self.val_ids, context)


def row(track, name, seed, wall, evals, model, val_ids, context):
    """What one run measured: wall time, the first evaluation at or below the target, the last in-run validation
    loss, and the full pass over the validation split (None without a model)."""
    hit = first_at_or_below(evals, TARGET)
    t0 = time.perf_counter()
    full = None if model is None else full_pass_loss(model.float(), val_ids, context)
    return {"track": track, "run": name, "seed": seed, "wall_s": round(wall, 2),
            "target_s": None if hit is None else round(hit[0], 2), "target_iter": None if hit is None else hit[1],
            "evaluations": len(evals), "last_iter": evals[-1][1] if evals else None,
            "last_val": evals[-1][2] if evals else None, "full_val": None if full is None else round(full, 4),
            "full_pass_s": round(time.perf_counter() - t0, 2)}


def ours(track, recipe, seed, args, flags, fraction, val_ids):
    """One chargpt.py run of `recipe`: the row of runs.csv."""
    work_dir = os.path.join(args.out, "runs", f"{track}-seed{seed}")
    shutil.rmtree(work_dir, ignore_errors=True)
    command = [sys.executable, CHARGPT, f"@{recipe}", f"--data.input_file={args.corpus}",
               f"--data.val_fraction={fraction!r}", f"--system.seed={seed}", f"--system.work_dir={work_dir}",
               f"--system.wandb={args.wandb}", *flags]
    run = run_measured(command, env={"PYTHONUNBUFFERED": "1"})
    if run.status:
        fail(f"chargpt.py @{recipe} (seed {seed}) exited with status {run.status}: {run.last_line()}")
    path = os.path.join(work_dir, "model.pt")
    ckpt = load_checkpoint(path)
    model = build_model(saved_model_config(ckpt, path))
    load_state_into(model, ckpt["model"], path)
    return row(track, f"chargpt @{os.path.relpath(recipe, ROOT)}", seed, run.wall_s,
               evaluations(run.lines, "chargpt"), model, val_ids, args.eval_context)


def shown(stats, digits):
    if stats["median"] is None:
        return "-"
    low, high = (f"{stats[k]:.{digits}f}" for k in ("low", "high"))
    return f"{stats['median']:.{digits}f} ({low}-{high})"


def summarize(rows):
    """Per track (nanoGPT's command first), in the order met: the median, low and high of what its runs measured."""
    out = {}
    for track in dict.fromkeys(r["track"] for r in rows):
        runs = [r for r in rows if r["track"] == track]
        stats = {key: spread([r[key] for r in runs]) for key in ("wall_s", "target_s", "last_val", "full_val",
                                                                  "full_pass_s")}
        out[track] = {"run": runs[0]["run"], "runs": len(runs), "reached": stats["target_s"]["n"], "stats": stats}
    return out


def goals(summary, tracks):
    """Whether each track's goal is met, in words."""
    nano = summary["nanoGPT"]["stats"] if "nanoGPT" in summary else None
    said = {}
    for track in tracks:
        stats = summary[track]["stats"]
        if track == "1.88":
            if nano is None or stats["target_s"]["median"] is None:
                said[track] = "not measured" if nano is None else f"not met: {TARGET} not reached"
            else:
                limit = nano["wall_s"]["median"] / 4
                met = stats["target_s"]["median"] <= limit
                said[track] = f"{'met' if met else 'not met'}: {stats['target_s']['median']:.1f} s to {TARGET} " \
                              f"against a quarter of nanoGPT's {nano['wall_s']['median']:.1f} s ({limit:.1f} s)"
        else:
            wall, loss = stats["wall_s"]["median"], stats["full_val"]["median"]
            met = wall <= BUDGET_S and loss <= GOAL_LOSS
            said[track] = f"{'met' if met else 'not met'}: full-pass val loss {loss:.4f} (goal {GOAL_LOSS}) in " \
                          f"{wall:.1f} s (budget {BUDGET_S} s)"
    return said


def table(summary, header):
    lines = [header, "", f"| run | runs | wall s | to {TARGET} s (runs that reached it) | in-run val | full-pass val "
                         f"| full pass s |", "|---|---|---|---|---|---|---|"]
    for s in summary.values():
        st = s["stats"]
        lines.append(f"| {s['run']} | {s['runs']} | {shown(st['wall_s'], 1)} | {shown(st['target_s'], 1)} "
                     f"({s['reached']}) | {shown(st['last_val'], 4)} | {shown(st['full_val'], 4)} | "
                     f"{shown(st['full_pass_s'], 1)} |")
    return "\n".join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.error = fail  # a bad option is one line, exit 2
    parser.add_argument("--nanogpt", default=os.path.join(os.path.dirname(ROOT), "nanoGPT"),
                        help="a checkout of karpathy/nanoGPT (default: beside this project)")
    parser.add_argument("--skip-nanogpt", action="store_true", help="our tracks alone")
    parser.add_argument("--tracks", nargs="+", choices=list(TRACKS), default=list(TRACKS))
    parser.add_argument("--recipe", action="append", default=[], metavar="TRACK=PATH",
                        help="another recipe for a track (default: recipes/speedrun-<track>.txt)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="at least 3; nanoGPT runs once each")
    parser.add_argument("--corpus", default=os.path.join(ROOT, "input.txt"), help="tiny-shakespeare")
    parser.add_argument("--eval-context", type=int, default=NANOGPT_BLOCK,
                        help="tokens per window of the full pass (at most every model's block size)")
    parser.add_argument("--scale", choices=["full", "quick"], default="full",
                        help="quick: a smoke test, a few iterations on each side")
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "speedrun"))
    parser.add_argument("--wandb", choices=["online", "offline", "disabled"], default="disabled",
                        help="our runs' wandb mode (nanoGPT's command logs none)")
    ours_flags = []
    if argv is None:
        argv = sys.argv[1:]
    if "--" in argv:
        argv, ours_flags = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    args = parser.parse_args(argv)
    check_script_args(args, eval_context=at_least(1))
    tracks = {t: os.path.join(ROOT, TRACKS[t]) for t in args.tracks}
    for given in args.recipe:
        track, _, path = given.partition("=")
        if track not in TRACKS or not path:
            fail(f"--recipe {given}: give TRACK=PATH with TRACK one of {', '.join(TRACKS)}")
        tracks[track] = os.path.abspath(path)
    if len(set(args.seeds)) < 3:
        fail(f"--seeds {' '.join(map(str, args.seeds))}: give at least 3 different seeds (a record is a median)")
    if not os.path.isfile(args.corpus):
        fail(f"--corpus {args.corpus}: no such file")
    nano = None if args.skip_nanogpt else NanoGPT(args.nanogpt, "--nanogpt", " or --skip-nanogpt")
    if nano and args.eval_context > NANOGPT_BLOCK:
        fail(f"--eval-context {args.eval_context}: above the block size of nanoGPT's command ({NANOGPT_BLOCK})")
    return args, tracks, ours_flags, nano


def main(argv=None):
    args, tracks, extra, checkout = parse(argv)
    scale = QUICK if args.scale == "quick" else {"chargpt": [], "nanoGPT": []}
    flags = scale["chargpt"] + extra
    for track, recipe in tracks.items():  # every recipe checked, as chargpt checks it, before anything runs
        config = config_from_flags([f"@{recipe}", *flags])
        if config.data.block_size < args.eval_context:
            fail(f"@{recipe}: --data.block_size={config.data.block_size} is below --eval-context "
                 f"{args.eval_context}")
    with open(args.corpus, encoding="utf-8") as f:
        fraction = nanogpt_val_fraction(len(f.read()))
    data = config_from_flags([f"--data.input_file={args.corpus}", f"--data.val_fraction={fraction!r}"]).data
    dataset = CharDataset.from_corpus(data)
    val_ids = np.asarray(dataset.splits["val"])
    os.makedirs(args.out, exist_ok=True)
    rows, commands = [], []
    with tempfile.TemporaryDirectory(prefix="speedrun-") as tmp:
        nano = None if checkout is None else NanoGPTRuns(checkout, args.corpus, tmp)
        if nano and (nano.tokens != dataset.vocab.tokens or not np.array_equal(nano.val_ids, val_ids)):
            fail("our validation split is not nanoGPT's (its val.bin differs from ours); report this")
        if nano:
            commands.append(" ".join(shlex.quote(a) for a in checkout.train_command(nano.args + scale["nanoGPT"])))
        commands += [f"python chargpt.py @{os.path.relpath(r, ROOT)} --data.val_fraction={fraction!r} "
                     f"--system.seed=SEED " + " ".join(shlex.quote(f) for f in flags) for r in tracks.values()]
        for i, seed in enumerate(args.seeds):  # interleaved, so that a change in the machine's load hits all
            if nano:
                rows.append(nano.run(i, scale["nanoGPT"], args.eval_context))
            for track, recipe in tracks.items():
                rows.append(ours(track, recipe, seed, args, flags, fraction, val_ids))
            for r in rows[-len(tracks) - bool(nano):]:
                print(f"{r['run']}, seed {r['seed']}: {r['wall_s']:.1f} s, to {TARGET}: {r['target_s'] or '-'} s, "
                      f"full-pass val {r['full_val']}", flush=True)
    summary = summarize(rows)
    said = goals(summary, tracks)
    header = (f"speedrun, {time.strftime('%Y-%m-%d')}: {machine_info()}\n"
              f"seeds {' '.join(map(str, args.seeds))}; scale {args.scale}; final number: a full pass over the "
              f"{len(val_ids) - 1:,} predictions of the validation split in windows of {args.eval_context} tokens")
    print(table(summary, header))
    for track, text in said.items():
        print(f"goal of track {track}: {text}")
    write_csv(rows, os.path.join(args.out, "runs.csv"))
    write_csv([{"track": track, "run": s["run"], "runs": s["runs"], "reached": s["reached"],
                **{f"{key}_{k}": v for key, st in s["stats"].items() for k, v in st.items() if k != "n"}}
               for track, s in summary.items()], os.path.join(args.out, "summary.csv"))
    save_json({"machine": machine_info(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
               "seeds": args.seeds, "scale": args.scale, "eval_context": args.eval_context,
               "val_fraction": fraction, "commands": commands, "goals": said, "summary": summary, "runs": rows},
              os.path.join(args.out, "speedrun.json"))
    print(f"wrote {args.out}/runs.csv, summary.csv, speedrun.json")


if __name__ == "__main__":
    main()
