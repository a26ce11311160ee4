"""
Study 6, positions: learned vs sinusoidal vs RoPE vs no position information. Training loss curves and time at
the course's protocol (block 128), then length generalisation: validation loss at 128, 256, 512 and 1024
tokens for the models trained at 128 (a position table has only 128 rows: those models cannot run longer,
which the plot marks); and heat maps of the learned and sinusoidal tables with their position-to-position
cosine similarity (the learned table is kept in its run's record, in float16).

    python scripts/study_positions.py --scale quick|cpu|full [--max-minutes M] [--results DIR]
"""

import functools

import torch

from mingpt.data.corpus import read_text
from mingpt.data.dataset import CharDataset
from mingpt.experiments.study import Study, TrainingRun, study_args
from mingpt.experiments.study_report import array_text

VARIANTS = {"learned": ["--model.pos_emb=learned"], "sinusoidal": ["--model.pos_emb=sinusoidal"],
            "RoPE": ["--model.rope=True"], "none": ["--model.pos_emb=none"]}


@functools.cache
def corpus_text(path):
    return read_text(path)


@torch.no_grad()
def val_loss_at(trainer, text, length, batches):
    """Mean validation loss over `batches` windows of `length` tokens, or None if the model cannot run them."""
    model = trainer.model
    if model.pos_emb in ("learned", "sinusoidal") and length > model.block_size:
        return None
    config = CharDataset.get_default_config()
    config.block_size = length
    data = CharDataset(config, text)
    gen = torch.Generator().manual_seed(0)
    model.eval()
    losses = []
    for _ in range(batches):
        x, y = data.get_batch("val", 4, gen)
        losses.append(model(x.to(trainer.device), y.to(trainer.device))[1].item())
    return sum(losses) / len(losses)


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("positions", args)
    batches = 2 if args.scale == "quick" else 8

    def measure(trainer):
        text, trained_at = corpus_text(args.corpus or "input.txt"), trainer.model.block_size
        numbers = {"val_loss_at": {str(n): val_loss_at(trainer, text, n, batches)
                                   for n in (trained_at * k for k in (1, 2, 4, 8))}}
        if trainer.model.pos_emb == "learned":
            numbers["position_table"] = array_text(trainer.model.transformer.wpe.weight.detach().cpu())
        return numbers
    study.finish(study.run([TrainingRun(label, flags, measure=measure) for label, flags in VARIANTS.items()]))


if __name__ == "__main__":
    main()
