"""
Study 8, tokenizers: the same model trained for the same number of optimizer steps on characters, words
(vocabulary 8000) and byte-level BPE with 256, 512 and 1024 tokens, compared where they can be: validation loss
in bits per character, training and cached-generation speed in tokens and in characters per second, vocabulary
size, <unk> rate, and a sample from each. block_size counts tokens, so a longer token also sees more text.

    python scripts/study_tokenizers.py --scale quick|cpu|full [--max-minutes M] [--results DIR]
"""

import statistics

import torch

from mingpt.experiments.bench import generation_speed, median_after_warmup
from mingpt.experiments.study import Study, TrainingRun, study_args

VARIANTS = {
    "char": [],
    "word 8000": ["--data.tokenizer=word", "--data.vocab_size=8000"],
    "BPE 256": ["--data.tokenizer=bpe", "--data.vocab_size=256"],
    "BPE 512": ["--data.tokenizer=bpe", "--data.vocab_size=512"],
    "BPE 1024": ["--data.tokenizer=bpe", "--data.vocab_size=1024"],
}
PROMPT = "O God, O God!"


def measure(trainer):
    """The study's numbers for one trained run (its row of final.csv, with the run's val loss)."""
    data, logs = trainer.train_dataset, trainer.logs
    chars_per_token = data.characters("val") / len(data.splits["val"])
    unknown, total = data.unknown_rate("val")
    train_tokens_per_s = median_after_warmup(logs["tokens_per_s"])
    prompt = torch.tensor([data.vocab.encode(PROMPT)])
    model = trainer.model.eval()
    new_tokens = data.get_block_size() - prompt.size(1)  # within the block, where a position table's cache serves
    gen_tokens_per_s = statistics.median(
        generation_speed(model, prompt, new_tokens, use_cache=True)[0] for _ in range(3))
    return {"vocab_size": len(data.vocab), "params": model.num_params(),
            "unk_rate": unknown / total, "chars_per_token": chars_per_token,
            "val_bpc": logs["val_bpc"][-1][1],
            "train_tokens_per_s": train_tokens_per_s, "train_chars_per_s": train_tokens_per_s * chars_per_token,
            "gen_tokens_per_s": gen_tokens_per_s, "gen_chars_per_s": gen_tokens_per_s * chars_per_token}


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("tokenizers", args)
    study.finish(study.run([TrainingRun(label, flags, measure=measure) for label, flags in VARIANTS.items()]))


if __name__ == "__main__":
    main()
