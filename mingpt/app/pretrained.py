"""
Published weights as our model: `load_pretrained(name_or_folder)` reads a Hugging Face GPT-2 (one of OpenAI's four
hub names, or a folder holding one) or a Llama or Mistral folder (what scripts/export_hf.py writes, or any folder
of that shape) and returns a mingpt.model.GPT, in eval mode with fp32 weights on the CPU, whose logits are those
of transformers' own model. It lets the project sample from, fine-tune and measure a real checkpoint with its own
code; mingpt/app/export.py is the way back. `fine_tune` starts a run from a GPT-2 (--model.init_from).

Only what our GPT computes exactly is loaded. Whatever it cannot (another activation or attention scaling,
biases Llama's block lacks, scaled RoPE or another RoPE base, cross-attention), a folder that is missing or
unreadable, another model family, or a hub name that cannot be fetched, is a UserError of one line.
"""

import inspect
import os
from typing import NamedTuple

import torch

from mingpt.bpe import FILE_NAMES
from mingpt.data.tokenizer import GPT2Tokenizer
from mingpt.app.export import HF_NAMES
from mingpt.model import GPT, RotaryPositionalEmbeddings
from mingpt.errors import UserError

GPT2_HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")  # the two names transformers has for our tanh-approximated GELU
ROPE_BASE = inspect.signature(RotaryPositionalEmbeddings).parameters["base"].default  # what our attention uses
OFFLINE_HINT = "; without network, give a local folder that holds it"
OURS = {theirs: ours for ours, theirs in HF_NAMES.items()}  # Llama's names -> ours, in the order export applies


def first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def refuse_unless_empty(problems, source, family):
    """One line for every setting of the checkpoint that our GPT cannot compute, if there is any."""
    if problems:
        raise UserError(f"{source}: our GPT cannot compute this {family}'s {', '.join(problems)}")


def read_config(name):
    from transformers import AutoConfig
    if not os.path.isdir(name):
        if name not in GPT2_HUB_NAMES:
            raise UserError(f"no folder {name}: give a Hugging Face model folder (with its config.json) or one of "
                            f"the hub names {', '.join(GPT2_HUB_NAMES)}")
    elif not os.path.isfile(os.path.join(name, "config.json")):
        raise UserError(f"{name} has no config.json, so it is not a Hugging Face model folder")
    try:
        return AutoConfig.from_pretrained(name)
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
        hf, info = AutoModelForCausalLM.from_pretrained(name, config=hf_config, dtype=torch.float32,
                                                        output_loading_info=True)
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


class FineTune(NamedTuple):
    """What --model.init_from starts a run from, checked before anything is written."""
    name: str
    hf_config: object  # transformers' config of the checkpoint
    tokenizer: GPT2Tokenizer


FINE_TUNE_FLAGS = {"init_from", "embd_pdrop", "resid_pdrop", "attn_pdrop"}  # the model flags a fine-tune reads


def fine_tune(config):
    """--model.init_from=NAME: the run's model settings become the GPT-2 checkpoint's (dropouts stay the run's, the
    position table is cut to --data.block_size, as nanoGPT's crop_block_size does) and its tokenizer GPT-2's (the
    folder's vocabulary files, else minGPT's cached ones). Returns the FineTune; model flags that the checkpoint
    decides, another tokenizer, or a context longer than the checkpoint's are one line each."""
    name = config.model.init_from
    hf_config, settings = pretrained_settings(name)
    if hf_config.model_type != "gpt2":
        raise UserError(f"--model.init_from={name} holds a {hf_config.model_type} model; init_from fine-tunes GPT-2 "
                        f"with its tokenizer (GPT.from_pretrained loads this one; a run of this lab goes on from "
                        f"--model.pretrained_folder)")
    decided = sorted(config.model.given() - FINE_TUNE_FLAGS)
    if decided:
        raise UserError(f"--model.init_from={name} takes the model's settings from the checkpoint; drop "
                        f"{' '.join('--model.' + key for key in decided)}")
    if "tokenizer" in config.data.given() and config.data.tokenizer != "gpt2":
        raise UserError(f"--model.init_from={name} reads GPT-2's tokens; drop --data.tokenizer="
                        f"{config.data.tokenizer} (or give --data.tokenizer=gpt2)")
    if config.data.block_size > settings["block_size"]:
        raise UserError(f"--data.block_size={config.data.block_size} is longer than the {settings['block_size']} "
                        f"positions {name} has; give at most that")
    has_files = os.path.isdir(name) and any(all(os.path.isfile(os.path.join(name, f)) for f in pair)
                                            for pair in FILE_NAMES)
    tokenizer = GPT2Tokenizer.from_folder(name if has_files else None)
    if len(tokenizer) != hf_config.vocab_size:
        raise UserError(f"{name} has {hf_config.vocab_size} tokens but its GPT-2 vocabulary files have "
                        f"{len(tokenizer)}; give a folder with the model's own vocab.json and merges.txt")
    config.data.tokenizer = "gpt2"
    config.model.merge_from_dict({k: v for k, v in settings.items() if k not in ("vocab_size", "block_size")})
    return FineTune(name, hf_config, tokenizer)
