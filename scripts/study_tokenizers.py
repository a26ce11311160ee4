"""
Study 8, tokenizers: the same model trained for the same number of optimizer steps on characters, words
(vocabulary 8000) and byte-level BPE with 256, 512 and 1024 tokens, compared where they can be: validation loss
in bits per character, training and cached-generation speed in tokens and in characters per second, vocabulary
size, <unk> rate, and a sample from each. block_size counts tokens, so a longer token also sees more text.

    python scripts/study_tokenizers.py --scale quick|cpu|full
"""

import statistics

import matplotlib.pyplot as plt
import torch

from mingpt.lab.bench import generation_speed, median_after_warmup
from mingpt.lab.files import write_csv
from mingpt.lab.study import Study, final_sample, study_args

VARIANTS = {
    "char": [],
    "word 8000": ["--data.tokenizer=word", "--data.vocab_size=8000"],
    "BPE 256": ["--data.tokenizer=bpe", "--data.vocab_size=256"],
    "BPE 512": ["--data.tokenizer=bpe", "--data.vocab_size=512"],
    "BPE 1024": ["--data.tokenizer=bpe", "--data.vocab_size=1024"],
}
PROMPT = "O God, O God!"


def measure(label, trainer):
    """The row of final.csv for one trained run."""
    data, logs = trainer.train_dataset, trainer.logs
    chars_per_token = data.characters("val") / len(data.splits["val"])
    unknown, total = data.unknown_rate("val")
    train_tokens_per_s = median_after_warmup(logs["tokens_per_s"])
    prompt = torch.tensor([data.vocab.encode(PROMPT)])
    model = trainer.model.eval()
    new_tokens = data.get_block_size() - prompt.size(1)  # within the block, where a position table's cache serves
    gen_tokens_per_s = statistics.median(
        generation_speed(model, prompt, new_tokens, use_cache=True)[0] for _ in range(3))
    return {"run": label, "vocab_size": len(data.vocab), "params": model.num_params(),
            "unk_rate": unknown / total, "chars_per_token": chars_per_token,
            "val_loss_nats_per_token": logs["val_losses"][-1][1], "val_bpc": logs["val_bpc"][-1][1],
            "train_tokens_per_s": train_tokens_per_s, "train_chars_per_s": train_tokens_per_s * chars_per_token,
            "gen_tokens_per_s": gen_tokens_per_s, "gen_chars_per_s": gen_tokens_per_s * chars_per_token}


def bpc_figure(trainers, scale):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, trainer in trainers.items():
        iters, bpc = zip(*trainer.logs["val_bpc"])
        ax.plot(iters, bpc, marker="o", markersize=3, label=label, linewidth=1.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation loss (bits per character)")
    ax.set_title(f"Tokenizers at the same number of steps ({scale} scale)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("tokenizers", args.scale, args.out, args.wandb)
    trainers, rows, curves, samples = {}, [], [], []
    for label, flags in VARIANTS.items():
        trainer = study.train(label, flags)
        trainers[label] = trainer
        rows.append(measure(label, trainer))
        curves += [{"run": label, "iter": it, "val_bpc": bpc} for it, bpc in trainer.logs["val_bpc"]]
        samples.append({"run": label, "sample": final_sample(trainer)})
    study.save_csv("final", rows)
    study.save_csv("curves", curves)
    write_csv(samples, study.path("samples.csv"))
    with open(study.path("samples.md"), "w") as f:
        f.write("| run | sample |\n|---|---|\n")
        f.write("".join(f"| {s['run']} | {s['sample'].replace(chr(10), '<br>').replace('|', chr(92) + '|')} |\n"
                        for s in samples))
    study.save_figure(bpc_figure(trainers, args.scale), "bpc")
    study.finish({"final": rows})


if __name__ == "__main__":
    main()
