"""
Study 2, context_extension: the course's second RoPE question. Train 600 iterations at block 128, then 200 more
at block 256 starting from the first run (--model.pretrained_folder), with learned positions (the table's new
rows start untrained) and with RoPE (nothing to extend); training loss across the switch, and validation loss
at both lengths.

    python scripts/study_context_extension.py --scale quick|cpu|full [--max-minutes M] [--results DIR]
"""

from mingpt.experiments.study import Study, TrainingRun, study_args


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("context_extension", args)
    short = 32 if args.scale == "quick" else 128
    plan = []
    for label, flags in {"learned positions": [], "RoPE": ["--model.rope=True"]}.items():
        first = TrainingRun(f"{label} {short}", flags + [f"--data.block_size={short}"])
        folder = study.run_dir(first.label, study.flags(first))
        plan += [first, TrainingRun(f"{label} {2 * short}", flags + [
            f"--data.block_size={2 * short}", f"--model.pretrained_folder={folder}"], course_iters=200,
            needs=first.label)]
    study.finish(study.run(plan))


if __name__ == "__main__":
    main()
