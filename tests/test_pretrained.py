"""
Loading Hugging Face checkpoints (mingpt/hf.py), with transformers as the reference and no network: tiny
random GPT-2, Llama (GQA, MQA with tied embeddings) and Mistral (a sliding window shorter than the sequences)
models saved by transformers load into our GPT with transformers' logits (fp32, 1e-4) and greedy tokens; a model
that mingpt/app/export.py wrote loads back with the logits it had; and what our GPT cannot compute, or cannot find,
is refused in one line.
"""

import os
import subprocess
import sys
import time

import pytest
import torch

from helpers import ROOT, assert_one_line_error, run_cli
from mingpt.app.checkpoint import model_file
from mingpt.app.export import export
from mingpt.app.files import save_torch
from mingpt.app.settings import build_model, get_config
from mingpt.data.tokenizer import CharTokenizer
from mingpt.errors import UserError
from mingpt.hf import load_pretrained
from mingpt.model import GPT

transformers = pytest.importorskip("transformers")

VOCAB = 97
SMALL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, vocab_size=VOCAB,
             max_position_embeddings=64, bos_token_id=None, eos_token_id=None, pad_token_id=None)
GPT2 = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=64, bos_token_id=None,
            eos_token_id=None)
MODELS = {
    "gpt2": lambda: transformers.GPT2Config(**GPT2),
    # n_inner other than 4 * n_embd, separate output head; reorder_and_upcast_attn computes the same numbers
    "gpt2_variant": lambda: transformers.GPT2Config(**GPT2, n_inner=48, tie_word_embeddings=False,
                                                    reorder_and_upcast_attn=True, layer_norm_epsilon=1e-3),
    "llama_gqa": lambda: transformers.LlamaConfig(**SMALL, num_key_value_heads=2, rms_norm_eps=1e-3),
    "llama_mqa_tied": lambda: transformers.LlamaConfig(**SMALL, num_key_value_heads=1, tie_word_embeddings=True),
    "mistral_window": lambda: transformers.MistralConfig(**SMALL, num_key_value_heads=2, sliding_window=5),
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only contend on a shared machine
    yield
    torch.set_num_threads(threads)


def saved(folder, hf_config, seed=0):
    """A random transformers model of hf_config saved in folder. Every weight is perturbed, the norms' ones and
    the zero biases too, so that a weight copied to the wrong place changes the logits."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder


def reference(folder, **overrides):
    """transformers' own model from the folder, eager attention, fp32, eval mode."""
    return transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager",
                                                             dtype=torch.float32, **overrides).eval()


def tokens(batch, length, seed=1, vocab=VOCAB):
    return torch.randint(vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def assert_same_logits(ours, theirs, length=40):
    x = tokens(3, length, vocab=ours.lm_head.out_features)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], theirs(x).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_and_greedy_tokens_equal_transformers(tmp_path, name):
    folder = saved(tmp_path, MODELS[name]())
    ours, theirs = load_pretrained(folder), reference(folder)
    assert isinstance(ours, GPT) and not ours.training
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    assert_same_logits(ours, theirs)  # 40 tokens: the Mistral window (5 tokens) hides most of them
    prompt = tokens(2, 8, seed=2)
    theirs.generation_config.pad_token_id = theirs.generation_config.eos_token_id = None  # never stop early
    expected = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=20)
    assert expected.shape == (2, 28)
    assert torch.equal(ours.generate(prompt, 20, do_sample=False), expected)


def test_mistral_window_one_token_off_would_show(tmp_path):
    """The comparison sees the window's edge: Mistral with one token more or fewer in its window differs."""
    folder = saved(tmp_path, MODELS["mistral_window"]())
    ours = load_pretrained(folder)
    x = tokens(2, 40)
    with torch.no_grad():
        for sliding_window in (4, 6):
            assert (ours(x)[0] - reference(folder, sliding_window=sliding_window)(x).logits).abs().max() > 1e-3


def saved_run(folder, *flags):
    """A run folder whose model.pt holds an untrained preset-llama GPT with perturbed weights; returns it and
    the model."""
    config = get_config()
    config.merge_from_args(["--model.preset=llama", "--model.n_layer=2", "--model.n_query_head=4",
                            "--model.n_embd=32", "--model.mlp_hidden=48", *flags])
    tokenizer = CharTokenizer(sorted(set("the king shall speak, and we go. O God!")))
    config.model.vocab_size, config.model.block_size = len(tokenizer), 64
    torch.manual_seed(0)
    model = build_model(config.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_torch(model_file(model, config, tokenizer, 0), os.path.join(folder, "model.pt"))
    return folder, model.eval()


@pytest.mark.parametrize("flags", [["--model.n_kv_head=2"], ["--model.n_kv_head=1", "--model.window=7"]])
def test_exported_run_loads_back(tmp_path, flags):
    """export then load_pretrained gives the run's logits (an odd window w reads back as w - 1: the same w // 2)."""
    run, model = saved_run(tmp_path / "run", *flags)
    export(run, tmp_path / "hf")
    loaded = load_pretrained(tmp_path / "hf")
    x = tokens(2, 30, vocab=model.lm_head.out_features)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0], atol=1e-5, rtol=0)
    assert_same_logits(loaded, reference(tmp_path / "hf"), length=30)
    assert loaded.attention_modules()[0].n_kv_head == model.attention_modules()[0].n_kv_head


# -----------------------------------------------------------------------------
# refusals: each one line, no chained traceback, raised before any weight is read

def refused(name_or_folder, *needles):
    with pytest.raises(UserError) as e:
        load_pretrained(name_or_folder)
    message = str(e.value)
    assert "\n" not in message
    assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)
    for needle in needles:
        assert needle in message, message
    return message


def config_folder(folder, hf_config):
    hf_config.save_pretrained(folder)
    return folder


def test_missing_empty_and_unreadable_folders_are_refused(tmp_path):
    refused(tmp_path / "nothing", "no folder", "nothing", "gpt2-xl")
    refused(tmp_path, "no config.json")
    (tmp_path / "config.json").write_text("{not json")
    refused(tmp_path, "cannot read", "config.json")


def test_missing_unreadable_or_incomplete_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    refused(config_folder(tmp_path / "none", transformers.GPT2Config(**GPT2)), "cannot load the weights")
    weights = saved(tmp_path / "some", MODELS["llama_gqa"]()) / "model.safetensors"
    state = load_file(weights)
    del state["model.layers.1.input_layernorm.weight"]  # transformers would fill it with a fresh init
    save_file(state, weights, metadata={"format": "pt"})
    refused(tmp_path / "some", "lack", "model.layers.1.input_layernorm.weight")
    weights.write_text("not safetensors")
    refused(tmp_path / "some", "cannot load the weights")


def test_other_families_are_refused(tmp_path):
    bert = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=48)
    refused(config_folder(tmp_path, bert), "bert", "gpt2, llama, mistral")


@pytest.mark.parametrize("settings, needle", [
    (dict(activation_function="relu"), "activation_function=relu"),
    (dict(activation_function="gelu"), "activation_function=gelu"),  # exact erf GELU, not ours
    (dict(scale_attn_weights=False), "scale_attn_weights=False"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True"),
    (dict(add_cross_attention=True), "add_cross_attention=True"),
])
def test_gpt2_settings_we_cannot_compute_are_refused(tmp_path, settings, needle):
    refused(config_folder(tmp_path, transformers.GPT2Config(**GPT2, **settings)), "GPT-2", needle)


@pytest.mark.parametrize("family, settings, needle", [
    ("llama", dict(attention_bias=True), "attention_bias=True"),
    ("llama", dict(mlp_bias=True), "mlp_bias=True"),
    ("llama", dict(hidden_act="gelu"), "hidden_act=gelu"),
    ("llama", dict(head_dim=16), "head_dim=16"),
    ("llama", dict(rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), "rope_theta=500000.0"),
    ("llama", dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}),
     "rope_type=linear"),
    ("mistral", dict(sliding_window=0), "sliding_window=0"),
])
def test_llama_settings_we_cannot_compute_are_refused(tmp_path, family, settings, needle):
    kind = transformers.LlamaConfig if family == "llama" else transformers.MistralConfig
    refused(config_folder(tmp_path, kind(**SMALL, **settings)), needle)


def test_hub_name_without_network_says_to_give_a_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at each call, as the env var is not
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    monkeypatch.chdir(tmp_path)  # no folder named gpt2 here
    refused("gpt2", "cannot fetch gpt2", "local folder")


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa"])
def test_from_pretrained_loads_nothing_above_the_library(tmp_path, name):
    """minGPT's GPT.from_pretrained in a fresh interpreter: no module of the data layer, the application or the
    experiments is imported on the way."""
    folder = saved(tmp_path / name, MODELS[name]())
    code = ("import sys\nfrom mingpt.model import GPT\n"
            f"model = GPT.from_pretrained({str(folder)!r})\n"
            "above = sorted(m for m in sys.modules if m.startswith(('mingpt.data', 'mingpt.app', "
            "'mingpt.experiments')))\nprint(type(model).__name__, above)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "GPT []"


@pytest.fixture
def hub_unreachable(tmp_path, monkeypatch):
    """The hub as without network, in this process and in the programs it starts: its address a local port that
    refuses connections (bound, never listening), an empty cache, offline mode off. The hub client retries a
    refused download five times (~25 s), logging each try, where offline mode would refuse at once."""
    import socket
    import huggingface_hub.constants
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{port.getsockname()[1]}"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # no folder named gpt2 here
    with port:
        yield tmp_path / "hub"


def test_hub_name_without_network_is_one_line_at_once(hub_unreachable, tmp_path):
    start = time.perf_counter()
    proc = run_cli("--model.init_from=gpt2", f"--system.work_dir={tmp_path / 'run'}", "--system.wandb=disabled")
    assert_one_line_error(proc, "cannot fetch gpt2 from the Hugging Face hub", "Connection refused", "local folder")
    assert time.perf_counter() - start < 20  # the client's retries alone wait 23 s
    assert not (tmp_path / "run").exists()


def test_cached_config_without_cached_weights_and_network_is_one_line(hub_unreachable, capfd):
    snapshot = hub_unreachable / "models--gpt2" / "snapshots" / ("0" * 40)
    transformers.GPT2Config(**GPT2).save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    refused("gpt2", "cannot load the weights of gpt2", "Connection refused", "local folder")
    assert "Retrying" not in capfd.readouterr().err
