"""
Sampling from a trained model: the text a prompt continues into, streamed piece by piece as the model produces
its tokens, during training (mingpt/app/run.py's samples.txt) and from a saved model.pt (--sample.only=True).
"""

import os
import sys

import torch

from mingpt.app.checkpoint import load_checkpoint, saved_model, saved_tokenizer
from mingpt.app.settings import get_config, set_threads
from mingpt.data.tokenizer import UNK
from mingpt.device import pick_device
from mingpt.errors import UserError


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
    model = saved_model(ckpt, path)
    print(f"number of parameters: {model.num_params() / 1e6:.2f}M", file=sys.stderr)
    device = pick_device(config.trainer.device)
    model.to(device)
    print(config.sample.prompt, end="", flush=True)
    for piece in sample_tokens(model, tokenizer, config.sample, device, config.system.seed):
        print(piece, end="", flush=True)
    print()
