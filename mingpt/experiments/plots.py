"""
The lab's line and bar plots, which the studies save and notebooks/lab.ipynb shows: loss curves, the sliding
window's cost, the KV cache per n_kv_head. Each returns a matplotlib Figure made without pyplot, so that nothing
global is left to close and a notebook shows it as it is. (The attention maps draw themselves:
mingpt/app/attention_maps.py.)
"""

from matplotlib.figure import Figure


def loss_curve_figure(curves, title, ylabel="training loss"):
    """curves: {label: [(iteration, loss), ...]} -> one plot."""
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    for label, points in curves.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, label=label, linewidth=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{ylabel} (nats per character)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def window_cost_figure(rows, title):
    """mingpt.experiments.bench.window_attention_cost's rows -> forward + backward time and peak memory against the
    sequence length: naive and banded attention for each window, full causal SDPA beside them."""
    fig = Figure(figsize=(10, 4))
    ax_t, ax_m = fig.subplots(1, 2)
    for w in dict.fromkeys(r["window"] for r in rows):
        sel = [r for r in rows if r["window"] == w]
        ns = [r["N"] for r in sel]
        for kind, style in (("naive", "o-"), ("fast", "s-")):
            ax_t.plot(ns, [r[f"{kind}_ms"] for r in sel], style, label=f"{kind}, w={w}")
            ax_m.plot(ns, [r[f"{kind}_peak_bytes"] / 2**20 for r in sel], style, label=f"{kind}, w={w}")
    ax_t.plot(ns, [r["sdpa_causal_ms"] for r in sel], "k--", label="SDPA full causal")
    for ax, label in ((ax_t, "forward + backward time (ms)"), (ax_m, "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N (tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def kv_cache_figure(kv_bytes, n_query_head, title):
    """kv_bytes: {n_kv_head: bytes of the KV caches of one sequence} -> bars in KiB, each labelled."""
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    heads = list(kv_bytes)
    bars = ax.bar([str(n) for n in heads], [kv_bytes[n] / 1024 for n in heads], color="tab:blue")
    ax.bar_label(bars, [f"{kv_bytes[n] / 1024:,.0f}" for n in heads], fontsize=8)
    ax.set_xlabel(f"n_kv_head (of {n_query_head} query heads)")
    ax.set_ylabel("KV cache per sequence (KiB)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return fig
