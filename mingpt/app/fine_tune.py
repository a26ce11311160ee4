"""
--model.init_from=NAME: a run that starts from a GPT-2 checkpoint (a hub name or a folder), read through
mingpt/hf.py, with GPT-2's tokenizer (mingpt/data/tokenizer.py), checked before anything is written.
"""

import os
from typing import NamedTuple

from mingpt.bpe import FILE_NAMES
from mingpt.data.tokenizer import GPT2Tokenizer
from mingpt.errors import UserError
from mingpt.hf import pretrained_settings


class FineTune(NamedTuple):
    """What --model.init_from starts a run from, checked before anything is written."""
    name: str
    hf_config: object  # transformers' config of the checkpoint
    tokenizer: GPT2Tokenizer


FINE_TUNE_FLAGS = {"init_from", "embd_pdrop", "resid_pdrop", "attn_pdrop"}  # the model flags a fine-tune reads


def fine_tune(config):
    """--model.init_from=NAME: the run's model settings become the GPT-2 checkpoint's (dropouts stay the run's, the
    position table is cut to --data.block_size, as nanoGPT's crop_block_size does) and its tokenizer GPT-2's (the
    folder's vocabulary files, else minGPT's cached ones). Returns the FineTune; model flags that the checkpoint
    decides, another tokenizer, or a context longer than the checkpoint's are one line each."""
    name = config.model.init_from
    hf_config, settings = pretrained_settings(name)
    if hf_config.model_type != "gpt2":
        raise UserError(f"--model.init_from={name} holds a {hf_config.model_type} model; init_from fine-tunes GPT-2 "
                        f"with its tokenizer (GPT.from_pretrained loads this one; a run of this lab goes on from "
                        f"--model.pretrained_folder)")
    decided = sorted(config.model.given() - FINE_TUNE_FLAGS)
    if decided:
        raise UserError(f"--model.init_from={name} takes the model's settings from the checkpoint; drop "
                        f"{' '.join('--model.' + key for key in decided)}")
    if "tokenizer" in config.data.given() and config.data.tokenizer != "gpt2":
        raise UserError(f"--model.init_from={name} reads GPT-2's tokens; drop --data.tokenizer="
                        f"{config.data.tokenizer} (or give --data.tokenizer=gpt2)")
    if config.data.block_size > settings["block_size"]:
        raise UserError(f"--data.block_size={config.data.block_size} is longer than the {settings['block_size']} "
                        f"positions {name} has; give at most that")
    has_files = os.path.isdir(name) and any(all(os.path.isfile(os.path.join(name, f)) for f in pair)
                                            for pair in FILE_NAMES)
    tokenizer = GPT2Tokenizer.from_folder(name if has_files else None)
    if len(tokenizer) != hf_config.vocab_size:
        raise UserError(f"{name} has {hf_config.vocab_size} tokens but its GPT-2 vocabulary files have "
                        f"{len(tokenizer)}; give a folder with the model's own vocab.json and merges.txt")
    config.data.tokenizer = "gpt2"
    config.model.merge_from_dict({k: v for k, v in settings.items() if k not in ("vocab_size", "block_size")})
    return FineTune(name, hf_config, tokenizer)
