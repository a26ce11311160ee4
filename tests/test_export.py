"""
Export to Hugging Face transformers (mingpt/app/export.py, scripts/export_hf.py): for a trained tiny
--model.preset=llama run of each attention variant, transformers' own Llama / Mistral loaded from the export
gives our logits (fp32, 1e-4) on sequences up to block_size and our greedy tokens, and its tokenizer encodes and
decodes as ours (char, word and bpe runs); models they cannot express are refused in one line naming the flags.
"""

import os
import subprocess
import sys
import unicodedata

import pytest
import torch

from helpers import ROOT, assert_one_line_error, checkout_env, made_up_text, snapshot, tiny_config
from mingpt.app.checkpoint import load_checkpoint, load_state_into, model_file, saved_model_config
from mingpt.app.export import WORD_PIECES_ONIGURUMA, export
from mingpt.app.files import save_torch
from mingpt.app.run import saved_tokenizer, train
from mingpt.app.settings import build_model, get_config
from mingpt.data.tokenizer import CharTokenizer, WORD_PIECES
from mingpt.errors import UserError

transformers = pytest.importorskip("transformers")

BLOCK = 64  # a 10-token prompt and 50 generated tokens fit, so neither side ever crops or rolls its context
VARIANTS = {  # name -> (flags beside the preset, tokenizer): each tokenizer kind is exported by some variant
    "mha": (["--model.n_kv_head=4"], "char"),
    "gqa": (["--model.n_kv_head=2"], "word"),
    "mqa": (["--model.n_kv_head=1"], "bpe"),
    "gqa_window": (["--model.n_kv_head=2", "--model.window=8"], "char"),
}
TOKENIZER_FLAGS = {"char": [], "word": ["--data.vocab_size=12"], "bpe": ["--data.vocab_size=300"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> (run folder, export folder): each variant trained for 30 iterations, then exported."""
    root = tmp_path_factory.mktemp("export")
    text_file = root / "tiny.txt"
    text_file.write_text(made_up_text())
    out = {}
    for name, (flags, tokenizer) in VARIANTS.items():
        run = root / name
        train(tiny_config(str(text_file), run, "--model.preset=llama", f"--data.block_size={BLOCK}",
                          "--trainer.max_iters=30", "--trainer.eval_interval=30", "--trainer.sample_interval=0",
                          "--trainer.checkpoint_interval=0", "--trainer.probe_attention=False",
                          f"--data.tokenizer={tokenizer}", *TOKENIZER_FLAGS[tokenizer], *flags))
        export(run, root / f"{name}_hf")
        out[name] = run, root / f"{name}_hf"
    return out


def ours(run):
    path = os.path.join(run, "model.pt")
    ckpt = load_checkpoint(path)
    model = build_model(saved_model_config(ckpt, path))
    load_state_into(model, ckpt["model"], path)
    return model.eval(), saved_tokenizer(ckpt, path)


def theirs(folder, attn_implementation="sdpa"):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attn_implementation)
    return model.eval(), transformers.AutoTokenizer.from_pretrained(folder)


@pytest.mark.slow  # the runs fixture trains four models
@pytest.mark.parametrize("name", list(VARIANTS))
def test_exported_architecture(runs, name):
    run, folder = runs[name]
    model, _ = theirs(folder)
    config = saved_model_config(load_checkpoint(os.path.join(run, "model.pt")), run)
    window = config.window
    assert type(model).__name__ == ("MistralForCausalLM" if window else "LlamaForCausalLM")
    assert model.config.num_key_value_heads == config.n_kv_head and model.config.num_attention_heads == 4
    if window:  # a token sees itself and the window // 2 before it
        assert model.config.sliding_window == window // 2 + 1
    assert sorted(os.listdir(folder)) == ["config.json", "generation_config.json", "model.safetensors",
                                          "tokenizer.json", "tokenizer_config.json"]


@pytest.mark.slow  # the runs fixture trains four models
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_equal_ours(runs, name, attn_implementation):
    run, folder = runs[name]
    model, _ = ours(run)
    hf, _ = theirs(folder, attn_implementation)
    g = torch.Generator().manual_seed(0)
    for length in (1, 9, BLOCK):  # the window (8: 4 earlier tokens) hides keys from the 9-token sequences on
        x = torch.randint(model.lm_head.out_features, (3, length), generator=g)
        with torch.no_grad():
            expected, _ = model(x)
            torch.testing.assert_close(hf(x).logits, expected, atol=1e-4, rtol=0)


@pytest.mark.slow  # the runs fixture trains four models
def test_window_one_token_off_would_show(runs):
    """The logits comparison sees the window's edge: Mistral with a window of w // 2 or w // 2 + 2 tokens (one
    earlier token fewer or more than ours) gives other logits."""
    run, folder = runs["gqa_window"]
    model, _ = ours(run)
    x = torch.randint(model.lm_head.out_features, (2, BLOCK), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, _ = model(x)
        for sliding_window in (3, 6):  # ours, w = 8, is 5
            hf = transformers.AutoModelForCausalLM.from_pretrained(folder, sliding_window=sliding_window).eval()
            assert (hf(x).logits - expected).abs().max() > 1e-3


@pytest.mark.slow  # the runs fixture trains four models
@pytest.mark.parametrize("name", list(VARIANTS))
def test_greedy_generation_equals_ours(runs, name):
    run, folder = runs[name]
    model, tokenizer = ours(run)
    hf, _ = theirs(folder)
    text = made_up_text(400, seed=1)
    prompts = torch.tensor([tokenizer.encode(text)[i:i + 10] for i in (0, 20)])
    expected = model.generate(prompts, 50)
    got = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=50, do_sample=False)
    assert got.shape == (2, 60)
    assert torch.equal(got, expected)


TEXTS = {
    "char": ["the king shall speak, and we go. O God!", "O  God!  now,the queen", "", "g"],
    "word": ["the king shall speak, and we go. O God!", "the  king\n\tspeaks  ,now", "unknown words: zebra 42!",
             "", "  "],
    "bpe": ["the king shall speak, and we go. O God!", "Zebra 42, \u00e9t\u00e9 \u2014 na\u00efve \U0001f600\n\tx", ""],
}


@pytest.mark.slow  # the runs fixture trains four models
@pytest.mark.parametrize("name", list(VARIANTS))
def test_tokenizer_encodes_and_decodes_as_ours(runs, name):
    run, folder = runs[name]
    _, tokenizer = ours(run)
    _, hf = theirs(folder)
    for text in TEXTS[tokenizer.kind]:
        ids = tokenizer.encode(text)
        assert hf(text)["input_ids"] == ids, text
        assert hf.decode(ids) == tokenizer.decode(ids), text
        if tokenizer.kind != "word" or not tokenizer.unknown(text):
            assert hf.decode(hf(text)["input_ids"]) == text
    every_id = list(range(len(tokenizer)))
    assert hf.decode(every_id) == tokenizer.decode(every_id)
    if tokenizer.kind == "word":
        assert tokenizer.unknown(TEXTS["word"][2]) and 0 in tokenizer.encode(TEXTS["word"][2])  # <unk> was met


@pytest.mark.slow  # a regex over 2 x 280,000 characters, three times
def test_word_pieces_cut_alike_on_every_assigned_character():
    """The exported word pre-tokenizer against WORD_PIECES on every character Python's Unicode database assigns,
    each between word, whitespace and punctuation neighbours, so that a character in another class shows."""
    from tokenizers import Regex, pre_tokenizers
    split = pre_tokenizers.Split(Regex(WORD_PIECES_ONIGURUMA), behavior="isolated")
    chars = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]
    for neighbour in ("a", " ", "."):
        text = neighbour.join(chars)
        assert [piece for piece, _ in split.pre_tokenize_str(text)] == WORD_PIECES.findall(text)


@pytest.mark.slow  # the runs fixture trains four models
def test_char_outside_the_vocabulary_is_refused_by_both(runs):
    run, folder = runs["mha"]
    _, tokenizer = ours(run)
    _, hf = theirs(folder)
    with pytest.raises(UserError):
        tokenizer.encode("the zebra")
    with pytest.raises(Exception):
        hf("the zebra")


# -----------------------------------------------------------------------------
# refusals

def saved_run(folder, *flags):
    """A run folder with an untrained model.pt of the model the flags give (export reads nothing else)."""
    config = get_config()
    config.merge_from_args(["--model.n_layer=1", "--model.n_query_head=4", "--model.n_kv_head=2",
                            "--model.n_embd=32", *flags])
    tokenizer = CharTokenizer(sorted(set("the king")))
    config.model.vocab_size, config.model.block_size = len(tokenizer), 16
    save_torch(model_file(build_model(config.model), config, tokenizer, 0), os.path.join(folder, "model.pt"))
    return folder


REFUSED = [  # (flags, what the line must name: the run's flags and the ones to train with)
    ([], ["--model.norm=layernorm", "--model.mlp=gelu", "--model.bias=True", "--model.pos_emb=learned",
          "--model.rope=False", "--model.norm=rmsnorm", "--model.mlp=swiglu", "--model.bias=False",
          "--model.pos_emb=none", "--model.rope=True", "--model.preset=llama"]),
    (["--model.preset=llama", "--model.norm=layernorm"], ["--model.norm=layernorm", "--model.norm=rmsnorm"]),
    (["--model.preset=llama", "--model.mlp=gelu"], ["--model.mlp=gelu", "--model.mlp=swiglu"]),
    (["--model.preset=llama", "--model.bias=True"], ["--model.bias=True", "--model.bias=False"]),
    (["--model.preset=llama", "--model.rope=False", "--model.pos_emb=learned"],
     ["--model.pos_emb=learned", "--model.rope=False", "--model.pos_emb=none", "--model.rope=True"]),
    (["--model.preset=llama", "--model.rope=False", "--model.pos_emb=sinusoidal"], ["--model.pos_emb=sinusoidal"]),
    (["--model.preset=llama", "--model.rope=False"], ["--model.rope=False", "--model.rope=True"]),
    (["--model.preset=llama", "--model.gqa_scores=group_sum"],
     ["--model.gqa_scores=group_sum", "--model.gqa_scores=per_head"]),
    (["--model.model_type=rnn"], ["--model.model_type=rnn", "--model.model_type=gpt"]),
    (["--model.model_type=birnn_prefix"], ["--model.model_type=birnn_prefix"]),
]


@pytest.mark.parametrize("flags, needles", REFUSED)
def test_unexportable_models_are_refused(tmp_path, flags, needles):
    run = saved_run(tmp_path, *flags)
    with pytest.raises(UserError) as e:
        export(run, tmp_path / "hf")
    assert "\n" not in str(e.value)
    for needle in needles:
        assert needle in str(e.value)
    if not any("model_type" in n for n in needles):
        assert "model_type" not in str(e.value)
    assert not (tmp_path / "hf").exists()


def test_group_sum_with_one_query_head_per_kv_head_is_exported(tmp_path):
    """With n_kv_head = n_query_head each group is one head, and the summed scores are the per-head ones."""
    run = saved_run(tmp_path, "--model.preset=llama", "--model.gqa_scores=group_sum", "--model.n_kv_head=4")
    export(run, tmp_path / "hf")
    model, _ = ours(run)
    hf, _ = theirs(tmp_path / "hf")
    x = torch.randint(model.lm_head.out_features, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x)[0], atol=1e-4, rtol=0)


def export_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "export_hf.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=checkout_env(), stdin=subprocess.DEVNULL)


@pytest.mark.slow  # a subprocess imports torch and transformers
def test_cli_refusals_are_one_line(tmp_path):
    gpt = saved_run(tmp_path / "gpt")
    assert_one_line_error(export_cli(gpt, tmp_path / "hf"), "--model.norm=layernorm", "--model.preset=llama")
    assert_one_line_error(export_cli(tmp_path / "nothing", tmp_path / "hf"), "no model.pt")
    llama = saved_run(tmp_path / "llama", "--model.preset=llama")
    assert_one_line_error(export_cli(llama, llama), "the run's own folder")
    (tmp_path / "file").write_text("")
    assert_one_line_error(export_cli(llama, tmp_path / "file"), "OUT_DIR")
    assert not (tmp_path / "hf").exists()


@pytest.mark.slow  # a subprocess imports torch and transformers
def test_cli_without_out_dir_is_one_line(tmp_path):
    run = saved_run(tmp_path / "llama", "--model.preset=llama")
    before = snapshot(tmp_path)
    assert_one_line_error(export_cli(run), "the following arguments are required: OUT_DIR")
    assert snapshot(tmp_path) == before


@pytest.mark.slow  # a subprocess imports torch and transformers
def test_a_folder_that_holds_anything_is_refused_and_left_as_it_was(tmp_path):
    run = saved_run(tmp_path / "llama", "--model.preset=llama")
    out = tmp_path / "other_model"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "bert"}')
    before = snapshot(tmp_path)
    assert_one_line_error(export_cli(run, out), f"OUT_DIR={out} already holds config.json", "new or empty folder")
    assert snapshot(tmp_path) == before
    for name in ("a", "b", "c"):
        (out / name).mkdir()
    with pytest.raises(UserError, match=r"already holds a, b, c and more; export into a new or empty folder"):
        export(run, out)
    (out / "empty").mkdir()
    export(run, out / "empty")  # an empty folder is written into
    assert (out / "empty" / "config.json").exists()


@pytest.mark.slow  # a subprocess imports torch and transformers
def test_cli_writes_a_loadable_folder(tmp_path):
    run = saved_run(tmp_path / "run", "--model.preset=llama", "--model.window=6")
    proc = export_cli(run, tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr
    assert "MistralForCausalLM" in proc.stdout
    hf, _ = theirs(tmp_path / "hf")
    assert hf.config.sliding_window == 4
