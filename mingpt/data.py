"""
The data: read the corpus (downloading tiny-shakespeare when it is missing and the network allows), split off
the last `val_fraction` of its characters for validation, cut each split into tokens (mingpt/tokenizer.py:
characters by default), and draw batches of random contiguous windows with one tensor index (no per-sample
Python loop, no worker processes).
"""

import os
import urllib.request

import torch

from mingpt.tokenizer import BPE_DEFAULT_VOCAB, BYTES, TOKENIZERS, CharTokenizer, train_tokenizer
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


Vocabulary = CharTokenizer  # the character vocabulary's first name


def check_vocab_size(config):
    if config.vocab_size is None:
        return
    if config.tokenizer == "char":
        raise UserError(f"--data.vocab_size={config.vocab_size} applies to the word and bpe tokenizers; a "
                        f"character vocabulary is the text's own (drop the flag or choose --data.tokenizer)")
    if config.tokenizer == "bpe" and config.vocab_size < BYTES:
        raise UserError(f"--data.vocab_size={config.vocab_size} is below the {BYTES} bytes that byte-level BPE "
                        f"starts from; give at least {BYTES}")


class CharDataset:
    """Emits batches of tokens (characters unless data.tokenizer says otherwise), split into a training part and a
    validation part (the last `val_fraction` of the characters)."""

    @staticmethod
    def get_default_config():
        C = CN()
        C.set("block_size", 128, "context length in tokens (the model's block_size follows it)", check=at_least(1))
        C.set("input_file", "input.txt", "UTF-8 text to train on (tiny-shakespeare is downloaded if missing)",
              check=NOT_EMPTY)
        C.set("val_fraction", 0.1, "the last fraction of the text that is held out for validation",
              check=Check("in (0, 1)", lambda v: 0 < v < 1))
        C.set("tokenizer", "char", "char: characters; word: words, punctuation and whitespace runs; bpe: byte-level "
              "BPE (Hugging Face tokenizers); word and bpe are trained on the training split", choices=TOKENIZERS)
        C.set("vocab_size", None, f"the most tokens word/bpe may have (None: every word of the training split; "
              f"bpe {BPE_DEFAULT_VOCAB}); not for char", kind=int, check=at_least(2))
        C.rule(check_vocab_size)
        return C

    def __init__(self, config, text, tokenizer=None):
        """tokenizer: one a checkpoint holds (resume, pretrained weights); None trains the one config names."""
        self.config = config.validate("data.")
        n_val = int(len(text) * config.val_fraction)
        texts = {"train": text[:len(text) - n_val], "val": text[len(text) - n_val:]}
        self.vocab = tokenizer or train_tokenizer(config, text, texts["train"])  # the tokenizer
        self.splits, self.chars = {}, {}  # token ids; the characters each token covers (for bits per character)
        for name, split_text in texts.items():
            ids, chars = self.vocab.pieces(split_text)
            self.splits[name] = torch.tensor(ids, dtype=torch.long)
            self.chars[name] = torch.tensor(chars, dtype=torch.long)
            if len(ids) < config.block_size + 1:
                raise UserError(f"the {name} split has {len(ids)} tokens, too short for one block of "
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

    def _windows(self, split, batch_size, generator):
        """Token positions of batch_size random windows of block_size + 1 tokens: (B, T+1)."""
        start = torch.randint(len(self.splits[split]) - self.config.block_size, (batch_size,), generator=generator)
        return start[:, None] + self._offsets

    def get_batch(self, split, batch_size, generator=None):
        """x, y of shape (batch_size, block_size): random windows of `split`, y shifted by one token."""
        chunk = self.splits[split][self._windows(split, batch_size, generator)]  # (B, T+1)
        return chunk[:, :-1], chunk[:, 1:]

    def get_eval_batch(self, split, batch_size, generator=None):
        """get_batch's x, y and the characters each token of y covers, (B, T): what bits per character count."""
        positions = self._windows(split, batch_size, generator)
        chunk = self.splits[split][positions]
        return chunk[:, :-1], chunk[:, 1:], self.chars[split][positions[:, 1:]]

    def unknown_rate(self, split):
        """(tokens of `split` that are <unk>, all its tokens): only a word vocabulary has <unk>."""
        ids = self.splits[split]
        unknown = int((ids == 0).sum()) if self.vocab.kind == "word" else 0
        return unknown, len(ids)
