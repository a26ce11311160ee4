"""
Study: what each idea of the speedrun buys (issue 32). From the best recipe each idea removed in turn, and from
today's default (`python chargpt.py`: gpt-mini, AdamW, cosine schedule) each added in turn, every variant with
each seed: the validation loss against wall seconds (the run's own clock, start-up, compile and evaluations
included: eval_elapsed_s) and against training tokens.

    python scripts/study_modern.py --scale cpu                        # recipes/speedrun-10min.txt, seeds 0 1 2
    python scripts/study_modern.py --scale cpu --recipe recipes/speedrun-1.88.txt --ideas muon wsd
    python scripts/study_modern.py --scale quick --corpus tiny.txt --seeds 0 1   # a smoke test

At the cpu and full scales the recipe's settings stand as they are (its sizes, batch and iterations); the default
arm gets the scale's (mingpt/lab/study.py). At the quick scale both give way to the quick scale's tiny model and
few iterations. An idea the recipe does not use is added with the value IDEAS names.

Writes to out/experiments/modern/: curves.csv (every evaluation of every run), final.csv (every run's last
evaluation), summary.csv (median and spread over the seeds, and the change from its arm's baseline), modern.png.
"""

import os

import matplotlib.pyplot as plt
import numpy as np

from mingpt.lab.errors import check_script_args, fail
from mingpt.lab.settings import config_from_flags, read_recipe
from mingpt.lab.speedrun import spread
from mingpt.lab.study import SCALES, Study, study_args
from mingpt.utils import UserError, at_least

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "speedrun-10min.txt")
COURSE_ITERS = 600
# idea -> ({setting: its value when the idea is off}, {setting: its value when on, where the recipe does not say})
IDEAS = {
    "muon": ({"trainer.optimizer": "adamw"}, {"trainer.optimizer": "muon", "trainer.muon_lr": 0.02}),
    "qk_norm": ({"model.qk_norm": False}, {"model.qk_norm": True}),
    "relu2": ({"model.mlp": "gelu"}, {"model.mlp": "relu2"}),
    "zero_init_proj": ({"model.zero_init_proj": False}, {"model.zero_init_proj": True}),
    "tie_embeddings": ({"model.tie_embeddings": False}, {"model.tie_embeddings": True}),
    "logit_softcap": ({"model.logit_softcap": None}, {"model.logit_softcap": 30.0}),
    "wsd": ({"trainer.lr_schedule": "cosine"}, {"trainer.lr_schedule": "wsd", "trainer.decay_fraction": 0.2}),
    "compile": ({"trainer.compile": False}, {"trainer.compile": True}),
}
DEFAULT = ["--trainer.lr_schedule=cosine"]  # python chargpt.py's schedule (the studies' course runs are constant)


def value(config, setting):
    node, key = setting.split(".")
    return getattr(getattr(config, node), key)


def uses(config, idea):
    """Whether the recipe's config has the idea on: its first setting holds another value than off's (a soft-cap
    of 0 is off, as None)."""
    setting, off = next(iter(IDEAS[idea][0].items()))
    now = value(config, setting)
    return bool(now) if off is None else now != off


def flags(settings):
    return [f"--{setting}={value}" for setting, value in settings.items()]


def variants(recipe, config, ideas):
    """(arm, variant, flags) of every run: the recipe, the recipe without each idea it uses, today's default, the
    default with each idea (at the recipe's values where it uses the idea)."""
    runs = [("recipe minus", "recipe", recipe)]
    runs += [("recipe minus", f"recipe - {idea}", recipe + flags(IDEAS[idea][0])) for idea in ideas
             if uses(config, idea)]
    runs.append(("default plus", "default", DEFAULT))
    for idea in ideas:
        on = IDEAS[idea][1]
        if uses(config, idea):
            on = {setting: value(config, setting) for setting in on}
        runs.append(("default plus", f"default + {idea}", DEFAULT + flags(on)))
    return runs


def quick_flags(study):
    """At the quick scale, the scale's tiny model and schedule after any recipe's (a smoke test)."""
    if study.scale != "quick":
        return []
    iters = study.iters(COURSE_ITERS)
    return SCALES["quick"]["flags"] + [f"--trainer.max_iters={iters}", f"--trainer.eval_interval={max(1, iters // 6)}",
                                       "--trainer.warmup_iters=2", "--trainer.target_val_loss=None"]


def measured(trainer):
    """[(iteration, tokens, wall seconds, val loss)] of every evaluation of a run."""
    tokens_per_iter = trainer.config.batch_size * trainer.train_dataset.get_block_size()
    elapsed = dict(trainer.logs["eval_elapsed_s"])
    return [(it, it * tokens_per_iter, elapsed[it], val) for it, val in trainer.logs["val_losses"]]


def median_curve(points):
    """Per evaluation (the seeds evaluate at the same iterations): the median of tokens, seconds and val loss."""
    by_iter = {}
    for it, tokens, seconds, val in points:
        by_iter.setdefault(it, []).append((tokens, seconds, val))
    return [(it, *np.median(np.array(v), axis=0)) for it, v in sorted(by_iter.items())]


def figure(curves, title):
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for row, arm in zip(axes, ("recipe minus", "default plus")):
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
    return fig


def main(argv=None):
    def extra(parser):
        parser.add_argument("--recipe", default=RECIPE, help="the best recipe (default: recipes/speedrun-10min.txt)")
        parser.add_argument("--ideas", nargs="+", choices=list(IDEAS), default=list(IDEAS))
        parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        parser.add_argument("--corpus", help="the text to train on (default: chargpt's, input.txt)")
    args = study_args(__doc__, argv, extra)
    check_script_args(args, seeds=at_least(0))
    try:
        recipe = read_recipe(args.recipe)
    except UserError as e:
        fail(e)
    config = config_from_flags(recipe)
    corpus = [f"--data.input_file={args.corpus}"] if args.corpus else []
    study = Study("modern", args.scale, args.out, args.wandb)
    curves, finals = {}, []
    for arm, variant, run_flags in variants(recipe, config, args.ideas):
        for seed in args.seeds:
            trainer = study.train(f"{variant} seed {seed}", run_flags + quick_flags(study) + corpus +
                                  [f"--system.seed={seed}"], COURSE_ITERS)
            points = measured(trainer)
            curves.setdefault((arm, variant), []).extend(points)
            it, tokens, seconds, val = points[-1]
            finals.append({"arm": arm, "variant": variant, "seed": seed, "iters": it, "tokens": tokens,
                           "wall_s": round(seconds, 2), "val_loss": val,
                           "compile_s": (trainer.logs["compile_s"] or [None])[-1]})
    study.save_csv("curves", [{"arm": arm, "variant": variant, "iter": it, "tokens": tokens,
                               "wall_s": round(seconds, 2), "val_loss": val}
                              for (arm, variant), points in curves.items() for it, tokens, seconds, val in points])
    study.save_csv("final", finals)
    summary, baseline = [], {}
    for arm, variant in curves:
        runs = [f for f in finals if f["variant"] == variant]
        loss, wall = spread([f["val_loss"] for f in runs]), spread([f["wall_s"] for f in runs])
        baseline.setdefault(arm, loss["median"])
        summary.append({"arm": arm, "variant": variant, "seeds": len(runs), "val_loss_median": loss["median"],
                        "val_loss_low": loss["low"], "val_loss_high": loss["high"],
                        "change_from_baseline": loss["median"] - baseline[arm], "wall_s_median": wall["median"],
                        "tokens": runs[0]["tokens"]})
    study.save_csv("summary", summary)
    study.save_figure(figure(curves, f"What each idea buys ({args.scale} scale, seeds "
                                     f"{' '.join(map(str, args.seeds))})"), "modern")
    study.finish({"recipe": os.path.relpath(args.recipe, ROOT), "seeds": args.seeds, "summary": summary})


if __name__ == "__main__":
    main()
