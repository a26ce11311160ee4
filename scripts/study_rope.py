"""
Study 1, rope: training loss over the course's 600 iterations at block 128, with learned positions and with
rotary position embeddings, on one plot, and the two models' samples side by side.

    python scripts/study_rope.py --scale quick|cpu|full [--max-minutes M] [--results DIR]
"""

from mingpt.experiments.study import Study, TrainingRun, study_args


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("rope", args)
    study.finish(study.run([TrainingRun("learned positions", []), TrainingRun("RoPE", ["--model.rope=True"])]))


if __name__ == "__main__":
    main()
