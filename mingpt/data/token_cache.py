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

This module finds the entry a run needs, or has it built: mingpt/data/encode.py tokenizes the corpus in three
streaming passes, mingpt/data/cache_build.py writes an entry atomically, mingpt/data/cache_entry.py reads one and checks it
against its manifest (an entry whose files do not match is rebuilt, never read).

Under torchrun the first process of each machine (LOCAL_RANK 0) builds and the others wait for the entry.
"""

import contextlib
import hashlib
import json
import os
import sys
import time

from mingpt.data.cache_build import build, remove_dead_builds
from mingpt.data.cache_entry import Entry, FORMAT_VERSION, Stale, tokenizer_sha256
from mingpt.distributed import Processes
from mingpt.errors import UserError

WAIT_POLL_S = 0.2


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
