"""
Hugging Face's models and ours, both ways, for GPT-2 and Llama / Mistral:

- in: `load_pretrained(name_or_folder)` (what GPT.from_pretrained calls) reads a GPT-2 (one of OpenAI's four hub
  names, or a folder holding one) or a Llama or Mistral folder (what scripts/export_hf.py writes, or any folder of
  that shape) and returns our GPT, in eval mode with fp32 weights on the CPU, whose logits are those of
  transformers' own model. Only what our GPT computes exactly is loaded: whatever it cannot (another activation or
  attention scaling, biases Llama's block lacks, scaled RoPE or another RoPE base, cross-attention), a folder that
  is missing or unreadable, another model family, or a hub name that cannot be fetched, is a UserError of one line.
- out: our settings as a GPT2Config, LlamaConfig or MistralConfig and our weights under their names, for a model
  they compute exactly (check_exportable says what to change otherwise); mingpt/app/export.py writes a run's
  folder with them.

Two conventions differ and need no conversion: RoPE here rotates the pairs (x_i, x_(i+d/2)), the rotate-half
layout of Llama's apply_rotary_pos_emb, so q_proj and k_proj keep their rows (Meta's checkpoints, with
interleaved pairs, are the ones Hugging Face's converter permutes); and positions count from 1 here, from 0
there, which shifts every query and key by the same angle and leaves every score as it is.
"""

import inspect
import os
from functools import partial

import torch

from mingpt.errors import UserError
from mingpt.model import GPT, RotaryPositionalEmbeddings
from mingpt.model_config import LLAMA, is_recurrent, kv_heads, mlp_hidden_size, position_embedding

GPT2_HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")  # the two names transformers has for our tanh-approximated GELU
ROPE_BASE = inspect.signature(RotaryPositionalEmbeddings).parameters["base"].default  # what our attention uses
OFFLINE_HINT = "; without network, give a local folder that holds it"
HF_NAMES = {"transformer.wte.": "model.embed_tokens.", "transformer.ln_f.": "model.norm.",
            "transformer.h.": "model.layers.", ".ln_1.": ".input_layernorm.", ".ln_2.": ".post_attention_layernorm.",
            ".attn.out_proj.": ".self_attn.o_proj.", ".attn.": ".self_attn."}
OURS = {theirs: ours for ours, theirs in HF_NAMES.items()}  # Llama's names -> ours, in the order export applies


# -----------------------------------------------------------------------------------------------------------------
# in


def first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def refuse_unless_empty(problems, source, family):
    """One line for every setting of the checkpoint that our GPT cannot compute, if there is any."""
    if problems:
        raise UserError(f"{source}: our GPT cannot compute this {family}'s {', '.join(problems)}")


def from_folder_cache_or_hub(load, name):
    """load(name, ...) from a folder, else from the Hugging Face cache where it holds the files, else from the hub
    once a single request reached it: without network the hub client retries each download for ~25 s, printing
    every try, while one request without retries fails at once. The hub's refusal is an OSError, as load's are."""
    if not os.path.isdir(name):
        try:
            return load(name, local_files_only=True)
        except OSError:  # not in the cache
            from huggingface_hub import get_hf_file_metadata, hf_hub_url
            try:
                get_hf_file_metadata(hf_hub_url(name, "config.json"))
            except Exception as e:  # the client raises httpx's errors and its own (offline mode, HTTP status)
                raise OSError(first_line(e)) from None
    return load(name)


def read_config(name):
    from transformers import AutoConfig
    if not os.path.isdir(name):
        if name not in GPT2_HUB_NAMES:
            raise UserError(f"no folder {name}: give a Hugging Face model folder (with its config.json) or one of "
                            f"the hub names {', '.join(GPT2_HUB_NAMES)}")
    elif not os.path.isfile(os.path.join(name, "config.json")):
        raise UserError(f"{name} has no config.json, so it is not a Hugging Face model folder")
    try:
        return from_folder_cache_or_hub(AutoConfig.from_pretrained, name)
    except (OSError, ValueError) as e:  # no network, invalid JSON, no or an unknown model_type
        if not os.path.isdir(name):
            raise UserError(f"cannot fetch {name} from the Hugging Face hub ({first_line(e)}){OFFLINE_HINT}") from None
        raise UserError(f"cannot read {name}/config.json: {first_line(e)}") from None


def gpt2_settings(c, source):
    # reorder_and_upcast_attn scales before the matmul and upcasts to fp32: in fp32 the same numbers, so allowed
    refuse_unless_empty([what for what, bad in (
        (f"activation_function={c.activation_function} (ours is the tanh GELU, gelu_new)",
         c.activation_function not in TANH_GELU),
        ("scale_attn_weights=False", not c.scale_attn_weights),
        ("scale_attn_by_inverse_layer_idx=True", c.scale_attn_by_inverse_layer_idx),
        ("add_cross_attention=True", c.add_cross_attention)) if bad], source, "GPT-2")
    return dict(n_layer=c.n_layer, n_query_head=c.n_head, n_kv_head=None, n_embd=c.n_embd, block_size=c.n_positions,
                bias=True, norm="layernorm", norm_eps=c.layer_norm_epsilon, mlp="gelu", mlp_hidden=c.n_inner,
                pos_emb="learned", rope=False)


def llama_settings(c, source):
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = c.rope_parameters or {}  # transformers 5 keeps rope_theta and the scaling's rope_type here
    s = getattr(c, "sliding_window", None)  # Llama has none; Mistral's None is full attention
    refuse_unless_empty([what for what, bad in (
        (f"hidden_act={c.hidden_act} (ours is silu)", c.hidden_act != "silu"),
        ("attention_bias=True", getattr(c, "attention_bias", False)),  # Mistral has neither setting: no biases
        ("mlp_bias=True", getattr(c, "mlp_bias", False)),
        (f"head_dim={head_dim} (ours is hidden_size / num_attention_heads)",
         head_dim * c.num_attention_heads != c.hidden_size),
        (f"rope_type={rope.get('rope_type')}", rope.get("rope_type", "default") != "default"),
        (f"rope_theta={rope.get('rope_theta')} (ours is {ROPE_BASE})", rope.get("rope_theta") != ROPE_BASE),
        (f"partial_rotary_factor={rope.get('partial_rotary_factor')}", rope.get("partial_rotary_factor", 1) != 1),
        (f"sliding_window={s!r}", s is not None and not (isinstance(s, int) and s >= 1))) if bad],
        source, c.model_type.capitalize())
    # Mistral's token sees the s - 1 before it and itself, ours the w // 2 before it: w = 2 (s - 1), except that
    # w = 0 means no window here, so s = 1 (the token alone) is w = 1
    window = 0 if s is None else max(2 * (s - 1), 1)
    return dict(preset="llama", n_layer=c.num_hidden_layers, n_query_head=c.num_attention_heads,
                n_kv_head=c.num_key_value_heads, n_embd=c.hidden_size, block_size=c.max_position_embeddings,
                mlp_hidden=c.intermediate_size, norm_eps=c.rms_norm_eps, window=window)


def gpt2_state(hf):
    """GPT-2's weights under our names. Its Conv1D layers keep the weight as (in, out), the transpose of
    nn.Linear's, and c_attn holds q, k and v side by side along the output."""
    from transformers.pytorch_utils import Conv1D
    conv1d = {name + ".weight" for name, module in hf.named_modules() if isinstance(module, Conv1D)}
    state = {}
    for name, tensor in hf.state_dict().items():
        tensor = tensor.t() if name in conv1d else tensor
        if ".attn.c_attn." in name:
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3)):
                state[name.replace("c_attn", proj)] = part
        else:
            state[name.replace(".attn.c_proj.", ".attn.out_proj.")] = tensor
    return state


def llama_state(hf):
    """Llama's (and Mistral's) weights under our names: export's renaming undone."""
    state = {}
    for name, tensor in hf.state_dict().items():
        for theirs, ours in OURS.items():
            name = name.replace(theirs, ours, 1)
        state[name] = tensor
    return state


FAMILIES = {"gpt2": (gpt2_settings, gpt2_state), "llama": (llama_settings, llama_state),
            "mistral": (llama_settings, llama_state)}


def pretrained_settings(name):
    """(transformers' config, our model settings) of the checkpoint `name`: what GPT.get_default_config() is given to
    hold it, checked before any weight is read."""
    try:
        import transformers  # noqa: F401 (a clear line where it is missing)
    except ImportError:
        raise UserError("loading pretrained weights needs transformers: pip install -r requirements.txt") from None
    hf_config = read_config(name)
    if hf_config.model_type not in FAMILIES:
        raise UserError(f"{name} holds a {hf_config.model_type} model; load_pretrained reads "
                        f"{', '.join(FAMILIES)}")
    settings = FAMILIES[hf_config.model_type][0](hf_config, name)
    return hf_config, {**settings, "model_type": "gpt", "vocab_size": hf_config.vocab_size}


def pretrained_state(name, hf_config):
    """The checkpoint's weights under our names (fp32, CPU)."""
    from transformers import AutoModelForCausalLM
    try:
        hf, info = from_folder_cache_or_hub(partial(AutoModelForCausalLM.from_pretrained, config=hf_config,
                                                    dtype=torch.float32, output_loading_info=True), name)
    except Exception as e:  # no weights file, no network, a truncated or foreign file: the loaders raise many kinds
        hint = "" if os.path.isdir(name) else OFFLINE_HINT  # a hub name whose config was cached, not its weights
        raise UserError(f"cannot load the weights of {name}: {first_line(e)}{hint}") from None
    if info["missing_keys"]:  # transformers would have filled them with random numbers
        raise UserError(f"{name}'s weights lack {', '.join(sorted(info['missing_keys'])[:3])}")
    return FAMILIES[hf_config.model_type][1](hf)


def load_pretrained(name_or_folder):
    """Our GPT (eval mode, fp32, CPU) computing the logits of the Hugging Face checkpoint `name_or_folder`: a GPT-2
    hub name or folder, or a Llama or Mistral folder. Every problem is a UserError of one line."""
    name = os.fspath(name_or_folder)
    hf_config, settings = pretrained_settings(name)
    config = GPT.get_default_config()
    config.merge_from_dict({**settings, "embd_pdrop": 0.0, "resid_pdrop": 0.0, "attn_pdrop": 0.0})
    try:
        model = GPT(config)
    except UserError as e:  # e.g. RoPE on an odd head size
        raise UserError(f"{name}: our GPT cannot hold this model: {e}") from None
    model.load_state_dict(pretrained_state(name, hf_config), strict=True)
    return model.eval()


# -----------------------------------------------------------------------------------------------------------------
# out


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


def hf_state_dict(state):
    """Our parameter names -> Llama's (lm_head and the SwiGLU's gate/up/down_proj are already theirs)."""
    renamed = {}
    for name, tensor in state.items():
        for ours, theirs in HF_NAMES.items():  # in order: out_proj's own name before the other .attn. ones
            name = name.replace(ours, theirs, 1)
        renamed[name] = tensor
    return renamed
