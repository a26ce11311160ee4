"""
Tokenizing a corpus chunk by chunk, never holding it whole: 1. count its characters (the last val_fraction of
them is the validation split) and, for char, gather its alphabet; 2. train word or bpe on the training split's
pieces; 3. encode both splits piece by piece into numpy arrays. The token cache (mingpt/data/token_cache.py) writes
what pass 3 yields to its files; a dataset made from a str keeps it in memory (TokensInMemory).
"""

import itertools

import numpy as np
from tqdm import tqdm

from mingpt.data.corpus import split_chunks
from mingpt.data.tokenizer import PIECE_CHARS, cut_pieces, train_tokenizer
from mingpt.errors import UserError

SPLITS = ("train", "val")
CODE_POINTS = 0x110000


class Progress:
    """A tqdm bar in MB/s over the bytes of the corpus read by every pass, on a terminal only."""

    def __init__(self, corpus, passes, enabled):
        self.bar = tqdm(total=corpus.bytes * passes, unit="B", unit_scale=True, unit_divisor=1024,
                        desc="token cache", leave=False, disable=not enabled or None)

    def __call__(self, n_bytes):
        self.bar.update(n_bytes)

    def close(self):
        self.bar.close()


def scan(corpus, alphabet, on_bytes=None):
    """Pass 1: the number of characters and, with `alphabet`, the sorted characters the text uses."""
    seen = np.zeros(CODE_POINTS, dtype=bool) if alphabet else None
    n_chars = 0
    for chunk in corpus.chunks(on_bytes):
        n_chars += len(chunk)
        if alphabet:
            seen[np.frombuffer(chunk.encode("utf-32-le"), dtype=np.uint32)] = True
    return n_chars, [chr(c) for c in np.flatnonzero(seen)] if alphabet else None


def prepare(corpus, config, saved=None, source="", on_bytes=None):
    """Passes 1 and 2: (tokenizer, characters in the training split, characters in all). `saved`: a checkpoint's
    tokenizer (from `source`), used as it is; else the one config.tokenizer names, trained here."""
    kind = saved.kind if saved else config.tokenizer
    n_chars, alphabet = scan(corpus, alphabet=kind == "char", on_bytes=on_bytes)
    n_train = n_chars - int(n_chars * config.val_fraction)
    if saved is None:
        train = itertools.takewhile(lambda part: part[0] == "train", split_chunks(corpus.chunks(on_bytes), n_train))
        train_pieces = cut_pieces((chunk for _, chunk in train), PIECE_CHARS[kind])
        return train_tokenizer(kind, config.vocab_size, alphabet, train_pieces), n_train, n_chars
    if kind == "char" and saved.tokens != alphabet:
        raise UserError(f"{source} was trained on another character set than --data.input_file")
    return saved, n_train, n_chars


def encoded(corpus, tokenizer, n_train, on_bytes=None):
    """Pass 3: (split, ids, chars) for each piece of the text in order; chars (the characters each token covers)
    only where the tokenizer has no table for them."""
    size = PIECE_CHARS[tokenizer.kind]
    for split, parts in itertools.groupby(split_chunks(corpus.chunks(on_bytes), n_train), key=lambda part: part[0]):
        for pieces in cut_pieces((chunk for _, chunk in parts), size):
            yield (split, *tokenizer.encode_pieces(pieces))


class Counts:
    """Tokens, characters and <unk> tokens per split. The characters are pass 1's (every tokenizer's tokens cover
    their split's characters exactly); tokens and <unk> are counted as the pieces are encoded."""

    def __init__(self, n_train, n_chars):
        self.splits = {split: {"tokens": 0, "characters": characters, "unknown": 0}
                       for split, characters in zip(SPLITS, (n_train, n_chars - n_train))}

    def add(self, split, tokenizer, ids):
        counts = self.splits[split]
        counts["tokens"] += len(ids)
        if tokenizer.kind == "word":
            counts["unknown"] += int(np.count_nonzero(ids == 0))


class TokensInMemory:
    """A text's tokens as arrays in memory: what a dataset made from a str (tests, studies) reads."""

    def __init__(self, text_corpus, config, saved=None, source=""):
        tokenizer, n_train, n_chars = prepare(text_corpus, config, saved, source)
        parts = {split: ([], []) for split in SPLITS}
        counts = Counts(n_train, n_chars)
        for split, ids, chars in encoded(text_corpus, tokenizer, n_train):
            counts.add(split, tokenizer, ids)
            parts[split][0].append(ids)
            parts[split][1].append(chars)
        self.tokenizer, self.counts = tokenizer, counts.splits
        self._ids = {s: np.concatenate(ids or [np.zeros(0, np.int64)]) for s, (ids, _) in parts.items()}
        self._chars = {s: np.concatenate(chars) if chars and chars[0] is not None else None
                       for s, (_, chars) in parts.items()}

    def ids(self, split):
        return self._ids[split]

    def chars(self, split):
        return self._chars[split]
