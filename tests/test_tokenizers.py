"""
The tokenizers behind --data.tokenizer: round trips (char and BPE on arbitrary Unicode, word on in-vocabulary
text), the characters each token covers, no leakage of the validation split, bits per character against the
formula, checkpoints that carry their tokenizer (sampling from a copied run folder without the data), prompts,
and bad values of the new flags.
"""

import json
import math
import shutil

import pytest
import torch

from helpers import assert_one_line_error, made_up_text, run_cli, tiny_config, wandb_runs
from mingpt.app.checkpoint import load_checkpoint
from mingpt.app.run import train
from mingpt.app.settings import get_config
from mingpt.data.dataset import CharDataset
from mingpt.data.tokenizer import BPETokenizer, CharTokenizer, UNK, WordTokenizer
from mingpt.errors import UserError

UNICODE = ["Héllo wörld!\n", "日本語のテキスト", "emoji 😀👍🏽 and\tTabs\r\n", "combining é (e + \u0301)",
           "Ελληνικά, русский, עברית", "  leading and trailing  ", "\x00\x7f control", "a" * 300]
CORPUS = made_up_text(20000) + "\nROMEO: O, she doth teach the torches to burn bright!\n" * 20


@pytest.mark.parametrize("text", UNICODE)
def test_char_round_trip(text):
    tokenizer = CharTokenizer(sorted(set(text)))
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(CORPUS, 300)


def chars_from_offsets(offsets):
    """The characters each token covers from tokenizers' own character offsets: a character split over several
    tokens (its UTF-8 bytes) counts for the first."""
    chars, covered = [], 0
    for _, end in offsets:
        chars.append(max(0, end - covered))
        covered = max(covered, end)
    return chars


@pytest.mark.parametrize("text", UNICODE)
def test_bpe_round_trip_on_any_unicode(bpe, text):
    """Trained on ASCII Shakespeare-like text, it still encodes every UTF-8 text losslessly (byte-level), and the
    per-id table of characters (lead bytes) agrees with tokenizers' offsets."""
    assert bpe.decode(bpe.encode(text)) == text
    ids, _ = bpe.encode_pieces([text])
    assert ids.tolist() == bpe.encode(text)
    chars = bpe.chars_per_id[ids].tolist()
    assert chars == chars_from_offsets(bpe.hf.encode(text).offsets) and sum(chars) == len(text)


def test_bpe_learns_merges_up_to_its_size(bpe):
    assert 256 < len(bpe) <= 300
    assert len(bpe.encode(CORPUS[:2000])) < 0.7 * 2000  # merges make tokens longer than one byte
    ids = bpe.encode(CORPUS[:2000])  # ASCII: a token covers as many characters as it decodes to
    assert bpe.chars_per_id[ids].tolist() == [len(bpe.decode([i])) for i in ids]


def test_word_round_trip_and_pieces():
    text = "the king, the queen;\n\n  and we go. O God!"
    tokenizer = WordTokenizer.train(text)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and UNK not in tokenizer.decode(ids)
    assert [tokenizer.tokens[i] for i in ids][:5] == ["the", " ", "king", ",", " "]
    assert tokenizer.encode_pieces([text])[1].tolist() == [len(tokenizer.tokens[i]) for i in ids]
    assert "\n\n  " in tokenizer.tokens and "\n\n" not in tokenizer.tokens  # a whitespace run is one token


def test_word_vocabulary_cap_keeps_the_most_frequent():
    text = "a a a a b b b c c d "
    tokenizer = WordTokenizer.train(text, vocab_size=4)
    assert tokenizer.tokens == [UNK, " ", "a", "b"]
    assert tokenizer.decode(tokenizer.encode("a c d")) == f"a {UNK} {UNK}"
    assert tokenizer.unknown("a c d b") == ["c", "d"]


def dataset(text, *flags):
    config = get_config()
    config.merge_from_args(list(flags))
    return CharDataset(config.data, text)


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_nothing_of_the_validation_split_leaks(kind):
    """A word only the validation text has is <unk> for the word tokenizer and never one BPE token."""
    text = CORPUS + " Zyxwvutsrqp" * 50  # the last 10% of the characters: the validation split
    ds = dataset(text, f"--data.tokenizer={kind}", "--data.block_size=8",
                 *(["--data.vocab_size=400"] if kind == "bpe" else []))
    assert "Zyxwvutsrqp" not in text[:int(len(text) * 0.9)]
    assert not any("Zyxw" in token or "Ġ" + "Zyxw" in token for token in ds.vocab.tokens)
    if kind == "word":
        assert "Zyxwvutsrqp" not in ds.vocab.tokens
        unknown, total = ds.unknown_rate("val")
        assert unknown >= 50 and int((ds.splits["val"] == 0).sum()) == unknown


def test_char_is_todays_vocabulary():
    ds = dataset(CORPUS)
    assert ds.vocab.kind == "char" and ds.vocab.tokens == sorted(set(CORPUS))
    assert ds.vocab.decode(ds.splits["val"]) == CORPUS[-int(len(CORPUS) * 0.1):]


def test_bits_per_character_of_a_uniform_model(text_file, tmp_path):
    """Words of three letters between single spaces: every two tokens cover four characters, so a model that
    gives every token the same probability (zero output weights) scores log2(V) nats per token / 2 characters
    per token = log2(V) / 2 bits per character; and for characters, val_bpc is val loss / ln 2."""
    g = torch.Generator().manual_seed(0)
    words = ["abc", "def", "ghi", "jkl", "mno", "pqr"]
    text = " ".join(words[int(i)] for i in torch.randint(len(words), (4000,), generator=g))
    path = tmp_path / "words.txt"
    path.write_text(text)
    config = tiny_config(str(path), tmp_path / "run", "--data.tokenizer=word", "--data.block_size=16",
                         "--trainer.max_iters=0")
    trainer = train(config)
    head = trainer.model.lm_head
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()
    V = len(trainer.train_dataset.vocab)
    assert V == 1 + len(words) + 1  # <unk>, the words, the space
    result = trainer.evaluate()
    assert result["val"] == pytest.approx(math.log(V), rel=1e-6)
    assert result["val_bpc"] == pytest.approx(math.log2(V) / 2, rel=1e-6)

    char = train(tiny_config(text_file, tmp_path / "char"))
    logs = json.loads((tmp_path / "char" / "train_logs.json").read_text())
    assert [it for it, _ in logs["val_bpc"]] == [it for it, _ in logs["val_losses"]] == [4, 8]
    for (_, loss), (_, bpc) in zip(logs["val_losses"], logs["val_bpc"]):
        assert bpc == pytest.approx(loss / math.log(2), rel=1e-9)
    assert char.last_eval is not None


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """A finished tiny run for each of word and BPE, and the text they trained on."""
    root = tmp_path_factory.mktemp("tok")
    text = root / "text.txt"
    text.write_text(CORPUS)
    runs = {}
    for kind, flags in {"word": ["--data.vocab_size=40"], "bpe": ["--data.vocab_size=280"]}.items():
        train(tiny_config(str(text), root / kind, f"--data.tokenizer={kind}", "--system.wandb=offline", *flags))
        runs[kind] = root / kind
    return root, text, runs


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_checkpoint_carries_the_tokenizer(trained_runs, tmp_path, kind):
    """The run folder, copied away from its data, still samples; model.pt and tokenizer.json hold the
    tokenizer; val_bpc is in train_logs.json and in the wandb run."""
    _, _, runs = trained_runs
    copy = tmp_path / "copy"
    shutil.copytree(runs[kind], copy, ignore=shutil.ignore_patterns("wandb"))
    ckpt = load_checkpoint(str(copy / "model.pt"))
    assert ckpt["tokenizer"]["kind"] == kind
    saved = json.loads((copy / "tokenizer.json").read_text())
    assert saved["kind"] == kind and saved["tokens"] == ckpt["vocab"]
    proc = run_cli(f"--system.work_dir={copy}", "--sample.only=True", "--sample.max_new_tokens=20",
                   "--sample.prompt=the king", "--data.input_file=/nonexistent/text.txt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("the king") and len(proc.stdout) > len("the king")
    logs = json.loads((copy / "train_logs.json").read_text())
    assert [it for it, _ in logs["val_bpc"]] == [4, 8] and all(0 < bpc < 20 for _, bpc in logs["val_bpc"])
    (run,) = wandb_runs(runs[kind])
    assert [row["val/bpc"] for row in run["history"] if "val/bpc" in row] == pytest.approx(
        [bpc for _, bpc in logs["val_bpc"]])


@pytest.mark.slow
def test_word_prompt_names_its_unknown_words(trained_runs):
    _, _, runs = trained_runs
    proc = run_cli(f"--system.work_dir={runs['word']}", "--sample.only=True", "--sample.max_new_tokens=5",
                   "--sample.prompt=the Zebra king Quux")
    assert proc.returncode == 0, proc.stderr
    assert "Zebra" in proc.stderr and "Quux" in proc.stderr and UNK in proc.stderr
    assert proc.stdout.startswith("the Zebra king Quux")


@pytest.mark.slow
@pytest.mark.parametrize("flags, needles", [
    (["--data.tokenizer=char"], ["--data.tokenizer=word", "not char"]),
    (["--data.tokenizer=word", "--data.vocab_size=41"], ["--data.vocab_size=40", "not 41"]),
])
def test_resume_with_another_tokenizer_is_one_line(trained_runs, flags, needles):
    """(The run trained with --data.vocab_size=40 and has fewer words: resuming with that flag works, below.)"""
    root, text, runs = trained_runs
    before = (runs["word"] / "ckpt.pt").read_bytes()
    proc = run_cli(f"--data.input_file={text}", f"--system.work_dir={runs['word']}", "--trainer.resume=True",
                   "--trainer.max_iters=12", "--system.wandb=disabled", *flags)
    assert_one_line_error(proc, *needles)
    assert (runs["word"] / "ckpt.pt").read_bytes() == before


@pytest.mark.slow
def test_resume_and_pretrained_use_the_saved_tokenizer(trained_runs, tmp_path):
    """A resumed or fine-tuned BPE run encodes with the tokenizer it was trained with, not a new one."""
    root, text, runs = trained_runs
    other = tmp_path / "other.txt"
    other.write_text(made_up_text(20000, seed=5))  # another text would train another BPE
    config = tiny_config(str(other), tmp_path / "fine", "--data.tokenizer=bpe",
                         f"--model.pretrained_folder={runs['bpe']}", "--trainer.max_iters=2")
    trainer = train(config)
    saved = load_checkpoint(str(runs["bpe"] / "model.pt"))
    assert trainer.train_dataset.vocab.tokens == saved["vocab"]
    assert load_checkpoint(str(tmp_path / "fine" / "model.pt"))["tokenizer"] == saved["tokenizer"]

    shutil.copytree(runs["word"], tmp_path / "word", ignore=shutil.ignore_patterns("wandb"))
    resumed = train(tiny_config(str(text), tmp_path / "word", "--data.tokenizer=word", "--data.vocab_size=40",
                                "--trainer.resume=True", "--trainer.max_iters=12"))
    assert resumed.iter_num == 12 and len(resumed.train_dataset.vocab) < 40  # fewer words than its cap


@pytest.mark.parametrize("flags, needle", [
    (["--data.tokenizer=sentencepiece"], "--data.tokenizer=sentencepiece"),
    (["--data.vocab_size=100"], "--data.vocab_size=100"),  # char has no cap
    (["--data.tokenizer=bpe", "--data.vocab_size=100"], "256"),
    (["--data.tokenizer=word", "--data.vocab_size=1"], "--data.vocab_size"),
    (["--data.tokenizer=word", "--data.vocab_size=lots"], "--data.vocab_size"),
])
def test_bad_tokenizer_flags(tmp_path, text_file, flags, needle):
    config = get_config()
    with pytest.raises(UserError) as e:
        config.merge_from_args(flags)
        config.validate()
    assert needle in str(e.value) and "\n" not in str(e.value)
    proc = run_cli(f"--data.input_file={text_file}", f"--system.work_dir={tmp_path / 'run'}", *flags)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("entry, needle", [
    ({"kind": "sentencepiece"}, "tokenizer entry"),
    ({"kind": "bpe", "bpe": "{not json"}, "BPE tokenizer does not load"),
    ({"kind": "word"}, UNK),
])
def test_malformed_tokenizer_in_a_checkpoint(trained_runs, tmp_path, entry, needle):
    _, _, runs = trained_runs
    ckpt = torch.load(runs["bpe"] / "model.pt", weights_only=True)
    ckpt["tokenizer"] = entry
    (tmp_path / "bad").mkdir()
    torch.save(ckpt, tmp_path / "bad" / "model.pt")
    with pytest.raises(UserError, match=needle):
        load_checkpoint(str(tmp_path / "bad" / "model.pt"))
