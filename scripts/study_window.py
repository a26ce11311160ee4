"""
Study 5, window: time and memory of the writeup's naive sliding-window attention against the banded fast path
across sequence lengths N and windows w (forward + backward, from mingpt.experiments.bench), and the training loss of
models with windows of 16, 32 and 64 tokens against full causal attention at equal iterations.

    python scripts/study_window.py --scale quick|cpu|full [--max-minutes M] [--results DIR]
"""

from mingpt.experiments.bench import best_device, window_attention_cost
from mingpt.experiments.study import Measurement, Study, TrainingRun, study_args

SIZES = {"quick": [128, 256], "cpu": [512, 1024, 2048, 4096], "full": [512, 1024, 2048, 4096, 8192]}
WINDOWS = {"quick": [16], "cpu": [64, 256], "full": [64, 256]}
VARIANTS = {"full causal": [], "w=64": ["--model.window=64"], "w=32": ["--model.window=32"],
            "w=16": ["--model.window=16"]}


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("window", args)
    sizes, windows, repeats = SIZES[args.scale], WINDOWS[args.scale], 1 if args.scale == "quick" else 3

    def cost():
        return [window_attention_cost(n, w, repeats=repeats, device=best_device()) for w in windows for n in sizes], {}
    plan = [Measurement("attention cost", cost, params=(sizes, windows, repeats, best_device()))]
    study.finish(study.run(plan + [TrainingRun(label, flags) for label, flags in VARIANTS.items()]))


if __name__ == "__main__":
    main()
