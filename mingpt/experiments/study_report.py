"""
What each study shows, built from its records alone (mingpt/experiments/records.py): its tables, its figures, the
samples side by side and one headline sentence for the README. A study calls section() when it ends, and
scripts/report.py calls it for every folder of results/, so the numbers and figures of REPORT.md come from the
committed records, in any checkout. The figures are drawn by mingpt/experiments/plots.py.
"""

import base64
from typing import NamedTuple

import numpy as np
from mingpt.experiments.plots import angle_fit_figure, bpc_figure, gqa_cost_figure, length_figure, loss_curve_figure, \
    modern_figure, position_tables_figure, window_cost_figure
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
    figures["length"] = length_figure(rows, list(records), scale)
    learned = array_from_text(records["learned"]["final"]["position_table"])
    figures["tables"] = position_tables_figure(learned, scale)
    return Section(tables, figures, {}, f"val loss {losses(records)}")


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
    fig = gqa_cost_figure(rows, f"Cost of grouped-query attention ({scale} scale, {device})")
    cache = " / ".join(f"{r['kv_cache_bytes'] / 1024:.0f}" for r in rows)
    headline = f"KV cache per sequence {cache} KiB for n_kv_head {' / '.join(map(str, heads))}"
    return Section({"cost": rows}, {"cost": fig}, {}, headline)


def tokenizers(records, scale):
    rows = [{"run": label, **{k: v for k, v in r["final"].items() if k not in ("iter", "train_loss", "val_loss")},
             "val_loss_nats_per_token": r["final"]["val_loss"]} for label, r in records.items()]
    curves = [{"run": label, "iter": p["iter"], "val_bpc": p["val_bpc"]} for label, r in records.items()
              for p in r["curve"]]
    fig = bpc_figure({label: [(p["iter"], p["val_bpc"]) for p in r["curve"]] for label, r in records.items()},
                     f"Tokenizers at the same number of steps ({scale} scale)")
    headline = "val bits per character " + ", ".join(f"{r['run']} {r['val_bpc']:.3f}" for r in rows)
    return Section({"final": rows, "curves": curves}, {"bpc": fig},
                   {label: r["sample"] for label, r in records.items()}, headline)


def attention_analysis(records, scale):
    record = records["checks"]["final"]
    fig = angle_fit_figure(record["angle"], record["fits"], f"Fitting the angle between key and query ({scale} scale)")
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
