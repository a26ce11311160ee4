"""
Building one entry of the token cache: the passes of mingpt/data/encode.py written to files in a temporary folder,
the manifest last, then renamed into place, so a build killed at any instant leaves nothing a later run trusts;
a full disk removes the partial build. Temporary folders whose process is gone are swept before a build.
"""

import contextlib
import json
import os
import shutil
import time

import numpy as np

from mingpt.data.cache_entry import Entry, FORMAT_VERSION, MANIFEST_FILE, Stale, TOKENIZER_FILE, tokenizer_sha256
from mingpt.data.encode import Counts, Progress, SPLITS, encoded, prepare
from mingpt.data.tokenizer import TRAINED, id_dtype
from mingpt.distributed import Processes
from mingpt.errors import UserError


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

    def __init__(self, folder, tokenizer, counts):
        self.folder, self.tokenizer = folder, tokenizer
        self.dtype = id_dtype(len(tokenizer))
        self.chars_dtype = np.dtype(np.uint8) if tokenizer.chars_per_id is None else None
        self.files = {}
        self.counts = counts

    def _file(self, name):
        if name not in self.files:
            self.files[name] = open(os.path.join(self.folder, name), "wb")
        return self.files[name]

    def write(self, split, ids, chars):
        self.counts.add(split, self.tokenizer, ids)
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
    progress = Progress(corpus, passes=2 if saved or config.tokenizer not in TRAINED else 3, enabled=show_progress)
    try:
        os.makedirs(tmp)
        tokenizer, n_train, n_chars = prepare(corpus, config, saved, source, progress)
        writer = Writer(tmp, tokenizer, Counts(n_train, n_chars))
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
