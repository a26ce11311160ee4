"""
One training run of a character-level model, as chargpt.py and the experiment scripts start it: the config
tree with the course's chargpt defaults, the data, the model (optionally from a pretrained run), the trainer,
and everything written to system.work_dir:

  args.txt, config.json   what was asked for
  model.pt                weights + model config + vocabulary (enough to sample, no data file needed)
  ckpt.pt                 model.pt's content plus optimizer, iteration, RNG states and logs (for --trainer.resume)
  train_logs.json         per-iteration losses, learning rate, timings, attention probes; eval losses
  samples.txt             a sample every trainer.sample_interval iterations

Every file is written to a temporary name and renamed, so a run killed at any instant leaves the previous
good files loadable.
"""

import json
import netrc
import os
import sys

import torch

from mingpt.data import CharDataset, Vocabulary, read_text
from mingpt.model import GPT, check_sampling
from mingpt.rnn import BiRNNLM, RNNLM
from mingpt.trainer import Trainer, pick_device
from mingpt.utils import CfgNode as CN, UserError, save_json, save_text, save_torch, set_seed

WANDB_MODES = ("online", "offline", "disabled")


def get_config():
    C = CN()
    C.system = CN()
    C.system.set("seed", 3407, "random seed for weights, batches and dropout")
    C.system.set("work_dir", "out/chargpt", "folder for this run's checkpoints, logs and samples")
    C.system.set("wandb", None, "online | offline | disabled (None: online with a wandb login, else offline)")
    C.system.set("wandb_project", "chargpt", "wandb project")
    C.system.set("wandb_group", None, "wandb group (e.g. one per study)")
    C.data = CharDataset.get_default_config()
    C.model = GPT.get_default_config()
    C.trainer = Trainer.get_default_config()
    C.sample = CN()
    C.sample.set("only", False, "generate from system.work_dir/model.pt and exit, without training")
    C.sample.set("prompt", "O God, O God!", "text the sample continues (also for samples during training)")
    C.sample.set("max_new_tokens", 500, "characters to generate")
    C.sample.set("do_sample", True, "sample from the distribution (False: greedy)")
    C.sample.set("temperature", 1.0, "softmax temperature (0: greedy)")
    C.sample.set("top_k", 10, "sample among the k most likely characters (None: all)")
    C.sample.set("top_p", None, "nucleus sampling: the smallest set reaching probability p (None: off)")
    C.sample.set("use_cache", True, "decode with the KV cache (False: recompute the context every step)")
    return C


def help_text(config):
    rows = config.flat()
    width = max(len(k) for k, _, _ in rows) + 2
    lines = ["usage: python chargpt.py [--node.key=value ...]   (node.key=value without dashes works too)", ""]
    for key, value, doc in rows:
        lines.append(f"  --{key:<{width}} {doc} [default: {value!r}]")
    return "\n".join(lines)


def build_model(C):
    """The model that --model.model_type names."""
    if C.model_type == "gpt":
        return GPT(C)
    if C.model_type == "rnn":
        return RNNLM(C)
    if C.model_type in ("birnn_invalid", "birnn_prefix"):
        return BiRNNLM(C, form=C.model_type.removeprefix("birnn_"))
    raise UserError(f"--model.model_type={C.model_type} must be one of gpt, rnn, birnn_invalid, birnn_prefix")


# -----------------------------------------------------------------------------
# checkpoints

def load_checkpoint(path, what="checkpoint"):
    """torch.load with weights_only=True (a checkpoint never runs code), with one-line errors."""
    if not os.path.isfile(path):
        raise UserError(f"no {what} at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises many kinds
        raise UserError(f"{path} is not a readable {what} ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def load_state_into(model, state, source, extend_positions=False):
    """Copy `state` into `model`, naming any key or shape that does not fit. With extend_positions, a learned
    position table of another length is copied row by row; rows it lacks keep their fresh initialisation."""
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


def load_pretrained(model, folder, work_dir, vocab):
    if os.path.abspath(folder) == os.path.abspath(work_dir):
        raise UserError(f"--model.pretrained_folder={folder} is the run's own --system.work_dir; "
                        f"train into another folder")
    path = os.path.join(folder, "model.pt")
    ckpt = load_checkpoint(path, "model.pt")
    if ckpt.get("vocab") != vocab.itos:
        raise UserError(f"{path} was trained on another character set than --data.input_file")
    load_state_into(model, ckpt["model"], path, extend_positions=True)
    print(f"loaded pretrained weights from {path}")


def model_file(model, config, vocab, iter_num):
    return {"model": model.state_dict(), "model_config": config.model.to_dict(), "vocab": vocab.itos,
            "iter_num": iter_num}


# -----------------------------------------------------------------------------
# wandb

def wandb_mode(setting):
    if setting is not None:
        if setting not in WANDB_MODES:
            raise UserError(f"--system.wandb={setting} must be one of {', '.join(WANDB_MODES)}")
        return setting
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


class WandbLogger:
    """Sends the run to wandb; a no-op when disabled. Never prompts: a failed online start falls back to
    offline."""

    def __init__(self, config):
        self.run = None
        mode = wandb_mode(config.system.wandb)
        if mode == "disabled":
            return
        import wandb
        self.wandb = wandb
        kwargs = dict(project=config.system.wandb_project, group=config.system.wandb_group,
                      name=os.path.basename(os.path.normpath(config.system.work_dir)), config=config.to_dict(),
                      dir=config.system.work_dir, settings=wandb.Settings(init_timeout=30, silent=True))
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as e:
            if mode == "offline":
                raise
            print(f"wandb online start failed ({type(e).__name__}); logging offline instead")
            self.run = wandb.init(mode="offline", **kwargs)
        self.samples = wandb.Table(columns=["iter", "sample"], log_mode="INCREMENTAL")

    def log(self, metrics, step):
        if self.run:
            self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def log_sample(self, iter_num, text):
        if self.run:
            self.samples.add_data(iter_num, text)
            self.run.log({"samples": self.samples}, step=iter_num)

    def finish(self):
        if self.run:
            self.run.finish()


# -----------------------------------------------------------------------------

def new_logs(device):
    return {"device": device, "train_losses": [], "val_losses": [], "eval_train_losses": [],
            "attention_computation_time": [], "attention_computation_memory": [], "learning_rates": [],
            "iter_time_ms": [], "tokens_per_s": [], "samples": []}


def check_sample_config(C, vocab):
    try:
        check_sampling(C.temperature, C.top_k, C.top_p)
    except ValueError as e:
        raise UserError(f"--sample: {e}") from None
    if C.max_new_tokens < 0:
        raise UserError(f"--sample.max_new_tokens={C.max_new_tokens} must be >= 0")
    if not C.prompt:
        raise UserError("--sample.prompt is empty; give at least one character to continue")
    try:
        vocab.encode(C.prompt)
    except UserError as e:
        raise UserError(f"--sample.prompt: {e}") from None


def sample_tokens(model, vocab, sample_config, device, seed):
    """Yield the sample's characters one at a time, as the model produces them."""
    C = sample_config
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    x = torch.tensor([vocab.encode(C.prompt)], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        for token in model.stream(x, C.max_new_tokens, temperature=C.temperature, do_sample=C.do_sample,
                                  top_k=C.top_k, top_p=C.top_p, use_cache=C.use_cache, generator=gen):
            yield vocab.decode(token[0])
    finally:
        model.train(was_training)


def write_sample(model, vocab, config, trainer, logs, logger):
    text = config.sample.prompt + "".join(
        sample_tokens(model, vocab, config.sample, trainer.device, config.system.seed + trainer.iter_num))
    print(text)
    logs["samples"].append({"iter": trainer.iter_num, "text": text})
    save_text("".join(f"--- iter {s['iter']} ---\n{s['text']}\n\n" for s in logs["samples"]),
              os.path.join(config.system.work_dir, "samples.txt"))
    logger.log_sample(trainer.iter_num, text)


def train(config):
    """Train as `config` says and return the trainer (whose model and logs hold the results)."""
    work_dir = config.system.work_dir
    set_seed(config.system.seed)
    dataset = CharDataset(config.data, read_text(config.data.input_file))
    vocab = dataset.vocab
    check_sample_config(config.sample, vocab)  # bad sample settings fail now, not at the first sample
    config.model.vocab_size = dataset.get_vocab_size()
    config.model.block_size = dataset.get_block_size()
    model = build_model(config.model)
    if config.model.pretrained_folder is not None:
        load_pretrained(model, config.model.pretrained_folder, work_dir, vocab)
    trainer = Trainer(config.trainer, model, dataset)
    logs = new_logs(trainer.device)

    ckpt_path = os.path.join(work_dir, "ckpt.pt")
    if config.trainer.resume:
        state = load_checkpoint(ckpt_path, "resume checkpoint (train without --trainer.resume first)")
        if state["config"]["model"] != config.model.to_dict():
            diff = [k for k, v in config.model.to_dict().items() if state["config"]["model"].get(k) != v]
            raise UserError(f"--trainer.resume: model settings {diff} differ from the run in {work_dir}; "
                            f"resume with its flags")
        if state["vocab"] != vocab.itos:
            raise UserError(f"--trainer.resume: {ckpt_path} was trained on another character set")
        try:
            trainer.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"{ckpt_path} does not fit this run ({str(e).splitlines()[0]})") from None
        logs = state["logs"]
        print(f"resuming {work_dir} from iteration {trainer.iter_num}")

    os.makedirs(work_dir, exist_ok=True)
    save_text(" ".join(sys.argv) + "\n", os.path.join(work_dir, "args.txt"))
    save_json(config.to_dict(), os.path.join(work_dir, "config.json"))
    logger = WandbLogger(config)

    def save_all(trainer):
        save_torch(model_file(model, config, vocab, trainer.iter_num), os.path.join(work_dir, "model.pt"))
        save_torch({**trainer.state_dict(), "config": config.to_dict(), "vocab": vocab.itos, "logs": logs},
                   ckpt_path)

    def batch_end_callback(trainer):
        m = trainer.metrics
        logs["train_losses"].append(m["loss"])
        logs["learning_rates"].append(m["lr"])
        logs["iter_time_ms"].append(m["iter_ms"])
        logs["tokens_per_s"].append(m["tokens_per_s"])
        if m["attention_ms"] is not None:
            logs["attention_computation_time"].append(m["attention_ms"])
        if m["attention_mb"] is not None:
            logs["attention_computation_memory"].append(m["attention_mb"])
        wandb_metrics = {"train/loss": m["loss"], "train/lr": m["lr"], "train/iter_ms": m["iter_ms"],
                         "train/tokens_per_s": m["tokens_per_s"], "attention_computation_time": m["attention_ms"],
                         "attention_computation_memory": m["attention_mb"]}
        if trainer.last_eval:
            logs["val_losses"].append([trainer.iter_num, trainer.last_eval["val"]])
            logs["eval_train_losses"].append([trainer.iter_num, trainer.last_eval["train"]])
            wandb_metrics.update({"eval/train_loss": trainer.last_eval["train"],
                                  "eval/val_loss": trainer.last_eval["val"]})
        logger.log(wandb_metrics, trainer.iter_num)
        done = trainer.iter_num == config.trainer.max_iters
        if config.trainer.sample_interval and trainer.iter_num % config.trainer.sample_interval == 0:
            write_sample(model, vocab, config, trainer, logs, logger)
        if done or (config.trainer.checkpoint_interval and trainer.iter_num % config.trainer.checkpoint_interval == 0):
            save_all(trainer)
        if done or trainer.last_eval or trainer.iter_num % config.trainer.log_interval == 0:
            save_json({k: v for k, v in logs.items() if k != "samples"}, os.path.join(work_dir, "train_logs.json"))

    trainer.set_callback("on_batch_end", batch_end_callback)
    trainer.run()
    if trainer.iter_num == 0 or not os.path.exists(ckpt_path):
        save_all(trainer)
    logger.finish()
    trainer.logs = logs
    return trainer


def sample(config):
    """Stream a sample from system.work_dir/model.pt to stdout; writes nothing."""
    path = os.path.join(config.system.work_dir, "model.pt")
    ckpt = load_checkpoint(path, "model.pt (train into this --system.work_dir first)")
    model_config = GPT.get_default_config()
    try:
        model_config.merge_from_dict(ckpt["model_config"])
        vocab = Vocabulary(ckpt["vocab"])
        model = build_model(model_config)
    except (KeyError, TypeError) as e:
        raise UserError(f"{path} is not a chargpt model.pt (missing {e})") from None
    load_state_into(model, ckpt["model"], path)
    device = pick_device(config.trainer.device)
    model.to(device)
    check_sample_config(config.sample, vocab)
    print(config.sample.prompt, end="", flush=True)
    for ch in sample_tokens(model, vocab, config.sample, device, config.system.seed):
        print(ch, end="", flush=True)
    print()
