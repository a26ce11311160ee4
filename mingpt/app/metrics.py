"""
Every metric a run records, declared once: its name where it is measured (a key of Trainer.metrics for each
iteration, of Trainer.last_eval for each evaluation, or the run's own for what mingpt/app/run.py measures), the list
that holds it in train_logs.json (and in ckpt.pt's logs), its wandb key, and what it holds with its unit. The
trainer, the run's files and the dashboard (mingpt/app/dashboard.py) read them here: a new metric is a row and a line.
"""

from typing import NamedTuple

ITERATION, EVALUATION, RUN = "iteration", "evaluation", "run"  # when a metric is measured, and by whom


class Metric(NamedTuple):
    name: str  # where it is measured
    when: str  # ITERATION: a value per iteration; EVALUATION: [iteration, value] per evaluation; RUN: once
    log: str  # its list in train_logs.json (None: wandb only)
    key: str  # its wandb key
    about: str  # what it holds, and its unit


# name, when, train_logs.json list (None: wandb only), wandb key, what it holds and its unit; in the order of
# train_logs.json's lists
METRICS = tuple(Metric(*row) for row in (
    ("loss", ITERATION, "train_losses", "train/loss",
     "training loss of the iteration's batch (nats per token: per character with data.tokenizer=char)"),
    ("val", EVALUATION, "val_losses", "val/loss",
     "validation loss at each evaluation (nats per token); summary: best value and its step"),
    ("val_bpc", EVALUATION, "val_bpc", "val/bpc",
     "validation loss in bits per character: the evaluated tokens' nats over ln 2 x the characters they cover "
     "(val/loss / ln 2 for characters), comparable across tokenizers"),
    ("train", EVALUATION, "eval_train_losses", "eval/train_loss",
     "training-split loss at each evaluation, same batches and mode as val/loss"),
    ("elapsed_s", EVALUATION, "eval_elapsed_s", "time/elapsed_s",
     "wall seconds from the start of the run (data, model, compile and evaluations included; a resumed run goes on "
     "from the time its checkpoint had spent) to each evaluation's end"),
    ("attention_ms", ITERATION, "attention_computation_time", "attn/time_ms",
     "forward time of the attention core, mean over layers, ms"),
    ("attention_mib", ITERATION, "attention_computation_memory", "attn/mem_mib",
     "attention core memory, mean over layers, MiB: on CUDA allocated after minus before the call; on a CPU the "
     "bytes of the tensors it saves for backward (saved-tensor hooks)"),
    ("attention_peak_mib", ITERATION, "attention_peak_memory_mib", "attn/peak_mib",
     "CUDA only: the most the attention core allocates during the call above what was allocated before it, mean "
     "over layers, MiB"),
    ("lr", ITERATION, "learning_rates", "lr",
     "learning rate of the iteration"),
    ("iter_ms", ITERATION, "iter_time_ms", "perf/iter_ms",
     "wall time of the iteration (forward, backward, optimizer step), ms"),
    ("tokens_per_s", ITERATION, "tokens_per_s", "perf/tokens_per_s",
     "training tokens per second of the iteration"),
    ("grad_norm", ITERATION, "grad_norms", "train/grad_norm",
     "the gradient norm of the iteration's step before clipping (clip_grad_norm_'s value): a spike warns of "
     "divergence"),
    ("clipped", ITERATION, "clipped", "train/clipped",
     "1 when clipping scaled the step's gradient down (its norm above --trainer.grad_norm_clip), else 0"),
    ("loss_scale", ITERATION, "loss_scales", "train/loss_scale",
     "--trainer.dtype=float16 only: the loss scale of torch.amp.GradScaler after the iteration's step"),
    ("skipped", ITERATION, "skipped_steps", "train/skipped",
     "--trainer.dtype=float16 only: 1 when the step's scaled gradients overflowed and the scaler skipped it, else 0"),
    ("compile_s", RUN, "compile_s", "perf/compile_s",
     "seconds torch.compile took to compile the training and evaluation graphs before the first step "
     "(--trainer.compile), apart from every iter_ms; train_logs.json: one per start of the run (the first, each "
     "resume)"),
    ("target_iter", RUN, None, "target/iter",
     "the iteration of the first evaluation at or below --trainer.target_val_loss"),
    ("target_tokens", RUN, None, "target/tokens",
     "training tokens to that evaluation (iterations x batch_size x block_size)"),
    ("target_wall_s", RUN, None, "target/wall_s",
     "wall seconds from the start of the run (as time/elapsed_s) to that evaluation"),
    ("mfu", RUN, None, "perf/mfu",
     "model FLOPs utilisation: the model's training FLOPs per second over the matmul peak measured on this device "
     "in the training dtype at start-up (0..1)"),
    ("kv_cache_bytes", RUN, None, "gen/kv_cache_bytes",
     "bytes of the KV caches that generating a sample holds (batch 1)"),
    ("gen_tokens_per_s", RUN, None, "gen/tokens_per_s",
     "tokens per second of generating the sample (KV cache on unless sample.use_cache=False)"),
    ("attention_maps", RUN, None, "attention/maps",
     "image: every layer's and head's attention weights for sample.prompt, every trainer.attention_maps_interval "
     "steps and at the end (off by default)"),
))
KEY = {m.name: m.key for m in METRICS}  # for the run's own metrics
# train_logs.json: the metrics' lists, then the samples ({"iter", "text"}) and the resumes ({"iter", "changed"});
# beside them the device and, with --trainer.target_val_loss, "target": {"val_loss", "iter", "tokens", "wall_s"} of
# this command's first evaluation at or below it (None each until then)
LOG_LISTS = tuple(m.log for m in METRICS if m.log) + ("samples", "resumes")


def of(when):
    return [m for m in METRICS if m.when == when]


def new_logs(device):
    """A run's logs before its first iteration: the device it trains on, and an empty list per LOG_LISTS entry."""
    return {"device": device, **{key: [] for key in LOG_LISTS}}
