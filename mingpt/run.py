"""
One training run of a character-level model, as chargpt.py and the experiment scripts start it: the config
tree with the course's chargpt defaults, the data, the model (optionally from a pretrained run), the trainer,
and everything written to system.work_dir:

  args.txt, config.json   the command line; the settings as resolved, with what the run is made of
  model.pt                weights + model config + tokenizer (enough to sample, no data file needed)
  tokenizer.json          the tokenizer: its kind and tokens (a BPE's own JSON inside)
  ckpt.pt                 model.pt's content plus optimizer, iteration, RNG states and logs (for --trainer.resume)
  train_logs.json         per-iteration losses, learning rate, timings, attention probes; eval losses, val bpc
  samples.txt             a sample every trainer.sample_interval iterations and at the end
  wandb/, wandb_run_id.txt  the wandb run (mingpt/dashboard.py) and its id, which a resume continues

Every setting, the data, the work_dir and any checkpoint are checked before the first file is written.

Every file is written to a temporary name and renamed, so a run killed at any instant leaves the previous
good files loadable.
"""

import os
import sys
import time
from functools import partial

import torch

from mingpt.bench import matmul_peak_flops
from mingpt.dashboard import RUN_ID_FILE, WandbRun, saved_run_id
from mingpt.data import CharDataset
from mingpt.distributed import Processes, micro_batch_size
from mingpt.model import GPT, kv_heads
from mingpt.rnn import BiRNNLM, RNNLM
from mingpt.tokenizer import UNK, from_dict as tokenizer_from_dict
from mingpt.trainer import Trainer, pick_device
from mingpt.utils import NOT_EMPTY, CfgNode as CN, Check, UserError, at_least, check_temporary_folder, \
    check_writable_folder, machine_info, remove_stale_temporaries, save_json, save_text, save_torch, set_seed

WANDB_MODES = ("online", "offline", "disabled")
SEED = Check("in [0, 2**63)", lambda v: 0 <= v < 2**63)


def get_config():
    C = CN()
    C.system = CN()
    C.system.set("seed", 3407, "random seed for weights, batches and dropout", check=SEED)
    C.system.set("work_dir", "out/chargpt", "folder for this run's checkpoints, logs and samples", check=NOT_EMPTY)
    C.system.set("wandb", None, "wandb mode (None: $WANDB_MODE, else online with a wandb login, else offline)",
                 choices=WANDB_MODES)
    C.system.set("wandb_project", None, "wandb project (None: $WANDB_PROJECT, else chargpt)", kind=str,
                 check=NOT_EMPTY)
    C.system.set("wandb_name", None, "wandb run name (None: $WANDB_NAME, else work_dir's path below out/)",
                 kind=str, check=NOT_EMPTY)
    C.system.set("wandb_group", None, "wandb group, e.g. one per study (None: $WANDB_RUN_GROUP, else none)",
                 kind=str, check=NOT_EMPTY)
    C.system.set("wandb_tags", None, "wandb tags, comma-separated (None: $WANDB_TAGS, else none)", kind=str,
                 check=Check("comma-separated names", lambda v: all(tag.strip() for tag in v.split(","))))
    C.system.set("num_threads", None, "CPU threads torch uses (None: torch's default, one per core); 1 is faster "
                 "when another process shares the cores", kind=int, check=at_least(1))
    C.data = CharDataset.get_default_config()
    C.model = GPT.get_default_config()
    C.trainer = Trainer.get_default_config()
    C.sample = CN()
    C.sample.set("only", False, "generate from system.work_dir/model.pt and exit, without training")
    C.sample.set("prompt", "O God, O God!", "text the sample continues (also for samples during training)",
                 check=Check("at least one character", lambda v: v != ""))
    C.sample.set("max_new_tokens", 500, "characters to generate", check=at_least(0))
    C.sample.set("do_sample", True, "sample from the distribution (False: greedy)")
    C.sample.set("temperature", 1.0, "softmax temperature (0: greedy)", check=at_least(0))
    C.sample.set("top_k", 10, "sample among the k most likely characters (None: all)", nullable=True,
                 check=at_least(1))
    C.sample.set("top_p", None, "nucleus sampling: the smallest set reaching probability p (None: off)",
                 kind=float, check=Check("in (0, 1]", lambda v: 0 < v <= 1))
    C.sample.set("use_cache", True, "decode with the KV cache (False: recompute the context every step)")
    return C


def config_from_flags(flags, process_counts=(1,)):
    """For the scripts: the config that chargpt flags give, checked as chargpt checks them before anything runs,
    the batch split for each process count included; on bad input, one line and exit 2."""
    config = get_config()
    try:
        config.merge_from_args(flags)
        config.validate()
        for n in process_counts:
            micro_batch_size(config.trainer.batch_size, config.trainer.grad_accum_steps, n)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return config


def help_text(config):
    rows = config.flat()
    width = max(len(k) for k, _, _ in rows) + 2
    lines = ["usage: python chargpt.py [--node.key=value ...]   (node.key=value without dashes works too)", ""]
    for key, value, doc in rows:
        node, leaf = key.rsplit(".", 1)
        allowed = config
        for part in node.split("."):
            allowed = getattr(allowed, part)
        allowed = allowed.describe(leaf)
        lines.append(f"  --{key:<{width}} {doc}{f' [{allowed}]' if allowed else ''} [default: {value!r}]")
    return "\n".join(lines)


MODELS = {"gpt": GPT, "rnn": RNNLM, "birnn_invalid": partial(BiRNNLM, form="invalid"),
          "birnn_prefix": partial(BiRNNLM, form="prefix")}


def build_model(C):
    """The model that --model.model_type names."""
    try:
        return MODELS[C.model_type](C)
    except (RuntimeError, MemoryError) as e:
        if isinstance(e, RuntimeError) and "allocate" not in str(e):
            raise
        raise UserError(f"the model does not fit in this machine's memory (--model.n_layer={C.n_layer}, "
                        f"--model.n_embd={C.n_embd}); make it smaller") from None


# -----------------------------------------------------------------------------
# checkpoints

TOKENIZER_FILE = "tokenizer.json"
MODEL_FILE_KEYS = {"model": dict, "model_config": dict, "vocab": list}
RESUME_KEYS = {"optimizer": dict, "iter_num": int, "torch_rng": torch.Tensor, "batch_rng": torch.Tensor,
               "config": dict, "logs": dict}


def load_checkpoint(path, what="model.pt", resume=False, hint=""):
    """Load a model.pt (with resume: a ckpt.pt) and check it is what chargpt writes: a dict with the entries and
    types it saves, model settings that pass validation, and a vocabulary of the size they say. torch.load runs
    with weights_only=True: a checkpoint never runs code. Returns the checkpoint's dict; every problem is one
    UserError naming the file."""
    if not os.path.exists(path):
        raise UserError(f"no {what} at {path}{hint}")
    if not os.path.isfile(path):  # a folder, a device or a pipe (reading one could block)
        raise UserError(f"{path} is not a regular file, not a readable {what}")
    if os.path.getsize(path) == 0:
        raise UserError(f"{path} is empty, not a readable {what}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # a truncated or foreign file: torch raises many kinds
        why = str(e).strip().split("\n")[0].split(". ")[0]
        raise UserError(f"{path} is not a readable {what} ({type(e).__name__}{': ' + why if why else ''})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds a {type(ckpt).__name__}, not a chargpt {what}")
    if "model_config" not in ckpt and isinstance(ckpt.get("config"), dict):  # ckpt.pt of earlier versions
        ckpt["model_config"] = ckpt["config"].get("model")
    if resume and "optimizer" not in ckpt and "model" in ckpt:
        raise UserError(f"{path} holds weights only (a model.pt?), not a resume checkpoint with optimizer state")
    for key, kind in {**MODEL_FILE_KEYS, **(RESUME_KEYS if resume else {})}.items():
        if not isinstance(ckpt.get(key), kind):
            found = "no" if key not in ckpt else f"a {type(ckpt[key]).__name__} as its"
            raise UserError(f"{path} is not a chargpt {what}: it has {found} '{key}' entry")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["model"].items()):
        raise UserError(f"{path}: its 'model' entry is not a state dict of tensors")
    if resume and ckpt["iter_num"] < 0:
        raise UserError(f"{path}: its iteration count {ckpt['iter_num']} is negative")
    if resume and any(not isinstance(ckpt["logs"].get(k, []), list) for k in LOG_LISTS):
        raise UserError(f"{path}: its 'logs' entry is not chargpt's training logs")
    tokenizer = saved_tokenizer(ckpt, path)
    config = saved_model_config(ckpt, path)
    if config.vocab_size != len(tokenizer):
        raise UserError(f"{path}: its vocabulary has {len(tokenizer)} tokens but its model settings say "
                        f"vocab_size={config.vocab_size}")
    return ckpt


def saved_tokenizer(ckpt, path):
    """The tokenizer a checkpoint was trained with (character-level for checkpoints that do not say)."""
    return tokenizer_from_dict(ckpt.get("tokenizer", {"kind": "char"}), ckpt["vocab"], path)


def saved_model_config(ckpt, path):
    """The model config node a checkpoint was trained with, validated like the flags."""
    config = GPT.get_default_config()
    config.merge_from_dict(ckpt["model_config"])
    try:
        return config.validate("model.")
    except UserError as e:
        raise UserError(f"{path} holds invalid model settings: {e}") from None


def load_state_into(model, state, source, extend_positions=False):
    """Copy `state` into `model`, naming any key or shape that does not fit. With extend_positions, a learned
    position table of another length is copied row by row; rows it lacks keep their fresh initialisation."""
    retired = getattr(model, "RETIRED_KEYS", ())
    state = {key: value for key, value in state.items() if key not in retired}
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    if missing or unexpected:
        raise UserError(f"{source} does not fit this model: missing keys {missing[:3]}, unexpected keys "
                        f"{unexpected[:3]}; use the model flags it was trained with")
    for key, value in state.items():
        if value.shape == own[key].shape:
            continue
        if extend_positions and key == "transformer.wpe.weight" and value.shape[1:] == own[key].shape[1:]:
            rows = min(value.size(0), own[key].size(0))
            state = {**state, key: torch.cat([value[:rows], own[key][rows:]])}
            continue
        raise UserError(f"{source}: {key} has shape {tuple(value.shape)} but this model needs "
                        f"{tuple(own[key].shape)}; use the model flags it was trained with")
    model.load_state_dict(state)


def run_tokenizer(config, saved, source):
    """The tokenizer of a run that continues from a checkpoint (`saved`, from `source`): the saved one, which must
    be of the kind and size the flags name (for characters, the corpus's alphabet must be the saved one: the
    token cache checks it as it reads the corpus)."""
    C = config.data
    if saved.kind != C.tokenizer:
        raise UserError(f"{source} was trained with --data.tokenizer={saved.kind}, not {C.tokenizer}; give "
                        f"--data.tokenizer={saved.kind}")
    if C.vocab_size is not None and C.vocab_size != saved.vocab_size:
        raise UserError(f"{source} has a {saved.kind} vocabulary trained for --data.vocab_size={saved.vocab_size}, "
                        f"not {C.vocab_size}; drop the flag (the saved tokenizer is used as it was trained)")
    return saved


def model_file(model, config, tokenizer, iter_num):
    return {"model": model.state_dict(), "model_config": config.model.to_dict(), "vocab": tokenizer.tokens,
            "tokenizer": tokenizer.to_dict(), "iter_num": iter_num}


# -----------------------------------------------------------------------------
# training

LOG_LISTS = ("train_losses", "val_losses", "val_bpc", "eval_train_losses", "attention_computation_time",
             "attention_computation_memory", "attention_peak_memory_mib", "learning_rates", "iter_time_ms",
             "tokens_per_s", "samples", "resumes")


def new_logs(device):
    return {"device": device, **{key: [] for key in LOG_LISTS}}


def report_tokenizer(dataset):
    """What the tokens are, and how much of the validation text a word vocabulary misses."""
    tokenizer = dataset.vocab
    line = f"{tokenizer.kind} tokenizer: {len(tokenizer)} tokens"
    if tokenizer.kind == "word":
        unknown, total = dataset.unknown_rate("val")
        line += f"; {unknown} of the {total} tokens of the val split ({unknown / total:.2%}) are {UNK}"
    print(line)


def check_prompt(C, tokenizer):
    """A prompt the tokenizer cannot encode (characters outside a char vocabulary) is an error; words outside a
    word vocabulary become <unk>, and a note says which."""
    try:
        tokenizer.encode(C.prompt)
    except UserError as e:
        raise UserError(f"--sample.prompt: {e}") from None
    unknown = tokenizer.unknown(C.prompt)
    if unknown:
        print(f"note: --sample.prompt words {unknown} are not in the vocabulary: the model reads them as {UNK}",
              file=sys.stderr)


def set_threads(num_threads):
    if num_threads:
        torch.set_num_threads(num_threads)


def sample_tokens(model, tokenizer, sample_config, device, seed):
    """Yield the sample's text piece by piece, as the model produces its tokens. The text is decoded from all the
    tokens so far, so a character whose bytes span several BPE tokens comes out whole, once they are all there."""
    C = sample_config
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    x = torch.tensor([tokenizer.encode(C.prompt)], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    ids, done = [], 0
    try:
        for token in model.stream(x, C.max_new_tokens, temperature=C.temperature, do_sample=C.do_sample,
                                  top_k=C.top_k, top_p=C.top_p, use_cache=C.use_cache, generator=gen):
            ids.append(int(token[0]))
            text = tokenizer.decode(ids)
            if not text.endswith("\ufffd"):  # a character's first bytes; the rest follow
                yield text[done:]
                done = len(text)
        if ids and len(text) > done:  # the sample ends inside a character
            yield text[done:]
    finally:
        model.train(was_training)


OPTIMIZER_SETTINGS = ("learning_rate", "betas", "weight_decay", "grad_norm_clip", "lr_schedule", "warmup_iters",
                      "lr_decay_iters", "min_lr", "batch_size")


def reconcile_resume(config, state, ckpt_path):
    """Check that the checkpoint continues this run (same model) and settle the schedule: unless
    --trainer.lr_decay_iters is given, the saved run's decay is kept, so a larger max_iters extends the run at
    min_lr instead of moving the learning rate. Returns {setting: (saved, now)} for the optimizer settings that
    this command changes (they apply from the resume point on)."""
    saved = state["config"]
    saved_model, model = (dict(d, n_kv_head=kv_heads(CN(**d))) for d in (state["model_config"], config.model.to_dict()))
    if saved_model != model:
        diff = [k for k, v in model.items() if saved_model.get(k) != v]
        raise UserError(f"--trainer.resume: model settings {diff} differ from the run in {config.system.work_dir}; "
                        f"resume with its flags")
    at, until = state["iter_num"], config.trainer.max_iters
    if at > until:
        raise UserError(f"{ckpt_path} is at iteration {at}, past --trainer.max_iters={until}; give a larger "
                        f"--trainer.max_iters to train on")
    saved_trainer = saved.get("trainer", {})
    if config.trainer.lr_decay_iters is None:
        config.trainer.lr_decay_iters = saved_trainer.get("lr_decay_iters") or saved_trainer.get("max_iters")
    now = config.trainer
    changed = {}
    for key in OPTIMIZER_SETTINGS:
        old = saved_trainer.get(key)
        old = tuple(old) if isinstance(old, list) else old
        if old is not None and old != getattr(now, key):
            changed[key] = (old, getattr(now, key))
    return changed


def restore(trainer, state, ckpt_path, logs):
    """Put the resume checkpoint's weights, optimizer, iteration and RNG states into the trainer; return the run's
    logs so far (the checkpoint's, over the empty `logs`)."""
    load_state_into(trainer.model, state["model"], ckpt_path)
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"{ckpt_path} does not fit this run ({str(e).splitlines()[0]})") from None
    trainer.logs = {**logs, **state["logs"]}
    return trainer.logs


def describe_schedule(trainer):
    C = trainer.config
    start, end = trainer.iter_num, C.max_iters
    if C.lr_schedule == "constant":
        return f"learning rate constant at {C.learning_rate:.2e}"
    return (f"learning rate {trainer.lr_at(start):.2e} at iteration {start + 1}, {trainer.lr_at(end - 1):.2e} at "
            f"iteration {end} (cosine from {C.learning_rate:.2e} to {C.min_lr:.2e} over {C.lr_decay_iters} "
            f"iterations; --trainer.lr_decay_iters changes that)")


def resolved_config(config, model, trainer):
    """The config as the run uses it ("auto" and None replaced by what they mean), plus what the run is made of:
    what config.json holds and the wandb run records."""
    resolved = config.to_dict()
    if hasattr(model, "pos_emb"):
        resolved["model"]["pos_emb"] = model.pos_emb
        resolved["model"]["n_kv_head"] = model.attention_modules()[0].n_kv_head
    resolved["trainer"].update(device=trainer.device, dtype=trainer.dtype_name)
    resolved["system"]["num_threads"] = torch.get_num_threads()
    return {**resolved, "params": model.num_params(), "device": trainer.device, "dtype": trainer.dtype_name,
            "torch": torch.__version__, "machine": machine_info()}


class RunFiles:
    """What a training run writes to system.work_dir and sends to wandb, from the trainer's callback."""

    def __init__(self, config, model, tokenizer, trainer, logs):
        self.config, self.model, self.tokenizer, self.trainer, self.logs = config, model, tokenizer, trainer, logs
        self.dir = config.system.work_dir
        self.ckpt_path = os.path.join(self.dir, "ckpt.pt")
        self.saved_iter = trainer.iter_num if config.trainer.resume else None
        self.logger = None
        self.flops_per_iter = self.peak_flops = None

    def start(self):
        """The first writes of the run, once every input has been checked (the first of them makes the folder)."""
        remove_stale_temporaries(self.dir)  # left by a write that a kill cut short
        save_text(" ".join(sys.argv) + "\n", os.path.join(self.dir, "args.txt"))
        resolved = resolved_config(self.config, self.model, self.trainer)
        save_json(resolved, os.path.join(self.dir, "config.json"))
        save_json({**self.tokenizer.to_dict(), "tokens": self.tokenizer.tokens}, os.path.join(self.dir, TOKENIZER_FILE))
        if self.config.trainer.resume:
            self.repair_logs()
        run_id = saved_run_id(self.dir) if self.config.trainer.resume else None
        self.logger = WandbRun(self.config.system, resolved, self.dir, run_id=run_id)
        if self.logger.id:
            save_text(self.logger.id + "\n", os.path.join(self.dir, RUN_ID_FILE))
        if self.logger.run and hasattr(self.model, "flops_per_token"):
            T = self.trainer.train_dataset.get_block_size()
            self.flops_per_iter = self.model.flops_per_token(T) * T * self.config.trainer.batch_size
            self.peak_flops = matmul_peak_flops(self.trainer.device, self.trainer.autocast_dtype or torch.float32)

    def repair_logs(self):
        """Rewrite the logs and samples from the resume checkpoint: a kill between the checkpoint's rename and
        the logs' leaves them an iteration behind."""
        self.save_logs()
        self.save_samples()

    def save_checkpoint(self):
        trainer, config = self.trainer, self.config
        model = model_file(self.model, config, self.tokenizer, trainer.iter_num)
        save_torch(model, os.path.join(self.dir, "model.pt"))
        save_torch({**model, **trainer.state_dict(), "config": config.to_dict(), "logs": self.logs}, self.ckpt_path)
        self.saved_iter = trainer.iter_num

    def save_logs(self):
        save_json({k: v for k, v in self.logs.items() if k != "samples"}, os.path.join(self.dir, "train_logs.json"))

    def save_samples(self):
        save_text("".join(f"--- iter {s['iter']} ---\n{s['text']}\n\n" for s in self.logs["samples"]),
                  os.path.join(self.dir, "samples.txt"))

    def write_sample(self):
        trainer, config = self.trainer, self.config
        t0 = time.perf_counter()
        text = config.sample.prompt + "".join(
            sample_tokens(self.model, self.tokenizer, config.sample, trainer.device,
                          config.system.seed + trainer.iter_num))
        seconds = time.perf_counter() - t0
        print(text)
        self.logs["samples"].append({"iter": trainer.iter_num, "text": text})
        self.save_samples()
        self.logger.log_sample(trainer.iter_num, text)
        kv_bytes = self.model.kv_cache_bytes() if hasattr(self.model, "kv_cache_bytes") else None
        self.logger.log({"gen/kv_cache_bytes": kv_bytes if config.sample.use_cache else 0,
                         "gen/tokens_per_s": config.sample.max_new_tokens / seconds}, trainer.iter_num)

    def on_batch_end(self, trainer):
        logs, m, C = self.logs, trainer.metrics, self.config.trainer
        logs["train_losses"].append(m["loss"])
        logs["learning_rates"].append(m["lr"])
        logs["iter_time_ms"].append(m["iter_ms"])
        logs["tokens_per_s"].append(m["tokens_per_s"])
        if m["attention_ms"] is not None:
            logs["attention_computation_time"].append(m["attention_ms"])
        if m["attention_mib"] is not None:
            logs["attention_computation_memory"].append(m["attention_mib"])
        if m["attention_peak_mib"] is not None:
            logs["attention_peak_memory_mib"].append(m["attention_peak_mib"])
        metrics = {"train/loss": m["loss"], "lr": m["lr"], "perf/iter_ms": m["iter_ms"],
                   "perf/tokens_per_s": m["tokens_per_s"], "attn/time_ms": m["attention_ms"],
                   "attn/mem_mib": m["attention_mib"], "attn/peak_mib": m["attention_peak_mib"]}
        if self.peak_flops:
            metrics["perf/mfu"] = self.flops_per_iter / (m["iter_ms"] / 1000) / self.peak_flops
        if trainer.last_eval:
            ev = trainer.last_eval
            logs["val_losses"].append([trainer.iter_num, ev["val"]])
            logs["val_bpc"].append([trainer.iter_num, ev["val_bpc"]])
            logs["eval_train_losses"].append([trainer.iter_num, ev["train"]])
            metrics.update({"val/loss": ev["val"], "val/bpc": ev["val_bpc"], "eval/train_loss": ev["train"]})
        self.logger.log(metrics, trainer.iter_num)
        done = trainer.iter_num == C.max_iters
        if C.sample_interval and (trainer.iter_num % C.sample_interval == 0 or done):
            self.write_sample()
        if done or (C.checkpoint_interval and trainer.iter_num % C.checkpoint_interval == 0):
            self.save_checkpoint()
        if done or trainer.last_eval or trainer.iter_num % C.log_interval == 0:
            self.save_logs()


def train(config):
    """Train as `config` says and return the trainer (whose model and logs hold the results). Every setting,
    the data, the work_dir and any checkpoint are checked before the first file is written."""
    config.validate()
    ignored = config.ignored()
    if ignored:
        print(f"warning: --model.model_type={config.model.model_type} does not use {', '.join(ignored)}; ignoring "
              f"{'it' if len(ignored) == 1 else 'them'}", file=sys.stderr)
    work_dir = config.system.work_dir
    check_writable_folder(work_dir, "--system.work_dir")
    check_temporary_folder()
    folder = config.model.pretrained_folder
    if folder is not None and os.path.abspath(folder) == os.path.abspath(work_dir):
        raise UserError(f"--model.pretrained_folder={folder} is the run's own --system.work_dir; "
                        f"train into another folder")
    set_threads(config.system.num_threads)
    set_seed(config.system.seed)
    ckpt_path = os.path.join(work_dir, "ckpt.pt")
    state = changed = pretrained = saved = None
    if config.trainer.resume:
        state = load_checkpoint(ckpt_path, "resume checkpoint", resume=True,
                                hint=" (train without --trainer.resume first)")
        saved = saved_tokenizer(state, ckpt_path), f"--trainer.resume: {ckpt_path}"
    if folder is not None:
        pretrained_path = os.path.join(folder, "model.pt")
        pretrained = load_checkpoint(pretrained_path, "model.pt",
                                     hint=" (--model.pretrained_folder names a trained run's folder)")
        saved = saved or (saved_tokenizer(pretrained, pretrained_path), pretrained_path)
    tokenizer, source = (run_tokenizer(config, *saved), saved[1]) if saved else (None, "")
    dataset = CharDataset.from_corpus(config.data, tokenizer, source)
    tokenizer = dataset.vocab
    report_tokenizer(dataset)
    check_prompt(config.sample, tokenizer)  # a bad prompt fails now, not at the first sample
    config.model.vocab_size = dataset.get_vocab_size()
    config.model.block_size = dataset.get_block_size()
    model = build_model(config.model)
    print(f"number of parameters: {model.num_params() / 1e6:.2f}M")
    if pretrained is not None:
        load_state_into(model, pretrained["model"], pretrained_path, extend_positions=True)
        print(f"loaded pretrained weights from {pretrained_path}")
    if state is not None:
        changed = reconcile_resume(config, state, ckpt_path)
    # written out, so that config.json and a later resume see the schedule this run follows
    config.trainer.lr_decay_iters = config.trainer.lr_decay_iters or max(1, config.trainer.max_iters)
    processes = Processes()  # under torchrun: every check above passed on every process before any joins
    try:
        trainer = run_training(config, model, dataset, processes, state, changed, ckpt_path)
        processes.barrier()  # no process leaves the group while another is still in a collective call
    finally:
        processes.stop()
    return trainer


def run_training(config, model, dataset, processes, state, changed, ckpt_path):
    """train()'s second half, once everything is checked: the trainer, the resume from `state` (read from
    ckpt_path), the loop, the files (written by rank 0 alone)."""
    work_dir, tokenizer = config.system.work_dir, dataset.vocab
    trainer = Trainer(config.trainer, model, dataset, processes)
    logs = new_logs(trainer.device)
    if state is not None:
        logs = restore(trainer, state, ckpt_path, logs)
        at, until = trainer.iter_num, config.trainer.max_iters
        if at == until:
            if processes.main:
                remove_stale_temporaries(work_dir)
                RunFiles(config, model, tokenizer, trainer, logs).repair_logs()
            print(f"{work_dir} already reached --trainer.max_iters={until}; nothing to train (give a larger "
                  f"--trainer.max_iters to train on)")
            return trainer
        print(f"resuming {work_dir} from iteration {at}: {describe_schedule(trainer)}")
        for key, (old, new) in changed.items():
            print(f"--trainer.{key} changed from {old} to {new}: applies from iteration {at + 1} on")
        logs["resumes"].append({"iter": at, "changed": {k: list(v) for k, v in changed.items()}})
    trainer.logs = logs
    if not processes.main:
        trainer.run()
        if trainer.stop_requested:  # as rank 0 does, once it has saved
            raise KeyboardInterrupt
        return trainer

    files = RunFiles(config, model, tokenizer, trainer, logs)
    files.start()
    trainer.set_callback("on_batch_end", files.on_batch_end)
    try:
        trainer.run()
    except BaseException as e:  # a second Ctrl-C mid-iteration (what is on disk stays as it was), or a failure
        files.logger.finish(exit_code=130 if isinstance(e, KeyboardInterrupt) else 1)
        if isinstance(e, MemoryError) or isinstance(e, RuntimeError) and "alloc" in str(e):
            kept = "no checkpoint was saved yet" if files.saved_iter is None else \
                f"the checkpoint of iteration {files.saved_iter} is intact"
            raise UserError(f"out of memory in iteration {trainer.iter_num + 1}; use a smaller --trainer.batch_size, "
                            f"--data.block_size or model ({kept})") from None
        raise
    if trainer.stop_requested:
        if files.saved_iter != trainer.iter_num:
            files.save_checkpoint()
            files.save_logs()
        files.logger.finish(exit_code=130)
        # what the caller's "interrupted" line adds (chargpt.py prints it)
        raise KeyboardInterrupt(f"{ckpt_path} holds iteration {trainer.iter_num}; continue with --trainer.resume=True")
    if files.saved_iter != trainer.iter_num:  # max_iters=0: no iteration saved it
        files.save_checkpoint()
    files.logger.finish()
    return trainer


MODEL_NODES = ("data", "model", "trainer")


def ignored_when_sampling(config):
    """The flags that --sample.only=True does not use: the model comes from model.pt as it was trained."""
    defaults = dict((k, v) for k, v, _ in get_config().flat())
    return [f"--{k}" for k, v, _ in config.flat()
            if k.split(".")[0] in MODEL_NODES and k != "trainer.device" and v != defaults[k]]


def sample(config):
    """Stream a sample from system.work_dir/model.pt to stdout (the sample alone; notes go to stderr); writes
    nothing."""
    config.validate()
    ignored = ignored_when_sampling(config)
    if ignored:
        print(f"note: sampling uses the model saved in model.pt; ignoring {', '.join(ignored)}", file=sys.stderr)
    set_threads(config.system.num_threads)
    path = os.path.join(config.system.work_dir, "model.pt")
    ckpt = load_checkpoint(path, "model.pt", hint=" (train into this --system.work_dir first)")
    tokenizer = saved_tokenizer(ckpt, path)
    check_prompt(config.sample, tokenizer)
    model = build_model(saved_model_config(ckpt, path))
    load_state_into(model, ckpt["model"], path)
    print(f"number of parameters: {model.num_params() / 1e6:.2f}M", file=sys.stderr)
    device = pick_device(config.trainer.device)
    model.to(device)
    print(config.sample.prompt, end="", flush=True)
    for piece in sample_tokens(model, tokenizer, config.sample, device, config.system.seed):
        print(piece, end="", flush=True)
    print()
