"""
The three ways --data.tokenizer cuts text into tokens, behind one interface: encode(text) -> ids, decode(ids) ->
text, len() (the vocabulary size), tokens (each id's string), encode_pieces(pieces) -> (ids, characters each
token covers) as numpy arrays for a whole corpus, chars_per_id (that count as a table, where the id alone says
it), unknown(text) (what would not survive encoding), to_dict()/from_dict() for checkpoints.

A corpus reaches a tokenizer in pieces cut where no token can span (SAFE_CUT), so encoding piece by piece gives
the ids of the whole text, and word and BPE vocabularies are trained from an iterator over those pieces with the
counts (and so the tokens) that the whole training split gives.

- char: the sorted characters of the text, as minGPT's chargpt. Its alphabet is the whole text's (as it always
  was): a character vocabulary has no <unk>, so a character that only the validation split has could not be
  encoded otherwise. Text outside it is an error.
- word: words, single punctuation marks and runs of whitespace are the tokens (the Mini-GPT material's word
  level), the vocab_size - 1 most frequent of the training split plus <unk> (id 0), which every other word
  becomes. decode(encode(text)) == text when every word of text is in the vocabulary.
- bpe: Hugging Face tokenizers' byte-level BPE, trained on the training split: lossless on any UTF-8 text.
- gpt2: GPT-2's own byte-level BPE, read from its vocabulary files (mingpt/bpe.py), not trained: what a pretrained
  GPT-2 reads (--model.init_from), encoded by tokenizers' fast BPE with GPT-2's merges.

word and bpe are trained on the training split alone, so nothing of the validation text leaks into them.
"""

import itertools
import re
from collections import Counter

import numpy as np

from mingpt.bpe import bytes_to_unicode, get_encoder
from mingpt.errors import UserError

TOKENIZERS = ("char", "word", "bpe", "gpt2")
TRAINED = ("word", "bpe")  # the kinds whose vocabulary is learnt from the training split
UNK = "<unk>"
WORD_PIECES = re.compile(r"\w+|[^\w\s]|\s+")  # every character falls in exactly one piece
BPE_DEFAULT_VOCAB = 512
BYTES = 256  # byte-level BPE starts from every byte
# between a non-space and a space no word piece and no BPE pre-token (GPT-2's pattern) runs on: the tokens before
# end there and the ones after begin there. Python's \s covers the Unicode White_Space that tokenizers' pattern
# uses, so every cut found here is one for Rust too.
SAFE_CUT = re.compile(r"(?<=\S)(?=\s)")
# tokenizers' pre-tokenizer slows on long strings
PIECE_CHARS = {"char": None, "word": 1 << 20, "bpe": 8192, "gpt2": 8192}


def id_dtype(vocab_size):
    """The smallest unsigned numpy type that holds every id of a vocabulary of this size."""
    return next(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32) if vocab_size <= np.iinfo(t).max + 1)


def cut_pieces(chunks, size):
    """Lists of pieces of about `size` characters (the chunks as they are with size None) that end at a SAFE_CUT:
    the text of `chunks` cut only where no token spans. What follows the last cut is carried into the next chunk."""
    carry = ""
    for chunk in chunks:
        if size is None:
            yield [chunk]
            continue
        text, pieces, start = carry + chunk, [], 0
        while start + size < len(text):
            cut = SAFE_CUT.search(text, start + size)
            if cut is None:
                break
            pieces.append(text[start:cut.end()])
            start = cut.end()
        carry = text[start:]
        if pieces:
            yield pieces
    if carry:
        yield [carry]


class TokenList:
    """A tokenizer with a fixed list of token strings, id i being itos[i]; decoding concatenates them (BPE's
    byte-level tokens decode through Hugging Face's decoder instead)."""
    kind = None

    def __init__(self, tokens, vocab_size=None):
        """vocab_size: the cap it was trained with (None: none), which a text with fewer pieces does not reach."""
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.vocab_size = vocab_size

    @property
    def tokens(self):
        return self.itos

    def __len__(self):
        return len(self.itos)

    chars_per_id = None  # the characters each id covers, where the id alone says it

    def encode(self, text):
        return self.encode_pieces([text])[0].tolist()

    def decode(self, ids):
        return "".join(self.itos[int(i)] for i in ids)

    def to_dict(self):
        return {"kind": self.kind, "vocab_size": self.vocab_size}


class CharTokenizer(TokenList):
    """One token per character; a character outside the vocabulary is an error. Text is encoded through a table
    indexed by code point (no Python loop over the characters)."""
    kind = "char"

    def __init__(self, tokens, vocab_size=None):
        super().__init__(tokens, vocab_size)
        self.chars_per_id = np.ones(len(self.itos), dtype=np.int64)
        points = np.array([ord(c) for c in self.itos], dtype=np.int64)
        self._ids = np.full(int(points.max(initial=0)) + 1, -1, dtype=np.int64)  # code point -> id, -1: none
        self._ids[points] = np.arange(len(points))

    def unknown(self, text):
        return sorted(set(text) - set(self.stoi))

    def encode_pieces(self, pieces):
        text = "".join(pieces)
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = self._ids[np.minimum(points, len(self._ids) - 1)]
        if (ids < 0).any() or (points >= len(self._ids)).any():
            raise UserError(f"characters {''.join(self.unknown(text))!r} are not in the vocabulary of this model")
        return ids, None


class WordTokenizer(TokenList):
    """Words, single punctuation marks and whitespace runs; <unk> for words outside the vocabulary."""
    kind = "word"

    @classmethod
    def train(cls, text, vocab_size=None):
        """From a text, or an iterator over the pieces of one (cut_pieces' lists, or strings)."""
        counts = Counter()  # ties keep the order of first appearance
        for pieces in [text] if isinstance(text, str) else text:
            for piece in [pieces] if isinstance(pieces, str) else pieces:
                counts.update(WORD_PIECES.findall(piece))
        keep = counts.most_common(None if vocab_size is None else vocab_size - 1)
        return cls([UNK] + [piece for piece, _ in keep], vocab_size)

    def unknown(self, text):
        return sorted(set(p for p in WORD_PIECES.findall(text) if p not in self.stoi))

    def encode_pieces(self, pieces):
        """Ids and the characters each covers: an <unk> covers the word it stands for, so this is no table."""
        found = [w for piece in pieces for w in WORD_PIECES.findall(piece)]
        ids = np.fromiter(map(self.stoi.get, found, itertools.repeat(0)), dtype=np.int64, count=len(found))
        return ids, np.fromiter(map(len, found), dtype=np.int64, count=len(found))


class BPETokenizer(TokenList):
    """Byte-level BPE from Hugging Face tokenizers."""
    kind = "bpe"

    def __init__(self, hf_tokenizer, vocab_size):
        """vocab_size: the size it was trained for (a short text can end with fewer merges)."""
        ids = hf_tokenizer.get_vocab()
        super().__init__(sorted(ids, key=ids.get), vocab_size)
        self.hf = hf_tokenizer
        # a character split over several tokens counts for the token that holds its first (lead) byte
        byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
        self.chars_per_id = np.array([sum((byte_of[c] & 0xC0) != 0x80 for c in token) for token in self.itos],
                                     dtype=np.int64)

    @classmethod
    def train(cls, text, vocab_size=None):
        """From a text, or an iterator over its pieces cut at SAFE_CUT (lists of strings), which the trainer
        counts in its own threads as it would the whole text."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size or BPE_DEFAULT_VOCAB, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([text] if isinstance(text, str) else text, trainer)
        return cls(tok, vocab_size or BPE_DEFAULT_VOCAB)

    @classmethod
    def from_json(cls, text, vocab_size):
        from tokenizers import Tokenizer
        return cls(Tokenizer.from_str(text), vocab_size)

    def unknown(self, text):
        return []

    def encode_pieces(self, pieces):
        """Ids of the pieces, encoded together by tokenizers' batch API in its own threads."""
        encodings = self.hf.encode_batch_fast(list(pieces))
        return np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int64), None

    def encode(self, text):
        return self.hf.encode(text).ids

    def decode(self, ids):
        return self.hf.decode([int(i) for i in ids])

    def to_dict(self):
        return {"kind": self.kind, "vocab_size": self.vocab_size, "bpe": self.hf.to_str()}


class GPT2Tokenizer(BPETokenizer):
    """GPT-2's byte-level BPE (50,257 tokens, <|endoftext|> among them) from encoder.json and vocab.bpe: minGPT's
    Encoder reads and checks the files, tokenizers encodes with the same vocabulary and merges."""
    kind = "gpt2"

    @classmethod
    def from_folder(cls, folder=None):
        """From the vocabulary files in `folder` (minGPT's or transformers' names); None: GPT-2's, in minGPT's
        cache folder (fetched when the network allows, else one line saying where to put them)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        encoder = get_encoder(folder)
        merges = sorted(encoder.bpe_ranks, key=encoder.bpe_ranks.get)
        tok = Tokenizer(models.BPE(vocab=encoder.encoder, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return cls(tok, len(encoder.encoder))


def train_tokenizer(kind, vocab_size, alphabet, train_pieces):
    """The tokenizer --data.tokenizer names: char from the whole text's alphabet (sorted characters), word and bpe
    from the training split's pieces alone (an iterator over cut_pieces' lists), gpt2 from GPT-2's files."""
    if kind == "char":
        return CharTokenizer(alphabet)
    if kind == "word":
        return WordTokenizer.train(train_pieces, vocab_size)
    if kind == "gpt2":
        return GPT2Tokenizer.from_folder()
    return BPETokenizer.train(train_pieces, vocab_size)


def from_dict(saved, tokens, source):
    """The tokenizer a checkpoint holds ({"kind": ...} and its token list); one line naming `source` when it is
    not one chargpt writes. Checkpoints without a tokenizer entry are char-level (the first versions)."""
    kind = saved.get("kind") if isinstance(saved, dict) else None
    if kind not in TOKENIZERS:
        raise UserError(f"{source}: its tokenizer entry is not one of {', '.join(TOKENIZERS)}")
    cap = saved.get("vocab_size")
    if cap is not None and not (isinstance(cap, int) and cap >= len(tokens)):
        raise UserError(f"{source}: its tokenizer's vocab_size {cap!r} is not a size its {len(tokens)} tokens fit")
    if not tokens or not all(isinstance(t, str) and t for t in tokens) or len(set(tokens)) != len(tokens):
        raise UserError(f"{source}: its vocabulary is not a list of distinct tokens")
    if kind == "char":
        if not all(len(t) == 1 for t in tokens):
            raise UserError(f"{source}: its vocabulary is not a list of distinct characters")
        return CharTokenizer(tokens)
    if kind == "word":
        if tokens[0] != UNK:
            raise UserError(f"{source}: its word vocabulary does not start with {UNK}")
        return WordTokenizer(tokens, cap)
    try:
        kind_class = GPT2Tokenizer if kind == "gpt2" else BPETokenizer
        tokenizer = kind_class.from_json(saved.get("bpe"), cap or len(tokens))
    except Exception as e:  # not a str, not JSON, not a tokenizer: tokenizers raises several kinds
        raise UserError(f"{source}: its BPE tokenizer does not load ({type(e).__name__})") from None
    if tokenizer.tokens != list(tokens):
        raise UserError(f"{source}: its BPE tokenizer and its vocabulary disagree")
    return tokenizer
