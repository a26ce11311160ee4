"""
Fine-tuning a pretrained GPT-2 (--model.init_from) and GPT-2's tokenizer in the data layer (--data.tokenizer=gpt2),
offline: a tiny random GPT-2 saved by transformers into a folder with the vocabulary files of a byte-level BPE
trained here. The references: transformers' own model and GPT-2 tokenizer reading the same folder.
"""

import json
import os

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPT2Tokenizer, LlamaConfig, \
    LlamaForCausalLM

from helpers import assert_one_line_error, made_up_text, run_cli
from mingpt.app.checkpoint import load_checkpoint, saved_model_config, saved_tokenizer
from mingpt.app.export import export
from mingpt.app.run import train
from mingpt.app.settings import build_model, get_config
from mingpt.data.tokenizer import GPT2Tokenizer as OurGPT2Tokenizer
from mingpt.errors import UserError
from mingpt.model import GPT

TEXT = made_up_text(20000) + "ROMEO: what, ho! Café naïve 🙂 don't we'll\n" * 30
N_POSITIONS = 32


def write_vocabulary(folder, text, vocab_size=300):
    """GPT-2's two vocabulary files (transformers' names) of a byte-level BPE trained on `text`; its size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(tok.to_str())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(model["vocab"])


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    vocab_size = write_vocabulary(folder, TEXT)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab_size, n_positions=N_POSITIONS,
                                    bos_token_id=None, eos_token_id=None))
    hf.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(TEXT)
    return str(path)


def fine_tune_config(corpus, work_dir, init_from, *flags):
    config = get_config()
    config.merge_from_args([f"--model.init_from={init_from}", f"--data.input_file={corpus}",
                            f"--system.work_dir={work_dir}", "--system.wandb=disabled", "--data.block_size=16",
                            "--trainer.batch_size=4", "--trainer.max_iters=0", "--trainer.device=cpu",
                            "--trainer.dtype=float32", "--trainer.eval_iters=1", "--trainer.sample_interval=0",
                            "--sample.max_new_tokens=8", *flags])
    return config


def reference_tokenizer(folder):
    return GPT2Tokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))


def test_gpt2_tokenizer_gives_transformers_ids(gpt2_folder):
    ours, theirs = OurGPT2Tokenizer.from_folder(gpt2_folder), reference_tokenizer(gpt2_folder)
    assert len(ours) == theirs.vocab_size  # transformers adds <|endoftext|> when the vocabulary lacks it
    for text in [TEXT[:3000], "ROMEO: wherefore art thou?", "  two  spaces\nand\ttabs", "日本語 🙂 naïve", ""]:
        ids = ours.encode(text)
        assert ids == theirs.encode(text)
        assert ours.decode(ids) == text


def test_init_from_starts_from_the_checkpoints_weights(gpt2_folder, corpus, tmp_path):
    run = tmp_path / "run"
    train(fine_tune_config(corpus, run, gpt2_folder))
    ckpt = load_checkpoint(str(run / "model.pt"))
    config = saved_model_config(ckpt, "model.pt")
    assert (config.n_layer, config.n_query_head, config.n_embd, config.block_size) == (2, 2, 32, 16)
    assert saved_tokenizer(ckpt, "model.pt").kind == "gpt2"
    ours = build_model(config)
    ours.load_state_dict(ckpt["model"])
    ours.eval()
    hf = GPT2LMHeadModel.from_pretrained(gpt2_folder, attn_implementation="eager").eval()
    x = torch.randint(config.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf(x).logits, atol=1e-4, rtol=0)


def test_a_fine_tune_trains_resumes_samples_and_exports(gpt2_folder, corpus, tmp_path):
    run = tmp_path / "run"
    trainer = train(fine_tune_config(corpus, run, gpt2_folder, "--trainer.max_iters=3"))
    first = trainer.logs["train_losses"]
    train(fine_tune_config(corpus, run, gpt2_folder, "--trainer.max_iters=5", "--trainer.resume=True"))
    logs = json.loads((run / "train_logs.json").read_text())
    assert logs["train_losses"][:3] == first and len(logs["train_losses"]) == 5
    proc = run_cli("--sample.only=True", f"--system.work_dir={run}", "--sample.prompt=ROMEO:",
                   "--sample.max_new_tokens=5", "--trainer.device=cpu")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ROMEO:")
    export(str(run), str(tmp_path / "hf"))
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    ckpt = load_checkpoint(str(run / "model.pt"))
    ours = GPT(saved_model_config(ckpt, "model.pt"))
    ours.load_state_dict(ckpt["model"])
    ours.eval()
    x = torch.randint(len(ckpt["vocab"]), (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x)[0], atol=1e-4, rtol=0)
    assert type(hf).__name__ == "GPT2LMHeadModel"


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=50)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("flags, needle", [
    (["--data.tokenizer=char"], "drop --data.tokenizer=char"),
    (["--model.n_layer=3"], "drop --model.n_layer"),
    (["--data.block_size=64"], f"the {N_POSITIONS} positions"),
    (["--model.pretrained_folder=elsewhere"], "give one"),
])
def test_bad_fine_tunes_are_one_line_and_write_nothing(gpt2_folder, corpus, tmp_path, flags, needle):
    with pytest.raises(UserError, match=needle) as e:
        train(fine_tune_config(corpus, tmp_path / "run", gpt2_folder, *flags))
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


def test_init_from_other_models_or_no_folder_is_one_line(llama_folder, corpus, tmp_path):
    with pytest.raises(UserError, match="fine-tunes GPT-2"):
        train(fine_tune_config(corpus, tmp_path / "run", llama_folder))
    proc = run_cli(f"--model.init_from={tmp_path}/missing", f"--data.input_file={corpus}",
                   f"--system.work_dir={tmp_path}/run")
    assert_one_line_error(proc, "no folder", "gpt2")
    assert not (tmp_path / "run").exists()


def test_a_model_folder_without_vocabulary_files_uses_minGPTs_cache(gpt2_folder, corpus, tmp_path, monkeypatch):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in os.listdir(gpt2_folder):
        if name not in ("vocab.json", "merges.txt"):
            (bare / name).write_bytes((gpt2_folder / name).read_bytes())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / ".cache" / "mingpt"
    cache.mkdir(parents=True)
    (cache / "encoder.json").write_text((gpt2_folder / "vocab.json").read_text())
    (cache / "vocab.bpe").write_text((gpt2_folder / "merges.txt").read_text())
    train(fine_tune_config(corpus, tmp_path / "run", bare))
    assert saved_tokenizer(load_checkpoint(str(tmp_path / "run" / "model.pt")), "").tokens == \
        OurGPT2Tokenizer.from_folder(gpt2_folder).tokens


def test_gpt_from_pretrained_is_minGPTs_entry_point(gpt2_folder):
    ours = GPT.from_pretrained(gpt2_folder)
    hf = GPT2LMHeadModel.from_pretrained(gpt2_folder, attn_implementation="eager").eval()
    x = torch.randint(hf.config.vocab_size, (1, N_POSITIONS))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf(x).logits, atol=1e-4, rtol=0)
    assert not ours.training
    with pytest.raises(UserError, match="no folder"):
        GPT.from_pretrained(gpt2_folder / "missing")
