"""
What scripts/speedrun.py measures with, beside karpathy's nanoGPT: the --data.val_fraction that gives nanoGPT's
validation split, a full pass over a split with any model of minGPT's interface (model(idx, targets) -> (logits,
loss): ours and nanoGPT's alike), the evaluation lines each program prints and the first at or below a target, and
a median with its spread. Its runs are timed by mingpt.experiments.bench.run_measured.
"""

import re
import statistics

import numpy as np
import torch

NANOGPT_TRAIN_SHARE = 0.9  # nanoGPT's data/shakespeare_char/prepare.py: train = data[:int(n * 0.9)], val = the rest
# the evaluation lines of the two programs: (iteration, val loss)
EVAL_LINES = {"chargpt": re.compile(r"^iter (\d+): train loss [\d.]+, val loss ([\d.]+)"),
              "nanoGPT": re.compile(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)")}


def nanogpt_val_fraction(n_chars):
    """The --data.val_fraction whose validation split is nanoGPT's for a text of n_chars characters. Ours holds out
    the last int(n * val_fraction) characters, nanoGPT n - int(n * 0.9): 0.1 gives one character fewer on
    tiny-shakespeare (111,539 against 111,540), so the fraction is that count plus a half, over n."""
    held_out = n_chars - int(n_chars * NANOGPT_TRAIN_SHARE)
    return (held_out + 0.5) / n_chars


@torch.no_grad()
def full_pass_loss(model, ids, context, batch_size=64):
    """Mean loss (nats per token) of `model` over a split's token ids, every token but the first predicted once:
    consecutive windows of `context` tokens, window i predicting ids[i*context + 1 .. (i+1)*context] from the
    tokens of its window before each, batch_size windows at a time, in eval mode and fp32; the last, shorter
    window on its own. The same windows for every model, whatever its block size (at least `context`)."""
    model.eval()
    device = next(model.parameters()).device
    ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    n = len(ids) - 1  # predictions
    whole = n // context
    x = ids[:whole * context].view(whole, context)  # (windows, context)
    y = ids[1:whole * context + 1].view(whole, context)
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, whole, batch_size)]
    if n % context:
        batches.append((ids[whole * context:-1][None], ids[whole * context + 1:][None]))
    nats = 0.0
    for xb, yb in batches:
        _, loss = model(xb.to(device), yb.to(device))
        nats += loss.double().item() * yb.numel()
    return nats / n


def evaluations(lines, program):
    """[(seconds, iteration, val loss)] of each evaluation line that `program` (chargpt or nanoGPT) printed."""
    found = []
    for seconds, line in lines:
        match = EVAL_LINES[program].match(line)
        if match:
            found.append((seconds, int(match.group(1)), float(match.group(2))))
    return found


def first_at_or_below(evals, target):
    """The first (seconds, iteration, val loss) of `evals` at or below target; None when none is."""
    return next((e for e in evals if e[2] <= target), None)


def spread(values):
    """{"median", "low", "high", "n"} of the values that are not None (None each when there are none)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "low": None, "high": None, "n": 0}
    return {"median": statistics.median(values), "low": min(values), "high": max(values), "n": len(values)}
