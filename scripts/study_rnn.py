"""
Study 7, rnn: training loss of the Elman RNN (slide and tanh), the valid BiRNN language model (question 1.2b),
the invalid one (1.2a, which reads the character it predicts) and the Transformer, on one plot.

    python scripts/study_rnn.py --scale quick|cpu|full [--max-minutes M] [--results DIR]
"""

from mingpt.experiments.study import Study, TrainingRun, study_args

VARIANTS = {
    "Transformer": [],
    "Elman RNN (slide)": ["--model.model_type=rnn"],
    "Elman RNN (tanh)": ["--model.model_type=rnn", "--model.rnn_activation=tanh"],
    "BiRNN on prefixes (valid)": ["--model.model_type=birnn_prefix", "--model.rnn_activation=tanh"],
    "BiRNN one pass (invalid)": ["--model.model_type=birnn_invalid", "--model.rnn_activation=tanh"],
}


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("rnn", args)
    study.finish(study.run([TrainingRun(label, flags) for label, flags in VARIANTS.items()]))


if __name__ == "__main__":
    main()
