"""
The character-level data: read the corpus (downloading tiny-shakespeare when it is missing and the network
allows), map characters to integers, split off the last `val_fraction` of the text for validation, and draw
batches of random contiguous windows with one tensor index (no per-sample Python loop, no worker processes).
"""

import os
import urllib.request

import torch

from mingpt.utils import NOT_EMPTY, CfgNode as CN, Check, UserError, at_least, save_text

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def read_text(path, download_url=TINY_SHAKESPEARE_URL, timeout=10):
    """Return the text of `path` as a str; UserError (one line) when it is missing, empty or not UTF-8."""
    if not os.path.exists(path):
        try:
            with urllib.request.urlopen(download_url, timeout=timeout) as r:
                save_text(r.read().decode("utf-8"), path)
            print(f"downloaded tiny-shakespeare to {path}")
        except (OSError, ValueError) as e:
            raise UserError(f"data file {os.path.abspath(path)} not found and the download failed ({e}); "
                            f"put tiny-shakespeare there or point --data.input_file=PATH at a text file") from None
    if os.path.isdir(path):
        raise UserError(f"--data.input_file={path} is a directory; give a UTF-8 text file")
    if not os.path.isfile(path):  # a device or a pipe: reading it could block or never end
        raise UserError(f"--data.input_file={path} is not a regular file; give a UTF-8 text file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read --data.input_file={path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not valid UTF-8 (bad byte {raw[e.start]:#04x} at byte offset {e.start}); "
                        f"convert it to UTF-8 or choose another --data.input_file") from None
    if not text:
        raise UserError(f"{path} is empty; --data.input_file needs a text to train on")
    return text


class Vocabulary:
    """The sorted characters of a text; ids are positions in that list. Saved with the model, so sampling
    needs no data file."""

    def __init__(self, chars):
        self.itos = list(chars)
        self.stoi = {ch: i for i, ch in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, s):
        unknown = sorted(set(s) - set(self.stoi))
        if unknown:
            raise UserError(f"characters {''.join(unknown)!r} are not in the vocabulary of this model")
        return [self.stoi[c] for c in s]

    def decode(self, ids):
        return "".join(self.itos[int(i)] for i in ids)


class CharDataset:
    """Emits batches of characters, split into a training part and a validation part (the last `val_fraction`)."""

    @staticmethod
    def get_default_config():
        C = CN()
        C.set("block_size", 128, "context length in characters (the model's block_size follows it)",
              check=at_least(1))
        C.set("input_file", "input.txt", "UTF-8 text to train on (tiny-shakespeare is downloaded if missing)",
              check=NOT_EMPTY)
        C.set("val_fraction", 0.1, "the last fraction of the text that is held out for validation",
              check=Check("in (0, 1)", lambda v: 0 < v < 1))
        return C

    def __init__(self, config, text):
        self.config = config.validate("data.")
        self.vocab = Vocabulary(sorted(set(text)))
        data = torch.tensor(self.vocab.encode(text), dtype=torch.long)
        n_val = int(len(data) * config.val_fraction)
        self.splits = {"train": data[:len(data) - n_val], "val": data[len(data) - n_val:]}
        for name, split in self.splits.items():
            if len(split) < config.block_size + 1:
                raise UserError(f"the {name} split has {len(split)} characters, too short for one block of "
                                f"{config.block_size}+1; use a longer text or a smaller --data.block_size")
        self._offsets = torch.arange(config.block_size + 1)

    @property
    def stoi(self):
        return self.vocab.stoi

    @property
    def itos(self):
        return self.vocab.itos

    def get_vocab_size(self):
        return len(self.vocab)

    def get_block_size(self):
        return self.config.block_size

    def __len__(self):
        return len(self.splits["train"]) - self.config.block_size

    def __getitem__(self, idx):
        """minGPT's interface: the training window starting at idx, as (x, y) of block_size ids each."""
        chunk = self.splits["train"][idx:idx + self.config.block_size + 1]
        return chunk[:-1], chunk[1:]

    def get_batch(self, split, batch_size, generator=None):
        """x, y of shape (batch_size, block_size): random windows of `split`, y shifted by one character."""
        data = self.splits[split]
        start = torch.randint(len(data) - self.config.block_size, (batch_size,), generator=generator)
        chunk = data[start[:, None] + self._offsets]  # (B, T+1)
        return chunk[:, :-1], chunk[:, 1:]
