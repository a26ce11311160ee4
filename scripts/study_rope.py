"""
Study 1, rope: training loss over the course's 600 iterations at block 128, with learned positions and with
rotary position embeddings, on one plot, and the two models' samples side by side.

    python scripts/study_rope.py --scale quick|cpu|full
"""

from mingpt.lab.files import write_csv
from mingpt.lab.study import Study, compare_runs, final_sample, samples_table, study_args


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("rope", args.scale, args.out, args.wandb)
    variants = {"learned positions": [], "RoPE": ["--model.rope=True"]}
    trainers, final = compare_runs(study, variants, "Training loss with and without RoPE")
    samples = [{"run": label, "sample": final_sample(t)} for label, t in trainers.items()]
    write_csv(samples, study.path("samples.csv"))
    with open(study.path("samples.md"), "w") as f:
        f.write(samples_table({s["run"]: s["sample"] for s in samples}))
    study.finish({"final": final})


if __name__ == "__main__":
    main()
