"""
Study 5, window: time and memory of the writeup's naive sliding-window attention against the banded fast path
across sequence lengths N and windows w (forward + backward, from mingpt.lab.bench), and the training loss of
models with windows of 16, 32 and 64 tokens against full causal attention at equal iterations.

    python scripts/study_window.py --scale quick|cpu|full
"""

from mingpt.lab.bench import best_device, window_attention_cost
from mingpt.lab.plots import window_cost_figure
from mingpt.lab.study import Study, compare_runs, study_args

SIZES = {"quick": [128, 256], "cpu": [512, 1024, 2048, 4096], "full": [512, 1024, 2048, 4096, 8192]}
WINDOWS = {"quick": [16], "cpu": [64, 256], "full": [64, 256]}


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("window", args.scale, args.out, args.wandb)
    rows = [window_attention_cost(n, w, repeats=1 if args.scale == "quick" else 3, device=best_device())
            for w in WINDOWS[args.scale] for n in SIZES[args.scale]]
    study.save_csv("cost", rows)
    fig = window_cost_figure(rows, f"Sliding-window attention, naive vs banded ({args.scale} scale)")
    study.save_figure(fig, "cost")
    variants = {"full causal": [], "w=64": ["--model.window=64"], "w=32": ["--model.window=32"],
                "w=16": ["--model.window=16"]}
    _, final = compare_runs(study, variants, "Training loss of sliding-window models")
    study.finish({"final": final})


if __name__ == "__main__":
    main()
