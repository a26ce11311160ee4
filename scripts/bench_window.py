"""
Sliding-window attention: the writeup's naive masked attention against the banded fast path, forward +
backward, across sequence lengths N and windows w, with torch's fused full causal attention beside them.

    python scripts/bench_window.py                      # N = 512..8192, w in {64, 256}
    python scripts/bench_window.py --sizes 512 1024 --windows 64 --csv out/window.csv

Shapes are one sequence of gpt-mini's attention: 6 heads of 32 dims. Times are the median of --repeats runs
after one warm-up; peak bytes come from the CUDA allocator's counters on a GPU and from torch.profiler's allocation
records on a CPU (mingpt.experiments.bench.peak_memory_bytes).
The measurement itself is mingpt.experiments.bench.window_attention_cost, which the window study uses too.
"""

import argparse

from mingpt.app.files import machine_info, write_csv
from mingpt.config import at_least
from mingpt.errors import check_script_args
from mingpt.experiments.bench import best_device, window_attention_cost


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--windows", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--device", default=best_device(), help="default: the best one here, as training picks it")
    args = parser.parse_args()
    check_script_args(args, sizes=at_least(1), windows=at_least(1), repeats=at_least(1))

    print(machine_info())
    print(f"one sequence, 6 heads x 32 dims, fp32, forward+backward on {args.device}; median of {args.repeats}")
    rows = []
    header = f"{'N':>6} {'w':>5} | {'naive ms':>9} {'fast ms':>9} {'speed-up':>8} | {'naive MiB':>9} {'fast MiB':>8} " \
             f"{'mem ratio':>9} | {'sdpa causal ms':>14} {'sdpa MiB':>8}"
    print(header)
    print("-" * len(header))
    for w in args.windows:
        for n in args.sizes:
            row = window_attention_cost(n, w, args.repeats, args.device)
            rows.append(row)
            mb = 2**20
            print(f"{n:>6} {w:>5} | {row['naive_ms']:>9.1f} {row['fast_ms']:>9.1f} "
                  f"{row['naive_ms'] / row['fast_ms']:>7.1f}x | {row['naive_peak_bytes'] / mb:>9.1f} "
                  f"{row['fast_peak_bytes'] / mb:>8.1f} {row['naive_peak_bytes'] / row['fast_peak_bytes']:>8.1f}x | "
                  f"{row['sdpa_causal_ms']:>14.1f} {row['sdpa_causal_peak_bytes'] / mb:>8.1f}", flush=True)
        beats = [r["N"] for r in rows if r["window"] == w and r["fast_ms"] < r["sdpa_causal_ms"]]
        print(f"w={w}: the banded window path is faster than full causal SDPA from N = "
              f"{min(beats) if beats else 'never, in the sizes measured'}")
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
