"""
The project's figures, which the studies and the report save and notebooks/lab.ipynb shows: loss curves, the
sliding window's cost, the KV cache per n_kv_head, each study's own (lengths, position tables, GQA costs, bits
per character, the angle fits, the modern study's curves). Each returns a matplotlib Figure made without pyplot,
so that nothing global is left to close and a notebook shows it as it is. (The attention maps draw themselves:
mingpt/app/attention_maps.py.)
"""

import math

import numpy as np
from matplotlib.figure import Figure

from mingpt.attention import sinusoidal_table


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


def length_figure(rows, labels, scale):
    """rows of {"run", "length", "val_loss"} (None where a model cannot run that long) -> loss against length."""
    trained_at = min(r["length"] for r in rows)
    lengths = sorted({r["length"] for r in rows})
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    for k, label in enumerate(labels):
        pts = [(r["length"], r["val_loss"]) for r in rows if r["run"] == label and r["val_loss"] is not None]
        line, = ax.plot(*zip(*pts), "o-", label=label)
        if len(pts) < len(lengths):
            ax.annotate(f"{label}: no rows past {trained_at}", pts[-1], textcoords="offset points",
                        xytext=(8, -14 - 10 * k), fontsize=8, color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set(xlabel="evaluation length (tokens)", ylabel="validation loss (nats per character)",
           title=f"Length generalisation, trained at {trained_at} ({scale} scale)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def position_tables_figure(learned, scale):
    """A learned position table (positions, dimensions) beside the sinusoidal one of its shape: heat maps of both and
    of their positions' cosine similarity."""
    tables = {"learned": learned, "sinusoidal": sinusoidal_table(*learned.shape).numpy()}
    fig = Figure(figsize=(10, 8))
    axes = fig.subplots(2, 2)
    for col, (name, table) in enumerate(tables.items()):
        im = axes[0, col].imshow(table.T, aspect="auto", cmap="RdBu_r")
        axes[0, col].set(title=f"{name} position table", xlabel="position", ylabel="embedding dimension")
        fig.colorbar(im, ax=axes[0, col])
        unit = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
        im = axes[1, col].imshow(unit @ unit.T, cmap="viridis", vmin=-1, vmax=1)
        axes[1, col].set(title=f"{name}: cosine similarity of positions", xlabel="position", ylabel="position")
        fig.colorbar(im, ax=axes[1, col])
    fig.suptitle(f"Absolute position tables, {learned.shape[0]} positions x {learned.shape[1]} dimensions "
                 f"({scale} scale)")
    fig.tight_layout()
    return fig


def gqa_cost_figure(rows, title):
    """The GQA cost study's rows (one per n_kv_head) -> attention time, peak memory (per-head and summed group
    scores), KV cache and cached generation speed against n_kv_head."""
    heads = [r["n_kv_head"] for r in rows]
    fig = Figure(figsize=(10, 7))
    panels = [("attention_ms", "attention time per layer (ms)"),
              ("attention_peak_mib_per_head", "attention core peak memory (MiB)"),
              ("kv_cache_bytes", "KV cache per sequence (KB)"), ("cached_tokens_per_s", "generation (tokens/s)")]
    for ax, (key, ylabel) in zip(fig.subplots(2, 2).flat, panels):
        values = [float(r[key]) / (1024 if key == "kv_cache_bytes" else 1) for r in rows]
        ax.plot(heads, values, "o-", label="per-head scores" if "peak" in key else None)
        if "peak" in key:
            ax.plot(heads, [float(r["attention_peak_mib_group_sum"]) for r in rows], "s--",
                    label="summed group scores")
            ax.legend(fontsize=8)
        ax.set(xlabel="n_kv_head (of 6 query heads)", ylabel=ylabel, xticks=heads)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig

def bpc_figure(curves, title):
    """curves: {label: [(iteration, val bits per character), ...]} -> one plot."""
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    for label, points in curves.items():
        ax.plot(*zip(*points), marker="o", markersize=3, label=label, linewidth=1.2)
    ax.set(xlabel="iteration", ylabel="validation loss (bits per character)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def angle_fit_figure(angle, fits, title):
    """The attention study's fits of the angle between k and q: {name: {"r2", "prediction"}} against the angles."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (name, fit) in zip(axes, fits.items()):
        ax.scatter(angle, fit["prediction"], s=3, alpha=0.4)
        ax.plot([0, math.pi], [0, math.pi], "k--", linewidth=1, label="exact")
        ax.set(title=f"{name} scoring, R^2 = {fit['r2']:.3f}", xlabel="true angle between k and q (radians)",
               ylabel="fitted score (radians)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def median_curve(points):
    """Per evaluation (the seeds evaluate at the same iterations): the median of tokens, seconds and val loss."""
    by_iter = {}
    for it, tokens, seconds, val in points:
        by_iter.setdefault(it, []).append((tokens, seconds, val))
    return [(it, *np.median(np.array(v), axis=0)) for it, v in sorted(by_iter.items())]


def modern_figure(curves, title):
    fig = Figure(figsize=(12, 8))
    for row, arm in zip(fig.subplots(2, 2), ("recipe minus", "default plus")):
        for (run_arm, variant), points in curves.items():
            if run_arm != arm:
                continue
            curve = median_curve(points)
            style = dict(linewidth=2.2, color="black") if variant in ("recipe", "default") else dict(linewidth=1.2)
            row[0].plot([c[2] for c in curve], [c[3] for c in curve], label=variant, **style)
            row[1].plot([c[1] for c in curve], [c[3] for c in curve], label=variant, **style)
        for ax, xlabel in zip(row, ("wall seconds (start-up, compile and evaluations included)", "training tokens")):
            ax.set(xlabel=xlabel, ylabel="val loss (nats per character)", title=f"{arm}: median over seeds")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
