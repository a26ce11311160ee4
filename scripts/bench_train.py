"""
Training speed of `python chargpt.py` as a user runs it: ms per iteration, tokens/s, achieved GFLOP/s, MFU
against the matmul peak measured here in the run's dtype, and peak RSS, for the default config (chargpt flags
after the options pass through). With several process counts, each runs under torchrun with the machine's cores
shared out (threads per process = cores / processes), so every configuration uses the same cores. With
--nanogpt / --mingpt, karpathy's nanoGPT (train.py, eager, fp32) and minGPT (projects/chargpt) checked out beside
the project train the same model (gpt-mini: 6 layers, 6 heads, n_embd 192, block 128, batch 64, dropout 0.1) in
the same rounds, for a side-by-side figure; their code is run where it lies, never copied, and nothing is written
into their checkouts (mingpt.experiments.peers). Each --variant adds a row of this project with more flags (quoted
together, after an =), measured in the same rounds.

    python scripts/bench_train.py                                   # the default run: gpt-mini, batch 64
    python scripts/bench_train.py --processes 1 2                   # 1 process x 2 threads vs 2 x 1 (DDP, gloo)
    python scripts/bench_train.py --rounds 3 --nanogpt ../nanoGPT --mingpt ../minGPT
    python scripts/bench_train.py -- --trainer.probe_attention=False   # any chargpt flag, after --
    python scripts/bench_train.py --variant=--trainer.dtype=float32 --variant="--trainer.probe_attention=False"

Each configuration trains warmup + iters iterations in a temporary folder and reports the median of the
iterations after the warm-up (each program's own per-iteration times: chargpt's train_logs.json, nanoGPT's log
lines, minGPT's every tenth iteration); rounds > 1 interleaves the configurations and takes the median over
rounds. Peak RSS is that of the largest process. MFU is against the matmul peak of each row's own dtype (nanoGPT
and minGPT: fp32).
"""

import argparse
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from mingpt.app.files import machine_info
from mingpt.app.probes import matmul_peak_flops
from mingpt.app.settings import config_from_flags
from mingpt.config import at_least
from mingpt.errors import check_script_args
from mingpt.experiments.bench import run_measured
from mingpt.experiments.peers import MinGPT, NanoGPT
from mingpt.model import GPT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARGPT = os.path.join(ROOT, "chargpt.py")
GPT_MINI = dict(n_layer=6, n_head=6, n_embd=192, block_size=128, batch_size=64, dropout=0.1)
PEER_RUN = {"dtype": "float32"}  # what nanoGPT and minGPT train in here, in the form of chargpt's config.json


def launcher(processes):
    """The command that starts a script: python for one process, torchrun's module for several."""
    if processes == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]


def chargpt(flags, processes, threads, iters, warmup):
    """(median ms/iter after warm-up, peak RSS MiB, config.json) of a short chargpt.py run."""
    with tempfile.TemporaryDirectory() as work_dir:
        run = [f"--system.work_dir={work_dir}", f"--trainer.max_iters={warmup + iters}", "--trainer.eval_interval=0",
               "--trainer.eval_iters=1", "--trainer.sample_interval=0", "--trainer.checkpoint_interval=0",
               "--system.wandb=disabled", f"--system.num_threads={threads}", *flags]
        rss = run_measured([*launcher(processes), CHARGPT, *run], env={"OMP_NUM_THREADS": str(threads)},
                           check=True).peak_rss_mib
        with open(os.path.join(work_dir, "train_logs.json")) as f:
            times = json.load(f)["iter_time_ms"][warmup:]
        with open(os.path.join(work_dir, "config.json")) as f:
            config = json.load(f)
    return statistics.median(times), rss, config


def nanogpt(nano, corpus, iters, warmup):
    """(median ms/iter, peak RSS MiB, PEER_RUN) of nanoGPT's train.py on gpt-mini, eager fp32 on the CPU, on its
    character data prepared by its own prepare.py from our corpus."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        nano.prepare(corpus, data)
        flags = [f"--{k}={v}" for k, v in GPT_MINI.items()] + [
            "--device=cpu", "--compile=False", "--dtype=float32", "--bias=True", f"--max_iters={warmup + iters}",
            "--eval_interval=100000", "--eval_iters=1", "--log_interval=1", f"--out_dir={os.path.join(tmp, 'out')}"]
        run = nano.train(["config/train_shakespeare_char.py", *flags], data, os.path.join(tmp, "run"))
    times = {int(it): float(ms) for it, ms in re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", run.output())}
    return statistics.median(ms for it, ms in times.items() if it >= warmup), run.peak_rss_mib, PEER_RUN


def mingpt(checkout, corpus, iters, warmup):
    """(median ms/iter, peak RSS MiB, PEER_RUN) of minGPT's projects/chargpt (gpt-mini, its defaults: batch 64,
    block 128, dropout 0.1, 4 DataLoader workers), which prints its iteration time every 10 iterations."""
    tens = max(1, iters // 3)  # readings at iterations 10, 20, ... past the warm-up
    with tempfile.TemporaryDirectory() as cwd:
        run = checkout.chargpt([f"--trainer.max_iters={10 * tens + 1}"], corpus, cwd)  # it writes ./out/chargpt
    times = [float(ms) for ms, it in re.findall(r"iter_dt ([\d.]+)ms; iter (\d+)", run.output()) if int(it) >= 10]
    return statistics.median(times), run.peak_rss_mib, PEER_RUN


def all_reduce_ms(processes, threads, n_floats, repeats=20):
    """Median ms of one all-reduce (gloo, as DDP's gradient average on a CPU) of n_floats fp32 values among
    `processes` processes: this script relaunched under torchrun."""
    command = [*launcher(processes), os.path.abspath(__file__), "--all-reduce", str(n_floats), "--iters", str(repeats)]
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


def fixed_point(value, decimals):
    """`value` with `decimals` decimals, or more where those show fewer than 3 significant digits: a tiny model's
    GFLOP/s on a slow or loaded machine reads 0.0123, not 0.0."""
    digits_before_point = math.floor(math.log10(value)) + 1 if value > 0 else 1
    return f"{value:.{max(decimals, 3 - digits_before_point)}f}"


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
    parser.add_argument("--variant", action="append", default=[], help="more chargpt flags for an extra row of this "
                        "project, e.g. --variant=--trainer.dtype=float32 (repeatable)")
    parser.add_argument("--nanogpt", help="a checkout of karpathy/nanoGPT to measure beside this project")
    parser.add_argument("--mingpt", help="a checkout of karpathy/minGPT to measure beside this project")
    parser.add_argument("--corpus", default=os.path.join(ROOT, "input.txt"), help="tiny-shakespeare, for the peers")
    parser.add_argument("--all-reduce", type=int, default=0, help=argparse.SUPPRESS)  # all_reduce_ms's worker
    parser.add_argument("flags", nargs="*", help="chargpt flags, after --")
    args = parser.parse_args()
    check_script_args(args, processes=at_least(1), iters=at_least(1), warmup=at_least(0), rounds=at_least(1))
    if args.all_reduce:
        return time_all_reduce(args.all_reduce, args.iters)
    cores = os.cpu_count()
    runners = {}
    for extra in ["", *args.variant]:
        flags = [*args.flags, *shlex.split(extra)]
        config_from_flags(flags, args.processes)
        for n in args.processes:
            threads = max(1, cores // n)
            runners[f"chargpt {n} x {threads} {extra}".strip()] = \
                lambda n=n, threads=threads, flags=flags: chargpt(flags, n, threads, args.iters, args.warmup)
    if args.nanogpt:
        nano = NanoGPT(args.nanogpt, "--nanogpt")
        runners["nanoGPT train.py (eager)"] = lambda: nanogpt(nano, args.corpus, args.iters, args.warmup)
    if args.mingpt:
        checkout = MinGPT(args.mingpt, "--mingpt")
        runners["minGPT chargpt"] = lambda: mingpt(checkout, args.corpus, args.iters, args.warmup)
    print(machine_info())
    print(f"chargpt.py {' '.join(args.flags) or '(defaults)'}; median of iterations {args.warmup + 1}-"
          f"{args.warmup + args.iters}, {args.rounds} round(s)")
    results = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            results[name].append(run())
    config = results[next(iter(results))][0][2]  # the first row's run: the model and device of every row
    flops, tokens = flops_per_iter(config)
    device = config["device"]
    dtypes = {name: runs[0][2]["dtype"] for name, runs in results.items()}
    peaks = {dtype: matmul_peak_flops(device, getattr(torch, dtype)) for dtype in set(dtypes.values())}
    width = max(30, *map(len, results))
    print(f"{'program, processes x threads':>{width}} | {'dtype':>8} | {'ms/iter':>8} | {'tokens/s':>8} | "
          f"{'GFLOP/s':>8} | {'MFU':>6} | {'peak RSS MiB':>12}")
    for name, runs in results.items():
        ms = statistics.median(r[0] for r in runs)
        achieved = flops / (ms / 1000)
        print(f"{name:>{width}} | {dtypes[name]:>8} | {ms:>8.0f} | {tokens / (ms / 1000):>8.0f} | "
              f"{fixed_point(achieved / 1e9, 1):>8} | {achieved / peaks[dtypes[name]]:>6.1%} | "
              f"{max(r[1] for r in runs):>12.0f}", flush=True)
    for dtype, peak in peaks.items():
        print(f"matmul peak on {device} in {dtype}: {fixed_point(peak / 1e9, 0)} GFLOP/s")
    print(f"FLOPs per iteration {flops / 1e9:.0f} G (mingpt.model.GPT.flops_per_token) for every row")
    for n in args.processes:
        if n > 1 and device == "cpu":
            print(f"all-reduce of the {config['params'] * 4 / 1e6:.1f} MB of fp32 gradients among {n} processes "
                  f"(gloo): {all_reduce_ms(n, max(1, cores // n), config['params']):.1f} ms")


if __name__ == "__main__":
    main()
