"""
Checks every CUDA path of the project on a machine with a GPU: one PASS/FAIL line per check with the figure it
measured, then a JSON of them all. Without CUDA it says so in one line and exits 0.

    python scripts/check_gpu.py                       # writes out/check_gpu.json
    PYTHONPATH=. python scripts/check_gpu.py          # the same without `pip install -e .`

The checks:
- probe_memory: the trainer's attention probe per layer at gpt-mini's shape (block 128, batch 64, naive core,
  dropout on) for MHA and GQA with n_kv_head 1/2/3 (the writeup's summed group scores), beside the bytes the
  probabilities and K/V must take and the course's reference figures (Spring 2024: MHA 78.02 MB, GQA 1/2/3
  21.1 / 42.2 / 51.1 MB per layer). PASS: at least the probabilities, and fewer kv heads keep less.
- probe_time: the same probe's CUDA-event times per layer (PASS: positive and below a second).
- bf16_training: 20 training iterations with trainer.dtype=auto (bf16 autocast where the GPU has it natively,
  compute capability 8.0 and up; float16 below); PASS: the loss falls and auto picked mingpt.device.auto_dtype's.
- float16_training: the same 20 iterations with trainer.dtype=float16 (GradScaler); PASS: the loss falls and the
  loss scale is logged for every step.
- window_kernel: the banded sliding-window kernel against the naive one, forward and backward (fp32 within
  1e-5, bf16 within 2e-2), and its peak memory against naive's at T=4096.
- cached_generation: cached and uncached greedy generation give the same tokens (RoPE, GQA, window, tables).
- cuda_checkpoint_on_cpu: the model.pt that bf16_training saved on CUDA samples on the CPU.
- torchrun_nccl: 20 iterations (fp32, dropout 0) under `torchrun --nproc_per_node=1` (nccl, cuda:0) against the
  same run in one plain process; PASS: both finish and their losses agree within 1e-4.
- device_tests: the test suite's CUDA instances (`pytest -m cuda`).
A check that raises is a FAIL with the error's first line, and the others still run; a subprocess that outlives
its time-out (a stuck nccl rendezvous) is one too. It needs torch 2.11 or newer as the GPU machine has it, and no
network.
"""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

import torch

from mingpt.app.files import machine_info, save_json
from mingpt.device import auto_dtype
from mingpt.app.probes import AttentionProbe
from mingpt.app.run import train
from mingpt.app.sample_text import sample
from mingpt.app.settings import get_config
from mingpt.attention import banded_attention, naive_attention
from mingpt.experiments.bench import attention_step, gpt_mini, peak_memory_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COURSE_MB = {6: 78.02, 1: 21.1, 2: 42.2, 3: 51.1}  # per layer, the course's GPU figures for this shape
RUN_TIMEOUT_S = 600  # a 20-iteration run takes seconds; only a hung one (an nccl rendezvous) gets near this
TESTS_TIMEOUT_S = 1800


def probe_at_gpt_mini(n_kv_head, batch=64, block=128):
    """(time ms, memory MiB, peak MiB) per layer from one training step of gpt-mini's attention shape."""
    model = gpt_mini(block_size=block, n_kv_head=n_kv_head, attn_impl="naive", gqa_scores="group_sum",
                     device="cuda").train()
    probe = AttentionProbe(model)
    idx = torch.randint(65, (batch, block), device="cuda")
    for _ in range(2):  # the first step pays for CUDA's lazy initialisation
        model(idx, idx)[1].backward()
        torch.cuda.synchronize()
    return probe.reading()


def check_probes():
    rows = {n: probe_at_gpt_mini(n) for n in (6, 1, 2, 3)}
    batch, block, head_dim = 64, 128, 32
    figures = []
    for n, (_, mib, peak) in rows.items():
        probabilities = batch * n * block * block * 4  # one map per kv head (group_sum); MHA: one per head
        kv = 2 * batch * n * block * head_dim * 4
        figures.append(f"n_kv_head={n}: {mib:.2f} MiB kept, {peak:.2f} MiB peak (probabilities "
                       f"{probabilities / 2**20:.2f} + K/V {kv / 2**20:.2f} MiB; course {COURSE_MB[n]} MB)")
    kept = {n: r[1] for n, r in rows.items()}
    memory_ok = all(kept[n] * 2**20 >= 64 * n * 128 * 128 * 4 for n in kept) and kept[1] < kept[2] < kept[3] < kept[6]
    times = {n: r[0] for n, r in rows.items()}
    return [("probe_memory", memory_ok, "; ".join(figures)),
            ("probe_time", all(0 < t < 1000 for t in times.values()),
             ", ".join(f"n_kv_head={n}: {t:.3f} ms" for n, t in times.items()))]


def corpus_in(work_dir):
    corpus = os.path.join(ROOT, "input.txt")
    if not os.path.exists(corpus):
        corpus = os.path.join(work_dir, "text.txt")
        with open(corpus, "w") as f:
            f.write("the king shall speak now, and we go. O God! " * 2000)
    return corpus


def train_quietly(work_dir, corpus, *flags):
    config = get_config()
    config.merge_from_args([f"--data.input_file={corpus}", f"--system.work_dir={work_dir}",
                            "--system.wandb=disabled", "--trainer.device=cuda", "--trainer.max_iters=20",
                            "--trainer.eval_interval=0", "--trainer.sample_interval=0", "--trainer.log_interval=20",
                            "--trainer.warmup_iters=5", "--trainer.learning_rate=2e-3", *flags])
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = train(config)
    losses = trainer.logs["train_losses"]
    falls = sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1
    return config, trainer, falls, f"{trainer.dtype_name}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in 20 iterations"


def check_training(work_dir):
    corpus = corpus_in(work_dir)
    config, trainer, falls, line = train_quietly(f"{work_dir}/run", corpus)
    auto = str(auto_dtype("cuda")).removeprefix("torch.")
    result = [("bf16_training", falls and trainer.dtype_name == auto, f"{line} (auto_dtype: {auto})")]
    _, half, falls, line = train_quietly(f"{work_dir}/run_fp16", corpus, "--trainer.dtype=float16")
    scales = half.logs["loss_scales"]
    result.append(("float16_training", falls and len(scales) == 20,
                   f"{line}; loss scale {scales[-1]:g}, {sum(half.logs['skipped_steps'])} steps skipped"))
    config.merge_from_args(["--sample.only=True", "--trainer.device=cpu", "--sample.max_new_tokens=50"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        sample(config)
    text = out.getvalue()
    result.append(("cuda_checkpoint_on_cpu", samples_after(text, config.sample.prompt, 50), repr(text[:60])))
    return result


def samples_after(text, prompt, new_tokens):
    """Whether `text`, what sampling printed, is the prompt and then `new_tokens` characters (a character
    tokenizer's tokens) and its closing newline: the prompt alone is echoed before the model runs."""
    return text.startswith(prompt) and len(text) == len(prompt) + new_tokens + 1


def check_window():
    figures, ok = [], True
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        torch.manual_seed(0)
        q, k, v = (torch.randn(2, 6, 1000, 32, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
        outputs = {}
        for name, fn in (("naive", naive_attention), ("banded", banded_attention)):
            y = fn(q, k, v, 64)
            grads = torch.autograd.grad(y.float().pow(2).sum(), (q, k, v))
            outputs[name] = [y.float(), *(g.float() for g in grads)]
        err = max((a - b).abs().max().item() / max(1.0, b.abs().max().item())
                  for a, b in zip(outputs["banded"], outputs["naive"]))
        ok &= err <= tol
        figures.append(f"{str(dtype).split('.')[-1]} max relative difference {err:.2e} (tolerance {tol:g})")
    naive_peak = peak_memory_bytes(attention_step(naive_attention, 4096, 64, device="cuda"), "cuda")
    banded_peak = peak_memory_bytes(attention_step(banded_attention, 4096, 64, device="cuda"), "cuda")
    ok &= banded_peak < naive_peak
    figures.append(f"T=4096, w=64 peak: banded {banded_peak / 2**20:.1f} MiB, naive {naive_peak / 2**20:.1f} MiB")
    return [("window_kernel", ok, "; ".join(figures))]


def check_generation():
    prompt = torch.randint(65, (2, 7), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    variants = [dict(), dict(rope=True), dict(rope=True, n_kv_head=2, window=16), dict(n_kv_head=1)]
    same = []
    for variant in variants:
        model = gpt_mini(block_size=64, device="cuda", **variant).double()
        cached, recomputed = (model.generate(prompt, 40, use_cache=use) for use in (True, False))
        same.append(torch.equal(cached, recomputed))
    return [("cached_generation", all(same), f"{sum(same)} of {len(same)} variants identical over 40 tokens")]


def check_torchrun(work_dir):
    flags = [f"--data.input_file={corpus_in(work_dir)}", "--system.wandb=disabled", "--trainer.device=cuda",
             "--trainer.dtype=float32", "--trainer.max_iters=20", "--trainer.eval_interval=0",
             "--trainer.sample_interval=0", "--model.embd_pdrop=0", "--model.resid_pdrop=0", "--model.attn_pdrop=0"]
    launchers = {"plain": [sys.executable],
                 "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]}
    losses, failures = {}, []
    for name, launcher in launchers.items():
        run_dir = os.path.join(work_dir, name)
        proc = subprocess.run([*launcher, os.path.join(ROOT, "chargpt.py"), *flags, f"--system.work_dir={run_dir}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        if proc.returncode:
            failures.append(f"{name} failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
            continue
        with open(os.path.join(run_dir, "train_logs.json")) as f:
            losses[name] = json.load(f)["train_losses"]
    if failures:
        return [("torchrun_nccl", False, "; ".join(failures))]
    return [("torchrun_nccl", *compare_losses(losses["plain"], losses["torchrun"]))]


def compare_losses(plain, torchrun, tolerance=1e-4):
    """(passed, figure) for the two runs' per-iteration losses: as many of them, each within `tolerance`."""
    if len(plain) != len(torchrun) or not plain:
        return False, f"the plain run logged {len(plain)} losses, the torchrun one {len(torchrun)}"
    gap = max(abs(a - b) for a, b in zip(plain, torchrun))
    return gap <= tolerance, f"{len(plain)} iterations, largest loss difference {gap:.2e} (tolerance {tolerance:g})"


def check_device_tests():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", os.path.join(ROOT, "tests")],
                          cwd=ROOT, capture_output=True, text=True, timeout=TESTS_TIMEOUT_S)
    summary = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    return [("device_tests", proc.returncode == 0, summary)]


def run_checks(checks):
    """Run each (name, check) and print its PASS/FAIL lines; returns them all as dicts. A check that raises is one
    FAIL under its name with the error's first line, and the checks after it still run."""
    results = []
    for check_name, check in checks:
        try:
            rows = check()
        except Exception as e:
            rows = [(check_name, False, f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}")]
        for name, passed, figure in rows:
            results.append({"check": name, "passed": bool(passed), "figure": figure})
            print(f"{'PASS' if passed else 'FAIL'} {name}: {figure}", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="out/check_gpu.json", help="where the results go")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"no CUDA device here (torch {torch.__version__}): nothing to check")
        return 0
    print(machine_info())
    with tempfile.TemporaryDirectory() as work_dir:
        results = run_checks([("probe_memory, probe_time", check_probes),
                              ("bf16_training, float16_training, cuda_checkpoint_on_cpu",
                               lambda: check_training(work_dir)),
                              ("window_kernel", check_window), ("cached_generation", check_generation),
                              ("torchrun_nccl", lambda: check_torchrun(work_dir)),
                              ("device_tests", check_device_tests)])
    save_json({"machine": machine_info(), "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "results": results}, args.json)
    print(f"{sum(r['passed'] for r in results)} of {len(results)} checks passed; wrote {args.json}")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
