"""
--trainer.resume: a run continues from its ckpt.pt exactly where it stopped (weights, optimizer, iteration, RNG
states, logs), as one Resume value made once every input is checked. The model must be the saved one; the
optimizer settings may change, and apply from the resume point on.
"""

from typing import NamedTuple

from mingpt.app.checkpoint import load_state_into, saved_model_config
from mingpt.errors import UserError
from mingpt.model_config import kv_heads

OPTIMIZER_SETTINGS = ("learning_rate", "muon_lr", "betas", "weight_decay", "grad_norm_clip", "lr_schedule",
                      "warmup_iters", "lr_decay_iters", "decay_fraction", "min_lr", "batch_size")


class Resume(NamedTuple):
    state: dict  # the resume checkpoint (mingpt.app.checkpoint.load_checkpoint's, with resume=True)
    path: str  # where it was read
    changed: dict  # {setting: (saved, now)}: the optimizer settings this command changes


def reconcile_resume(config, state, ckpt_path):
    """The Resume of `state` (read from ckpt_path) into the run `config` describes. Checks that the checkpoint
    continues this run (same model) and settles the schedule: unless --trainer.lr_decay_iters is given, the saved
    run's decay is kept, so a larger max_iters extends the run at min_lr instead of moving the learning rate."""
    # n_kv_head=None and n_kv_head=n_query_head are one model; a saved config that predates a setting has its default
    saved = saved_model_config(state, ckpt_path)
    saved_model = dict(saved.to_dict(), n_kv_head=kv_heads(saved))
    model = dict(config.model.to_dict(), n_kv_head=kv_heads(config.model))
    if saved_model != model:
        diff = [k for k, v in model.items() if saved_model.get(k) != v]
        raise UserError(f"--trainer.resume: model settings {diff} differ from the run in {config.system.work_dir}; "
                        f"resume with its flags")
    at, until = state["iter_num"], config.trainer.max_iters
    if until is not None and at > until:
        raise UserError(f"{ckpt_path} is at iteration {at}, past --trainer.max_iters={until}; give a larger "
                        f"--trainer.max_iters to train on")
    saved_trainer = state["config"].get("trainer", {})
    now = config.trainer
    optimizer = saved_trainer.get("optimizer", "adamw")  # runs that did not record one trained with AdamW
    if optimizer != now.optimizer:
        raise UserError(f"--trainer.resume: {ckpt_path} holds the state of --trainer.optimizer={optimizer}, not "
                        f"{now.optimizer}; resume with --trainer.optimizer={optimizer}")
    if now.lr_decay_iters is None:  # the saved run's decay (runs that did not record one decayed over max_iters)
        now.lr_decay_iters = saved_trainer.get("lr_decay_iters") or saved_trainer.get("max_iters")
    changed = {}
    for key in OPTIMIZER_SETTINGS:
        old = saved_trainer.get(key)
        old = tuple(old) if isinstance(old, list) else old
        if old is not None and old != getattr(now, key):
            changed[key] = (old, getattr(now, key))
    return Resume(state, ckpt_path, changed)


def restore(trainer, resume):
    """Put the resume checkpoint's weights, optimizer, iteration, RNG states and logs into the trainer."""
    load_state_into(trainer.model, resume.state["model"], resume.path)
    try:
        trainer.load_state_dict(resume.state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"{resume.path} does not fit this run ({str(e).splitlines()[0]})") from None
    trainer.logs.update(resume.state["logs"])


def describe_schedule(trainer):
    C = trainer.config
    start, end = trainer.iters_done, C.max_iters
    if C.lr_schedule == "constant" or end is None:
        return f"learning rate {trainer.lr_at(start):.2e} at iteration {start + 1}"
    return (f"learning rate {trainer.lr_at(start):.2e} at iteration {start + 1}, {trainer.lr_at(end - 1):.2e} at "
            f"iteration {end} ({C.lr_schedule} from {C.learning_rate:.2e} to {C.min_lr:.2e} over {C.lr_decay_iters} "
            f"iterations; --trainer.lr_decay_iters changes that)")


def announce(trainer, resume, work_dir):
    """Say where the run in work_dir goes on from and what this command changes, and record it in the logs'
    resumes."""
    at = trainer.iters_done
    print(f"resuming {work_dir} from iteration {at}: {describe_schedule(trainer)}")
    for key, (old, new) in resume.changed.items():
        print(f"--trainer.{key} changed from {old} to {new}: applies from iteration {at + 1} on")
    trainer.logs["resumes"].append({"iter": at, "changed": {k: list(v) for k, v in resume.changed.items()}})
