"""
The corpus: one UTF-8 text file (tiny-shakespeare is downloaded when the default is missing and the network
allows), or a folder whose *.txt files, in sorted path order, are one text joined by a blank line ("\\n\\n").

It is read in chunks of a few MB, never whole: a 1 GB corpus costs a few MB of memory to read. Every byte is
checked as UTF-8 on the way, and a bad one is named by its file and byte offset.
"""

import codecs
import os
import urllib.request

from mingpt.errors import UserError
from mingpt.utils import atomic_open

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
CHUNK_BYTES = 4 << 20
SEPARATOR = "\n\n"  # between the files of a folder


def download(path, url, timeout):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            text = r.read().decode("utf-8")
        with atomic_open(path) as f:
            f.write(text)
        print(f"downloaded tiny-shakespeare to {path}")
    except (OSError, ValueError) as e:
        raise UserError(f"data file {os.path.abspath(path)} not found and the download failed ({e}); "
                        f"put tiny-shakespeare there or point --data.input_file=PATH at a text file or a folder "
                        f"of them") from None


class Corpus:
    """The text behind --data.input_file: its files, what identifies them (sources), and its chunks."""

    def __init__(self, path, download_url=TINY_SHAKESPEARE_URL, timeout=10):
        if not os.path.exists(path):
            download(path, download_url, timeout)
        self.path, self.is_folder = path, os.path.isdir(path)
        if self.is_folder:
            self.files = sorted(os.path.join(folder, name) for folder, _, names in os.walk(path)
                                for name in names if name.endswith(".txt"))
            if not self.files:
                raise UserError(f"--data.input_file={path} is a folder with no *.txt file in it; put the texts to "
                                f"train on there as UTF-8 .txt files")
        else:
            self.files = [path]
        for file in self.files:
            if not os.path.isfile(file):  # a device or a pipe: reading it could block or never end
                raise UserError(f"--data.input_file: {file} is not a regular file; give a UTF-8 text file")
            if not os.access(file, os.R_OK):
                raise UserError(f"cannot read --data.input_file: {file} is not readable (Permission denied)")
        self.bytes = sum(os.path.getsize(f) for f in self.files)
        if self.bytes == 0:
            raise UserError(f"{path} is empty; --data.input_file needs a text to train on")

    def sources(self):
        """What identifies the text: each file's path (below the folder), size and modification time."""
        root = self.path if self.is_folder else os.path.dirname(self.path) or "."
        return [{"path": os.path.relpath(f, root), "bytes": os.path.getsize(f),
                 "mtime_ns": os.stat(f).st_mtime_ns} for f in self.files]

    def chunks(self, on_bytes=None):
        """The text in str chunks of about CHUNK_BYTES (a file's last chunk, the separator between files); on_bytes
        is told how many bytes each read took."""
        for i, file in enumerate(self.files):
            if i:
                yield SEPARATOR
            yield from file_chunks(file, on_bytes)


def file_chunks(path, on_bytes=None):
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # of the next read in the file
    try:
        with open(path, "rb") as f:
            while True:
                raw = f.read(CHUNK_BYTES)
                pending = len(decoder.getstate()[0])  # a character's first bytes, held from the last read
                try:
                    text = decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as e:
                    at = offset - pending + e.start
                    raise UserError(f"{path} is not valid UTF-8 (bad byte {e.object[e.start]:#04x} at byte offset "
                                    f"{at}); convert it to UTF-8 or choose another --data.input_file") from None
                offset += len(raw)
                if on_bytes is not None:
                    on_bytes(len(raw))
                if text:
                    yield text
                if not raw:
                    return
    except OSError as e:
        raise UserError(f"cannot read --data.input_file: {path}: {e.strerror or e}") from None


class TextCorpus:
    """A text already in memory, read like a corpus (tests, studies)."""

    def __init__(self, text):
        if not text:
            raise UserError("the text is empty; there is nothing to train on")
        self.text = text

    def chunks(self, on_bytes=None):
        step = CHUNK_BYTES
        for start in range(0, len(self.text), step):
            yield self.text[start:start + step]


def read_text(path, download_url=TINY_SHAKESPEARE_URL, timeout=10):
    """The whole text of a corpus as one str (for small texts: the studies read tiny-shakespeare this way)."""
    return "".join(Corpus(path, download_url, timeout).chunks())


def split_chunks(chunks, n_train):
    """(split, chunk) pairs: the first n_train characters are "train", the rest "val"."""
    seen = 0
    for chunk in chunks:
        if seen < n_train < seen + len(chunk):
            yield "train", chunk[:n_train - seen]
            yield "val", chunk[n_train - seen:]
        else:
            yield "train" if seen < n_train else "val", chunk
        seen += len(chunk)
