"""
Cost of the attention probes (`--trainer.probe_attention`, on by default) in training: a step of the default
model (gpt-mini, batch 64, block 128, dropout 0.1: forward under the trainer's autocast, backward, AdamW) on
random tokens, with the probe on and off on alternate steps of one process, so that both halves see the same
machine state; the median ms of each. Separate runs, as bench_train's rows are, can differ by more than the
probe costs on a shared machine.

    python scripts/bench_probe.py
    python scripts/bench_probe.py --dtype float32 --steps 40
"""

import argparse
import statistics
import time

import torch

from mingpt.model import GPT
from mingpt.run import get_config
from mingpt.trainer import native_bf16
from mingpt.utils import machine_info


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="steps measured, half with the probe on")
    parser.add_argument("--warmup", type=int, default=4, help="steps left out first")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="as --trainer.dtype: auto is bf16 autocast where the CPU has native bf16")
    args = parser.parse_args()

    config = get_config()
    config.model.vocab_size, config.model.block_size = 65, config.data.block_size
    torch.manual_seed(0)
    model = GPT(config.model).train()
    optimizer = model.configure_optimizers(config.trainer)
    bf16 = args.dtype == "bfloat16" or (args.dtype == "auto" and native_bf16("cpu"))
    batch = config.trainer.batch_size, config.data.block_size
    x, y = torch.randint(65, batch), torch.randint(65, batch)

    times_ms = {True: [], False: []}
    for step in range(args.warmup + args.steps):
        probe = step % 2 == 0
        model.set_attention_probe(probe)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times_ms[probe].append((time.perf_counter() - t0) * 1000)

    on, off = (statistics.median(times_ms[probe]) for probe in (True, False))
    print(machine_info())
    print(f"gpt-mini training step, batch {batch[0]} x {batch[1]}, {'bfloat16 autocast' if bf16 else 'float32'}, "
          f"median of {args.steps // 2} steps each, alternating")
    print(f"probe on {on:.0f} ms, probe off {off:.0f} ms: the probe costs {on - off:+.0f} ms ({on / off - 1:+.1%})")


if __name__ == "__main__":
    main()
