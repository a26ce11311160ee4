"""
Full definition of a GPT Language Model after karpathy's minGPT (its blocks, attention and the GPT here), with the
mechanisms that took GPT to LLaMA and Mistral behind flags:

- model.rope=True: rotary position embeddings (Su et al.) on queries and keys instead of a position table;
- model.n_kv_head < model.n_query_head: grouped-query attention (n_kv_head = 1 is multi-query attention);
- model.window=w: sliding-window attention, each token sees itself and the w//2 tokens before it;
- model.pos_emb=learned|sinusoidal|none: minGPT's learned table, the fixed table of "Attention is all you
  need", or no absolute positions at all;
- model.norm=rmsnorm, model.mlp=swiglu, model.bias=False: LLaMA's block (RMSNorm, a SwiGLU MLP, no biases);
- model.preset=llama: all of LLaMA's choices in one flag (mingpt/app/export.py writes such a model for Hugging Face);
- model.qk_norm, model.mlp=relu2, model.zero_init_proj, model.tie_embeddings, model.logit_softcap: what the
  modded-nanogpt speedrun added (docs/speedrun.md).

The attention arithmetic itself lives in mingpt/attention.py, shared by every variant here, and the settings
(each flag's type, range and help, the presets, what an unset one means) in mingpt/model_config.py.
LanguageModel is the interface GPT shares with the recurrent models of mingpt/rnn.py, which the trainer and a run
rely on.

References:
1) the official GPT-2 TensorFlow implementation released by OpenAI:
https://github.com/openai/gpt-2/blob/master/src/model.py
2) RoFormer: Enhanced Transformer with Rotary Position Embedding, https://arxiv.org/abs/2104.09864
3) GQA: Training Generalized Multi-Query Transformer Models, https://arxiv.org/abs/2305.13245
4) Root Mean Square Layer Normalization, https://arxiv.org/abs/1910.07467
5) GLU Variants Improve Transformer, https://arxiv.org/abs/2002.05202
"""

import math
from collections import OrderedDict

import torch
import torch.nn as nn
from torch.nn import functional as F

from mingpt.attention import Dropout, KVCache, RotaryPositionalEmbeddings, attend, sinusoidal_table
from mingpt.model_config import kv_heads, mlp_hidden_size, model_settings, position_embedding
from mingpt.optim import adamw_with_decay, muon_and_adamw
from mingpt.sampling import check_sampling, sample_next

# -----------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Causal self-attention with n_query_head query heads reading n_kv_head key/value heads, optional RoPE on
    queries and keys, and an optional sliding window. With n_kv_head = n_query_head it is minGPT's multi-head
    attention (projections split into q/k/v, the LLaMA naming)."""

    def __init__(self, config):
        super().__init__()
        self.n_query_head = config.n_query_head
        self.n_kv_head = kv_heads(config)
        self.head_dim = config.n_embd // config.n_query_head
        bias = config.bias
        self.q_proj = nn.Linear(config.n_embd, config.n_embd, bias=bias)
        self.k_proj = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=bias)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=bias)
        # QK-norm: queries and keys RMS-normalised per head before RoPE, one gain (head_dim) shared by both
        self.qk_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.rope = config.rope
        if self.rope:
            # queries and keys rotate by the same function: one module under both names, one call for both
            self.query_rotary_pe = RotaryPositionalEmbeddings(self.head_dim)
            self.key_rotary_pe = self.query_rotary_pe
        self.window = config.window
        self.attn_impl = config.attn_impl
        self.gqa_scores = config.gqa_scores
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = Dropout(config.resid_pdrop)
        self._stacked = None  # (what it was made from, weight, bias if any): see qkv_projection

    core = staticmethod(attend)  # the attention arithmetic; the lab's probe wraps it (mingpt/app/probes.py)

    def qkv_projection(self):
        """q_proj, k_proj and v_proj stacked into one (weight, bias), or (weight,) without biases, so that one
        matmul makes the queries, keys and values. With gradients on (training) it is stacked at every call, which
        autograd splits back in the backward; without (decoding, evaluation) the stack is kept until a weight moves
        or changes."""
        projections = (self.q_proj, self.k_proj, self.v_proj)
        parts = [[p.weight for p in projections]]
        if self.q_proj.bias is not None:
            parts.append([p.bias for p in projections])
        if torch.is_grad_enabled() or torch.compiler.is_compiling():  # a compiled graph fuses the stack
            return tuple(torch.cat(tensors) for tensors in parts)
        made_from = [(t.data_ptr(), t._version) for part in parts for t in part]  # in-place updates bump _version
        if self._stacked is None or self._stacked[0] != made_from:
            self._stacked = (made_from, *(torch.cat(tensors) for tensors in parts))
        return self._stacked[1:]

    def new_cache(self, context):
        """An empty KV cache for decoding: window//2 + 1 positions with a window, else `context` positions."""
        return KVCache(self.window // 2 + 1 if self.window else context)

    def forward(self, x, cache=None):
        """x (B, T, n_embd) -> (B, T, n_embd). With a cache, x holds the T positions after those cached."""
        B, T, C = x.size()
        nq, nkv = self.n_query_head, self.n_kv_head
        qkv = F.linear(x, *self.qkv_projection()).view(B, T, nq + 2 * nkv, self.head_dim).transpose(1, 2)
        qk, v = qkv.split_with_sizes([nq + nkv, nkv], dim=1)  # (B, nq + nkv, T, hd), (B, nkv, T, hd)
        if self.qk_norm is not None:
            qk = self.qk_norm(qk)
        if self.rope:
            qk = self.query_rotary_pe(qk, 0 if cache is None else cache.pos)  # key_rotary_pe is the same module
        q, k = qk.split_with_sizes([nq, nkv], dim=1)  # (B, nq, T, hd), (B, nkv, T, hd)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, nkv, S, hd): cached positions, then these
        y = self.core(q, k, v, self.window, self.attn_impl, self.attn_pdrop if self.training else 0.0,
                      self.gqa_scores)  # (B, nq, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.out_proj(y))


class GroupedQueryAttention(CausalSelfAttention):
    """Grouped-query attention (LLaMA-2, Mistral): query head i shares key/value head
    i // (n_query_head // n_kv_head), so K/V projections and the cache shrink by n_query_head / n_kv_head.
    It is the same module as CausalSelfAttention, named for what it does when n_kv_head < n_query_head."""


class RMSNorm(nn.Module):
    """LLaMA's normalisation (Zhang and Sennrich): x / sqrt(mean(x^2) + eps) * weight over the last dimension, a
    LayerNorm without the mean subtracted and without a bias."""

    def __init__(self, n_embd, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))

    def forward(self, x):
        # in fp32 as autocast runs LayerNorm, then cast back before the weight, as Hugging Face's LlamaRMSNorm does
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


def norm_layer(config):
    """The normalisation --model.norm names; a LayerNorm has a bias unless --model.bias=False."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class SquaredReLU(nn.Module):
    """relu(x)^2 (So et al., Primer), the activation of the modded-nanogpt speedrun's MLP."""

    def forward(self, x):
        return F.relu(x).square()


def gelu_mlp(config):
    """GPT-2's MLP: c_proj(gelu(c_fc(x))), or with --model.mlp=relu2 c_proj(relu(c_fc(x))^2)."""
    hidden = mlp_hidden_size(config)
    return nn.Sequential(OrderedDict(
        c_fc=nn.Linear(config.n_embd, hidden, bias=config.bias),
        act=SquaredReLU() if config.mlp == "relu2" else nn.GELU(approximate="tanh"),  # minGPT's NewGELU
        c_proj=nn.Linear(hidden, config.n_embd, bias=config.bias),
        dropout=Dropout(config.resid_pdrop),
    ))


class SwiGLU(nn.Module):
    """LLaMA's MLP (Shazeer, GLU variants): down(silu(gate(x)) * up(x)), the names Hugging Face's Llama uses."""

    def __init__(self, config):
        super().__init__()
        hidden = mlp_hidden_size(config)
        self.gate_proj = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.up_proj = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.down_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.resid_pdrop)

    def forward(self, x):
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class Block(nn.Module):
    """ an unassuming Transformer block """

    def __init__(self, config):
        super().__init__()
        self.ln_1 = norm_layer(config)
        self.attn = GroupedQueryAttention(config) if kv_heads(config) < config.n_query_head \
            else CausalSelfAttention(config)
        self.ln_2 = norm_layer(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else gelu_mlp(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class LanguageModel(nn.Module):
    """What every model chargpt trains (GPT, RNNLM, BiRNNLM) offers the trainer, the run and sampling:
    forward(idx, targets) -> (logits, loss), configure_optimizers(train_config) and stream(...) of its own, and
    these, whose defaults are those of a model without attention, position table or KV cache."""

    pos_emb = None  # absolute positions (GPT: learned, sinusoidal or none); None: the model has no such setting
    RETIRED_KEYS = ()  # state dict entries that earlier versions saved and loading drops

    def num_params(self):
        """Every parameter, counted once (the output head and the embeddings included)."""
        return sum(p.numel() for p in self.parameters())

    def attention_modules(self):
        return []

    def flops_per_token(self, T):
        """Training FLOPs per token at context T, for the MFU the run reports; None: not counted."""
        return None

    def kv_cache_bytes(self, batch=1):
        """Bytes the KV caches of a generation of `batch` sequences hold; None: the model keeps none."""
        return None

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, do_sample=False, top_k=None, top_p=None,
                 use_cache=True, generator=None):
        """
        Take a conditioning sequence of indices idx (LongTensor of shape (b,t)) and complete the sequence
        max_new_tokens times, feeding the predictions back into the model each time; returns (b, t +
        max_new_tokens). temperature=0 or do_sample=False picks the most likely token; top_k and top_p (nucleus)
        filter the distribution before sampling. With use_cache, each step runs only the new token against a
        cache of keys and values; without, the whole context (the last block_size tokens) is recomputed.
        """
        new = list(self.stream(idx, max_new_tokens, temperature, do_sample, top_k, top_p, use_cache, generator))
        return torch.cat([idx, *new], dim=1)


class GPT(LanguageModel):
    """ GPT Language Model """

    @staticmethod
    def get_default_config():
        """minGPT's: the model's settings, declared with type, range and help in mingpt/model_config.py."""
        return model_settings()

    def __init__(self, config):
        super().__init__()
        config.validate("model.")
        assert config.vocab_size is not None and config.block_size is not None, "set from the data first"
        self.block_size = config.block_size
        self.pos_emb = position_embedding(config)

        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=Dropout(config.embd_pdrop),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=norm_layer(config),
        ))
        if self.pos_emb == "learned":
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        elif self.pos_emb == "sinusoidal":
            self.register_buffer("wpe_table", sinusoidal_table(config.block_size, config.n_embd), persistent=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.logit_softcap = config.logit_softcap

        # init all weights, and apply a special scaled init to the residual projections, per GPT-2 paper (or zeros,
        # std 0: each block then starts as the identity)
        self.apply(self._init_weights)
        std = 0.0 if config.zero_init_proj else 0.02 / math.sqrt(2 * config.n_layer)
        for pn, p in self.named_parameters():
            if pn.endswith(("c_proj.weight", "out_proj.weight", "down_proj.weight")):
                torch.nn.init.normal_(p, mean=0.0, std=std)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    @classmethod
    def from_pretrained(cls, name_or_folder):
        """minGPT's: GPT-2 ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' from the hub, or a local folder) through
        transformers' GPT2LMHeadModel, or a Llama / Mistral folder of a shape this model computes (what
        scripts/export_hf.py writes); fp32, in eval mode. Anything else is a UserError saying what does not fit."""
        from mingpt.hf import load_pretrained
        return load_pretrained(name_or_folder)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
            torch.nn.init.ones_(module.weight)

    def configure_optimizers(self, train_config):
        """
        minGPT's split of the parameters into those that get weight decay (the weights of Linear layers) and
        those that don't (biases, layernorm and embedding weights), returned as an AdamW optimizer.
        """
        decay = {"%s.%s" % (mn, pn) if mn else pn for mn, m in self.named_modules()
                 for pn, _ in m.named_parameters(recurse=False) if pn == "weight" and isinstance(m, nn.Linear)}
        decay &= dict(self.named_parameters()).keys()  # a tied head's weight is wte's, named and undecayed as it
        if train_config.optimizer == "muon":  # the blocks' matrices to Muon, the rest as before
            matrices = {name for name in decay if name.startswith("transformer.h.")}
            return muon_and_adamw(self, matrices, decay - matrices, train_config)
        return adamw_with_decay(self, decay, train_config)

    def forward(self, idx, targets=None, caches=None):
        """idx (b, t) token ids -> (logits (b, t, vocab_size), loss or None). With `caches` (one KVCache per
        layer, from new_caches), idx holds the t positions that follow the cached ones."""
        b, t = idx.size()
        start = caches[0].pos if caches else 0
        x = self.transformer.wte(idx)  # token embeddings of shape (b, t, n_embd)
        if self.pos_emb != "none":
            if start + t > self.block_size:
                raise ValueError(f"cannot forward position {start + t}: a {self.pos_emb} position table "
                                 f"has only block_size={self.block_size} rows")
            table = self.transformer.wpe.weight if self.pos_emb == "learned" else self.wpe_table
            x = x + table[start:start + t]  # position embeddings of shape (t, n_embd), broadcast over the batch
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, caches[i] if caches else None)
        logits = self.lm_head(self.transformer.ln_f(x))
        if self.logit_softcap:
            logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)

        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def attention_modules(self):
        return [block.attn for block in self.transformer.h]

    def flops_per_token(self, T):
        """Training FLOPs (forward + backward) per token at context T, as PaLM's appendix B counts them: 6 per
        weight that multiplies (the embedding tables only look up), plus 12 * n_layer * n_embd per key a query
        reads for the scores and the weighted values (a window caps the keys at w//2 + 1)."""
        tables = [m.weight for m in (self.transformer.wte, getattr(self.transformer, "wpe", None))
                  if m is not None and m.weight is not self.lm_head.weight]  # a tied wte multiplies, as the head
        n_weights = self.num_params() - sum(t.numel() for t in tables)
        window = self.attention_modules()[0].window
        keys = min(T, window // 2 + 1) if window else T
        return 6 * n_weights + 12 * len(self.transformer.h) * self.transformer.wte.embedding_dim * keys

    def new_caches(self):
        """One KV cache per layer. A full-attention model looks at block_size positions: a table model never
        gets further (stream crops), one without a table rolls on with its last block_size positions in view."""
        return [attn.new_cache(self.block_size) for attn in self.attention_modules()]

    def kv_cache_bytes(self, batch=1):
        """Bytes the KV caches of a generation of `batch` sequences hold: per layer, K and V ring buffers of
        (batch, n_kv_head, capacity, head_dim) in the weights' dtype."""
        itemsize = self.lm_head.weight.element_size()
        return sum(2 * batch * attn.n_kv_head * cache.capacity * attn.head_dim * itemsize
                   for attn, cache in zip(self.attention_modules(), self.new_caches()))

    @torch.inference_mode()
    def stream(self, idx, max_new_tokens, temperature=1.0, do_sample=False, top_k=None, top_p=None,
               use_cache=True, generator=None):
        """Yield max_new_tokens next tokens, each (b, 1), for the sequence idx (b, t), as `generate` describes."""
        check_sampling(temperature, top_k, top_p)
        caches = self.new_caches() if use_cache else None
        for _ in range(max_new_tokens):
            # the first step reads the whole prompt into the caches; a model without a position table then decodes
            # on with its rolling caches past block_size, while a table model crops the context to the last
            # block_size tokens and recomputes it (into emptied caches), as minGPT does
            if caches and 0 < caches[0].pos and (self.pos_emb == "none" or caches[0].pos < self.block_size):
                logits, _ = self(idx[:, -1:], caches=caches)
            else:
                for cache in caches or ():
                    cache.reset()
                logits, _ = self(idx[:, -self.block_size:], caches=caches)
            idx_next = sample_next(logits[:, -1, :], temperature, do_sample, top_k, top_p, generator)
            idx = torch.cat((idx, idx_next), dim=1)
            yield idx_next
