"""
Study 3, gqa_cost: what grouped-query attention saves, for n_kv_head in {1, 2, 3, 6} with 6 query heads.

- attention time (ms) per layer and iteration, from the trainer's probe over a short training run;
- attention memory (MiB): the trainer's probe (on CUDA the course's allocator figure, the memory the attention
  core keeps for backward; on a CPU the bytes it saves for backward), and the peak allocations of the naive
  attention core at the training shapes (CUDA allocator counters, or torch.profiler on a CPU), for LLaMA's
  per-head scores and for the writeup's summed group scores (one map per kv head);
- KV-cache bytes per sequence and generation tokens/s with the cache (RoPE model, mingpt.lab.bench).

Times and probe memory are medians over the iterations after warm-up; everything runs on the device training
picks (a GPU when there is one), in fp32 wherever bf16 is native too: the course's figures, which these stand
beside, are fp32's.

    python scripts/study_gqa_cost.py --scale quick|cpu|full
"""

import matplotlib.pyplot as plt
import torch

from mingpt.attention import attend
from mingpt.lab.bench import best_device, cache_bytes, generation_speed, gpt_mini, median_after_warmup, \
    peak_memory_bytes
from mingpt.lab.study import Study, study_args

KV_HEADS = [1, 2, 3, 6]


def core_peak_mib(batch, block, n_kv_head, gqa_scores, device, n_query_head=6, head_dim=32):
    q = torch.randn(batch, n_query_head, block, head_dim, device=device)
    k, v = (torch.randn(batch, n_kv_head, block, head_dim, device=device) for _ in range(2))
    return peak_memory_bytes(lambda: attend(q, k, v, impl="naive", gqa_scores=gqa_scores), device) / 2**20


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("gqa_cost", args.scale, args.out, args.wandb)
    new_tokens = 50 if args.scale == "quick" else 500
    device = best_device()
    rows = []
    for n_kv in KV_HEADS:
        trainer = study.train(f"n_kv_head={n_kv}", [f"--model.n_kv_head={n_kv}", "--model.attn_impl=naive",
                                                    "--model.n_query_head=6", "--trainer.dtype=float32"],
                              course_iters=200)
        logs, C = trainer.logs, trainer.config
        block = trainer.train_dataset.get_block_size()
        row = {"n_kv_head": n_kv, "attention_ms": median_after_warmup(logs["attention_computation_time"]),
               "attention_probe_mib": median_after_warmup(logs["attention_computation_memory"])}
        row["attention_peak_mib_per_head"] = core_peak_mib(C.batch_size, block, n_kv, "per_head", device)
        row["attention_peak_mib_group_sum"] = core_peak_mib(C.batch_size, block, n_kv, "group_sum", device)
        model = gpt_mini(block_size=128, n_kv_head=n_kv, rope=True, device=device)
        prompt = torch.randint(65, (1, 10), generator=torch.Generator().manual_seed(0))
        speed, seq = generation_speed(model, prompt, new_tokens, use_cache=True)
        row["kv_cache_bytes"] = cache_bytes(model, seq)
        row["cached_tokens_per_s"] = speed
        rows.append(row)
    study.save_csv("cost", rows)
    study.save_figure(cost_figure(rows, f"{args.scale} scale, {trainer.device}"), "cost")
    study.finish()


def cost_figure(rows, label):
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [("attention_ms", "attention time per layer (ms)"),
              ("attention_peak_mib_per_head", "attention core peak memory (MiB)"),
              ("kv_cache_bytes", "KV cache per sequence (KB)"), ("cached_tokens_per_s", "generation (tokens/s)")]
    for ax, (key, ylabel) in zip(axes.flat, panels):
        values = [float(r[key]) / (1024 if key == "kv_cache_bytes" else 1) for r in rows]
        ax.plot(KV_HEADS, values, "o-", label="per-head scores" if "peak" in key else None)
        if "peak" in key:
            ax.plot(KV_HEADS, [float(r["attention_peak_mib_group_sum"]) for r in rows], "s--",
                    label="summed group scores")
            ax.legend(fontsize=8)
        ax.set(xlabel="n_kv_head (of 6 query heads)", ylabel=ylabel, xticks=KV_HEADS)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Cost of grouped-query attention ({label})")
    return fig


if __name__ == "__main__":
    main()
