"""
Study 4, gqa_loss: training loss of grouped-query attention (n_kv_head=2: 6 query heads share 2 key/value
heads) against multi-head attention (n_kv_head=6) over the course's 600 iterations.

    python scripts/study_gqa_loss.py --scale quick|cpu|full [--max-minutes M] [--results DIR]
"""

from mingpt.experiments.study import Study, TrainingRun, study_args


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("gqa_loss", args)
    study.finish(study.run([TrainingRun("MHA (n_kv_head=6)", []),
                            TrainingRun("GQA (n_kv_head=2)", ["--model.n_kv_head=2"])]))


if __name__ == "__main__":
    main()
