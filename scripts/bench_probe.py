"""
Cost of the attention probes (`--trainer.probe_attention`, on by default) in training: the trainer's own step
(`Trainer.step`: forward under its autocast, backward, clipping, AdamW) of the model that chargpt flags give
(default: gpt-mini, batch 64, block 128) on random tokens, with the probe on and off on alternate steps of one
process, so that both halves see the same machine state; the median ms of each. Separate runs, as bench_train's
rows are, can differ by more than the probe costs on a shared machine.

    python scripts/bench_probe.py
    python scripts/bench_probe.py --steps 60 -- --trainer.dtype=float32     # any chargpt flag, after --
"""

import argparse
import statistics
import time

import torch

from mingpt.app.files import machine_info
from mingpt.app.probes import AttentionProbe
from mingpt.app.settings import build_model, config_from_flags
from mingpt.config import at_least
from mingpt.errors import check_script_args, fail
from mingpt.trainer import Trainer

VOCAB_SIZE = 65  # tiny-shakespeare's characters; the tokens are random, only the shapes matter


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="steps measured, half with the probe on")
    parser.add_argument("--warmup", type=int, default=4, help="steps left out first")
    parser.add_argument("flags", nargs="*", help="chargpt flags, after --")
    args = parser.parse_args()
    check_script_args(args, steps=at_least(2), warmup=at_least(0))
    config = config_from_flags(args.flags)
    if config.model.model_type != "gpt":
        fail(f"--model.model_type={config.model.model_type} has no attention to probe; use gpt")

    config.model.vocab_size, config.model.block_size = VOCAB_SIZE, config.data.block_size
    torch.manual_seed(config.system.seed)
    model = build_model(config.model)
    trainer = Trainer(config.trainer, model, train_dataset=None)  # step() takes its batches as given
    batch = config.trainer.batch_size, config.data.block_size
    x, y = torch.randint(VOCAB_SIZE, batch), torch.randint(VOCAB_SIZE, batch)

    times_ms = {True: [], False: []}
    for step in range(args.warmup + args.steps):
        probed = step % 2 == 0
        probe = AttentionProbe(model) if probed else None
        t0 = time.perf_counter()
        trainer.step(x, y)  # it ends by reading the loss, which waits for the device
        if step >= args.warmup:
            times_ms[probed].append((time.perf_counter() - t0) * 1000)
        if probe is not None:
            probe.remove()

    on, off = (statistics.median(times_ms[probe]) for probe in (True, False))
    print(machine_info())
    print(f"training step, batch {batch[0]} x {batch[1]}, {trainer.dtype_name} on {trainer.device}, "
          f"median of {len(times_ms[True])} steps with the probe and {len(times_ms[False])} without, alternating")
    print(f"probe on {on:.0f} ms, probe off {off:.0f} ms: the probe costs {on - off:+.0f} ms ({on / off - 1:+.1%})")


if __name__ == "__main__":
    main()
