"""
The data: the corpus (mingpt/data/corpus.py: a file or a folder of *.txt, tiny-shakespeare downloaded when missing)
tokenized once into the token cache (mingpt/data/token_cache.py), whose files every run memory-maps; the last
`val_fraction` of the characters is the validation split; batches are random contiguous windows drawn with one
tensor index (no per-sample Python loop, no worker processes). A dataset made from a str (tests, studies)
tokenizes it in memory the same way.
"""

import mmap

import numpy as np
import torch

from mingpt.config import CfgNode as CN, Check, NOT_EMPTY, at_least
from mingpt.data.corpus import Corpus, TextCorpus
from mingpt.data.encode import TokensInMemory
from mingpt.data.token_cache import load as load_tokens
from mingpt.data.tokenizer import BPE_DEFAULT_VOCAB, BYTES, TOKENIZERS, TRAINED
from mingpt.errors import UserError



def check_vocab_size(config):
    if config.vocab_size is None:
        return
    if config.tokenizer not in TRAINED:
        raise UserError(f"--data.vocab_size={config.vocab_size} applies to the word and bpe tokenizers; a "
                        f"{config.tokenizer} vocabulary is what it is (drop the flag or choose --data.tokenizer)")
    if config.tokenizer == "bpe" and config.vocab_size < BYTES:
        raise UserError(f"--data.vocab_size={config.vocab_size} is below the {BYTES} bytes that byte-level BPE "
                        f"starts from; give at least {BYTES}")


RELEASE_BYTES = 2 << 20  # the most of a file a kernel maps at one fault (a 2 MB page-cache folio)


def read_windows(array, starts, length):
    """array[s:s + length] for each start, as a (B, length) int64 tensor. From a memory map, the pages each window
    touched are dropped from this process's mapping as soon as it is copied (the page cache keeps them): a kernel
    with large page-cache folios maps up to 2 MB per window, which 64 windows would otherwise hold at once."""
    mapping = getattr(array, "_mmap", None) if hasattr(mmap, "MADV_DONTNEED") else None
    rows = []
    for s in starts:
        rows.append(np.array(array[s:s + length], dtype=np.int64))
        if mapping is not None:
            low = s * array.itemsize // RELEASE_BYTES * RELEASE_BYTES
            high = min(len(mapping), -(-(s + length) * array.itemsize // RELEASE_BYTES) * RELEASE_BYTES)
            mapping.madvise(mmap.MADV_DONTNEED, low, high - low)
    return torch.from_numpy(np.stack(rows))


class CharDataset:
    """Emits batches of tokens (characters unless data.tokenizer says otherwise), split into a training part and a
    validation part (the last `val_fraction` of the characters)."""

    @staticmethod
    def get_default_config():
        C = CN()
        C.set("block_size", 128, "context length in tokens (the model's block_size follows it)", check=at_least(1))
        C.set("input_file", "input.txt", "UTF-8 text to train on, or a folder whose *.txt files are joined "
              "(tiny-shakespeare is downloaded if missing)", check=NOT_EMPTY)
        C.set("cache_dir", None, "folder of the token cache, tokenized once and memory-mapped by every run (None: "
              "beside the corpus, named after it: input.txt.chargpt)", kind=str, check=NOT_EMPTY)
        C.set("val_fraction", 0.1, "the last fraction of the text that is held out for validation",
              check=Check("in (0, 1)", lambda v: 0 < v < 1))
        C.set("tokenizer", "char", "char: characters; word: words, punctuation and whitespace runs; bpe: byte-level "
              "BPE (Hugging Face tokenizers); word and bpe are trained on the training split; gpt2: GPT-2's own BPE "
              "(its files in ~/.cache/mingpt; --model.init_from=gpt2 sets it)", choices=TOKENIZERS)
        C.set("vocab_size", None, f"the most tokens word/bpe may have (None: every word of the training split; "
              f"bpe {BPE_DEFAULT_VOCAB}); not for char", kind=int, check=at_least(2))
        C.rule(check_vocab_size)
        return C

    def __init__(self, config, text=None, tokenizer=None, tokens=None, source=""):
        """From `tokens`, a token cache entry (from_corpus), or from `text`, tokenized in memory. tokenizer: one a
        checkpoint holds (resume, pretrained weights, from `source`); None trains the one config names."""
        self.config = config.validate("data.")
        self.tokens = tokens or TokensInMemory(TextCorpus(text), config, tokenizer, source)
        self.vocab = self.tokens.tokenizer
        for name, counts in self.tokens.counts.items():
            if counts["tokens"] < config.block_size + 1:
                raise UserError(f"the {name} split has {counts['tokens']} tokens, too short for one block of "
                                f"{config.block_size}+1; use a longer text or a smaller --data.block_size")

    @classmethod
    def from_corpus(cls, config, tokenizer=None, source=""):
        """The dataset of --data.input_file, read from its token cache (built first when there is none)."""
        config.validate("data.")
        return cls(config, tokens=load_tokens(Corpus(config.input_file), config, tokenizer, source))

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
        return self.tokens.counts["train"]["tokens"] - self.config.block_size

    @property
    def splits(self):
        """Each split's token ids (memory-mapped for a cached corpus)."""
        return {split: self.tokens.ids(split) for split in self.tokens.counts}

    def characters(self, split):
        """The characters of `split`: what its tokens cover together."""
        return self.tokens.counts[split]["characters"]

    def __getitem__(self, idx):
        """minGPT's interface: the training window starting at idx, as (x, y) of block_size ids each."""
        chunk = read_windows(self.tokens.ids("train"), [idx], self.config.block_size + 1)[0]
        return chunk[:-1], chunk[1:]

    def _starts(self, split, batch_size, generator):
        """The first token of batch_size random windows of block_size + 1 tokens: (B,)."""
        n = self.tokens.counts[split]["tokens"]
        return torch.randint(n - self.config.block_size, (batch_size,), generator=generator).numpy()

    def get_batch(self, split, batch_size, generator=None):
        """x, y of shape (batch_size, block_size): random windows of `split`, y shifted by one token."""
        chunk = read_windows(self.tokens.ids(split), self._starts(split, batch_size, generator),
                             self.config.block_size + 1)  # (B, T+1)
        return chunk[:, :-1], chunk[:, 1:]

    def get_eval_batch(self, split, batch_size, generator=None):
        """get_batch's x, y and the characters each token of y covers, (B, T): what bits per character count."""
        starts, length = self._starts(split, batch_size, generator), self.config.block_size + 1
        chunk = read_windows(self.tokens.ids(split), starts, length)
        chars = self.tokens.chars(split)
        covered = read_windows(chars, starts, length)[:, 1:] if chars is not None else \
            torch.from_numpy(self.vocab.chars_per_id)[chunk[:, 1:]]
        return chunk[:, :-1], chunk[:, 1:], covered

    def unknown_rate(self, split):
        """(tokens of `split` that are <unk>, all its tokens): only a word vocabulary has <unk>."""
        counts = self.tokens.counts[split]
        return counts["unknown"], counts["tokens"]
