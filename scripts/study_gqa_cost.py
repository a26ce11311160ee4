"""
Study 3, gqa_cost: what grouped-query attention saves, for n_kv_head in {1, 2, 3, 6} with 6 query heads.

- attention time (ms) per layer and iteration, from the trainer's probe over a short training run;
- attention memory (MiB): the trainer's probe (on CUDA the course's allocator figure, the memory the attention
  core keeps for backward; on a CPU the bytes it saves for backward), and the peak allocations of the naive
  attention core at the training shapes (CUDA allocator counters, or torch.profiler on a CPU), for LLaMA's
  per-head scores and for the writeup's summed group scores (one map per kv head);
- KV-cache bytes per sequence and generation tokens/s with the cache (RoPE model, mingpt.experiments.bench).

Times and probe memory are medians over the iterations after warm-up; everything runs on the device training
picks (a GPU when there is one), in fp32 wherever bf16 is native too: the course's figures, which these stand
beside, are fp32's.

    python scripts/study_gqa_cost.py --scale quick|cpu|full [--max-minutes M] [--results DIR]
"""

import torch

from mingpt.attention import attend
from mingpt.experiments.bench import best_device, cache_bytes, generation_speed, gpt_mini, median_after_warmup, \
    peak_memory_bytes
from mingpt.experiments.study import Study, TrainingRun, study_args

KV_HEADS = [1, 2, 3, 6]


def core_peak_mib(batch, block, n_kv_head, gqa_scores, device, n_query_head=6, head_dim=32):
    q = torch.randn(batch, n_query_head, block, head_dim, device=device)
    k, v = (torch.randn(batch, n_kv_head, block, head_dim, device=device) for _ in range(2))
    return peak_memory_bytes(lambda: attend(q, k, v, impl="naive", gqa_scores=gqa_scores), device) / 2**20


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("gqa_cost", args)
    new_tokens = 50 if args.scale == "quick" else 500
    device = best_device()

    def measure(trainer):
        logs, C, n_kv = trainer.logs, trainer.config, trainer.model.attention_modules()[0].n_kv_head
        block = trainer.train_dataset.get_block_size()
        model = gpt_mini(block_size=128, n_kv_head=n_kv, rope=True, device=device)
        prompt = torch.randint(65, (1, 10), generator=torch.Generator().manual_seed(0))
        speed, seq = generation_speed(model, prompt, new_tokens, use_cache=True)
        return {"attention_ms": median_after_warmup(logs["attention_computation_time"]),
                "attention_probe_mib": median_after_warmup(logs["attention_computation_memory"]),
                "attention_peak_mib_per_head": core_peak_mib(C.batch_size, block, n_kv, "per_head", device),
                "attention_peak_mib_group_sum": core_peak_mib(C.batch_size, block, n_kv, "group_sum", device),
                "kv_cache_bytes": cache_bytes(model, seq), "cached_tokens_per_s": speed}
    study.finish(study.run([
        TrainingRun(f"n_kv_head={n_kv}", [f"--model.n_kv_head={n_kv}", "--model.attn_impl=naive",
                                          "--model.n_query_head=6", "--trainer.dtype=float32"],
                    course_iters=200, measure=measure) for n_kv in KV_HEADS]))


if __name__ == "__main__":
    main()
