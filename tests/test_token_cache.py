"""
The token cache (mingpt/data/token_cache.py) and the corpus it reads (mingpt/data/corpus.py): the cached ids against ids
computed independently from the whole text (a sorted alphabet, a Counter of regex pieces, tokenizers trained and
run on the whole split), batches for a seed against windows cut from those ids, chunk boundaries anywhere (tiny
chunks, multi-byte characters), folders as corpora, reuse and new entries, rebuilds of damaged entries, atomic
builds, bad input as one line, checkpoints that find their entry, and torchrun building once.
"""

import json
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from helpers import ROOT, assert_one_line_error, made_up_text, run_cli, tiny_config
from mingpt.app.run import train
from mingpt.app.settings import get_config
from mingpt.data import corpus as corpus_module, encode as encode_module, tokenizer as tokenizer_module
from mingpt.data.cache_entry import MANIFEST_FILE
from mingpt.data.corpus import Corpus
from mingpt.data.dataset import CharDataset
from mingpt.data.token_cache import load
from mingpt.data.tokenizer import WORD_PIECES
from mingpt.errors import UserError

TEXT = made_up_text(30000) + "Ünïcödé: 日本語 😀👍🏽, ROMEO!\n" * 40 + "  tail\twhite   space \n\n"


def data_config(path, *flags):
    config = get_config()
    config.merge_from_args([f"--data.input_file={path}", "--data.block_size=8", *flags])
    return config.data


def entries(cache_dir):
    return sorted(n for n in os.listdir(cache_dir) if not n.startswith("."))


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of 61 bytes and pieces of 7 characters: every boundary rule is crossed many times, multi-byte
    characters are cut between reads."""
    monkeypatch.setattr(corpus_module, "CHUNK_BYTES", 61)
    monkeypatch.setattr(tokenizer_module, "PIECE_CHARS", {"char": None, "word": 7, "bpe": 7})
    monkeypatch.setattr(encode_module, "PIECE_CHARS", {"char": None, "word": 7, "bpe": 7})


def split(text, fraction=0.1):
    n_val = int(len(text) * fraction)
    return text[:len(text) - n_val], text[len(text) - n_val:]


@pytest.mark.parametrize("chunks", ["default", "tiny"])
def test_char_ids_are_the_texts(tmp_path, request, chunks):
    if chunks == "tiny":
        request.getfixturevalue("tiny_chunks")
    ds = CharDataset.from_corpus(data_config(write(tmp_path / "c.txt", TEXT)))
    alphabet = sorted(set(TEXT))
    train_text, val_text = split(TEXT)
    assert ds.vocab.tokens == alphabet
    for name, part in (("train", train_text), ("val", val_text)):
        assert np.asarray(ds.splits[name]).tolist() == [alphabet.index(c) for c in part]
        assert ds.characters(name) == len(part)
    assert ds.splits["train"].dtype == np.uint8  # the smallest type the vocabulary fits


def test_batches_for_a_seed_are_windows_of_the_ids(tmp_path):
    """The cached path draws the windows the in-memory path always drew: start = randint(n - T) from the
    generator, the next T + 1 ids."""
    ds = CharDataset.from_corpus(data_config(write(tmp_path / "c.txt", TEXT)))
    alphabet = sorted(set(TEXT))
    ids = {name: torch.tensor([alphabet.index(c) for c in part]) for name, part in zip(("train", "val"), split(TEXT))}
    for name in ("train", "val"):
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        x, y, covered = ds.get_eval_batch(name, 16, g1)
        start = torch.randint(len(ids[name]) - 8, (16,), generator=g2)
        windows = torch.stack([ids[name][s:s + 9] for s in start.tolist()])
        assert torch.equal(x, windows[:, :-1]) and torch.equal(y, windows[:, 1:]) and x.dtype == torch.long
        assert torch.equal(covered, torch.ones_like(y))
    in_memory = CharDataset(data_config("unused"), TEXT)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for a, b in zip(ds.get_batch("train", 32, g1), in_memory.get_batch("train", 32, g2)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("chunks", ["default", "tiny"])
@pytest.mark.parametrize("vocab_size", [None, 12])
def test_word_ids_and_characters(tmp_path, request, chunks, vocab_size):
    if chunks == "tiny":
        request.getfixturevalue("tiny_chunks")
    flags = ["--data.tokenizer=word"] + ([f"--data.vocab_size={vocab_size}"] if vocab_size else [])
    ds = CharDataset.from_corpus(data_config(write(tmp_path / "w.txt", TEXT), *flags))
    train_text, val_text = split(TEXT)
    counts = Counter(re.findall(r"\w+|[^\w\s]|\s+", train_text))
    vocab = ["<unk>"] + [w for w, _ in counts.most_common(None if vocab_size is None else vocab_size - 1)]
    assert ds.vocab.tokens == vocab
    index = {w: i for i, w in enumerate(vocab)}
    for name, part in (("train", train_text), ("val", val_text)):
        words = re.findall(r"\w+|[^\w\s]|\s+", part)
        assert np.asarray(ds.splits[name]).tolist() == [index.get(w, 0) for w in words]
        assert np.asarray(ds.tokens.chars(name)).tolist() == [len(w) for w in words]
        assert ds.unknown_rate(name) == (sum(w not in index for w in words), len(words))
        assert ds.characters(name) == len(part)


def test_word_characters_widen_past_255(tmp_path):
    """A whitespace run of 300 characters is one word token: the chars file widens to hold it."""
    text = TEXT[:5000] + " " * 300 + "x" + TEXT[5000:8000]
    ds = CharDataset.from_corpus(data_config(write(tmp_path / "w.txt", text), "--data.tokenizer=word"))
    chars = np.asarray(ds.tokens.chars("train"))
    assert chars.max() == 300 and chars.dtype == np.uint16
    assert chars.tolist() == [len(w) for w in WORD_PIECES.findall(split(text)[0])]


@pytest.mark.parametrize("chunks", ["default", "tiny"])
def test_bpe_from_pieces_is_bpe_on_the_whole_split(tmp_path, request, chunks):
    """Trained from the pieces, the vocabulary and merges are those of tokenizers trained on the whole training
    split; the ids are tokenizers' ids of each whole split."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    if chunks == "tiny":
        request.getfixturevalue("tiny_chunks")
    ds = CharDataset.from_corpus(data_config(write(tmp_path / "b.txt", TEXT), "--data.tokenizer=bpe",
                                             "--data.vocab_size=300"))
    train_text, val_text = split(TEXT)
    whole = Tokenizer(models.BPE())
    whole.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    whole.decoder = decoders.ByteLevel()
    whole.train_from_iterator([train_text], trainers.BpeTrainer(
        vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    assert json.loads(ds.vocab.hf.to_str())["model"] == json.loads(whole.to_str())["model"]
    for name, part in (("train", train_text), ("val", val_text)):
        assert np.asarray(ds.splits[name]).tolist() == whole.encode(part).ids
        assert ds.characters(name) == len(part)


def test_folder_is_its_txt_files_in_path_order(tmp_path):
    books = tmp_path / "books"
    (books / "b").mkdir(parents=True)
    write(books / "b" / "two.txt", TEXT[:4000])
    write(books / "a.txt", TEXT[4000:9000])
    write(books / "c.txt", TEXT[9000:])
    write(books / "notes.md", "not a book")
    ds = CharDataset.from_corpus(data_config(str(books)))
    joined = TEXT[4000:9000] + "\n\n" + TEXT[:4000] + "\n\n" + TEXT[9000:]  # a.txt, b/two.txt, c.txt
    assert ds.vocab.decode(np.concatenate([ds.splits["train"], ds.splits["val"]])) == joined
    cache = str(books) + ".chargpt"
    with open(os.path.join(cache, entries(cache)[0], MANIFEST_FILE)) as f:
        manifest = json.load(f)
    assert [s["path"] for s in manifest["sources"]] == ["a.txt", os.path.join("b", "two.txt"), "c.txt"]
    assert [s["bytes"] for s in manifest["sources"]] == [os.path.getsize(books / p) for p in
                                                          ("a.txt", "b/two.txt", "c.txt")]


def test_one_entry_per_corpus_and_settings(tmp_path, capsys):
    path = write(tmp_path / "c.txt", TEXT)
    cache = path + ".chargpt"
    CharDataset.from_corpus(data_config(path))
    assert "built" in capsys.readouterr().out
    manifest = os.path.join(cache, entries(cache)[0], MANIFEST_FILE)
    before = os.stat(manifest).st_mtime_ns
    CharDataset.from_corpus(data_config(path))
    assert "built" not in capsys.readouterr().out and os.stat(manifest).st_mtime_ns == before  # used as it is
    CharDataset.from_corpus(data_config(path, "--data.val_fraction=0.2"))
    CharDataset.from_corpus(data_config(path, "--data.tokenizer=word"))
    CharDataset.from_corpus(data_config(path, "--data.tokenizer=word", "--data.vocab_size=20"))
    assert len(entries(cache)) == 4
    write(tmp_path / "c.txt", TEXT + "more")  # another corpus at the same path
    ds = CharDataset.from_corpus(data_config(path))
    assert len(entries(cache)) == 5 and ds.characters("train") + ds.characters("val") == len(TEXT) + 4
    other = tmp_path / "elsewhere"
    CharDataset.from_corpus(data_config(path, f"--data.cache_dir={other}"))
    assert len(entries(other)) == 1


def test_damaged_entries_are_rebuilt_never_read(tmp_path, capsys):
    path = write(tmp_path / "c.txt", TEXT)
    good = np.asarray(CharDataset.from_corpus(data_config(path)).splits["train"]).copy()
    cache = path + ".chargpt"
    entry = os.path.join(cache, entries(cache)[0])
    capsys.readouterr()
    with open(os.path.join(entry, "train.bin"), "r+b") as f:
        f.truncate(100)
    ds = CharDataset.from_corpus(data_config(path))
    assert "rebuilding" in capsys.readouterr().err and np.array_equal(ds.splits["train"], good)
    manifest_path = os.path.join(entry, MANIFEST_FILE)
    with open(manifest_path) as f:
        manifest = json.load(f)
    with open(manifest_path, "w") as f:
        json.dump({**manifest, "format_version": 99}, f)
    ds = CharDataset.from_corpus(data_config(path))
    assert "format version is 99" in capsys.readouterr().err and np.array_equal(ds.splits["train"], good)
    with open(manifest_path, "w") as f:
        f.write('{"format_version": 1, "dty')
    with pytest.raises(UserError, match="manifest .* is damaged.*delete the folder"):
        CharDataset.from_corpus(data_config(path))


def test_a_killed_build_leaves_nothing_trusted(tmp_path):
    """A build killed half-way leaves only its temporary folder, which the next run removes before building."""
    path = write(tmp_path / "c.txt", TEXT)
    cache = tmp_path / "c.txt.chargpt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    half = cache / f".building-char-0123456789abcdef-{dead.pid}"
    half.mkdir(parents=True)
    (half / "train.bin").write_bytes(b"\x00" * 10)
    CharDataset.from_corpus(data_config(path))
    assert not half.exists() and len(entries(cache)) == 1


def test_bad_corpus_and_cache_input(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    with pytest.raises(UserError, match="no \\*.txt file"):
        Corpus(str(books))
    write(books / "a.txt", "good text " * 100)
    (books / "b.txt").write_bytes("fine é".encode() + b"\xff rest")
    with pytest.raises(UserError, match=r"b.txt is not valid UTF-8 \(bad byte 0xff at byte offset 7\)"):
        CharDataset.from_corpus(data_config(str(books)))
    assert not os.path.exists(str(books) + ".chargpt") or entries(str(books) + ".chargpt") == []
    path = write(tmp_path / "c.txt", TEXT)
    a_file = write(tmp_path / "a_file", "x")
    with pytest.raises(UserError, match="--data.cache_dir=.*a_file is a file"):
        CharDataset.from_corpus(data_config(path, f"--data.cache_dir={a_file}"))


def test_utf8_offset_across_chunks(tmp_path, tiny_chunks):
    """A bad byte far from the first chunk is named by its offset in the file."""
    raw = ("é" * 100).encode() + b"\xc3(" + b"x" * 10
    (tmp_path / "bad.txt").write_bytes(raw)
    with pytest.raises(UserError, match="bad byte 0xc3 at byte offset 200"):
        CharDataset.from_corpus(data_config(str(tmp_path / "bad.txt")))


def test_full_disk_removes_the_partial_build(tmp_path):
    """A file-size limit stops the build half-way: one line, exit 2, no temporary folder, no entry."""
    path = write(tmp_path / "c.txt", TEXT * 4)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
            "sys.argv[0] = 'chargpt.py'; import chargpt; sys.exit(chargpt.main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, f"--data.input_file={path}",
                           f"--system.work_dir={tmp_path / 'run'}", "--system.wandb=disabled"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert_one_line_error(proc, "cannot write the token cache", "partial build was removed")
    cache = tmp_path / "c.txt.chargpt"
    assert os.listdir(cache) == [] and not (tmp_path / "run").exists()


def test_resume_and_pretrained_use_the_runs_entry(tmp_path):
    """A resumed run and a pretrained one on the same corpus find the entry the first run built, by its
    tokenizer's hash; on another corpus, the saved tokenizer encodes it into an entry of its own."""
    path = write(tmp_path / "c.txt", TEXT)
    cache = path + ".chargpt"
    first = tiny_config(path, tmp_path / "run", "--data.tokenizer=bpe", "--data.vocab_size=280",
                        "--trainer.max_iters=4")
    train(first)
    assert len(entries(cache)) == 1
    train(tiny_config(path, tmp_path / "run", "--data.tokenizer=bpe", "--trainer.max_iters=6",
                      "--trainer.resume=True"))
    train(tiny_config(path, tmp_path / "tuned", "--data.tokenizer=bpe",
                      f"--model.pretrained_folder={tmp_path / 'run'}", "--trainer.max_iters=2"))
    assert len(entries(cache)) == 1
    other = write(tmp_path / "d.txt", TEXT[::-1])
    trainer = train(tiny_config(other, tmp_path / "tuned2", "--data.tokenizer=bpe",
                                f"--model.pretrained_folder={tmp_path / 'run'}", "--trainer.max_iters=2"))
    assert len(entries(other + ".chargpt")) == 1 and len(trainer.train_dataset.vocab) == len(
        CharDataset.from_corpus(data_config(path, "--data.tokenizer=bpe", "--data.vocab_size=280")).vocab)


def test_a_run_resumes_with_a_char_vocabulary_of_another_corpus_refused(tmp_path):
    path = write(tmp_path / "c.txt", TEXT)
    train(tiny_config(path, tmp_path / "run", "--trainer.max_iters=2"))
    write(tmp_path / "c.txt", TEXT + "§")
    with pytest.raises(UserError, match="another character set"):
        train(tiny_config(path, tmp_path / "run", "--trainer.max_iters=4", "--trainer.resume=True"))


def test_waiting_process_ends_with_the_builders_error(tmp_path, monkeypatch):
    """A process that is not its machine's first waits for the entry, and ends with the builder's line if the
    build failed (the note is named by the processes' common parent, torchrun's agent)."""
    import mingpt.data.token_cache as token_cache
    path = write(tmp_path / "c.txt", TEXT)
    config = data_config(path)
    corpus = Corpus(path)
    folder = os.path.join(path + ".chargpt", token_cache.entry_name(token_cache.request(corpus, config, None)))
    os.makedirs(os.path.dirname(folder))
    with open(token_cache.failure_note(os.path.dirname(folder), os.path.basename(folder)), "w") as f:
        f.write("cannot write the token cache in X: No space left on device")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(UserError, match="No space left"):
        load(corpus, config)


def test_sample_only_never_reads_the_corpus(tmp_path):
    path = write(tmp_path / "c.txt", TEXT)
    train(tiny_config(path, tmp_path / "run", "--trainer.max_iters=2"))
    os.unlink(path)
    proc = run_cli("--sample.only=True", f"--system.work_dir={tmp_path / 'run'}", "--sample.max_new_tokens=5",
                   f"--data.input_file={path}", "--trainer.device=cpu")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_torchrun_builds_once(tmp_path):
    from test_distributed import TINY, torchrun
    path = write(tmp_path / "c.txt", TEXT)
    proc = torchrun(f"--data.input_file={path}", *TINY, f"--system.work_dir={tmp_path / 'run'}",
                    "--trainer.max_iters=2")
    assert proc.returncode == 0, proc.stderr
    cache = path + ".chargpt"
    assert os.listdir(cache) == entries(cache) and len(entries(cache)) == 1  # no temporary folder left
    with open(os.path.join(cache, entries(cache)[0], MANIFEST_FILE)) as f:
        assert json.load(f)["built_by"]["local_rank"] == 0
    assert proc.stdout.count("token cache:") == 1
