"""
Generation with and without the KV cache: tokens/s and cache bytes for gpt-mini's shape (6 layers, 6 query
heads, n_embd 192) across n_kv_head and window, at block_size 128 and 512.

    python scripts/bench_generate.py
    python scripts/bench_generate.py --block-sizes 128 --new-tokens 200 --csv out/generate.csv

The models use RoPE (no position table), so the cached path can decode past block_size with its rolling cache;
rows marked `learned` use minGPT's position table, which crops the context to block_size and recomputes it once
the sequence is longer. Weights are random: speed and cache size do not depend on them. Without the cache every
step recomputes the whole context (the last block_size tokens). Cache bytes are those held per sequence at the
end of the generation (fp32); for a window they stay the same however many tokens are generated. matvec-only is
the speed a cached step would have if it did nothing but its matrix-vector products (mingpt.experiments.bench.matvec_ms):
the ceiling set by reading every weight once per token. `sampled` is cached decoding that samples each token
with chargpt's defaults (temperature 1, top-k 10) instead of taking the most likely one.
"""

import argparse

import torch

from mingpt.app.files import machine_info, write_csv
from mingpt.config import Check, at_least
from mingpt.errors import check_script_args
from mingpt.experiments.bench import best_device, cache_bytes, generation_speed, gpt_mini, matvec_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--kv-heads", type=int, nargs="+", default=[1, 2, 3, 6])
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 32])
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="each speed is the median of this many runs")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--device", default=best_device(), help="default: the best one here, as training picks it")
    args = parser.parse_args()
    check_script_args(args, block_sizes=at_least(1), windows=at_least(0), new_tokens=at_least(1), repeats=at_least(1),
                      kv_heads=Check("a divisor of gpt-mini's 6 query heads", lambda v: v >= 1 and 6 % v == 0))

    print(machine_info())
    print(f"greedy generation of {args.new_tokens} tokens from a 10-token prompt, batch 1, fp32 on {args.device}, "
          f"median of {args.repeats} runs")
    header = f"{'block':>5} {'pos':>7} {'n_kv':>4} {'window':>6} | {'cached tok/s':>12} {'sampled tok/s':>13} " \
             f"{'recompute tok/s':>15} {'speed-up':>8} | {'matvec-only tok/s':>17} | {'cache bytes':>11}"
    print(header)
    print("-" * len(header))
    rows = []
    grid = [(b, True, kv, w) for b in args.block_sizes for w in args.windows for kv in args.kv_heads]
    grid += [(b, False, max(args.kv_heads), w) for b in args.block_sizes for w in args.windows]
    prompt = torch.randint(65, (1, 10), generator=torch.Generator().manual_seed(0)).to(args.device)
    for block_size, rope, n_kv_head, window in grid:
        model = gpt_mini(block_size=block_size, n_kv_head=n_kv_head, window=window, rope=rope, device=args.device)
        model.generate(prompt, 8)  # warm-up
        cached, seq = generation_speed(model, prompt, args.new_tokens, True, args.repeats)
        sampled, _ = generation_speed(model, prompt, args.new_tokens, True, args.repeats, do_sample=True, top_k=10,
                                      generator=torch.Generator(args.device).manual_seed(0))
        recompute, _ = generation_speed(model, prompt, args.new_tokens, False, args.repeats)
        row = dict(block_size=block_size, pos="rope" if rope else "learned", n_kv_head=n_kv_head, window=window,
                   cached_tokens_per_s=cached, sampled_tokens_per_s=sampled, recompute_tokens_per_s=recompute,
                   speedup=cached / recompute,
                   matvec_only_tokens_per_s=1000 / matvec_ms(model), cache_bytes=cache_bytes(model, seq))
        rows.append(row)
        print(f"{block_size:>5} {row['pos']:>7} {n_kv_head:>4} {window:>6} | {cached:>12.0f} {sampled:>13.0f} "
              f"{recompute:>15.0f} {row['speedup']:>7.1f}x | {row['matvec_only_tokens_per_s']:>17.0f} | "
              f"{row['cache_bytes']:>11,}",
              flush=True)
    if args.csv:
        write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
