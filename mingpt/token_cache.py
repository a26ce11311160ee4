"""
The token cache: a corpus tokenized once into flat files that every later run, and every process of a run,
memory-maps. One entry per corpus, tokenizer and val_fraction, in --data.cache_dir (by default a folder beside the
corpus named after it, input.txt.chargpt/):

    <kind>-<key>/manifest.json     the source files (size, modification time), the tokenizer's kind and the hash
                                   of its saved form, val_fraction, token and character counts, dtypes, version
    <kind>-<key>/tokenizer.json    the tokenizer, as a run's tokenizer.json
    <kind>-<key>/train.bin, val.bin                token ids in the smallest unsigned type the vocabulary fits
    <kind>-<key>/train.chars.bin, val.chars.bin    word only: the characters each token covers (an <unk> covers
                                   the word it stands for; for char and bpe a table per id says it)

A build streams the corpus three times, in chunks of a few MB, never holding it whole: 1. count its characters
(the last val_fraction of them is the validation split) and, for char, gather its alphabet; 2. train word or bpe
on the training split's pieces; 3. encode both splits, chunk by chunk, straight to the files. It writes into a
temporary folder that is renamed into place once complete, so a build killed at any instant leaves nothing a
later run trusts. An entry whose files do not match its manifest is rebuilt, never read.

Under torchrun the first process of each machine (LOCAL_RANK 0) builds and the others wait for the entry.
"""

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import sys
import time

import numpy as np
from tqdm import tqdm

from mingpt.corpus import split_chunks
from mingpt.distributed import Processes
from mingpt.errors import UserError
from mingpt.tokenizer import PIECE_CHARS, cut_pieces, from_dict as tokenizer_from_dict, id_dtype, \
    train_tokenizer

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val")
WAIT_POLL_S = 0.2
CODE_POINTS = 0x110000


def tokenizer_sha256(tokenizer):
    """The hash of a tokenizer's saved form (what tokenizer.json and checkpoints hold)."""
    saved = {**tokenizer.to_dict(), "tokens": tokenizer.tokens}
    return hashlib.sha256(json.dumps(saved, sort_keys=True).encode()).hexdigest()


# -----------------------------------------------------------------------------
# tokenizing a corpus, chunk by chunk

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
    """Tokens, characters and <unk> tokens per split, as the pieces are encoded."""

    def __init__(self):
        self.splits = {split: {"tokens": 0, "characters": 0, "unknown": 0} for split in SPLITS}

    def add(self, split, tokenizer, ids, chars):
        counts = self.splits[split]
        counts["tokens"] += len(ids)
        counts["characters"] += int(chars.sum() if chars is not None else tokenizer.chars_per_id[ids].sum())
        if tokenizer.kind == "word":
            counts["unknown"] += int(np.count_nonzero(ids == 0))


class TokensInMemory:
    """A text's tokens as arrays in memory: what a dataset made from a str (tests, studies) reads."""

    def __init__(self, text_corpus, config, saved=None, source=""):
        tokenizer, n_train, _ = prepare(text_corpus, config, saved, source)
        parts = {split: ([], []) for split in SPLITS}
        counts = Counts()
        for split, ids, chars in encoded(text_corpus, tokenizer, n_train):
            counts.add(split, tokenizer, ids, chars)
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


# -----------------------------------------------------------------------------
# the cache's entries

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


def request(corpus, config, saved):
    """What identifies the entry a run needs: the corpus, val_fraction and the tokenizer (the settings that train
    it, or the saved tokenizer's hash)."""
    tokenizer = {"kind": saved.kind, "sha256": tokenizer_sha256(saved)} if saved else \
        {"kind": config.tokenizer, "vocab_size": config.vocab_size}
    return {"format_version": FORMAT_VERSION, "sources": corpus.sources(), "val_fraction": config.val_fraction,
            "tokenizer": tokenizer}


def entry_name(key):
    return f"{key['tokenizer']['kind']}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}"


def find_saved(cache_dir, key):
    """An entry of this corpus and val_fraction whose tokenizer is the saved one: the entry the run that saved it
    built, found by its hash (a resume or a pretrained run on the same corpus reuses it)."""
    kind, sha = key["tokenizer"]["kind"], key["tokenizer"]["sha256"]
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(cache_dir)):
            if not name.startswith(kind + "-"):
                continue
            with contextlib.suppress(Stale, UserError, OSError):
                entry = Entry(os.path.join(cache_dir, name))
                if (entry.tokenizer_sha256, entry.sources, entry.val_fraction) == \
                        (sha, key["sources"], key["val_fraction"]):
                    return entry
    return None


def cache_dir_of(config):
    return config.cache_dir or os.path.abspath(config.input_file).rstrip(os.sep) + ".chargpt"


def check_cache_dir(config, cache_dir):
    """One line naming --data.cache_dir when the cache cannot be written where it would go."""
    probe = cache_dir
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    why = None
    if not os.path.isdir(probe):
        why = "is a file" if probe == cache_dir else f"is under {probe}, which is a file"
    elif not os.access(probe, os.W_OK | os.X_OK):
        why = f"cannot be written ({probe} is not writable)"
    if why:
        where = f"--data.cache_dir={config.cache_dir}" if config.cache_dir else \
            f"the token cache's folder beside the corpus, {cache_dir},"
        raise UserError(f"{where} {why}; give --data.cache_dir=FOLDER, a folder this process may write")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_dead_builds(cache_dir):
    """The temporary folders of builds whose process is gone (killed half-way): nothing in them is trusted."""
    with contextlib.suppress(OSError):
        for name in os.listdir(cache_dir):
            kind, _, pid = name.rpartition("-")
            if name.startswith((".building-", ".replaced-", ".failed-")) and pid.isdigit() and not pid_alive(int(pid)):
                path = os.path.join(cache_dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(path)


class Writer:
    """The files of an entry being built: each split's ids (and chars for word), appended chunk by chunk. The
    chars' type widens (and what is written is rewritten) when a token covers more characters than it holds."""

    def __init__(self, folder, tokenizer):
        self.folder, self.tokenizer = folder, tokenizer
        self.dtype = id_dtype(len(tokenizer))
        self.chars_dtype = np.dtype(np.uint8) if tokenizer.chars_per_id is None else None
        self.files = {}
        self.counts = Counts()

    def _file(self, name):
        if name not in self.files:
            self.files[name] = open(os.path.join(self.folder, name), "wb")
        return self.files[name]

    def write(self, split, ids, chars):
        self.counts.add(split, self.tokenizer, ids, chars)
        self._file(f"{split}.bin").write(ids.astype(self.dtype).tobytes())
        if self.chars_dtype is None:
            return
        if len(chars) and chars.max() > np.iinfo(self.chars_dtype).max:
            self._widen(id_dtype(int(chars.max()) + 1))
        self._file(f"{split}.chars.bin").write(chars.astype(self.chars_dtype).tobytes())

    def _widen(self, dtype):
        for name, f in self.files.items():
            if name.endswith(".chars.bin"):
                f.flush()
                old = np.fromfile(os.path.join(self.folder, name), dtype=self.chars_dtype)
                f.seek(0)
                f.truncate()
                f.write(old.astype(dtype).tobytes())
        self.chars_dtype = dtype

    def close(self):
        """Flush every file to the disk (the rename that follows must not publish data still in flight)."""
        for split in SPLITS:  # an empty split still has its files
            self._file(f"{split}.bin")
            if self.chars_dtype is not None:
                self._file(f"{split}.chars.bin")
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()


def write_json(obj, path):
    """A file of the temporary build folder: the folder's rename is what makes it atomic."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def build(folder, corpus, config, saved, source, show_progress):
    """Build the entry `folder` under a temporary name and rename it into place; a failure (a bad byte in the
    corpus, a full disk, Ctrl-C) removes what was written."""
    cache_dir = os.path.dirname(folder)
    tmp = os.path.join(cache_dir, f".building-{os.path.basename(folder)}-{os.getpid()}")
    t0 = time.perf_counter()
    progress = Progress(corpus, passes=2 if saved or config.tokenizer == "char" else 3, enabled=show_progress)
    try:
        os.makedirs(tmp)
        tokenizer, n_train, n_chars = prepare(corpus, config, saved, source, progress)
        writer = Writer(tmp, tokenizer)
        for split, ids, chars in encoded(corpus, tokenizer, n_train, progress):
            writer.write(split, ids, chars)
        writer.close()
        write_json({**tokenizer.to_dict(), "tokens": tokenizer.tokens}, os.path.join(tmp, TOKENIZER_FILE))
        seconds = time.perf_counter() - t0
        write_json({"format_version": FORMAT_VERSION, "sources": corpus.sources(), "separator": "\n\n",
                   "val_fraction": config.val_fraction, "characters": n_chars,
                   "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                                 "tokens": len(tokenizer), "sha256": tokenizer_sha256(tokenizer)},
                   "dtype": writer.dtype.name, "chars_dtype": writer.chars_dtype and writer.chars_dtype.name,
                   "splits": writer.counts.splits, "build_seconds": round(seconds, 3),
                   "built_by": {"pid": os.getpid(), "local_rank": Processes().local_rank}},
                  os.path.join(tmp, MANIFEST_FILE))
        publish(tmp, folder)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise UserError(f"cannot write the token cache in {cache_dir}: {e.strerror or e}; the partial build was "
                            f"removed (free some space, or give --data.cache_dir=FOLDER on another disk)") from None
        raise
    finally:
        progress.close()
    total = sum(c["tokens"] for c in writer.counts.splits.values())
    print(f"token cache: {total:,} {tokenizer.kind} tokens of {n_chars:,} characters built in {seconds:.1f} s "
          f"({corpus.bytes / 1e6 / max(seconds, 1e-9):.1f} MB/s): {folder}")


def publish(tmp, folder):
    """Rename the complete build into place. If another process published the same entry meanwhile, keep
    theirs; a stale entry is moved aside and removed."""
    aside = None
    if os.path.isdir(folder):
        with contextlib.suppress(Stale, UserError):
            Entry(folder)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        aside = os.path.join(os.path.dirname(folder), f".replaced-{os.path.basename(folder)}-{os.getpid()}")
        os.rename(folder, aside)
    try:
        os.rename(tmp, folder)
    except OSError:
        if not os.path.isdir(folder):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # published by another process between the check and the rename
    if aside:
        shutil.rmtree(aside, ignore_errors=True)


def failure_note(cache_dir, name):
    """Where the builder leaves its error for the processes that wait on it: named by their common parent, the
    torchrun agent of this launch."""
    return os.path.join(cache_dir, f".failed-{name}-{os.getppid()}")


def wait_for(folder, note):
    """The entry that this machine's first process builds; its error, as one line, if it fails."""
    while True:
        with contextlib.suppress(Stale, FileNotFoundError):
            return Entry(folder)
        if os.path.exists(note):
            with open(note) as f:
                raise UserError(f.read().strip() or "the token cache's build failed")
        time.sleep(WAIT_POLL_S)


def load(corpus, config, saved=None, source=""):
    """The cache entry for this corpus and tokenizer (a checkpoint's `saved` one, or the one the flags name),
    built first if there is none. Under torchrun, the first process of each machine builds."""
    cache_dir = os.path.abspath(cache_dir_of(config))
    if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
        check_cache_dir(config, cache_dir)
    key = request(corpus, config, saved)
    if saved is not None:
        entry = find_saved(cache_dir, key)
        if entry is not None:
            return entry
    folder = os.path.join(cache_dir, entry_name(key))
    processes = Processes()
    try:
        return Entry(folder)
    except FileNotFoundError:
        pass
    except Stale as e:
        if processes.local_rank == 0:
            print(f"note: rebuilding the token cache {folder}: {e}", file=sys.stderr)
    if processes.local_rank != 0:
        check_cache_dir(config, cache_dir)  # fails as the builder's would: nothing to wait for
        return wait_for(folder, failure_note(cache_dir, os.path.basename(folder)))
    try:
        check_cache_dir(config, cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        remove_dead_builds(cache_dir)
        build(folder, corpus, config, saved, source, show_progress=sys.stderr.isatty())
    except UserError as e:
        if processes.launched:
            with contextlib.suppress(OSError), open(failure_note(cache_dir, os.path.basename(folder)), "w") as f:
                f.write(str(e))
        raise
    return Entry(folder)
