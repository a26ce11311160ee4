"""
Study: what each idea of the speedrun buys (issue 32). From the best recipe each idea removed in turn, and from
today's default (`python chargpt.py`: gpt-mini, AdamW, cosine schedule) each added in turn, every variant with
each seed: the validation loss against wall seconds (the run's own clock, start-up, compile and evaluations
included: eval_elapsed_s) and against training tokens. Every run trains its whole schedule (a recipe's target
stop is off: it would end the variants at different points), and each seed runs every variant before the next
seed starts, so that a shared machine's drift in speed falls on all variants alike.

    python scripts/study_modern.py --scale cpu                        # recipes/speedrun-10min.txt, seeds 0 1 2
    python scripts/study_modern.py --scale cpu --recipe recipes/speedrun-1.88.txt --ideas muon wsd
    python scripts/study_modern.py --scale quick --corpus tiny.txt --seeds 0 1   # a smoke test
    python scripts/study_modern.py --scale cpu --max-minutes 90       # a chunk; the same command goes on

At the cpu and full scales the recipe's settings stand as they are (its sizes, batch and iterations); the default
arm gets the scale's (mingpt/experiments/study.py). At the quick scale both give way to the quick scale's tiny model and
few iterations. An idea the recipe does not use is added with the value IDEAS names.

Each run's record goes to results/modern/<scale>/ (its arm, variant, seed and compile time beside the curve);
out/experiments/modern/<scale>/ gets curves.csv (every evaluation of every run), final.csv (every run's last
evaluation), summary.csv (median and spread over the seeds, and the change from its arm's baseline) and
modern.png, built from the records (mingpt/experiments/study_report.py) as the report builds them. About 3 hours at the
cpu scale: `--max-minutes 90` runs it in chunks.
"""

import os

from mingpt.app.settings import config_from_flags, read_recipe
from mingpt.config import at_least
from mingpt.errors import check_script_args, fail
from mingpt.errors import UserError
from mingpt.experiments.study import SCALES, Study, TrainingRun, study_args

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
WHOLE_SCHEDULE = ["--trainer.target_val_loss=None"]  # a recipe's early stop would end its variants at different points


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
                                       "--trainer.warmup_iters=2"]


def main(argv=None):
    def extra(parser):
        parser.add_argument("--recipe", default=RECIPE, help="the best recipe (default: recipes/speedrun-10min.txt)")
        parser.add_argument("--ideas", nargs="+", choices=list(IDEAS), default=list(IDEAS))
        parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = study_args(__doc__, argv, extra)
    check_script_args(args, seeds=at_least(0))
    try:
        recipe = read_recipe(args.recipe)
    except UserError as e:
        fail(e)
    config = config_from_flags(recipe)
    study = Study("modern", args)
    plan = []
    for seed in args.seeds:  # seeds outermost: a machine whose speed drifts slows every variant alike
        for arm, variant, run_flags in variants(recipe, config, args.ideas):
            def measure(trainer, arm=arm, variant=variant, seed=seed):
                return {"arm": arm, "variant": variant, "seed": seed,
                        "compile_s": (trainer.logs["compile_s"] or [None])[-1]}
            plan.append(TrainingRun(f"{variant} seed {seed}", run_flags + quick_flags(study) + WHOLE_SCHEDULE +
                                    [f"--system.seed={seed}"], COURSE_ITERS, measure))
    study.finish(study.run(plan))


if __name__ == "__main__":
    main()
