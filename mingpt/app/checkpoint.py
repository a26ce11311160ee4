"""
The checkpoint format: what model.pt and ckpt.pt hold, how they are read back and checked, and how saved weights
go into a model. model.pt is the weights, the model settings and the tokenizer (enough to sample); ckpt.pt adds
the optimizer, the iteration, the RNG states, the run's settings and its logs (enough to resume exactly).
Checkpoints of earlier versions keep loading: their model settings are merged into today's defaults.
"""

import os

import torch

from mingpt.app.metrics import LOG_LISTS
from mingpt.app.settings import build_model
from mingpt.data.tokenizer import from_dict as tokenizer_from_dict
from mingpt.errors import UserError
from mingpt.model import GPT

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


def saved_model(ckpt, path):
    """The model a checkpoint holds (any model type), its weights loaded, on the CPU."""
    model = build_model(saved_model_config(ckpt, path))
    load_state_into(model, ckpt["model"], path)
    return model


def load_state_into(model, state, source, extend_positions=False):
    """Copy `state` into `model`, naming any key or shape that does not fit. With extend_positions, a learned
    position table of another length is copied row by row; rows it lacks keep their fresh initialisation."""
    state = {key: value for key, value in state.items() if key not in model.RETIRED_KEYS}
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


def model_file(model, config, tokenizer, iter_num):
    """What model.pt holds (and ckpt.pt too, with the resume state added)."""
    return {"model": model.state_dict(), "model_config": config.model.to_dict(), "vocab": tokenizer.tokens,
            "tokenizer": tokenizer.to_dict(), "iter_num": iter_num}
