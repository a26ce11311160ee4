"""
A trained run out of the project: `export(run_dir, out_dir)` writes a folder that Hugging Face `transformers`
loads with AutoModelForCausalLM.from_pretrained(out_dir) and AutoTokenizer.from_pretrained(out_dir):

  config.json, generation_config.json   a GPT2Config for GPT-2's own model (minGPT's: LayerNorm, GELU, biases,
                                        a learned position table, multi-head attention, no window; a
                                        --model.init_from fine-tune), else a LlamaConfig, or a MistralConfig with
                                        its sliding_window for a model with --model.window
  model.safetensors                     the weights under GPT-2's or Llama's names, fp32
  tokenizer.json, tokenizer_config.json the run's tokenizer as a `tokenizers` JSON

Only a model that GPT-2, Llama or Mistral computes exactly is written (GPT-2's block, or --model.preset=llama with
any n_kv_head and window; a tied head is their tie_word_embeddings, a zero-initialised projection only an init): a
norm, MLP, bias or position table they lack, QK-norm, logit soft-capping, the writeup's group_sum scores or a
recurrent model is refused with one line naming the flags to change.

Two conventions differ and need no conversion: RoPE here rotates the pairs (x_i, x_(i+d/2)), the rotate-half
layout of Llama's apply_rotary_pos_emb, so q_proj and k_proj keep their rows (Meta's checkpoints, with
interleaved pairs, are the ones Hugging Face's converter permutes); and positions count from 1 here, from 0
there, which shifts every query and key by the same angle and leaves every score as it is.
"""

import os

import torch

from mingpt.data.tokenizer import UNK
from mingpt.app.checkpoint import load_checkpoint, load_state_into, saved_model_config, saved_tokenizer
from mingpt.app.files import check_writable_folder
from mingpt.model_config import LLAMA, is_recurrent, kv_heads, mlp_hidden_size, position_embedding
from mingpt.model import GPT
from mingpt.errors import UserError


def unexportable(config):
    """The settings Llama and Mistral cannot express, as (the run's flag, the flag it needs) pairs."""
    if is_recurrent(config):
        return [(f"--model.model_type={config.model_type}", "--model.model_type=gpt --model.preset=llama")]
    wanted = [("norm", config.norm, "rmsnorm"), ("mlp", config.mlp, "swiglu"), ("bias", config.bias, False),
              ("pos_emb", position_embedding(config), "none"), ("rope", config.rope, True),
              ("qk_norm", config.qk_norm, False), ("logit_softcap", config.logit_softcap or None, None)]
    if kv_heads(config) < config.n_query_head:  # with one query head per key/value head the two scores agree
        wanted.append(("gqa_scores", config.gqa_scores, "per_head"))
    return [(f"--model.{key}={has}", f"--model.{key}={needs}") for key, has, needs in wanted if has != needs]


def not_gpt2(config):
    """What GPT-2's own block (minGPT's: LayerNorm, GELU, biases, a learned table, multi-head attention, no window)
    lacks of this model, as (the run's flag, the flag it needs) pairs; [] for GPT-2's model."""
    if is_recurrent(config):
        return [(f"--model.model_type={config.model_type}", "--model.model_type=gpt")]
    wanted = [("norm", config.norm, "layernorm"), ("mlp", config.mlp, "gelu"), ("bias", config.bias, True),
              ("rope", config.rope, False), ("pos_emb", position_embedding(config), "learned"),
              ("window", config.window, 0), ("qk_norm", config.qk_norm, False),
              ("logit_softcap", config.logit_softcap or None, None)]
    if kv_heads(config) < config.n_query_head:
        wanted.append(("n_kv_head", config.n_kv_head, None))
    return [(f"--model.{key}={has}", f"--model.{key}={needs}") for key, has, needs in wanted if has != needs]


def check_exportable(config, source):
    problems, gpt2 = unexportable(config), not_gpt2(config)
    if problems and gpt2:
        has, needs = zip(*problems)
        preset = all(flag.split("=")[0].removeprefix("--model.") in LLAMA for flag in needs)
        gpt2_has, gpt2_needs = zip(*gpt2)
        raise UserError(f"{source} cannot be exported: Hugging Face's Llama and Mistral cannot compute "
                        f"{' '.join(has)}; train with {' '.join(needs)}"
                        f"{' (--model.preset=llama sets them all)' if preset else ''}, or, for GPT-2, which cannot "
                        f"compute {' '.join(gpt2_has)}, with {' '.join(gpt2_needs)}")


def gpt2_config(config):
    """The GPT2Config of a model that is GPT-2's: its own head (not tied to the embedding, as minGPT keeps it)."""
    from transformers import GPT2Config
    return GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_query_head, n_inner=config.mlp_hidden,
                      activation_function="gelu_new", layer_norm_epsilon=config.norm_eps, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=config.tie_embeddings, dtype="float32",
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)


def gpt2_state_dict(state):
    """Our parameter names -> GPT-2's: q, k and v side by side in c_attn, and the (in, out) weights of its Conv1D
    layers, the transpose of nn.Linear's."""
    renamed = {}
    for name, tensor in state.items():
        if ".attn.q_proj." in name:
            parts = [state[name.replace("q_proj", proj)] for proj in ("q_proj", "k_proj", "v_proj")]
            name, tensor = name.replace("q_proj", "c_attn"), torch.cat(parts)
        elif ".attn.k_proj." in name or ".attn.v_proj." in name:
            continue
        name = name.replace(".attn.out_proj.", ".attn.c_proj.")
        conv1d = name.endswith(".weight") and any(f".{layer}." in name for layer in ("c_attn", "c_proj", "c_fc"))
        renamed[name] = tensor.t().contiguous() if conv1d else tensor
    return renamed


def hf_config(config, rope_base):
    """The LlamaConfig, or with a window the MistralConfig, of a model that passed check_exportable. A window w
    here lets a token see itself and the w // 2 tokens before it; Mistral's sliding_window counts the token too."""
    from transformers import LlamaConfig, MistralConfig
    common = dict(vocab_size=config.vocab_size, hidden_size=config.n_embd, intermediate_size=mlp_hidden_size(config),
                  num_hidden_layers=config.n_layer, num_attention_heads=config.n_query_head,
                  num_key_value_heads=kv_heads(config), head_dim=config.n_embd // config.n_query_head,
                  hidden_act="silu", max_position_embeddings=config.block_size, rms_norm_eps=config.norm_eps,
                  rope_parameters={"rope_type": "default", "rope_theta": float(rope_base)},
                  tie_word_embeddings=config.tie_embeddings, attention_dropout=0.0, dtype="float32",
                  # no token ends a sequence here: Llama's default eos id 2 would stop generation at that character
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if config.window:
        return MistralConfig(sliding_window=config.window // 2 + 1, **common)
    return LlamaConfig(attention_bias=False, mlp_bias=False, **common)


HF_NAMES = {"transformer.wte.": "model.embed_tokens.", "transformer.ln_f.": "model.norm.",
            "transformer.h.": "model.layers.", ".ln_1.": ".input_layernorm.", ".ln_2.": ".post_attention_layernorm.",
            ".attn.out_proj.": ".self_attn.o_proj.", ".attn.": ".self_attn."}


def hf_state_dict(state):
    """Our parameter names -> Llama's (lm_head and the SwiGLU's gate/up/down_proj are already theirs)."""
    renamed = {}
    for name, tensor in state.items():
        for ours, theirs in HF_NAMES.items():  # in order: out_proj's own name before the other .attn. ones
            name = name.replace(ours, theirs, 1)
        renamed[name] = tensor
    return renamed


# WORD_PIECES for the Oniguruma regexes of `tokenizers`, where \w also takes combining marks and \s leaves out the
# separators \x1c-\x1f that Python counts as whitespace: Python's classes written out, which cut every character
# that Python's Unicode database assigns as WORD_PIECES does
WORD_PIECES_ONIGURUMA = r"[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s\x1c-\x1f]|[\s\x1c-\x1f]+"


def hf_tokenizer(tokenizer, block_size):
    """The run's tokenizer as a transformers tokenizer over a `tokenizers` Tokenizer: a BPE run's own; for char and
    word, their token list as a WordLevel vocabulary behind a pre-tokenizer that cuts text where ours does (every
    character; WORD_PIECES) and a decoder that concatenates tokens, as ours decode."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    if tokenizer.kind in ("bpe", "gpt2"):
        tok = Tokenizer.from_str(tokenizer.hf.to_str())
    else:
        vocab = {token: i for i, token in enumerate(tokenizer.tokens)}
        # a character outside a char vocabulary is an error for ours, and for WordLevel without its unk token
        tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK if tokenizer.kind == "word" else None))
        pattern = r"[\s\S]" if tokenizer.kind == "char" else WORD_PIECES_ONIGURUMA
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
        tok.decoder = decoders.Fuse()
    # transformers' clean-up would remove the space before punctuation that the text has
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                   model_max_length=block_size)


def export(run_dir, out_dir):
    """Write run_dir's model.pt to out_dir for transformers; returns the Hugging Face model written. Every problem
    (no run, a model they cannot express, an unwritable or the run's own folder) is a UserError, raised before
    anything is written."""
    path = os.path.join(run_dir, "model.pt")
    ckpt = load_checkpoint(path, "model.pt", hint=" (RUN_DIR names a trained run's folder)")
    config = saved_model_config(ckpt, path)
    check_exportable(config, path)
    if os.path.abspath(out_dir) == os.path.abspath(run_dir):
        raise UserError(f"{out_dir} is the run's own folder, whose config.json and tokenizer.json the export would "
                        f"overwrite; export into another folder")
    check_writable_folder(out_dir, "OUT_DIR")
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise UserError("exporting needs transformers: pip install -r requirements.txt") from None
    model = GPT(config)
    load_state_into(model, ckpt["model"], path)
    if not not_gpt2(config):
        hf = AutoModelForCausalLM.from_config(gpt2_config(config))
        hf.load_state_dict(gpt2_state_dict(model.state_dict()), strict=True)
    else:
        hf = AutoModelForCausalLM.from_config(hf_config(config, model.attention_modules()[0].query_rotary_pe.base))
        hf.load_state_dict(hf_state_dict(model.state_dict()), strict=True)
    hf.save_pretrained(out_dir)
    hf_tokenizer(saved_tokenizer(ckpt, path), config.block_size).save_pretrained(out_dir)
    return hf
