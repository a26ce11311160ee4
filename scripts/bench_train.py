"""
Training speed of `python chargpt.py` as a user runs it: ms per iteration, tokens/s, achieved GFLOP/s, MFU
against the matmul peak measured here in the run's dtype, and peak RSS, for the default config (chargpt flags
after the options pass through). With several process counts, each runs under torchrun with the machine's cores
shared out (threads per process = cores / processes), so every configuration uses the same cores.

    python scripts/bench_train.py                                   # the default run: gpt-mini, batch 64, fp32
    python scripts/bench_train.py --processes 1 2                   # 1 process x 2 threads vs 2 x 1 (DDP, gloo)
    python scripts/bench_train.py -- --trainer.dtype=bfloat16       # any chargpt flag, after --

Each configuration trains warmup + iters iterations in a temporary folder and reports the median of the
iterations after the warm-up (chargpt's own per-iteration times, train_logs.json); rounds > 1 interleaves the
configurations and takes the median over rounds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from mingpt.bench import matmul_peak_flops
from mingpt.model import GPT
from mingpt.utils import machine_info

CHARGPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "chargpt.py")


def train_once(flags, processes, threads, iters, warmup):
    """One short run: (median ms/iter after warm-up, peak RSS of the largest process in MiB, config.json)."""
    with tempfile.TemporaryDirectory() as work_dir:
        run = [f"--system.work_dir={work_dir}", f"--trainer.max_iters={warmup + iters}", "--trainer.eval_interval=0",
               "--trainer.eval_iters=1", "--trainer.sample_interval=0", "--trainer.checkpoint_interval=0",
               "--system.wandb=disabled", f"--system.num_threads={threads}", *flags]
        launcher = [sys.executable] if processes == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        with tempfile.TemporaryFile("w+") as errors:
            proc = subprocess.Popen([*launcher, CHARGPT, *run], stdout=subprocess.DEVNULL, stderr=errors,
                                    env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            _, status, usage = os.wait4(proc.pid, 0)  # the child's and its children's peak RSS (KiB on Linux)
            if os.waitstatus_to_exitcode(status):
                errors.seek(0)
                sys.exit(f"chargpt.py failed: {errors.read().strip()}")
        with open(os.path.join(work_dir, "train_logs.json")) as f:
            times = json.load(f)["iter_time_ms"][warmup:]
        with open(os.path.join(work_dir, "config.json")) as f:
            config = json.load(f)
    return statistics.median(times), usage.ru_maxrss / 1024, config


def all_reduce_ms(processes, threads, n_floats, repeats=20):
    """Median ms of one all-reduce (gloo, as DDP's gradient average on a CPU) of n_floats fp32 values among
    `processes` processes: this script relaunched under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               os.path.abspath(__file__), "--all-reduce", str(n_floats), "--iters", str(repeats)]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)}).stdout
    return float(out.split()[-1])


def time_all_reduce(n_floats, repeats):
    """Under torchrun: every process all-reduces a tensor of n_floats; rank 0 prints the median ms."""
    torch.distributed.init_process_group("gloo")
    grads = torch.ones(n_floats)
    times = []
    for _ in range(repeats + 1):
        torch.distributed.barrier()
        t0 = time.perf_counter()
        torch.distributed.all_reduce(grads)
        times.append((time.perf_counter() - t0) * 1000)
    if torch.distributed.get_rank() == 0:
        print(statistics.median(times[1:]))
    torch.distributed.destroy_process_group()


def flops_per_iter(config):
    C = GPT.get_default_config()
    C.merge_from_dict(config["model"])
    T, B = config["data"]["block_size"], config["trainer"]["batch_size"]
    return GPT(C).flops_per_token(T) * T * B, T * B


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1], help="process counts to compare")
    parser.add_argument("--iters", type=int, default=10, help="measured iterations per run")
    parser.add_argument("--warmup", type=int, default=3, help="iterations left out of the median")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--all-reduce", type=int, default=0, help=argparse.SUPPRESS)  # all_reduce_ms's worker
    parser.add_argument("flags", nargs="*", help="chargpt flags, after --")
    args = parser.parse_args()
    if args.all_reduce:
        return time_all_reduce(args.all_reduce, args.iters)
    cores = os.cpu_count()
    print(machine_info())
    print(f"chargpt.py {' '.join(args.flags) or '(defaults)'}; median of iterations {args.warmup + 1}-"
          f"{args.warmup + args.iters}, {args.rounds} round(s)")
    results = {n: [] for n in args.processes}
    for _ in range(args.rounds):
        for n in args.processes:
            results[n].append(train_once(args.flags, n, max(1, cores // n), args.iters, args.warmup))
    peaks = {}
    print(f"{'processes x threads':>20} | {'ms/iter':>8} | {'tokens/s':>8} | {'GFLOP/s':>8} | {'MFU':>6} | "
          f"{'peak RSS MiB':>12}")
    for n, runs in results.items():
        ms = statistics.median(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        config = runs[0][2]
        flops, tokens = flops_per_iter(config)
        device, dtype = config["device"], config["dtype"]
        if (device, dtype) not in peaks:  # all the cores, as the runs together use them
            peaks[device, dtype] = matmul_peak_flops(device, getattr(torch, dtype))
        achieved = flops / (ms / 1000)
        print(f"{f'{n} x {max(1, cores // n)}':>20} | {ms:>8.0f} | {tokens / (ms / 1000):>8.0f} | "
              f"{achieved / 1e9:>8.1f} | {achieved / peaks[device, dtype]:>6.1%} | {rss:>12.0f}", flush=True)
    for (device, dtype), peak in peaks.items():
        print(f"matmul peak on {device} in {dtype}: {peak / 1e9:.0f} GFLOP/s")
    config = results[args.processes[0]][0][2]
    params = config["params"]
    for n in args.processes:
        if n > 1 and config["device"] == "cpu":
            print(f"all-reduce of the {params * 4 / 1e6:.1f} MB of fp32 gradients among {n} processes (gloo): "
                  f"{all_reduce_ms(n, max(1, cores // n), params):.1f} ms")


if __name__ == "__main__":
    main()
