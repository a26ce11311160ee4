"""
Measurements shared by the benchmark scripts and the experiment studies: timing a step, attention forward +
backward on random inputs, and generation speed and cache size, each on the device it is given (default: the best
one here, as training picks it; on CUDA, times end with a synchronisation, so they are the kernels' and not their
launches', and memory comes from the allocator's counters); and a command run to its end, with its wall time, the
time of each line it prints and its peak RSS (the benchmarks' runs, the speedrun's, nanoGPT's and minGPT's).
"""

import os
import statistics
import subprocess
import sys
import time
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mingpt.app.probes import profile_peak_memory, synchronize, time_ms
from mingpt.attention import banded_attention, fast_attention, naive_attention
from mingpt.device import pick_device
from mingpt.model import GPT


def best_device():
    return pick_device("auto")


def median_after_warmup(values, warmup=2):
    """The median of per-iteration measurements without the first `warmup` (lazy initialisation, CUDA's
    included, lands there); of all of them when there are no more."""
    return statistics.median(values[warmup:] if len(values) > warmup else values)


def peak_memory_bytes(step, device="cpu"):
    """Peak bytes allocated above the start while `step()` runs: the CUDA allocator's counters on a GPU,
    torch.profiler's allocation records on a CPU (profile_peak_memory)."""
    if torch.device(device).type != "cuda":
        return profile_peak_memory(step)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def attention_step(fn, n, *args, batch=1, heads=6, kv_heads=None, head_dim=32, device="cpu", dtype=torch.float32):
    """A closure running forward + backward of the attention function `fn(q, k, v, *args)` on random inputs."""
    def leaf(n_heads):
        return torch.randn(batch, n_heads, n, head_dim, device=device, dtype=dtype, requires_grad=True)
    q, k, v = leaf(heads), leaf(kv_heads or heads), leaf(kv_heads or heads)

    def step():
        fn(q, k, v, *args).sum().backward()
    return step


def window_attention_cost(n, window, repeats=3, device="cpu"):
    """Naive vs banded sliding-window attention and full causal SDPA, forward + backward on one sequence of
    gpt-mini's attention (6 heads x 32 dims): median ms and peak bytes of each."""
    steps = {"naive": attention_step(naive_attention, n, window, device=device),
             "fast": attention_step(banded_attention, n, window, device=device),
             "sdpa_causal": attention_step(fast_attention, n, 0, device=device)}
    row = dict(N=n, window=window)
    row.update({f"{name}_ms": time_ms(step, repeats, device) for name, step in steps.items()})
    row.update({f"{name}_peak_bytes": peak_memory_bytes(step, device) for name, step in steps.items()})
    return row


def gpt_mini(vocab_size=65, device="cpu", **settings):
    """gpt-mini (6 layers, 6 query heads, n_embd 192) in eval mode with random weights and `settings`."""
    C = GPT.get_default_config()
    C.merge_from_dict(dict(vocab_size=vocab_size, **settings))
    torch.manual_seed(0)
    return GPT(C).to(device).eval()


def generation_speed(model, prompt, new_tokens, use_cache, repeats=1, **sampling):
    """(tokens per second, generated sequence) for greedy generation, or as `sampling` (generate's do_sample,
    top_k, ...) says; the median over `repeats` runs."""
    device = model.lm_head.weight.device
    prompt = prompt.to(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        seq = model.generate(prompt, new_tokens, use_cache=use_cache, **sampling)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return new_tokens / statistics.median(times), seq


def matvec_ms(model, repeats=200):
    """ms per token of the matrix-vector products alone that a decoding step makes (every Linear weight of the
    model, the q/k/v ones stacked as attention stacks them): a lower bound for a cached step, as each token has
    to read all the weights."""
    attention = model.attention_modules()
    stacked = {m for a in attention for m in (a.q_proj, a.k_proj, a.v_proj)}
    with torch.no_grad():
        weights = [a.qkv_projection() for a in attention]
    weights += [(m.weight, m.bias) for m in model.modules() if isinstance(m, nn.Linear) and m not in stacked]
    device = model.lm_head.weight.device
    inputs = {w.size(1): torch.randn(1, 1, w.size(1), device=device) for w, _ in weights}

    @torch.inference_mode()
    def step():
        for w, b in weights:
            F.linear(inputs[w.size(1)], w, b)
    return time_ms(step, repeats, device)


def cache_bytes(model, seq):
    """Bytes of the KV caches after the model has read `seq` (what generating it leaves held)."""
    caches = model.new_caches()
    model(seq if model.pos_emb == "none" else seq[:, -model.block_size:], caches=caches)
    return sum(c.nbytes() for c in caches)


class MeasuredRun(NamedTuple):
    """What run_measured saw of a command that ran to its end."""
    status: int  # its exit status
    wall_s: float  # from its launch to its exit
    lines: list  # [(seconds since its launch, line)] of its stdout and stderr together
    peak_rss_mib: float  # of the largest of it and its children

    def output(self):
        return "\n".join(line for _, line in self.lines)

    def last_line(self):
        """The last non-empty line it printed (300 characters at most): what says why it failed."""
        return next((line for _, line in reversed(self.lines) if line.strip()), "(nothing)")[:300]


def run_measured(command, cwd=None, env=None, check=False):
    """Run `command` to its end with `env` over this process's environment: its wall time, each line it prints
    with the time it arrives (a Python program must not buffer them to be timed as printed: PYTHONUNBUFFERED=1)
    and its peak RSS. With check, a failure ends this script, naming the command and the end of its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace")
    lines = [(time.perf_counter() - t0, line.rstrip("\n")) for line in proc.stdout]
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)  # ru_maxrss: the child's, or its largest child's (KiB on Linux)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    run = MeasuredRun(proc.returncode, time.perf_counter() - t0, lines, usage.ru_maxrss / 1024)
    if check and run.status:
        sys.exit(f"{' '.join(command[:3])} ... failed: {run.output().strip()[-2000:]}")
    return run
