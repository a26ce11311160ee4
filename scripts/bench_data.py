"""
The data layer's cost past tiny-shakespeare (mingpt/data/token_cache.py): corpora made of tiny-shakespeare's lines in
a seeded shuffle at each size, tokenized into a fresh token cache by each tokenizer (build time, MB/s, peak RSS of
the building process), then a run of `python chargpt.py` on the cached corpus (time from its start to its first
step, i.e. to the trainer's first line once data and model are ready; peak RSS of one iteration and an
evaluation) beside the same run on tiny-shakespeare; with --nanogpt, nanoGPT's shakespeare_char prepare.py on the
100 MB corpus, run where it lies through a link in --work, which it writes to (never copied into this project,
nothing written into the checkout); with --torchrun, a two-process torchrun on the smallest corpus with an empty
cache, and how many entries it built.

    python scripts/bench_data.py                                    # 10 MB, 100 MB, 1 GB; char, word, bpe
    python scripts/bench_data.py --sizes-mb 10 100 --tokenizers char --nanogpt ../nanoGPT --torchrun

The corpora and caches go to --work (out/bench_data, ignored by git) and are removed at the end unless --keep.
Peak RSS is the process's own ru_maxrss (torch's import alone is some 230 MB of it).
"""

import argparse
import json
import os
import random
import shutil
import statistics
import sys

from mingpt.app.files import machine_info, save_json
from mingpt.config import at_least
from mingpt.data.tokenizer import TOKENIZERS
from mingpt.errors import check_script_args, fail
from mingpt.experiments.bench import run_measured
from mingpt.experiments.peers import NanoGPT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARGPT = os.path.join(ROOT, "chargpt.py")
MB = 1_000_000
BUILD = "import sys; from mingpt.app.settings import get_config; from mingpt.data.dataset import CharDataset; " \
        "c = get_config(); c.merge_from_args(sys.argv[1:]); CharDataset.from_corpus(c.data)"
RUN_FLAGS = ["--trainer.max_iters=1", "--trainer.eval_iters=1", "--trainer.sample_interval=0",
             "--trainer.log_interval=1", "--system.wandb=disabled"]


def make_corpus(source, path, size_mb, seed):
    """size_mb million characters of `source`'s lines, shuffled again each time they run out."""
    with open(source, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    rng, left = random.Random(seed), size_mb * MB
    with open(path, "w", encoding="utf-8") as f:
        while left > 0:
            rng.shuffle(lines)
            text = "".join(lines)[:left]
            f.write(text)
            left -= len(text)


def build(corpus, cache, tokenizer):
    """(seconds the build took, from its manifest; peak RSS MiB of the process)."""
    shutil.rmtree(cache, ignore_errors=True)
    rss = run_measured([sys.executable, "-c", BUILD, f"--data.input_file={corpus}", f"--data.cache_dir={cache}",
                        f"--data.tokenizer={tokenizer}"], cwd=ROOT, check=True).peak_rss_mib
    (entry,) = os.listdir(cache)
    with open(os.path.join(cache, entry, "manifest.json")) as f:
        return json.load(f)["build_seconds"], rss


def first_step(corpus, cache, tokenizer, work_dir, repeats):
    """(median seconds from the start of `python chargpt.py` to the trainer's first line, printed once the data and
    the model are ready, just before the first step; median peak RSS MiB of the whole run) over `repeats` runs."""
    runs = [one_run(corpus, cache, tokenizer, work_dir) for _ in range(repeats)]
    return statistics.median(s for s, _ in runs), statistics.median(rss for _, rss in runs)


def one_run(corpus, cache, tokenizer, work_dir):
    shutil.rmtree(work_dir, ignore_errors=True)
    command = [sys.executable, CHARGPT, f"--data.input_file={corpus}", f"--data.cache_dir={cache}",
               f"--data.tokenizer={tokenizer}", f"--system.work_dir={work_dir}", *RUN_FLAGS]
    run = run_measured(command, cwd=ROOT)
    seconds = next((s for s, line in run.lines if line.startswith("running on device")), None)
    if run.status or seconds is None:
        sys.exit(f"chargpt.py on {corpus} failed: {' '.join(command)}")
    return seconds, run.peak_rss_mib


def nanogpt_prepare(nano, corpus, work):
    """(seconds, peak RSS MiB) of nanoGPT's data/shakespeare_char/prepare.py on `corpus` (mingpt.experiments.peers: it
    writes into work/nanogpt_prepare, not the checkout)."""
    where = os.path.join(work, "nanogpt_prepare")
    shutil.rmtree(where, ignore_errors=True)
    run = nano.prepare(corpus, where)
    return run.wall_s, run.peak_rss_mib


def torchrun_builds(corpus, cache, work_dir):
    """How many cache entries a two-process torchrun builds in an empty cache, and which local rank built."""
    shutil.rmtree(cache, ignore_errors=True)
    run_measured([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", CHARGPT,
                  f"--data.input_file={corpus}", f"--data.cache_dir={cache}", f"--system.work_dir={work_dir}",
                  "--model.n_layer=2", "--model.n_embd=48", "--trainer.batch_size=8", *RUN_FLAGS],
                 cwd=ROOT, env={"OMP_NUM_THREADS": "1"}, check=True)
    names = os.listdir(cache)
    with open(os.path.join(cache, names[0], "manifest.json")) as f:
        return names, json.load(f)["built_by"]["local_rank"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 100, 1000], help="corpus sizes in MB")
    parser.add_argument("--tokenizers", nargs="+", default=list(TOKENIZERS), choices=TOKENIZERS)
    parser.add_argument("--source", default=os.path.join(ROOT, "input.txt"), help="tiny-shakespeare")
    parser.add_argument("--seed", type=int, default=0, help="seed of the lines' shuffle")
    parser.add_argument("--nanogpt", help="a checkout of karpathy/nanoGPT: time its prepare.py on the 100 MB corpus")
    parser.add_argument("--torchrun", action="store_true", help="count the builds of a two-process torchrun")
    parser.add_argument("--work", default=os.path.join(ROOT, "out", "bench_data"))
    parser.add_argument("--repeats", type=int, default=3, help="runs per first-step figure (the median)")
    parser.add_argument("--keep", action="store_true", help="keep the corpora and caches")
    args = parser.parse_args(argv)
    check_script_args(args, sizes_mb=at_least(1), repeats=at_least(1))
    if not os.path.isfile(args.source):
        fail(f"--source={args.source} is not a file; put tiny-shakespeare there")
    nano = NanoGPT(args.nanogpt, "--nanogpt") if args.nanogpt else None
    os.makedirs(args.work, exist_ok=True)
    print(machine_info())
    cache, runs = os.path.join(args.work, "cache"), os.path.join(args.work, "run")
    results = {"machine": machine_info(), "builds": [], "runs": [], "nanogpt": None, "torchrun": None}
    baseline = {}
    for tokenizer in args.tokenizers:
        one_run(args.source, os.path.join(args.work, "cache_tiny"), tokenizer, runs)  # builds its cache
        baseline[tokenizer] = first_step(args.source, os.path.join(args.work, "cache_tiny"), tokenizer, runs,
                                         args.repeats)
        results["runs"].append({"corpus": "tiny-shakespeare", "tokenizer": tokenizer, "first_step_s":
                                baseline[tokenizer][0], "rss_mib": baseline[tokenizer][1]})
    print("| corpus | tokenizer | build s | MB/s | build peak RSS MiB | first step s (tiny: s) | run RSS MiB "
          "(tiny: MiB) |\n|---|---|---|---|---|---|---|")
    for size in args.sizes_mb:
        corpus = os.path.join(args.work, f"corpus_{size}mb.txt")
        make_corpus(args.source, corpus, size, args.seed)
        for tokenizer in args.tokenizers:
            seconds, rss = build(corpus, cache, tokenizer)
            start_s, run_rss = first_step(corpus, cache, tokenizer, runs, args.repeats)
            results["builds"].append({"size_mb": size, "tokenizer": tokenizer, "build_s": seconds,
                                      "mb_per_s": size / seconds, "rss_mib": rss})
            results["runs"].append({"corpus": f"{size} MB", "tokenizer": tokenizer, "first_step_s": start_s,
                                    "rss_mib": run_rss})
            tiny_s, tiny_rss = baseline[tokenizer]
            print(f"| {size} MB | {tokenizer} | {seconds:.2f} | {size / seconds:.1f} | {rss:.0f} | {start_s:.2f} "
                  f"({tiny_s:.2f}) | {run_rss:.0f} ({tiny_rss:.0f}) |", flush=True)
        if nano and size == 100:
            seconds, rss = nanogpt_prepare(nano, corpus, args.work)
            results["nanogpt"] = {"size_mb": size, "seconds": seconds, "rss_mib": rss}
            print(f"| {size} MB | nanoGPT prepare.py | {seconds:.1f} | {size / seconds:.1f} | {rss:.0f} | | |",
                  flush=True)
        if args.torchrun and size == min(args.sizes_mb):
            names, rank = torchrun_builds(corpus, cache, runs)
            results["torchrun"] = {"size_mb": size, "entries": names, "built_by_local_rank": rank}
            print(f"torchrun, 2 processes, {size} MB, empty cache: {len(names)} entry built, by local rank {rank}")
        if not args.keep:
            os.unlink(corpus)
    save_json(results, os.path.join(args.work, "results.json"))
    if not args.keep:
        for folder in (cache, runs, os.path.join(args.work, "cache_tiny"), os.path.join(args.work, "nanogpt_prepare")):
            shutil.rmtree(folder, ignore_errors=True)
    print(f"results: {os.path.join(args.work, 'results.json')}")


if __name__ == "__main__":
    main()
