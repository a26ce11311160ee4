"""
A study's results that outlive its process: one small JSON record per training run (and one per measurement that
trains nothing), committed under results/<study>/<scale>/, from which a study resumes on any machine and the report
is rebuilt in any checkout.

A record is named `<label>-<key>.json`, where key is a hash of the run's chargpt.py flags without the ones that only
say where its files and wandb run go: the same flags and seed make the same file name wherever they run. It holds

  command      the exact `python chargpt.py ...` command (a measurement: the script's own command)
  key          the hash in its file name, and flags, the flags that were hashed
  config       the run's resolved settings (its config.json)
  commit, dirty  the git commit of the checkout, and whether files outside results/ differed from it
  date, machine, torch   when and where: {"cpu", "cores", "bf16_native", "gpu"}, and torch's version
  wall_s       the run's own clock at its last evaluation (start-up, compile and evaluations included; a resumed
               run carries the time of the processes before it)
  curve        every evaluation: iter, tokens, elapsed_s, train_loss, val_loss, val_bpc
  train_losses the loss of every iteration (rounded to 5 digits), for the loss plots
  final        the last evaluation's iter, train_loss and val_loss, and the study's own numbers for the run
  sample       the run's sample (chargpt's prompt and sampling settings), or null

Every record is written atomically (a temporary file renamed over it). A file that is not a record of this
format (truncated, foreign JSON, another key than its name says) is a DamagedRecord: the study says so in one
line and trains that run again.
"""

import hashlib
import json
import os
import re
import subprocess
import time

import torch

from mingpt.app.files import cpu_model, save_json
from mingpt.device import native_bf16

FORMAT = 1
RECORD_KEYS = ("format", "kind", "label", "command", "key", "flags", "commit", "dirty", "date", "machine", "torch",
               "final")
# flags that say where and when a run's files and wandb records are written, not what it computes
OUTPUT_FLAGS = ("--system.work_dir=", "--system.wandb", "--trainer.resume=", "--trainer.checkpoint_interval=")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DamagedRecord(Exception):
    """A file among the records that is not a whole record of this format."""


def computing_flags(flags):
    """The flags that decide what a run computes: all but the output ones, in their order (a later flag wins)."""
    return [f for f in flags if not f.startswith(OUTPUT_FLAGS)]


def record_key(flags):
    """A short hash of the flags that decide what a run computes."""
    return hashlib.sha256("\n".join(computing_flags(flags)).encode()).hexdigest()[:10]


def slug(label):
    return re.sub("[^A-Za-z0-9]+", "_", label).strip("_")


def record_name(label, key):
    return f"{slug(label)}-{key}.json"


def machine():
    """The CPU's model, its cores, whether it multiplies bf16 natively, and the GPU (None without one)."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "bf16_native": native_bf16("cpu"), "gpu": gpu}


def git(*args, root=ROOT):
    """git's output in the project's checkout, or None where there is no git or no checkout."""
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state():
    """(commit, dirty): HEAD, and whether a tracked file outside results/ differs from it."""
    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return commit, bool(changes)


def changed_since(commit, paths=("mingpt",)):
    """The files under `paths` that differ between `commit` and the checkout's HEAD; None when git or the commit
    is not there."""
    if not commit or git("cat-file", "-e", f"{commit}^{{commit}}") is None:
        return None
    names = git("diff", "--name-only", commit, "HEAD", "--", *paths)
    return None if names is None else [n for n in names.splitlines() if n]


def stamp():
    """What every record says of where and when it was made."""
    commit, dirty = git_state()
    return {"format": FORMAT, "commit": commit, "dirty": dirty, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": machine(), "torch": torch.__version__}


def curve(logs, tokens_per_iter):
    """Every evaluation of a run's logs: iteration, tokens, elapsed seconds, train and val loss, val bpc."""
    elapsed, train, bpc = (dict(logs[k]) for k in ("eval_elapsed_s", "eval_train_losses", "val_bpc"))
    return [{"iter": it, "tokens": it * tokens_per_iter, "elapsed_s": round(elapsed[it], 3),
             "train_loss": train[it], "val_loss": val, "val_bpc": bpc[it]} for it, val in logs["val_losses"]]


def run_record(label, command, flags, config, logs, tokens_per_iter, numbers=None, sample=None):
    """The record of one finished training run: `logs` its train_logs, `numbers` the study's own for it."""
    points = curve(logs, tokens_per_iter)
    last = points[-1] if points else {"iter": len(logs["train_losses"]), "train_loss": None, "val_loss": None,
                                      "elapsed_s": None}
    return {**stamp(), "kind": "run", "label": label, "command": command, "key": record_key(flags),
            "flags": computing_flags(flags), "config": config, "wall_s": last["elapsed_s"], "curve": points,
            "train_losses": [round(v, 5) for v in logs["train_losses"]],
            "final": {"iter": last["iter"], "train_loss": last["train_loss"], "val_loss": last["val_loss"],
                      **(numbers or {})},
            "sample": sample}


def measurement_record(label, command, flags, rows, wall_s, extra=None):
    """The record of a measurement that trains nothing (a kernel benchmark, a numerical check): its rows."""
    return {**stamp(), "kind": "measurement", "label": label, "command": command, "key": record_key(flags),
            "flags": computing_flags(flags), "wall_s": round(wall_s, 3), "final": {"rows": rows, **(extra or {})},
            "sample": None}


def write_record(record, folder):
    """Write `record` atomically as folder/<label>-<key>.json; returns its path."""
    path = os.path.join(folder, record_name(record["label"], record["key"]))
    save_json(record, path)
    return path


def read_record(path):
    """The record in `path`, or DamagedRecord saying what is wrong with it (not JSON, not a record, the wrong
    format, another key than its file name)."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise DamagedRecord(f"cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise DamagedRecord(f"is not whole JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(record, dict) or any(k not in record for k in RECORD_KEYS):
        raise DamagedRecord("is not a run record (keys missing)")
    if record["format"] != FORMAT:
        raise DamagedRecord(f"is of record format {record['format']!r}, not {FORMAT}")
    if not os.path.basename(path).endswith(f"-{record['key']}.json") or record_key(record["flags"]) != record["key"]:
        raise DamagedRecord("does not hold the run its name says (its key differs)")
    return record
