"""
mingpt/bpe.py against independent references, offline: a small byte-level BPE is trained here with Hugging Face
tokenizers and written in GPT-2's file format (encoder.json, vocab.bpe); our Encoder must give the ids that
transformers' GPT-2 tokenizer (reading those two files) and the trained tokenizers model give, on the training
text and on text it never saw.
"""

import http.client
import io
import json
import os
import random
import urllib.request

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode as reference_bytes_to_unicode

from mingpt.bpe import GPT2_URL, BPETokenizer, Encoder, bytes_to_unicode, get_encoder
from mingpt.errors import UserError

VOCAB_SIZE = 600
SENTENCES = [
    "Hello world! I don't think we'll go; they're sure it's 2024, isn't it?",
    "She'd said: \"I'm here\" -- and you've (really) left... OK?!",
    "Numbers: 0 7 42 1234567 3.14159 -2.5e10 $5.00 100% #1 @home a+b=c x*y/z",
    "Two  spaces,   three, and a tab\there.\nNew line\n\nblank line above\r\nwindows line",
    "café naïve façade über Straße señor smörgåsbord crème brûlée",
    "日本語のテキスト 中文 한국어 Ελληνικά русский язык עברית العربية हिन्दी",
    "emoji 🙂 🎉🎉 👍🏽 👨‍👩‍👧 ❤️ ★ → ∑ ∞ ≠ ≤ © ® ™ € £ ¥",
    "    indented code: def f(x): return x ** 2  # comment\n\tif x: pass",
]
SYLLABLES = ["ka", "ri", "to", "men", "sha", "lo", "qu", "ex", "ion", "th", "ing", "er", "é", "ñ", "ö", "日", "本"]
UNSEEN = [
    "", " ", "  ", "\n", "a", "Zebra", "quixotic jazz vexed BJORK'S FLUMMOXED wizard", "DON'T YOU'LL THEY'RE",
    "I'M 'S 'T 'RE 'VE 'M 'LL 'D's", "''''", "   leading and trailing   ", "a\u00a0b\u3000c\u2028d\u0085e\u200bf",
    "x\r\ny\x0bz\x0c\x00\x1f\x7f", "9999999999999999 000 0.0.0.0 1,000,000", "Ĕ ĠĠĠ Ċ ÿ ¡ ¬ ® ­ soft hyphen",
    "naïve (composed) vs nai\u0308ve (combining)", "🙂🙂🙂 🤗 😀 🏳️‍🌈", "mixed日本English123語!!", "?!?!... ---",
]
CHARACTER_POOL = "abcXYZ019 \n\t'\".,;:!?-_()[]{}<>@#$%^&*+=/\\|~`éñöüßçåœ日本語中文한국Ωжعה🙂🎉👍\u200d\u00a0\u3000"


def training_text():
    rng = random.Random(0)
    made_up = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(200)]
    lines = SENTENCES * 3 + [" ".join(rng.choice(made_up) for _ in range(12)) + rng.choice(".!?,;") for _ in range(60)]
    return "\n".join(lines)


def sample_texts():
    rng = random.Random(1)
    soup = ["".join(rng.choice(CHARACTER_POOL) for _ in range(rng.randint(1, 40))) for _ in range(200)]
    return SENTENCES + UNSEEN + training_text().split("\n")[::7] + [training_text()] + soup


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(the folder with encoder.json and vocab.bpe, the tokenizers model they were written from)"""
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    hf.train_from_iterator([training_text()], trainer)
    model = json.loads(hf.to_str())["model"]
    folder = tmp_path_factory.mktemp("gpt2_format")
    (folder / "encoder.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = "".join(f"{a} {b}\n" for a, b in model["merges"])
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + merges, encoding="utf-8")
    assert len(model["vocab"]) == VOCAB_SIZE and len(model["merges"]) == VOCAB_SIZE - 256
    return folder, hf


@pytest.fixture(scope="module")
def gpt2_tokenizer(trained):
    folder, _ = trained
    tokenizer = GPT2Tokenizer(vocab=str(folder / "encoder.json"), merges=str(folder / "vocab.bpe"))
    assert json.loads((folder / "encoder.json").read_text(encoding="utf-8")).items() <= tokenizer.get_vocab().items()
    return tokenizer


def spelled_pre_tokens(encoder, text):
    return ["".join(encoder.byte_encoder[b] for b in piece.encode("utf-8")) for piece in encoder.pat.findall(text)]


def test_byte_table_is_gpt2s():
    table = bytes_to_unicode()
    assert table == reference_bytes_to_unicode()
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert (table[ord("a")], table[ord(" ")], table[ord("\n")], table[0]) == ("a", "Ġ", "Ċ", "Ā")


def test_pre_tokenization_is_gpt2s(trained, gpt2_tokenizer):
    encoder = get_encoder(trained[0])
    # the split of karpathy's example, as GPT-2's own encoder makes it
    assert encoder.encode_and_show_work("Hello!! I'm Andrej Karpathy. It's 2022. w00t :D 🤗")["tokens"] == [
        "Hello", "!!", " I", "'m", " Andrej", " Karpathy", ".", " It", "'s", " 2022", ".", " w", "00", "t", " :",
        "D", " 🤗"]
    for text in sample_texts():
        reference = gpt2_tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
        assert spelled_pre_tokens(encoder, text) == [piece for piece, _ in reference], repr(text)


def test_ids_match_transformers_and_tokenizers(trained, gpt2_tokenizer):
    folder, hf = trained
    encoder = get_encoder(folder)
    texts = sample_texts()
    for text in texts:
        ids = encoder.encode(text)
        assert ids == gpt2_tokenizer.encode(text, add_special_tokens=False), repr(text)
        assert ids == hf.encode(text).ids, repr(text)
        assert encoder.decode(ids) == text
    assert sum(len(encoder.encode(text)) for text in texts) < sum(len(text.encode()) for text in texts) * 0.7
    # the cache holds each pre-token's merged symbols, and encoding from it gives the same ids
    assert set(encoder.cache) == {p for text in texts for p in spelled_pre_tokens(encoder, text)}
    assert [encoder.encode(text) for text in texts] == [hf.encode(text).ids for text in texts]


def test_show_work_agrees_with_encode(trained):
    encoder = get_encoder(trained[0])
    work = encoder.encode_and_show_work(SENTENCES[6])
    assert work["bpe_idx"] == encoder.encode(SENTENCES[6])
    assert [i for part in work["parts"] for i in part["token_ix"]] == work["bpe_idx"]
    assert "".join(part["token"] for part in work["parts"]) == SENTENCES[6]


def test_decode_matches_references_on_any_ids(trained, gpt2_tokenizer):
    folder, hf = trained
    encoder = get_encoder(folder)
    rng = random.Random(2)
    for _ in range(500):  # arbitrary ids, many of them ending inside a UTF-8 character
        ids = [rng.randrange(VOCAB_SIZE) for _ in range(rng.randint(0, 8))]
        assert encoder.decode(ids) == hf.decode(ids) == gpt2_tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    assert "\ufffd" in encoder.decode(encoder.encode("🙂")[:1])


def test_bpe_tokenizer_tensors(trained):
    folder, hf = trained
    tokenizer = BPETokenizer(folder)
    idx = tokenizer(SENTENCES[0])
    assert idx.dtype == torch.long and idx.shape == (1, len(hf.encode(SENTENCES[0]).ids))
    assert idx[0].tolist() == hf.encode(SENTENCES[0]).ids
    assert tokenizer.decode(idx[0]) == tokenizer.decode(idx[0].tolist()) == SENTENCES[0]
    assert tokenizer("").shape == (1, 0)
    with pytest.raises(AssertionError):
        tokenizer([SENTENCES[0]])
    with pytest.raises(AssertionError):
        tokenizer(SENTENCES[0], return_tensors="np")
    with pytest.raises(AssertionError):
        tokenizer.decode(idx)  # (1, T): minGPT decodes one sequence at a time


def write_files(folder, source, encoder_json=None, vocab_bpe=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "encoder.json").write_text(encoder_json or (source / "encoder.json").read_text("utf-8"), "utf-8")
    (folder / "vocab.bpe").write_text(vocab_bpe or (source / "vocab.bpe").read_text("utf-8"), "utf-8")


def one_line_error(folder, file_name):
    with pytest.raises(UserError) as caught:
        get_encoder(folder)
    message = str(caught.value)
    assert "\n" not in message and str(folder / file_name) in message, message
    return message


def test_missing_folder_or_file(trained, tmp_path):
    assert "does not exist" in one_line_error(tmp_path / "nowhere", "encoder.json")
    write_files(tmp_path, trained[0])
    (tmp_path / "vocab.bpe").unlink()
    assert "does not exist" in one_line_error(tmp_path, "vocab.bpe")


def good_vocab(source):
    return json.loads((source / "encoder.json").read_text("utf-8"))


def good_merges(source):
    return (source / "vocab.bpe").read_text("utf-8").split("\n")


DAMAGED_ENCODER_JSON = {
    "not JSON": lambda source: '{"a": 1,',
    "a list": lambda source: "[1, 2, 3]",
    "string ids": lambda source: json.dumps({s: str(i) for s, i in good_vocab(source).items()}),
    "same id twice": lambda source: json.dumps({**good_vocab(source), "extra": 0}),
    "a byte lacking": lambda source: json.dumps({s: i for s, i in good_vocab(source).items() if s != "Ġ"}),
    "not UTF-8": lambda source: None,
}


@pytest.mark.parametrize("damage", DAMAGED_ENCODER_JSON)
def test_damaged_encoder_json(trained, tmp_path, damage):
    write_files(tmp_path, trained[0], encoder_json=DAMAGED_ENCODER_JSON[damage](trained[0]))
    if damage == "not UTF-8":
        (tmp_path / "encoder.json").write_bytes(b'{"\xff": 1}')
    one_line_error(tmp_path, "encoder.json")


def three_symbols(source):
    """A line 'a b c' whose symbols, and what they spell, are all in the vocabulary: a merge of three."""
    return " ".join(next(s for s in good_vocab(source) if len(s) == 3))


DAMAGED_VOCAB_BPE = {
    "one symbol": lambda source: ["abc"],
    "three symbols": lambda source: [three_symbols(source)],
    "unknown symbol": lambda source: ["Ġ zzzq"],
}


@pytest.mark.parametrize("damage", [*DAMAGED_VOCAB_BPE, "no header, a JSON line"])
def test_damaged_vocab_bpe(trained, tmp_path, damage):
    lines = good_merges(trained[0])
    if damage in DAMAGED_VOCAB_BPE:
        lines[3:3] = DAMAGED_VOCAB_BPE[damage](trained[0])
    else:
        lines[0] = '{"version": 2}'
    write_files(tmp_path, trained[0], vocab_bpe="\n".join(lines))
    one_line_error(tmp_path, "vocab.bpe")
    with pytest.raises(Exception):  # tokenizers refuses the same files
        models.BPE.from_file(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe"))


def test_merge_result_missing_from_encoder_json(trained, tmp_path):
    a, b = good_merges(trained[0])[-2].split()  # the last merge (the file ends in "\n"): no later merge uses it
    write_files(tmp_path, trained[0], encoder_json=json.dumps({s: i for s, i in good_vocab(trained[0]).items()
                                                               if s != a + b}))
    assert repr(a + b) in one_line_error(tmp_path, "vocab.bpe")
    with pytest.raises(Exception):
        models.BPE.from_file(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe"))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """HOME in tmp_path and urlopen recording its calls: nothing touches the real ~/.cache or the network."""
    monkeypatch.setenv("HOME", str(tmp_path))
    calls = []

    def no_network(url, timeout=None):
        calls.append((url, timeout))
        raise OSError("network is unreachable\n(a reason of two lines)")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path, calls


def test_no_network_and_empty_cache_says_where_to_put_the_files(home):
    tmp_path, calls = home
    cache = tmp_path / ".cache" / "mingpt"
    with pytest.raises(UserError) as caught:
        get_encoder()
    message = str(caught.value)
    assert "\n" not in message and str(cache) in message and "encoder.json" in message and "vocab.bpe" in message
    assert calls == [(GPT2_URL + "encoder.json", calls[0][1])] and 0 < calls[0][1] <= 60
    assert not cache.exists() or not os.listdir(cache)
    assert GPT2_URL == "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/"


def test_cut_download_leaves_nothing(home, monkeypatch):
    tmp_path, _ = home

    class CutResponse(io.BytesIO):
        def read(self, *args):
            raise http.client.IncompleteRead(b'{"a"', 1000)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: CutResponse())
    with pytest.raises(UserError):
        BPETokenizer()
    cache = tmp_path / ".cache" / "mingpt"
    assert not cache.exists() or not os.listdir(cache)


def test_download_fills_the_cache_then_is_not_repeated(trained, home, monkeypatch):
    folder, hf = trained
    tmp_path, calls = home
    served = []

    def serve(url, timeout=None):
        served.append(url)
        return io.BytesIO((folder / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    assert get_encoder().encode(SENTENCES[4]) == hf.encode(SENTENCES[4]).ids
    assert served == [GPT2_URL + "encoder.json", GPT2_URL + "vocab.bpe"]
    assert sorted(os.listdir(tmp_path / ".cache" / "mingpt")) == ["encoder.json", "vocab.bpe"]
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: pytest.fail("downloaded again"))
    # karpathy's generate.ipynb, unchanged: BPETokenizer() from the cache, decode of a squeezed (1, T) tensor
    tokenizer = BPETokenizer()
    assert tokenizer.decode(tokenizer(SENTENCES[2]).squeeze()) == SENTENCES[2]
    assert isinstance(tokenizer.encoder, Encoder)
