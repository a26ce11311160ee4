"""
The model's settings, each declared once with its type, range, choices and help (GPT.get_default_config returns
them), the rules between them, and what a setting left unset means: the flags of --model.* that chargpt.py parses,
and the config a minGPT user fills in Python.
"""

from mingpt.attention import IMPLEMENTATIONS
from mingpt.config import CfgNode as CN, NOT_EMPTY, above, at_least, between
from mingpt.errors import UserError

POSITION_EMBEDDINGS = ("learned", "sinusoidal", "none")
GQA_SCORES = ("per_head", "group_sum")
RECURRENT = ("rnn", "birnn_invalid", "birnn_prefix")
# minGPT's model types: a GPT of these sizes (n_layer, n_head, n_embd); "gpt" keeps the sizes the settings hold
GPT_SIZES = {
    "openai-gpt": (12, 12, 768), "gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024), "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600), "gopher-44m": (8, 16, 512), "gpt-mini": (6, 6, 192), "gpt-micro": (4, 4, 128),
    "gpt-nano": (3, 3, 48),
}
MODEL_TYPES = ("gpt", *GPT_SIZES, *RECURRENT)
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "relu2")
LLAMA = dict(rope=True, pos_emb="none", norm="rmsnorm", mlp="swiglu", bias=False)  # what --model.preset=llama sets
PROBABILITY = between(0, 1, high_open=True)


def kv_heads(config):
    """The key/value heads per block: n_kv_head, or when it is unset one per query head, multi-head attention,
    as minGPT's n_head is all its users set."""
    return config.n_kv_head or config.n_query_head


# which settings each model type reads: a recurrent model has no attention, no residual branches and no positions
# beyond its recurrence, the bidirectional ones one layer per direction; the GPT no recurrent activation
def is_gpt(config):
    return config.model_type not in RECURRENT


def is_recurrent(config):
    return config.model_type in RECURRENT


def stacks_layers(config):
    return config.model_type not in RECURRENT[1:]


def position_embedding(config):
    """What --model.pos_emb=None means: no table under RoPE, else minGPT's learned one."""
    return config.pos_emb or ("none" if config.rope else "learned")


def mlp_hidden_size(config):
    """--model.mlp_hidden, else 4 * n_embd for gelu and, for swiglu, 2/3 of that rounded up to a multiple of 64
    (LLaMA's rule): SwiGLU has three matrices where GELU has two, so the parameters stay about the same."""
    if config.mlp_hidden is not None:
        return config.mlp_hidden
    return -(-8 * config.n_embd // (3 * 64)) * 64 if config.mlp == "swiglu" else 4 * config.n_embd


def check_heads_and_positions(config):
    """The GPT's settings that must agree with each other: one line each, naming the flags and the fix."""
    if config.n_embd % config.n_query_head:
        raise UserError(f"--model.n_embd={config.n_embd} must be divisible by --model.n_query_head="
                        f"{config.n_query_head}")
    if config.n_kv_head is not None and config.n_query_head % config.n_kv_head:
        raise UserError(f"--model.n_query_head={config.n_query_head} must be a multiple of --model.n_kv_head="
                        f"{config.n_kv_head} (1 <= n_kv_head <= n_query_head)")
    if config.rope and config.pos_emb not in (None, "none"):
        raise UserError(f"--model.rope=True replaces the position table; drop --model.pos_emb={config.pos_emb} "
                        f"or set it to none")
    if config.rope and (config.n_embd // config.n_query_head) % 2:
        raise UserError(f"--model.rope=True needs an even head size, and --model.n_embd={config.n_embd} / "
                        f"--model.n_query_head={config.n_query_head} is odd; change either")


def model_settings():
    C = CN()
    # gpt-mini, the course's chargpt model
    C.set("model_type", "gpt", "the network: gpt (the sizes below), a GPT of minGPT's sizes (" +
          ", ".join(GPT_SIZES) + ": it sets n_layer, n_query_head and n_embd, and any of them given beside it "
          "wins), the Elman rnn, or the writeup's BiRNN models of question 1.2a (birnn_invalid) and 1.2b "
          "(birnn_prefix)", choices=MODEL_TYPES,
          expands={name: dict(n_layer=n, n_query_head=h, n_embd=c) for name, (n, h, c) in GPT_SIZES.items()})
    C.set("n_layer", 6, "number of transformer blocks (of rnn layers)", check=at_least(1), used=stacks_layers)
    C.set("n_query_head", 6, "attention (query) heads per block; minGPT's n_head is this setting",
          check=at_least(1), used=is_gpt)
    C.alias("n_head", "n_query_head")
    C.set("n_kv_head", None, "key/value heads per block: = n_query_head (None) is MHA, 1 is MQA, between is "
          "GQA", kind=int, check=at_least(1), used=is_gpt)
    C.set("n_embd", 192, "width of the residual stream", check=at_least(1))
    C.derive("vocab_size", "it is set from the data (the characters of --data.input_file)", check=at_least(1))
    C.derive("block_size", "it is set from the data; use --data.block_size", check=at_least(1))
    C.set("embd_pdrop", 0.1, "dropout on token (+position) embeddings", check=PROBABILITY)
    C.set("resid_pdrop", 0.1, "dropout on each residual branch", check=PROBABILITY, used=is_gpt)
    C.set("attn_pdrop", 0.1, "dropout on attention weights", check=PROBABILITY, used=is_gpt)
    C.set("rope", False, "rotary position embeddings on queries and keys (then no position table)", used=is_gpt)
    C.set("pos_emb", None, "absolute positions (None: learned, none with rope)", choices=POSITION_EMBEDDINGS,
          used=is_gpt)
    C.set("window", 0, "sliding window w: token t sees t - w//2 .. t; 0 is full causal attention",
          check=at_least(0), used=is_gpt)
    C.set("attn_impl", "fast", "naive: the writeup's math, materialised scores; fast: fused / banded",
          choices=tuple(IMPLEMENTATIONS), used=is_gpt)
    C.set("gqa_scores", "per_head", "per_head: LLaMA's GQA; group_sum: the writeup's summed group scores",
          choices=GQA_SCORES, used=is_gpt)
    C.set("norm", "layernorm", "normalisation before attention, MLP and head: layernorm, or LLaMA's rmsnorm",
          choices=NORMS, used=is_gpt)
    C.set("norm_eps", 1e-5, "epsilon the norms add to the variance (rmsnorm: mean square)", check=above(0),
          used=is_gpt)
    C.set("mlp", "gelu", "MLP: GPT-2's gelu, LLaMA's swiglu, down(silu(gate(x)) * up(x)), or relu2, "
          "c_proj(relu(c_fc(x))^2)", choices=MLPS, used=is_gpt)
    C.set("mlp_hidden", None, "MLP hidden width (None: 4 * n_embd for gelu, 8/3 * n_embd rounded up to a "
          "multiple of 64 for swiglu)", kind=int, check=at_least(1), used=is_gpt)
    C.set("bias", True, "biases in the blocks' Linear layers and in the LayerNorms (rmsnorm has none)",
          used=is_gpt)
    C.set("qk_norm", False, "RMSNorm of queries and keys per head, before RoPE", used=is_gpt)
    C.set("zero_init_proj", False, "the output projections of attention and MLP start at zero", used=is_gpt)
    C.set("tie_embeddings", False, "the output head shares wte's weight (nanoGPT ties; minGPT does not, nor does "
          "the default here)", used=is_gpt)
    C.set("logit_softcap", None, "c: logits = c * tanh(logits / c) (None or 0: off)", kind=float, check=at_least(0),
          used=is_gpt)
    C.set("preset", "gpt", "a model family's choices in one flag: gpt (minGPT's, the defaults) or llama (" +
          ", ".join(f"{k}={v}" for k, v in LLAMA.items()) + "); a flag given beside it wins, wherever it stands",
          choices=("gpt", "llama"), expands={"gpt": {k: getattr(C, k) for k in LLAMA}, "llama": LLAMA},
          used=is_gpt)
    C.set("rnn_activation", "slide", "recurrent models' hidden activation", choices=("slide", "tanh"),
          used=is_recurrent)
    C.set("pretrained_folder", None, "start from DIR/model.pt (fresh optimizer); positions extend if needed",
          kind=str, check=NOT_EMPTY)
    C.set("init_from", None, "fine-tune a pretrained GPT-2: gpt2, gpt2-medium, gpt2-large, gpt2-xl or a folder of "
          "one (transformers' format), with GPT-2's tokenizer; the model's settings are the checkpoint's",
          kind=str, check=NOT_EMPTY)
    C.rule(check_heads_and_positions, when=is_gpt)
    return C
