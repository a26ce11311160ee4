"""The corpus: reading it, the vocabulary, the train/validation split and batches."""

import os

import pytest
import torch

from helpers import made_up_text
from mingpt.data.corpus import read_text
from mingpt.data.dataset import CharDataset
from mingpt.errors import UserError


# -----------------------------------------------------------------------------
# data

def test_dataset_split_and_round_trip():
    text = made_up_text(2000)
    config = CharDataset.get_default_config()
    config.block_size = 8
    ds = CharDataset(config, text)
    assert ds.vocab.itos == sorted(set(text))
    assert ds.vocab.decode(ds.vocab.encode(text)) == text
    train, val = ds.splits["train"], ds.splits["val"]
    assert len(val) == int(len(text) * 0.1) and len(train) + len(val) == len(text)
    assert ds.vocab.decode(val) == text[-len(val):]  # validation is the last 10%, never trained on
    g = torch.Generator().manual_seed(0)
    x, y = ds.get_batch("val", 50, g)
    assert x.shape == y.shape == (50, 8)
    val_text = text[-len(val):]
    for row_x, row_y in zip(x, y):
        window = ds.vocab.decode(row_x)
        assert window in val_text and ds.vocab.decode(row_y)[:-1] == window[1:]
    with pytest.raises(UserError, match="not in the vocabulary"):
        ds.vocab.encode("Zebra~")
    x0, y0 = ds[5]  # minGPT's Dataset interface: the training text from index 5
    assert "".join(ds.itos[int(i)] for i in x0) == text[5:13] and ds.stoi[text[6]] == int(y0[0])
    assert len(ds) == len(train) - 8


def test_dataset_too_short(tmp_path):
    config = CharDataset.get_default_config()
    config.block_size = 64
    with pytest.raises(UserError, match="too short for one block"):
        CharDataset(config, "abc" * 100)


def test_read_text_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        read_text(str(empty))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world")
    with pytest.raises(UserError, match="byte offset 6"):
        read_text(str(bad))
    with pytest.raises(UserError, match="--data.input_file"):
        read_text(str(tmp_path / "missing.txt"), download_url="http://127.0.0.1:9/none", timeout=1)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)  # reading a pipe nobody writes to would wait for ever
    with pytest.raises(UserError, match="not a regular file"):
        read_text(str(pipe))
    with pytest.raises(UserError, match="not a regular file"):
        read_text("/dev/zero")  # would never end
