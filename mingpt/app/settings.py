"""
The settings of a run and the flags that set them: the config tree with the course's chargpt defaults (each
part adds its own node: data, model, trainer), recipes (@FILE: flags read from a file), the --help text, the check
the scripts run on chargpt flags, and the model that --model.model_type names. chargpt.py, the scripts and the
tests start from get_config().
"""

import re
from functools import partial

import torch

from mingpt.config import CfgNode as CN, Check, NOT_EMPTY, above, at_least
from mingpt.data.dataset import CharDataset
from mingpt.distributed import micro_batch_size
from mingpt.errors import fail
from mingpt.errors import UserError
from mingpt.model import GPT
from mingpt.rnn import BiRNNLM, RNNLM
from mingpt.trainer import Trainer

WANDB_MODES = ("online", "offline", "disabled")
SEED = Check("in [0, 2**63)", lambda v: 0 <= v < 2**63)


def get_config():
    """Every setting of a run, with its default, help text and check: system and sample here, data, model and
    trainer from their parts."""
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
    # minGPT's trainer with chargpt's schedule and dtype, and what a run prints, saves and logs beside it
    C.trainer = Trainer.get_default_config().defaults(max_iters=600, learning_rate=5e-4, lr_schedule="cosine",
                                                      warmup_iters=50, dtype="auto")
    C.trainer.set("log_interval", 10, "print a log line every this many steps", check=at_least(1))
    C.trainer.set("sample_interval", 200, "write a sample to samples.txt every this many steps and at the end "
                  "(0: never)", check=at_least(0))
    C.trainer.set("checkpoint_interval", 200, "write the resume checkpoint every this many steps (0: only at the end)",
                  check=at_least(0))
    C.trainer.set("resume", False, "continue the run in system.work_dir from its checkpoint")
    C.trainer.set("target_val_loss", None, "stop at the first evaluation whose val loss is at or below this; the run "
                  "records the wall time, tokens and iterations to it", kind=float, check=above(0))
    C.trainer.set("probe_attention", True, "time every training call of the attention core and measure its memory "
                  "(logged as attn/*)")
    C.trainer.set("attention_maps_interval", 0, "log the attention maps of --sample.prompt (every layer and head) to "
                  "wandb as an image every this many steps and at the end (0: never)", check=at_least(0))
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


FLAG_LINE = re.compile(r"(--)?\w+(\.\w+)+=.*")
COMMENT = re.compile(r"(^|\s)#.*")  # a # at a line's start or after a space, to the end of the line


def read_recipe(path):
    """The chargpt flags of a recipe file: one a line (as argparse's @file reads arguments, so a value may hold
    spaces). A # at the start of a line or after a space starts a comment, on a line of its own or after any flag's
    value, whatever its type: `--trainer.max_iters=5  # five` is 5 and `--sample.prompt=O God!  # Hamlet` is
    'O God!' (a value holding " #" goes on the command line). Blank lines are skipped; a byte-order mark, which some
    editors save, is read as none."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise UserError(f"@{path}: no such recipe file (@FILE reads chargpt flags from FILE, one a line)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"@{path}: cannot read the recipe ({getattr(e, 'strerror', None) or e})") from None
    flags = []
    for number, line in enumerate(lines, start=1):
        line = COMMENT.sub("", line).strip()
        if line:
            if not FLAG_LINE.fullmatch(line):
                raise UserError(f"@{path}, line {number}: {line!r} is not a --node.key=value flag (# starts a "
                                f"comment)")
            flags.append(line)
    return flags


def expand_recipes(args):
    """The command line with each @FILE replaced by its recipe's flags, in place: a flag after it wins."""
    return [flag for arg in args for flag in (read_recipe(arg[1:]) if arg.startswith("@") else [arg])]


def config_from_flags(flags, process_counts=(1,)):
    """For the scripts: the config that chargpt flags give, checked as chargpt checks them before anything runs,
    the batch split for each process count included; on bad input, one line and exit 2."""
    config = get_config()
    try:
        config.merge_from_args(expand_recipes(flags))
        config.validate()
        for n in process_counts:
            micro_batch_size(config.trainer.batch_size, config.trainer.grad_accum_steps, n)
    except UserError as e:
        fail(e)
    return config


def help_text(config):
    rows = config.flat()
    width = max(len(k) for k, _, _ in rows) + 2
    lines = ["usage: python chargpt.py [@FILE] [--node.key=value ...]   (node.key=value without dashes works too; "
             "@FILE: flags read from FILE, one a line, # comments; flags after it win)", ""]
    for key, value, doc in rows:
        node, leaf = key.rsplit(".", 1)
        allowed = config
        for part in node.split("."):
            allowed = getattr(allowed, part)
        allowed = allowed.describe(leaf)
        lines.append(f"  --{key:<{width}} {doc}{f' [{allowed}]' if allowed else ''} [default: {value!r}]")
    return "\n".join(lines)


RECURRENT_MODELS = {"rnn": RNNLM, "birnn_invalid": partial(BiRNNLM, form="invalid"),
                    "birnn_prefix": partial(BiRNNLM, form="prefix")}


def build_model(C):
    """The model that --model.model_type names."""
    try:
        return RECURRENT_MODELS.get(C.model_type, GPT)(C)
    except (RuntimeError, MemoryError) as e:
        if isinstance(e, RuntimeError) and "allocate" not in str(e):
            raise
        raise UserError(f"the model does not fit in this machine's memory (--model.n_layer={C.n_layer}, "
                        f"--model.n_embd={C.n_embd}); make it smaller") from None


def set_threads(num_threads):
    """Apply --system.num_threads (None leaves torch's default)."""
    if num_threads:
        torch.set_num_threads(num_threads)
