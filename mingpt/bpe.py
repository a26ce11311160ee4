"""
GPT-2's tokenizer, byte-level byte pair encoding (BPE), with the API of karpathy's minGPT bpe.py.

Text is encoded as UTF-8 bytes, so any string has tokens and no <unk> is needed. Each byte is spelled as one
printable character (bytes_to_unicode), so the vocabulary files are readable text and a space inside a token
(shown as 'Ġ') is never confused with vocab.bpe's separator. A regular expression first cuts text into
pre-tokens (words, numbers, punctuation, whitespace), so that the vocabulary is not spent on every pairing of
a word with the punctuation after it. In each pre-token the merges of vocab.bpe are replayed in the order
training learned them, lowest rank first, until none applies; encoder.json gives the ids of the symbols left.

get_encoder() reads encoder.json and vocab.bpe from a folder, by default GPT-2's in ~/.cache/mingpt (downloaded
when missing); BPETokenizer wraps the Encoder in PyTorch tensors of shape (1, T).
"""

import http.client
import json
import os
import urllib.request

import regex as re
import torch

from mingpt.errors import UserError
from mingpt.utils import atomic_open

GPT2_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/"
DOWNLOAD_TIMEOUT_S = 10


def bytes_to_unicode():
    """byte value -> the one character that spells it: printable Latin-1 bytes are themselves, the others (control
    characters, space, the non-breaking space, the soft hyphen) take chr(256 + n) in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def get_pairs(word):
    """The set of adjacent symbol pairs of a word (a tuple of symbols)."""
    return set(zip(word, word[1:]))


class Encoder:
    """encoder: token string -> id (encoder.json); bpe_merges: the symbol pairs (a, b) in the order learned."""

    def __init__(self, encoder, bpe_merges):
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.encoder = encoder  # token string -> id
        self.decoder = {i: s for s, i in encoder.items()}
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(bpe_merges)}  # earlier merges were more frequent
        # contractions split off; then runs of letters, of digits, of anything else, each taking one leading space
        # so that " dog" and "dog" are different tokens; a run of whitespace leaves its last space to the next word
        self.pat = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
        self.cache = {}  # pre-token -> its merged symbols: text repeats the same words all the time

    def bpe(self, token):
        """A pre-token spelled in byte characters -> its symbols after every merge that applies, joined by spaces."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        while len(word) > 1:
            pair = min(get_pairs(word), key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if pair not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):  # left to right, so that "a a a" becomes "aa a" as in training
                if word[i:i + 2] == pair:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def encode_and_show_work(self, text):
        """encode, with each step's result: the pre-tokens, and per pre-token its bytes, their characters, the
        symbols after merging and their ids."""
        parts = []
        for token in self.pat.findall(text):
            token_bytes = token.encode("utf-8")
            token_translated = "".join(self.byte_encoder[b] for b in token_bytes)
            token_merged = self.bpe(token_translated).split(" ")
            token_ix = [self.encoder[symbol] for symbol in token_merged]
            parts.append(dict(token=token, token_bytes=token_bytes, token_translated=token_translated,
                              token_merged=token_merged, token_ix=token_ix))
        bpe_idx = [i for part in parts for i in part["token_ix"]]
        return dict(bpe_idx=bpe_idx, tokens=[part["token"] for part in parts], parts=parts)

    def encode(self, text):
        """str -> list of token ids."""
        ids = []
        for token in self.pat.findall(text):
            spelled = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(spelled).split(" "))
        return ids

    def decode(self, bpe_idx):
        """list of token ids -> str; ids that end inside a UTF-8 character give U+FFFD there, as in GPT-2."""
        spelled = "".join(self.decoder[i] for i in bpe_idx)
        return bytes(self.byte_decoder[c] for c in spelled).decode("utf-8", errors="replace")


def _one_line(error):
    return " ".join(str(error).split())


def _put_the_files_in(folder):
    return f"put GPT-2's encoder.json and vocab.bpe (from {GPT2_URL}) in {folder}"


def get_file(local_file, remote_file):
    """Download remote_file to local_file unless it is there; a failed download writes nothing."""
    if os.path.isfile(local_file):
        return
    try:
        with urllib.request.urlopen(remote_file, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors, a cut body is not
        raise UserError(f"cannot download {remote_file} ({_one_line(e)}); "
                        f"{_put_the_files_in(os.path.dirname(local_file))}") from None
    with atomic_open(local_file, "wb") as f:
        f.write(data)


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; {_put_the_files_in(os.path.dirname(path))}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {_one_line(e)}") from None


def _load_encoder_json(path):
    try:
        encoder = json.loads(_read(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(encoder, dict) or not all(isinstance(s, str) and type(i) is int for s, i in encoder.items()):
        raise UserError(f"{path} is not a map from token strings to integer ids")
    if len(set(encoder.values())) != len(encoder):
        raise UserError(f"{path} gives two tokens the same id, so decoding would be ambiguous")
    missing = [c for c in bytes_to_unicode().values() if c not in encoder]
    if missing:  # without every byte some text could not be encoded at all
        raise UserError(f"{path} lacks {len(missing)} of the 256 byte tokens, {missing[0]!r} among them")
    return encoder


def _load_vocab_bpe(path, encoder):
    merges = []
    for number, line in enumerate(_read(path).split("\n"), start=1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        pair = tuple(line.split())
        if len(pair) != 2:
            raise UserError(f"{path} line {number} is not a merge of two symbols 'a b': {line[:60]!r}")
        unknown = [s for s in (*pair, "".join(pair)) if s not in encoder]
        if unknown:  # encode would meet a symbol it has no id for
            raise UserError(f"{path} line {number} merges to or from {unknown[0]!r}, which encoder.json lacks")
        merges.append(pair)
    return merges


# minGPT's names for the two files, and transformers' (a GPT-2 folder saved by its tokenizer): the same contents
FILE_NAMES = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))


def get_encoder(folder=None):
    """The Encoder of the encoder.json and vocab.bpe in folder (or transformers' vocab.json and merges.txt); by
    default GPT-2's, in ~/.cache/mingpt, downloaded there when missing."""
    names = FILE_NAMES[0]
    if folder is None:
        folder = os.path.join(os.path.expanduser("~"), ".cache", "mingpt")
        for name in names:
            get_file(os.path.join(folder, name), GPT2_URL + name)
    else:
        names = next((pair for pair in FILE_NAMES if all(os.path.isfile(os.path.join(folder, n)) for n in pair)),
                     names)
    encoder = _load_encoder_json(os.path.join(folder, names[0]))
    return Encoder(encoder, _load_vocab_bpe(os.path.join(folder, names[1]), encoder))


class BPETokenizer:
    """The Encoder with PyTorch tensors, as Hugging Face tokenizers are called."""

    def __init__(self, folder=None):
        self.encoder = get_encoder(folder)

    def __call__(self, text, return_tensors="pt"):
        """str -> (1, T) LongTensor of token ids: a batch of one."""
        assert return_tensors == "pt"
        assert isinstance(text, str)
        return torch.tensor([self.encoder.encode(text)], dtype=torch.long)

    def decode(self, idx):
        """1-D LongTensor (or list) of token ids -> str."""
        if isinstance(idx, torch.Tensor):
            assert idx.ndim == 1
            idx = idx.tolist()
        return self.encoder.decode(idx)
