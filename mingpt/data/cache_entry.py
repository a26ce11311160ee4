"""
One entry of the token cache as a run reads it: its manifest, checked against its files and its tokenizer before
anything is trusted, and its token ids (and, for word, the characters each token covers) memory-mapped.
"""

import hashlib
import json
import os

import numpy as np

from mingpt.data.encode import SPLITS
from mingpt.data.tokenizer import from_dict as tokenizer_from_dict
from mingpt.errors import UserError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"


def tokenizer_sha256(tokenizer):
    """The hash of a tokenizer's saved form (what tokenizer.json and checkpoints hold)."""
    saved = {**tokenizer.to_dict(), "tokens": tokenizer.tokens}
    return hashlib.sha256(json.dumps(saved, sort_keys=True).encode()).hexdigest()


class Stale(Exception):
    """An entry that must be rebuilt, and why."""


def damaged(path, why):
    return UserError(f"the token cache's manifest {path} is damaged ({why}); delete the folder "
                     f"{os.path.dirname(path)} and run again to rebuild it")


class Entry:
    """A complete cache entry, its files checked against its manifest; ids and chars are memory-mapped afresh on
    every read, so the pages a run touches are not held in its memory."""

    def __init__(self, folder):
        self.folder = folder
        path = os.path.join(folder, MANIFEST_FILE)
        if not os.path.isdir(folder):
            raise FileNotFoundError(folder)
        try:
            with open(path) as f:
                m = json.load(f)
        except FileNotFoundError:
            raise Stale("it has no manifest") from None
        except (OSError, ValueError) as e:
            raise damaged(path, type(e).__name__) from None
        if not isinstance(m, dict) or not isinstance(m.get("format_version"), int):
            raise damaged(path, "no format_version")
        if m["format_version"] != FORMAT_VERSION:
            raise Stale(f"its format version is {m['format_version']}, not {FORMAT_VERSION}")
        try:
            self.dtype = np.dtype(m["dtype"])
            self.chars_dtype = np.dtype(m["chars_dtype"]) if m["chars_dtype"] else None
            self.counts = {s: {k: int(m["splits"][s][k]) for k in ("tokens", "characters", "unknown")}
                           for s in SPLITS}
            self.sources, self.val_fraction = m["sources"], float(m["val_fraction"])
            self.tokenizer_sha256 = str(m["tokenizer"]["sha256"])
        except (KeyError, TypeError, ValueError) as e:
            raise damaged(path, f"{type(e).__name__}: {e}") from None
        for split in SPLITS:
            for file, dtype in ((f"{split}.bin", self.dtype), (f"{split}.chars.bin", self.chars_dtype)):
                if dtype is None:
                    continue
                want = self.counts[split]["tokens"] * dtype.itemsize
                have = os.path.getsize(os.path.join(folder, file)) if os.path.isfile(os.path.join(folder, file)) \
                    else None
                if have != want:
                    raise Stale(f"{file} has {'no file' if have is None else f'{have} bytes'}, its manifest says "
                                f"{want}")
        tokenizer_path = os.path.join(folder, TOKENIZER_FILE)
        try:
            with open(tokenizer_path) as f:
                saved = json.load(f)
            self.tokenizer = tokenizer_from_dict(saved, saved.get("tokens"), tokenizer_path)
        except (OSError, ValueError, AttributeError, UserError):
            raise Stale(f"its {TOKENIZER_FILE} does not load") from None
        if tokenizer_sha256(self.tokenizer) != self.tokenizer_sha256:
            raise Stale(f"its {TOKENIZER_FILE} is not the one its manifest names")

    def _map(self, name, dtype, split):
        count = self.counts[split]["tokens"]
        if count == 0:
            return np.zeros(0, dtype)
        return np.memmap(os.path.join(self.folder, name), dtype=dtype, mode="r", shape=(count,))

    def ids(self, split):
        return self._map(f"{split}.bin", self.dtype, split)

    def chars(self, split):
        return self._map(f"{split}.chars.bin", self.chars_dtype, split) if self.chars_dtype else None
