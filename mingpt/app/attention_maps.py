"""
Attention maps: every layer's and head's attention weights for a prompt, as a trained model computes them, and
their figure, layers by heads with the prompt's tokens on both axes. scripts/attention_maps.py draws a run's into
its folder, --trainer.attention_maps_interval sends them to the run's wandb, notebooks/lab.ipynb draws each model's.

The weights are the model's own. Each attention module's `core` is wrapped from outside the model (as the lab's
probe in mingpt/app/probes.py wraps it) to read the queries and keys of one forward pass, and the weights come
from mingpt.attention's attention_probs, naive_attention's scores, mask and softmax, applied to the queries that
`attend` scores: under --model.gqa_scores=group_sum each group's summed queries, so one map per key/value head.
The forward itself runs the model's own core, whichever --model.attn_impl it trains with.
"""

import contextlib
import os
from typing import NamedTuple

import torch
from einops import rearrange

from mingpt.app.checkpoint import load_checkpoint, saved_model, saved_tokenizer
from mingpt.app.files import save_figure
from mingpt.attention import attention_mask, attention_probs, scored_queries
from mingpt.errors import UserError

MAPS_FILE = "attention_maps.png"  # what scripts/attention_maps.py writes into the run's folder
MAX_TOKENS = 128  # a longer prompt is cropped to its last MAX_TOKENS: more would not be readable
SHOWN = {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5"}  # characters a tick label would not show


class AttentionMaps(NamedTuple):
    weights: torch.Tensor  # (n_layer, n_maps, T, T) on the CPU: row t holds query t's weights over keys 0..T-1
    tokens: list  # the text of each of the T positions
    n_query_head: int
    n_kv_head: int
    group_sum: bool  # one map per key/value head (its group's queries summed); else one per query head
    window: int  # the sliding window (0: full causal attention)
    cropped: int  # tokens of the prompt left out before the first position drawn
    about: str  # the model in a few words, for the figure's title

    def check_layers(self, layers):
        n = self.weights.size(0)
        for layer in layers:
            if not 0 <= layer < n:
                raise UserError(f"layer {layer} is out of range: the model has {n} layers, 0..{n - 1}")

    def check_heads(self, heads):
        n = self.weights.size(1)
        what = "key/value groups (group_sum scores: one map per group)" if self.group_sum else "query heads"
        for head in heads:
            if not 0 <= head < n:
                raise UserError(f"head {head} is out of range: the model has {n} {what}, 0..{n - 1}")


def weights_of_call(q, k, window, gqa_scores):
    """The weights one call of the core attends with, (B, n_maps, T_q, T_k): per query head, or under group_sum per
    key/value head."""
    queries = scored_queries(q, k, gqa_scores)
    att = attention_probs(queries, k, window)  # (B, n_kv, g*T_q, T_k)
    return rearrange(att, "b h (g t) s -> b (h g) t s", g=queries.size(1) // k.size(1))


@contextlib.contextmanager
def recorded_weights(model):
    """Within the block, each attention module's core also keeps the weights of its last call (a list, one entry
    per layer); afterwards every module has the core it had before, a probe's wrapper included."""
    modules = model.attention_modules()
    own = [attn.__dict__.get("core") for attn in modules]  # None: the class's core
    kept = [None] * len(modules)

    def keeping(layer, core):
        def core_keeping_weights(q, k, v, window, impl, dropout_p, gqa_scores):
            kept[layer] = weights_of_call(q, k, window, gqa_scores)
            return core(q, k, v, window, impl, dropout_p, gqa_scores)
        return core_keeping_weights

    for layer, attn in enumerate(modules):
        attn.core = keeping(layer, attn.core)
    try:
        yield kept
    finally:
        for attn, core in zip(modules, own):
            if core is None:
                del attn.core
            else:
                attn.core = core


def describe(model):
    """The attention settings of a GPT in a few words, e.g. '6 heads, 2 key/value heads, window 32, RoPE'."""
    attn = model.attention_modules()[0]
    words = [f"{len(model.attention_modules())} layers", f"{attn.n_query_head} heads"]
    if attn.n_kv_head < attn.n_query_head:
        words.append(f"{attn.n_kv_head} key/value head{'s' if attn.n_kv_head > 1 else ''}")
        if attn.gqa_scores == "group_sum":
            words.append("group_sum scores")
    if attn.window:
        words.append(f"window {attn.window}")
    words.append("RoPE" if attn.rope else {"none": "no positions"}.get(model.pos_emb, f"{model.pos_emb} positions"))
    return ", ".join(words)


def prompt_ids(tokenizer, prompt):
    if prompt == "":
        raise UserError("the prompt is empty; give at least one character")
    try:
        return tokenizer.encode(prompt)
    except UserError as e:
        raise UserError(f"the prompt: {e}") from None


@torch.no_grad()
def attention_maps(model, tokenizer, prompt, max_tokens=MAX_TOKENS):
    """Every layer's and head's attention weights for `prompt`, as an AttentionMaps. A prompt of more than
    max_tokens tokens (or than the model's block_size) is cropped to its last ones. The model is left in the mode
    it was in; nothing of its state or of any random generator changes."""
    modules = model.attention_modules()
    if not modules:
        raise UserError(f"a {type(model).__name__} has no attention to draw; attention maps need a GPT")
    ids = prompt_ids(tokenizer, prompt)
    keep = min(max_tokens, model.block_size)
    cropped, ids = max(0, len(ids) - keep), ids[-keep:]
    device = model.lm_head.weight.device
    was_training = model.training
    model.eval()
    try:
        with recorded_weights(model) as kept:
            model(torch.tensor([ids], device=device))
    finally:
        model.train(was_training)
    attn = modules[0]
    return AttentionMaps(torch.cat(kept).float().cpu(), [tokenizer.decode([i]) for i in ids], attn.n_query_head,
                         attn.n_kv_head, attn.gqa_scores == "group_sum" and attn.n_kv_head < attn.n_query_head,
                         attn.window, cropped, describe(model))


def tick_label(token):
    return "".join(SHOWN.get(c, c) for c in token)


def map_title(maps, head):
    """Which query heads a map is of: under GQA the key/value head it reads too, so heads that share one show it."""
    g = maps.n_query_head // maps.n_kv_head
    if maps.group_sum:
        return f"kv {head}: heads {head * g}-{head * g + g - 1} summed"
    return f"head {head}" + (f" \u00b7 kv {head // g}" if g > 1 else "")


def window_edge(ax, T, window):
    """The band's lower edge, a staircase (none when the band is wider than the prompt): query t sees keys
    t - window//2 .. t."""
    span = window // 2
    xs, ys = [], []
    for t in range(span + 1, T):
        xs += [t - span - 0.5, t - span - 0.5]
        ys += [t - 0.5, t + 0.5]
    if xs:
        ax.plot(xs, ys, color="limegreen", linewidth=1.0, linestyle=(0, (2, 1)))


def plot_attention_maps(maps, layers=None, heads=None, title=None):
    """One figure, a row per layer and a column per map (query head, or key/value group under group_sum), keys
    across and queries down, each labelled with its tokens; colour is the weight on a square-root scale (0 to 1),
    so that weak weights stay visible, and the keys a query may not see are grey. Under GQA a map's title names
    its key/value head and the heads of one group share a colour; a window's band edge is a dashed line. Returns
    a matplotlib Figure, made without pyplot (nothing global to close; a notebook shows it as it is)."""
    # imported here: every run imports this module, and matplotlib takes longer to import than a step to train
    from matplotlib import colormaps
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure
    layers = list(range(maps.weights.size(0))) if layers is None else list(layers)
    heads = list(range(maps.weights.size(1))) if heads is None else list(heads)
    maps.check_layers(layers)
    maps.check_heads(heads)
    T = len(maps.tokens)
    panel_in = 2.2 if T <= 64 else 2.8
    fig = Figure(figsize=(1.2 + panel_in * len(heads), 0.9 + panel_in * len(layers)), dpi=100, layout="constrained")
    axes = fig.subplots(len(layers), len(heads), squeeze=False)
    step = -(-T // int(panel_in * 72 / 5.5))  # labels of 5 points, 5.5 points apart
    ticks = list(range(0, T, step))
    labels = [tick_label(maps.tokens[t]) for t in ticks]
    across = 0 if all(len(label) == 1 for label in labels) else 90  # characters upright, longer tokens turned
    g = maps.n_query_head // maps.n_kv_head
    norm = PowerNorm(0.5, vmin=0, vmax=1)
    cmap = colormaps["magma"].with_extremes(bad="0.9")  # masked keys in light grey, apart from weights near 0
    hidden = ~attention_mask(T, T, maps.window)
    for row, layer in enumerate(layers):
        for col, head in enumerate(heads):
            ax = axes[row][col]
            shown = maps.weights[layer, head].masked_fill(hidden, float("nan")).numpy()
            image = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
            if maps.window:
                window_edge(ax, T, maps.window)
            group = head if maps.group_sum else head // g
            colour = f"C{group % 10}" if g > 1 else "black"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
            ax.set_xticks(ticks, labels if row == len(layers) - 1 else [], fontsize=5, rotation=across)
            ax.set_yticks(ticks, labels if col == 0 else [], fontsize=5)
            ax.tick_params(length=1, pad=1)
            if row == 0:
                ax.set_title(map_title(maps, head), fontsize=7, color=colour)
            if col == 0:
                ax.set_ylabel(f"layer {layer}\nquery", fontsize=7)
            if row == len(layers) - 1:
                ax.set_xlabel("key", fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.5, label="attention weight")
    lines = [f"Attention maps: {maps.about}", title]
    if maps.cropped:
        lines.append(f"the prompt's last {T} tokens ({maps.cropped} before them left out)")
    fig.suptitle("\n".join(line for line in lines if line), fontsize=8)
    return fig


def draw_run(run_dir, prompt, layers=None, heads=None):
    """Draw the attention maps of run_dir's model.pt for `prompt` into run_dir/attention_maps.png; returns the
    file's path and the maps. Every problem (no model.pt, a prompt its tokenizer cannot encode, a layer or head
    out of range, a folder it cannot write) is a UserError, raised before anything is written."""
    path = os.path.join(run_dir, "model.pt")
    ckpt = load_checkpoint(path, "model.pt", hint=" (RUN_DIR names a trained run's folder)")
    maps = attention_maps(saved_model(ckpt, path), saved_tokenizer(ckpt, path), prompt)
    figure = plot_attention_maps(maps, layers, heads,
                                 title=f"{os.path.normpath(run_dir)} at iteration {ckpt.get('iter_num')}")
    out = os.path.join(run_dir, MAPS_FILE)
    save_figure(figure, out)
    return out, maps
