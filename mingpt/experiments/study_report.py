"""
What each study shows, built from its records alone (mingpt/experiments/records.py): its tables, its figures, the samples
side by side and one headline sentence for the README. A study calls section() when it ends, and
scripts/report.py calls it for every folder of results/, so the numbers and figures of REPORT.md come from the
committed records, in any checkout. Figures are matplotlib Figures made without pyplot.
"""

import base64
import math
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from mingpt.experiments.plots import loss_curve_figure, window_cost_figure
from mingpt.experiments.speedrun import spread


class Section(NamedTuple):
    tables: dict  # name -> rows (dicts with the same keys)
    figures: dict  # name -> Figure
    samples: dict  # run label -> its sample (the studies that show samples)
    headline: str  # one sentence of numbers for the README's study summary


def section(study, scale, records):
    """records: {label: record} in the study's order -> its Section."""
    return BUILDERS[study](records, scale)


def array_text(values):
    """A float array as float16 bytes in base64: how a record keeps a table for a figure in a few tens of KB."""
    array = np.asarray(values, dtype=np.float16)
    return {"shape": list(array.shape), "float16_base64": base64.b64encode(array.tobytes()).decode()}


def array_from_text(text):
    return np.frombuffer(base64.b64decode(text["float16_base64"]), dtype=np.float16).reshape(text["shape"]) \
        .astype(np.float32)


def losses(records):
    return ", ".join(f"{label} {r['final']['val_loss']:.3f}" for label, r in records.items())


# -----------------------------------------------------------------------------------------------------------------
# studies that compare training runs


def compare(records, title, scale):
    """The final table, every iteration's training loss, and the loss curves of training runs."""
    final = [{"run": label, "iters": len(r["train_losses"]), "final_train_loss": r["train_losses"][-1],
              "eval_train_loss": r["final"]["train_loss"], "val_loss": r["final"]["val_loss"],
              "seconds": r["wall_s"], "ms_per_iter": r["final"]["ms_per_iter"]} for label, r in records.items()]
    curves = {label: list(enumerate(r["train_losses"], start=1)) for label, r in records.items()}
    rows = [{"run": label, "iter": i, "train_loss": loss} for label, points in curves.items() for i, loss in points]
    return {"final": final, "curves": rows}, {"loss": loss_curve_figure(curves, f"{title} ({scale} scale)")}


def compare_study(title, show_samples=False):
    def build(records, scale):
        tables, figures = compare(records, title, scale)
        samples = {label: r["sample"] for label, r in records.items()} if show_samples else {}
        return Section(tables, figures, samples, f"val loss {losses(records)}")
    return build


def window(records, scale):
    records = dict(records)
    cost = records.pop("attention cost")["final"]["rows"]
    tables, figures = compare(records, "Training loss of sliding-window models", scale)
    tables["cost"] = cost
    figures["cost"] = window_cost_figure(cost, f"Sliding-window attention, naive vs banded ({scale} scale)")
    widest = max(cost, key=lambda r: (r["N"], -r["window"]))
    headline = (f"the banded kernel {widest['naive_ms'] / widest['fast_ms']:.0f}x faster than the naive one at "
                f"N={widest['N']}, w={widest['window']}; val loss {losses(records)}")
    return Section(tables, figures, {}, headline)


def positions(records, scale):
    tables, figures = compare(records, "Position information: training loss", scale)
    rows = [{"run": label, "length": int(n), "val_loss": v} for label, r in records.items()
            for n, v in r["final"]["val_loss_at"].items()]
    tables["length"] = rows
    figures["length"] = length_figure(rows, records, scale)
    learned = array_from_text(records["learned"]["final"]["position_table"])
    figures["tables"] = position_tables_figure(learned, scale)
    return Section(tables, figures, {}, f"val loss {losses(records)}")


def length_figure(rows, records, scale):
    trained_at = min(r["length"] for r in rows)
    lengths = sorted({r["length"] for r in rows})
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    for k, label in enumerate(records):
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
    from mingpt.attention import sinusoidal_table
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


def context_extension(records, scale):
    """Runs in pairs: `<label> <short>` then `<label> <2 x short>` from its weights."""
    curves, curve_rows, final = {}, [], []
    runs = list(records.items())
    for (first_label, first), (_, second) in zip(runs[::2], runs[1::2]):
        label, short = first_label.rsplit(" ", 1)
        short = int(short)
        switch = len(first["train_losses"])
        curves[label] = list(enumerate(first["train_losses"] + second["train_losses"], start=1))
        curve_rows += [{"run": label, "iter": i, "block_size": short if i <= switch else 2 * short, "train_loss": v}
                       for i, v in curves[label]]
        final.append({"run": label, "switch_iter": switch, f"val_loss_at_{short}": first["final"]["val_loss"],
                      f"first_train_loss_at_{2 * short}": second["train_losses"][0],
                      f"val_loss_at_{2 * short}": second["final"]["val_loss"]})
    fig = loss_curve_figure(curves, f"Context extension {short} -> {2 * short} ({scale} scale)")
    ax = fig.axes[0]
    ax.axvline(switch, color="grey", linestyle="--", linewidth=1)
    ax.text(switch, ax.get_ylim()[1], f" block {2 * short}", va="top")
    headline = "val loss at {}: {}".format(2 * short, ", ".join(f"{r['run']} {r[f'val_loss_at_{2 * short}']:.3f}"
                                                             for r in final))
    return Section({"final": final, "curves": curve_rows}, {"loss": fig}, {}, headline)


def gqa_cost(records, scale):
    rows = [{"n_kv_head": r["config"]["model"]["n_kv_head"], **{k: v for k, v in r["final"].items()
                                                               if k not in ("iter", "train_loss", "val_loss")}}
            for r in records.values()]
    device = next(iter(records.values()))["config"]["device"]
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
    fig.suptitle(f"Cost of grouped-query attention ({scale} scale, {device})")
    fig.tight_layout()
    cache = " / ".join(f"{r['kv_cache_bytes'] / 1024:.0f}" for r in rows)
    headline = f"KV cache per sequence {cache} KiB for n_kv_head {' / '.join(map(str, heads))}"
    return Section({"cost": rows}, {"cost": fig}, {}, headline)


def tokenizers(records, scale):
    rows = [{"run": label, **{k: v for k, v in r["final"].items() if k not in ("iter", "train_loss", "val_loss")},
             "val_loss_nats_per_token": r["final"]["val_loss"]} for label, r in records.items()]
    curves = [{"run": label, "iter": p["iter"], "val_bpc": p["val_bpc"]} for label, r in records.items()
              for p in r["curve"]]
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    for label, r in records.items():
        ax.plot([p["iter"] for p in r["curve"]], [p["val_bpc"] for p in r["curve"]], marker="o", markersize=3,
                label=label, linewidth=1.2)
    ax.set(xlabel="iteration", ylabel="validation loss (bits per character)",
           title=f"Tokenizers at the same number of steps ({scale} scale)")
    ax.grid(alpha=0.3)
    ax.legend()
    headline = "val bits per character " + ", ".join(f"{r['run']} {r['val_bpc']:.3f}" for r in rows)
    return Section({"final": rows, "curves": curves}, {"bpc": fig},
                   {label: r["sample"] for label, r in records.items()}, headline)


def attention_analysis(records, scale):
    record = records["checks"]["final"]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    angle = np.asarray(record["angle"])
    for ax, (name, fit) in zip(axes, record["fits"].items()):
        ax.scatter(angle, fit["prediction"], s=3, alpha=0.4)
        ax.plot([0, math.pi], [0, math.pi], "k--", linewidth=1, label="exact")
        ax.set(title=f"{name} scoring, R^2 = {fit['r2']:.3f}", xlabel="true angle between k and q (radians)",
               ylabel="fitted score (radians)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Fitting the angle between key and query ({scale} scale)")
    fig.tight_layout()
    r2 = ", ".join(f"{name} R^2 {fit['r2']:.3f}" for name, fit in record["fits"].items())
    return Section({"checks": record["rows"]}, {"angle_fit": fig}, {}, f"angle between k and q fitted: {r2}")


# -----------------------------------------------------------------------------------------------------------------
# the modern study: each idea of the speedrun removed from the best recipe and added to today's default


def modern(records, scale):
    curves, finals = {}, []
    for r in records.values():
        arm, variant, seed = r["final"]["arm"], r["final"]["variant"], r["final"]["seed"]
        curves.setdefault((arm, variant), []).extend(
            (p["iter"], p["tokens"], p["elapsed_s"], p["val_loss"]) for p in r["curve"])
        last = r["curve"][-1]
        finals.append({"arm": arm, "variant": variant, "seed": seed, "iters": last["iter"], "tokens": last["tokens"],
                       "wall_s": last["elapsed_s"], "val_loss": last["val_loss"],
                       "compile_s": r["final"].get("compile_s")})
    summary, baseline = [], {}
    for arm, variant in curves:
        runs = [f for f in finals if f["variant"] == variant]
        loss, wall = spread([f["val_loss"] for f in runs]), spread([f["wall_s"] for f in runs])
        baseline.setdefault(arm, loss["median"])
        summary.append({"arm": arm, "variant": variant, "seeds": len(runs), "val_loss_median": loss["median"],
                        "val_loss_low": loss["low"], "val_loss_high": loss["high"],
                        "change_from_baseline": loss["median"] - baseline[arm], "wall_s_median": wall["median"],
                        "tokens": runs[0]["tokens"]})
    seeds = sorted({f["seed"] for f in finals})
    fig = modern_figure(curves, f"What each idea buys ({scale} scale, seeds {' '.join(map(str, seeds))})")
    curve_rows = [{"arm": arm, "variant": variant, "iter": it, "tokens": tokens, "wall_s": round(seconds, 2),
                   "val_loss": val} for (arm, variant), points in curves.items() for it, tokens, seconds, val in points]
    wall = {arm: next(s["wall_s_median"] for s in summary if s["arm"] == arm) for arm in baseline}

    def changes(arm, sign):
        rows = sorted((s for s in summary if s["arm"] == arm and s["variant"] not in ("recipe", "default")),
                      key=lambda s: s["change_from_baseline"])
        return ", ".join(f"{s['variant'].split(sign)[-1]} {s['change_from_baseline']:+.3f} "
                         f"({s['wall_s_median'] - wall[arm]:+.0f} s)" for s in rows)
    headline = (f"val loss change (median of {len(seeds)} seeds; wall seconds) of each idea added to today's default: "
                f"{changes('default plus', '+ ')}; removed from the recipe: {changes('recipe minus', '- ')}")
    return Section({"curves": curve_rows, "final": finals, "summary": summary}, {"modern": fig}, {}, headline)


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


def samples_table(samples):
    """{run: sample text} -> a Markdown table with one column per run, the samples side by side."""
    cells = [text.replace("\n", "<br>").replace("|", "\\|") for text in samples.values()]
    return f"| {' | '.join(samples)} |\n|{'---|' * len(samples)}\n| {' | '.join(cells)} |\n"


BUILDERS = {
    "rope": compare_study("Training loss with and without RoPE", show_samples=True),
    "gqa_loss": compare_study("Grouped-query vs multi-head attention"),
    "rnn": compare_study("Recurrent baselines and the Transformer"),
    "window": window,
    "positions": positions,
    "context_extension": context_extension,
    "gqa_cost": gqa_cost,
    "tokenizers": tokenizers,
    "attention_analysis": attention_analysis,
    "modern": modern,
}
