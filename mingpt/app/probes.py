"""
The probes that read one call's time and memory (the attention probe of every training step, which the run
installs from outside the model), a function's time and peak memory, and the matmul peak that MFU is measured
against, on CUDA and on a CPU alike.
"""

import contextlib
import os
import statistics
import sys
import time

import torch

from mingpt.device import native_bf16


class ProbeReading:
    """What the probe measured around one attention call: time (ms), memory (MiB) and, on CUDA, the peak above the
    start (MiB). On CUDA the time comes from two events, read only when asked, after the training step has
    synchronised: reading them at once would stall the GPU, and a host clock would time the launch instead."""

    def __init__(self, memory_mib, time_ms=None, events=None, peak_mib=None):
        self.memory_mib, self.peak_mib, self._time_ms, self._events = memory_mib, peak_mib, time_ms, events

    @property
    def time_ms(self):
        if self._events is not None:
            start, end = self._events
            end.synchronize()
            return start.elapsed_time(end)
        return self._time_ms


def timed(fn, *args, **kwargs):
    """fn(*args, **kwargs) and a ProbeReading of it; the first argument's device is the one measured (for an
    attention core, the queries'). On CUDA the memory is the course's figure, the bytes the call leaves allocated
    (kept for backward), and the peak is the most allocated during it, both above what was allocated before. A
    CPU allocator keeps no counters, so there the memory is the bytes of the tensors autograd saves for backward
    (saved-tensor hooks; each storage counted once), which dominates the attention's training memory; 0 outside
    autograd (evaluation)."""
    device = args[0].device
    if device.type == "cuda":
        # each allocator query builds the whole statistics dict: one before, one after
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        y = fn(*args, **kwargs)
        end.record()
        after = torch.cuda.memory_stats(device)
        return y, ProbeReading((after["allocated_bytes.all.current"] - before) / 2**20, events=(start, end),
                               peak_mib=(after["allocated_bytes.all.peak"] - before) / 2**20)
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        y = fn(*args, **kwargs)
    return y, ProbeReading(sum(saved.values()) / 2**20, time_ms=(time.perf_counter() - t0) * 1000)



class AttentionProbe:
    """The attention probe of --trainer.probe_attention: each attention module's core (its `core` attribute, the
    model's attention arithmetic) wrapped from outside in `timed`, on training calls only, so that evaluation and
    sampling keep the last training step's reading. Without it the model runs its core untouched; `remove` puts the
    modules back as they were."""

    def __init__(self, model):
        self.modules = model.attention_modules()
        self.readings = {}  # module -> the ProbeReading of its last training call
        for attn in self.modules:
            attn.core = self._timed(attn, type(attn).core)

    def _timed(self, attn, core):
        def timed_core(*args):
            if not attn.training:
                return core(*args)
            y, self.readings[attn] = timed(core, *args)
            return y
        return timed_core

    def remove(self):
        for attn in self.modules:
            del attn.core  # the class's core again

    def reading(self):
        """Mean over layers of the last training call's attention time (ms), memory (MiB) and peak memory (MiB, CUDA
        only); None for what was not measured."""
        def mean(values):
            values = [v for v in values if v is not None]
            return sum(values) / len(values) if values else None
        readings = list(self.readings.values())
        return (mean(r.time_ms for r in readings), mean(r.memory_mib for r in readings),
                mean(r.peak_mib for r in readings))

    def on_step_end(self, trainer):
        """The trainer's callback: the step's reading into its metrics, before it logs them."""
        trainer.metrics.update(zip(("attention_ms", "attention_mib", "attention_peak_mib"), self.reading()))

@contextlib.contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for a moment: the only way to quiet what C++ code prints there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_peak_memory(fn, *args):
    """Peak bytes allocated above the starting point while `fn(*args)` runs, on CPU too, where torch keeps no
    allocator counter: torch.profiler records each op's own net allocation and the frees between ops; their
    running sum in time order is the memory held, and its maximum is the peak."""
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
    with native_stderr_silenced():  # the profiler's C++ side prints "USDT: profiler_start/stop" lines there
        prof.start()
    try:
        fn(*args)
    finally:
        with native_stderr_silenced():
            prof.stop()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(step, repeats, device="cpu"):
    """Median wall time of `step()` in ms over `repeats` runs, after one warm-up run."""
    step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def cuda_loop_ms(step, repeats, device):
    """Mean ms of `step()` over a loop of `repeats` runs timed by two CUDA events, after one warm-up: the kernels'
    own time. A host clock around each run adds its launch and synchronisation, which on a fast GPU is a good part
    of a large matmul."""
    step()
    with torch.cuda.device(device):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            step()
        end.record()
        end.synchronize()
    return start.elapsed_time(end) / repeats


def matmul_peak_flops(device="cpu", dtype=torch.float32, repeats=5):
    """FLOP/s of a square matmul on `device` in `dtype` after a warm-up, the median of `repeats` (on CUDA, a loop
    of 10 x `repeats` timed by CUDA events): the peak that MFU is measured against. n = 4096 on a GPU and 1024 on
    a CPU, except 2048 for bf16 on a CPU with native bf16, where AMX's packing of the operands is a large share
    of a matmul at 1024 and the peak would under-read (the README's training benchmark gives the figures); an
    emulated bf16 matmul stays at 1024, which is slow enough."""
    if torch.device(device).type == "cuda":
        n = 4096
    else:
        n = 2048 if dtype != torch.float32 and native_bf16("cpu") else 1024
    gen = torch.Generator(device).manual_seed(0)  # its own: a training run's RNG stream stays untouched
    a, b = (torch.randn(n, n, device=device, generator=gen).to(dtype) for _ in range(2))
    if torch.device(device).type == "cuda":
        return 2 * n ** 3 / (cuda_loop_ms(lambda: torch.mm(a, b), 10 * repeats, device) / 1000)
    return 2 * n ** 3 / (time_ms(lambda: torch.mm(a, b), repeats, device) / 1000)
