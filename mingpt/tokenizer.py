"""
The three ways --data.tokenizer cuts text into tokens, behind one interface: encode(text) -> ids, decode(ids) ->
text, len() (the vocabulary size), tokens (each id's string), pieces(text) -> (ids, characters each token
covers), unknown(text) (what would not survive encoding), to_dict()/from_dict() for checkpoints.

- char: the sorted characters of the text, as minGPT's chargpt. Its alphabet is the whole text's (as it always
  was): a character vocabulary has no <unk>, so a character that only the validation split has could not be
  encoded otherwise. Text outside it is an error.
- word: words, single punctuation marks and runs of whitespace are the tokens (the Mini-GPT material's word
  level), the vocab_size - 1 most frequent of the training split plus <unk> (id 0), which every other word
  becomes. decode(encode(text)) == text when every word of text is in the vocabulary.
- bpe: Hugging Face tokenizers' byte-level BPE, trained on the training split: lossless on any UTF-8 text.

word and bpe are trained on the training split alone, so nothing of the validation text leaks into them.
"""

import re
from collections import Counter

from mingpt.utils import UserError

TOKENIZERS = ("char", "word", "bpe")
UNK = "<unk>"
WORD_PIECES = re.compile(r"\w+|[^\w\s]|\s+")  # every character falls in exactly one piece
BPE_DEFAULT_VOCAB = 512
BYTES = 256  # byte-level BPE starts from every byte


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

    def encode(self, text):
        return self.pieces(text)[0]

    def decode(self, ids):
        return "".join(self.itos[int(i)] for i in ids)

    def to_dict(self):
        return {"kind": self.kind, "vocab_size": self.vocab_size}


class CharTokenizer(TokenList):
    """One token per character; a character outside the vocabulary is an error."""
    kind = "char"

    def unknown(self, text):
        return sorted(set(text) - set(self.stoi))

    def pieces(self, text):
        unknown = self.unknown(text)
        if unknown:
            raise UserError(f"characters {''.join(unknown)!r} are not in the vocabulary of this model")
        return [self.stoi[c] for c in text], [1] * len(text)


class WordTokenizer(TokenList):
    """Words, single punctuation marks and whitespace runs; <unk> for words outside the vocabulary."""
    kind = "word"

    @classmethod
    def train(cls, text, vocab_size=None):
        counts = Counter(WORD_PIECES.findall(text))  # ties keep the order of first appearance
        keep = counts.most_common(None if vocab_size is None else vocab_size - 1)
        return cls([UNK] + [piece for piece, _ in keep], vocab_size)

    def unknown(self, text):
        return sorted(set(p for p in WORD_PIECES.findall(text) if p not in self.stoi))

    def pieces(self, text):
        found = WORD_PIECES.findall(text)
        return [self.stoi.get(p, 0) for p in found], [len(p) for p in found]


class BPETokenizer(TokenList):
    """Byte-level BPE from Hugging Face tokenizers."""
    kind = "bpe"

    def __init__(self, hf_tokenizer, vocab_size):
        """vocab_size: the size it was trained for (a short text can end with fewer merges)."""
        ids = hf_tokenizer.get_vocab()
        super().__init__(sorted(ids, key=ids.get), vocab_size)
        self.hf = hf_tokenizer

    @classmethod
    def train(cls, text, vocab_size=None):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size or BPE_DEFAULT_VOCAB, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([text], trainer)
        return cls(tok, vocab_size or BPE_DEFAULT_VOCAB)

    @classmethod
    def from_json(cls, text, vocab_size):
        from tokenizers import Tokenizer
        return cls(Tokenizer.from_str(text), vocab_size)

    def unknown(self, text):
        return []

    def pieces(self, text):
        """Token ids and the characters each covers: a character split over several tokens (its UTF-8 bytes)
        counts for the first, so the counts add up to len(text)."""
        encoding = self.hf.encode(text)
        chars, covered = [], 0
        for _, end in encoding.offsets:
            chars.append(max(0, end - covered))
            covered = max(covered, end)
        return encoding.ids, chars

    def encode(self, text):
        return self.hf.encode(text).ids

    def decode(self, ids):
        return self.hf.decode([int(i) for i in ids])

    def to_dict(self):
        return {"kind": self.kind, "vocab_size": self.vocab_size, "bpe": self.hf.to_str()}


def train_tokenizer(config, text, train_text):
    """The tokenizer --data.tokenizer names: char from the whole text's alphabet, word and bpe from the training
    split alone."""
    if config.tokenizer == "char":
        return CharTokenizer(sorted(set(text)))
    if config.tokenizer == "word":
        return WordTokenizer.train(train_text, config.vocab_size)
    return BPETokenizer.train(train_text, config.vocab_size)


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
        tokenizer = BPETokenizer.from_json(saved.get("bpe"), cap or len(tokens))
    except Exception as e:  # not a str, not JSON, not a tokenizer: tokenizers raises several kinds
        raise UserError(f"{source}: its BPE tokenizer does not load ({type(e).__name__})") from None
    if tokenizer.tokens != list(tokens):
        raise UserError(f"{source}: its BPE tokenizer and its vocabulary disagree")
    return tokenizer
