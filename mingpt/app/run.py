"""
One training run of a character-level model, as chargpt.py and the experiment scripts start it: the data, the
model (optionally from a pretrained run), the trainer, a resume from the run's checkpoint, and everything
written to system.work_dir:

  args.txt, config.json   the command line; the settings as resolved, with what the run is made of
  model.pt                weights + model config + tokenizer (enough to sample, no data file needed)
  tokenizer.json          the tokenizer: its kind and tokens (a BPE's own JSON inside)
  ckpt.pt                 model.pt's content plus optimizer, iteration, RNG states and logs (for --trainer.resume)
  train_logs.json         per-iteration losses, learning rate, timings, attention probes; eval losses, val bpc and
                          times; the compile time and the target (--trainer.compile, --trainer.target_val_loss)
  samples.txt             a sample every trainer.sample_interval iterations and at the end
  wandb/, wandb_run_id.txt  the wandb run (mingpt/app/dashboard.py) and its id, which a resume continues

The settings and flags are mingpt/app/settings.py's, the format of model.pt and ckpt.pt mingpt/app/checkpoint.py's,
sampling mingpt/app/sample_text.py's.

Every setting, the data, the work_dir and any checkpoint are checked before the first file is written.

Every file is written to a temporary name and renamed, so a run killed at any instant leaves the previous
good files loadable.
"""

import os
import sys
import time
from typing import NamedTuple

import torch

from mingpt.app.attention_maps import attention_maps, plot_attention_maps
from mingpt.app.checkpoint import load_checkpoint, load_state_into, model_file, saved_tokenizer
from mingpt.app.console import Console, stop_on_interrupt
from mingpt.app.dashboard import RUN_ID_FILE, WandbRun, saved_run_id
from mingpt.app.files import check_temporary_folder, check_writable_folder, machine_info, remove_stale_temporaries, \
    save_json, save_text, save_torch
from mingpt.app.fine_tune import fine_tune
from mingpt.app.metrics import EVALUATION, ITERATION, KEY, new_logs, of
from mingpt.app.probes import AttentionProbe, matmul_peak_flops
from mingpt.app.resume import Resume, announce, reconcile_resume, restore
from mingpt.app.sample_text import check_prompt, sample_tokens
from mingpt.app.settings import build_model, set_threads
from mingpt.config import CfgNode as CN
from mingpt.data.dataset import CharDataset
from mingpt.data.tokenizer import UNK
from mingpt.distributed import Processes
from mingpt.errors import DIVERGED_EXIT, RunDiverged, UserError
from mingpt.hf import pretrained_state
from mingpt.trainer import Diverged, Trainer
from mingpt.utils import set_seed

TOKENIZER_FILE = "tokenizer.json"


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


def report_tokenizer(dataset):
    """What the tokens are, and how much of the validation text a word vocabulary misses."""
    tokenizer = dataset.vocab
    line = f"{tokenizer.kind} tokenizer: {len(tokenizer)} tokens"
    if tokenizer.kind == "word":
        unknown, total = dataset.unknown_rate("val")
        line += f"; {unknown} of the {total} tokens of the val split ({unknown / total:.2%}) are {UNK}"
    print(line)


def resolved_config(config, model, trainer):
    """The config as the run uses it ("auto" and None replaced by what they mean), plus what the run is made of:
    what config.json holds and the wandb run records."""
    resolved = config.to_dict()
    if model.pos_emb is not None:  # a GPT: what None means for its positions and key/value heads
        resolved["model"]["pos_emb"] = model.pos_emb
        resolved["model"]["n_kv_head"] = model.attention_modules()[0].n_kv_head
    resolved["trainer"].update(device=trainer.device, dtype=trainer.dtype_name)
    resolved["system"]["num_threads"] = torch.get_num_threads()
    return {**resolved, "params": model.num_params(), "device": trainer.device, "dtype": trainer.dtype_name,
            "torch": torch.__version__, "machine": machine_info()}


class RunFiles:
    """What a training run writes to system.work_dir and sends to wandb, from the trainer's callback."""

    def __init__(self, config, trainer, target=None):
        self.config, self.trainer, self.model, self.logs = config, trainer, trainer.model, trainer.logs
        self.target = target  # the run's Target, whose reaching the logs record
        self.tokenizer = trainer.train_dataset.vocab
        self.dir = config.system.work_dir
        self.ckpt_path = os.path.join(self.dir, "ckpt.pt")
        self.saved_iter = trainer.iters_done if config.trainer.resume else None
        self.logger = None
        self.flops_per_iter = self.peak_flops = None

    def start(self):
        """The first writes of the run, once every input has been checked (the first of them makes the folder)."""
        C = self.config.trainer
        if self.trainer.compile_s is not None:
            self.logs["compile_s"].append(self.trainer.compile_s)
        if C.target_val_loss is not None:  # this command's target, filled in when an evaluation reaches it
            self.logs["target"] = {"val_loss": C.target_val_loss, "iter": None, "tokens": None, "wall_s": None}
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
        if self.trainer.compile_s is not None:
            self.logger.summarize({KEY["compile_s"]: self.trainer.compile_s})
        T = self.trainer.train_dataset.get_block_size()
        flops_per_token = self.model.flops_per_token(T)
        if self.logger.run and flops_per_token is not None:
            self.flops_per_iter = flops_per_token * T * self.config.trainer.batch_size
            self.peak_flops = matmul_peak_flops(self.trainer.device, self.trainer.autocast_dtype or torch.float32)

    def repair_logs(self):
        """Rewrite the logs and samples from the resume checkpoint: a kill between the checkpoint's rename and
        the logs' leaves them an iteration behind."""
        self.save_logs()
        self.save_samples()

    def save_checkpoint(self):
        trainer, config = self.trainer, self.config
        model = model_file(self.model, config, self.tokenizer, trainer.iters_done)
        save_torch(model, os.path.join(self.dir, "model.pt"))
        save_torch({**model, **trainer.state_dict(), "config": config.to_dict(), "logs": self.logs}, self.ckpt_path)
        self.saved_iter = trainer.iters_done

    def save_logs(self, logs=None):
        logs = self.logs if logs is None else logs
        save_json({k: v for k, v in logs.items() if k != "samples"}, os.path.join(self.dir, "train_logs.json"))

    def save_samples(self, logs=None):
        logs = self.logs if logs is None else logs
        save_text("".join(f"--- iter {s['iter']} ---\n{s['text']}\n\n" for s in logs["samples"]),
                  os.path.join(self.dir, "samples.txt"))

    def back_to_checkpoint(self):
        """After a step diverged: the logs and samples as the last checkpoint (ckpt.pt, which nothing after it
        overwrote) holds them."""
        if self.saved_iter is not None:
            logs = load_checkpoint(self.ckpt_path, "resume checkpoint", resume=True)["logs"]
            self.save_logs(logs)
            if logs["samples"]:
                self.save_samples(logs)

    def write_sample(self):
        trainer, config = self.trainer, self.config
        t0 = time.perf_counter()
        text = config.sample.prompt + "".join(
            sample_tokens(self.model, self.tokenizer, config.sample, trainer.device,
                          config.system.seed + trainer.iters_done))
        seconds = time.perf_counter() - t0
        print(text)
        self.logs["samples"].append({"iter": trainer.iters_done, "text": text})
        self.save_samples()
        self.logger.log_sample(trainer.iters_done, text)
        self.logger.log({KEY["kv_cache_bytes"]: self.model.kv_cache_bytes() if config.sample.use_cache else 0,
                         KEY["gen_tokens_per_s"]: config.sample.max_new_tokens / seconds}, trainer.iters_done)

    def log_attention_maps(self):
        """The attention maps of the sample prompt to wandb, as one image per logging step."""
        maps = attention_maps(self.model, self.tokenizer, self.config.sample.prompt)
        figure = plot_attention_maps(maps, title=f"--sample.prompt at iteration {self.trainer.iters_done}")
        self.logger.log_figure(KEY["attention_maps"], figure, self.trainer.iters_done)

    def on_batch_end(self, trainer):
        """Record the iteration's metrics (and the evaluation's, when it had one) in the logs and in wandb; write
        the sample, the checkpoint and the logs when they are due."""
        logs, C, metrics = self.logs, self.config.trainer, {}
        for metric in of(ITERATION):
            value = trainer.metrics.get(metric.name)
            if value is not None:  # the attention probes, for models without attention or with the probe off
                logs[metric.log].append(value)
            metrics[metric.key] = value
        if self.peak_flops:
            metrics[KEY["mfu"]] = self.flops_per_iter / (trainer.metrics["iter_ms"] / 1000) / self.peak_flops
        if trainer.last_eval:
            for metric in of(EVALUATION):
                logs[metric.log].append([trainer.iters_done, trainer.last_eval[metric.name]])
                metrics[metric.key] = trainer.last_eval[metric.name]
        self.logger.log(metrics, trainer.iters_done)
        reached = self.target and self.target.reached
        if reached and reached["iter"] == trainer.iters_done:  # this iteration's evaluation: the loop stops after it
            logs["target"].update(iter=reached["iter"], tokens=reached["tokens"], wall_s=reached["elapsed_s"])
            self.logger.summarize({KEY["target_iter"]: reached["iter"], KEY["target_tokens"]: reached["tokens"],
                                   KEY["target_wall_s"]: reached["elapsed_s"]})
        done = trainer.iters_done == C.max_iters
        if C.sample_interval and (trainer.iters_done % C.sample_interval == 0 or done):
            self.write_sample()
        maps = C.attention_maps_interval
        if maps and self.logger.run and (trainer.iters_done % maps == 0 or done):
            self.log_attention_maps()
        if done or (C.checkpoint_interval and trainer.iters_done % C.checkpoint_interval == 0):
            self.save_checkpoint()
        if done or trainer.last_eval or trainer.iters_done % C.log_interval == 0:
            self.save_logs()


class Run(NamedTuple):
    """A run whose every input is checked, as train() hands it to run_training()."""
    config: CN
    model: torch.nn.Module
    dataset: CharDataset
    processes: Processes
    resume: Resume  # None: a fresh run
    started: float  # time.perf_counter() at the start of train(): what the run's wall times count from
    callbacks: tuple = ()  # (event, function) pairs added after the run's own


def diverged(error, trainer, files):
    """The one line for a run whose step diverged: where, the last finite loss, what is on disk, what to try."""
    losses = trainer.logs["train_losses"]
    last = f"the last finite loss was {losses[-1]:.4f} at iteration {error.iteration - 1}" if losses else \
        "at its first step"
    kept = f"{files.ckpt_path} still holds iteration {files.saved_iter}" if files.saved_iter is not None else \
        "no checkpoint was saved"
    return RunDiverged(f"training diverged at iteration {error.iteration} (loss {error.loss:.4g}, gradient norm "
                       f"{error.grad_norm:.4g}; {last}); {kept}. Try a lower --trainer.learning_rate, "
                       f"--trainer.grad_norm_clip=1.0 or --trainer.dtype=float32")


class Target:
    """--trainer.target_val_loss: an on_batch_end callback, on every process (their evaluations agree), that stops
    the loop after the first evaluation at or below the target and keeps where it was reached."""

    def __init__(self, val_loss):
        self.val_loss = val_loss
        self.reached = None  # {"iter", "tokens", "elapsed_s", "val"} of that evaluation

    def on_batch_end(self, trainer):
        ev = trainer.last_eval
        if ev and self.reached is None and ev["val"] <= self.val_loss:
            tokens = trainer.iters_done * trainer.config.batch_size * trainer.train_dataset.get_block_size()
            self.reached = {"iter": trainer.iters_done, "tokens": tokens, "elapsed_s": ev["elapsed_s"],
                            "val": ev["val"]}
            trainer.stop_requested = True

    def line(self, trainer):
        """The last line of the run: where it reached the target, or that it did not."""
        reached = self.reached
        if reached is None:
            vals = [v for _, v in trainer.logs["val_losses"]]
            best = f"; best val loss {min(vals):.4f}" if vals else ""
            return f"--trainer.target_val_loss={self.val_loss}: not reached in {trainer.iters_done} iterations{best}"
        return (f"--trainer.target_val_loss={self.val_loss}: reached at iteration {reached['iter']} (val loss "
                f"{reached['val']:.4f}) after {reached['tokens']:,} tokens and {reached['elapsed_s']:.1f} s")


def train(config, callbacks=()):
    """Train as `config` says and return the trainer (whose model and logs hold the results). Every setting,
    the data, the work_dir and any checkpoint are checked before the first file is written. callbacks: (event,
    function) pairs the trainer calls after the run's own (an experiment's stop at its time budget, say)."""
    started = time.perf_counter()
    config.validate()
    for node, why in (("model", f"--model.model_type={config.model.model_type}"),
                      ("trainer", f"--trainer.optimizer={config.trainer.optimizer} with --trainer.lr_schedule="
                                  f"{config.trainer.lr_schedule}")):
        ignored = getattr(config, node).ignored(f"{node}.")
        if ignored:
            print(f"warning: {why} does not use {', '.join(ignored)}; ignoring {'it' if len(ignored) == 1 else 'them'}",
                  file=sys.stderr)
    work_dir = config.system.work_dir
    check_writable_folder(work_dir, "--system.work_dir")
    check_temporary_folder()
    folder = config.model.pretrained_folder
    if folder is not None and os.path.abspath(folder) == os.path.abspath(work_dir):
        raise UserError(f"--model.pretrained_folder={folder} is the run's own --system.work_dir; "
                        f"train into another folder")
    init = None
    if config.model.init_from is not None:
        if folder is not None:
            raise UserError(f"--model.init_from={config.model.init_from} and --model.pretrained_folder={folder} both "
                            f"name the weights to start from; give one")
        init = fine_tune(config)
    set_threads(config.system.num_threads)
    set_seed(config.system.seed)
    ckpt_path = os.path.join(work_dir, "ckpt.pt")
    state = pretrained = saved = resume = None
    if config.trainer.resume:
        state = load_checkpoint(ckpt_path, "resume checkpoint", resume=True,
                                hint=" (train without --trainer.resume first)")
        saved = saved_tokenizer(state, ckpt_path), f"--trainer.resume: {ckpt_path}"
    elif init is not None:
        saved = init.tokenizer, f"--model.init_from={init.name}"
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
    if config.trainer.attention_maps_interval and not model.attention_modules():
        raise UserError(f"--trainer.attention_maps_interval={config.trainer.attention_maps_interval}: "
                        f"--model.model_type={config.model.model_type} has no attention to draw")
    print(f"number of parameters: {model.num_params() / 1e6:.2f}M")
    if pretrained is not None:
        load_state_into(model, pretrained["model"], pretrained_path, extend_positions=True)
        print(f"loaded pretrained weights from {pretrained_path}")
    if init is not None and state is None:
        load_state_into(model, pretrained_state(init.name, init.hf_config), init.name, extend_positions=True)
        print(f"fine-tuning {init.name} (its first {config.model.block_size} positions)")
    if state is not None:
        resume = reconcile_resume(config, state, ckpt_path)
    processes = Processes()  # under torchrun: every check above passed on every process before any joins
    try:
        trainer = run_training(Run(config, model, dataset, processes, resume, started, tuple(callbacks)))
        processes.barrier()  # no process leaves the group while another is still in a collective call
    finally:
        processes.stop()
    return trainer


def run_training(run):
    """Train a checked Run: the trainer, the resume, the loop, the files (written by rank 0 alone)."""
    config, model, processes, resume = run.config, run.model, run.processes, run.resume
    work_dir, C = config.system.work_dir, config.trainer
    if C.lr_schedule != "constant" and C.max_iters is not None and C.warmup_iters > C.max_iters:
        print(f"warning: --trainer.warmup_iters={C.warmup_iters} is above --trainer.max_iters={C.max_iters}: the "
              f"learning rate never reaches its peak {C.learning_rate}", file=sys.stderr)
    trainer = Trainer(C, model, run.dataset, processes, run.started)
    trainer.logs = new_logs(trainer.device)  # the run's (mingpt.app.metrics.LOG_LISTS), filled by RunFiles
    if trainer.compile_s is not None:
        print(f"torch.compile: {trainer.compile_s:.1f} s to compile the training and evaluation graphs")
    if resume is not None:
        restore(trainer, resume)
        if trainer.iters_done == C.max_iters:
            if processes.main:
                remove_stale_temporaries(work_dir)
                RunFiles(config, trainer).repair_logs()
            print(f"{work_dir} already reached --trainer.max_iters={trainer.iters_done}; nothing to train (give a "
                  f"larger --trainer.max_iters to train on)")
            return trainer
        announce(trainer, resume, work_dir)
    target = Target(C.target_val_loss) if C.target_val_loss is not None else None
    if target:
        trainer.add_callback("on_batch_end", target.on_batch_end)
    interrupted = lambda: trainer.stop_requested and not (target and target.reached)  # noqa: E731
    if not processes.main:
        with stop_on_interrupt(trainer):
            try:
                trainer.run()
            except Diverged as e:  # as rank 0, at the same step
                raise RunDiverged(str(e)) from None
        if interrupted():  # as rank 0 does, once it has saved
            raise KeyboardInterrupt
        return trainer

    if C.probe_attention and C.compile:
        print("--trainer.compile=True: the attention probe is off (its timers and hooks would split the compiled "
              "graph)")
    elif C.probe_attention:
        trainer.add_callback("on_step_end", AttentionProbe(model).on_step_end)
    files = RunFiles(config, trainer, target)
    files.start()
    console = Console(trainer, C.log_interval)
    trainer.add_callback("on_batch_end", console.on_batch_end)
    trainer.add_callback("on_batch_end", files.on_batch_end)
    for event, callback in run.callbacks:
        trainer.add_callback(event, callback)
    try:
        with stop_on_interrupt(trainer):
            trainer.run()
    except Diverged as e:
        files.logger.finish(exit_code=DIVERGED_EXIT)
        files.back_to_checkpoint()
        raise diverged(e, trainer, files) from None
    except BaseException as e:  # a second Ctrl-C mid-iteration (what is on disk stays as it was), or a failure
        files.logger.finish(exit_code=130 if isinstance(e, KeyboardInterrupt) else 1)
        if isinstance(e, MemoryError) or isinstance(e, RuntimeError) and "alloc" in str(e):
            kept = "no checkpoint was saved yet" if files.saved_iter is None else \
                f"the checkpoint of iteration {files.saved_iter} is intact"
            raise UserError(f"out of memory in iteration {trainer.iters_done + 1}; use a smaller "
                            f"--trainer.batch_size, --data.block_size or model ({kept})") from None
        raise
    finally:
        console.close()
    if interrupted():
        if files.saved_iter != trainer.iters_done:
            files.save_checkpoint()
            files.save_logs()
        files.logger.finish(exit_code=130)
        # what the caller's "interrupted" line adds (chargpt.py prints it)
        raise KeyboardInterrupt(f"{files.ckpt_path} holds iteration {trainer.iters_done}; continue with "
                                f"--trainer.resume=True")
    if files.saved_iter != trainer.iters_done:  # max_iters=0, or a stop at the target: no iteration saved it
        files.save_checkpoint()
    files.logger.finish()
    if target:
        print(target.line(trainer))
    return trainer
