"""
Study 6, positions: learned vs sinusoidal vs RoPE vs no position information. Training loss curves and time at
the course's protocol (block 128), then length generalisation: validation loss at 128, 256, 512 and 1024
tokens for the models trained at 128 (a position table has only 128 rows: those models cannot run longer,
which the plot marks); and heat maps of the learned and sinusoidal tables with their position-to-position
cosine similarity.

    python scripts/study_positions.py --scale quick|cpu|full
"""

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from mingpt.attention import sinusoidal_table
from mingpt.data.corpus import read_text
from mingpt.data.dataset import CharDataset
from mingpt.lab.study import Study, compare_runs, study_args

VARIANTS = {"learned": ["--model.pos_emb=learned"], "sinusoidal": ["--model.pos_emb=sinusoidal"],
            "RoPE": ["--model.rope=True"], "none": ["--model.pos_emb=none"]}


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
    study = Study("positions", args.scale, args.out, args.wandb)
    trainers, final = compare_runs(study, VARIANTS, "Position information: training loss")
    text = read_text("input.txt")
    trained_at = trainers["learned"].model.block_size
    lengths = [trained_at * k for k in (1, 2, 4, 8)]
    rows = [{"run": label, "length": n, "val_loss": val_loss_at(t, text, n, 2 if args.scale == "quick" else 8)}
            for label, t in trainers.items() for n in lengths]
    study.save_csv("length", rows)

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label in VARIANTS:
        pts = [(r["length"], r["val_loss"]) for r in rows if r["run"] == label and r["val_loss"] is not None]
        line, = ax.plot(*zip(*pts), "o-", label=label)
        if len(pts) < len(lengths):
            ax.annotate(f"{label}: no rows past {trained_at}", pts[-1], textcoords="offset points",
                        xytext=(8, -14 - 10 * list(VARIANTS).index(label)), fontsize=8, color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("validation loss (nats per character)")
    ax.set_title(f"Length generalisation, trained at {trained_at} ({args.scale} scale)")
    ax.grid(alpha=0.3)
    ax.legend()
    study.save_figure(fig, "length")

    learned = trainers["learned"].model.transformer.wpe.weight.detach().cpu()
    tables = {"learned": learned, "sinusoidal": sinusoidal_table(*learned.shape)}
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for col, (name, table) in enumerate(tables.items()):
        im = axes[0, col].imshow(table.T, aspect="auto", cmap="RdBu_r")
        axes[0, col].set(title=f"{name} position table", xlabel="position", ylabel="embedding dimension")
        fig.colorbar(im, ax=axes[0, col])
        unit = F.normalize(table, dim=-1)
        im = axes[1, col].imshow(unit @ unit.T, cmap="viridis", vmin=-1, vmax=1)
        axes[1, col].set(title=f"{name}: cosine similarity of positions", xlabel="position", ylabel="position")
        fig.colorbar(im, ax=axes[1, col])
    fig.suptitle(f"Absolute position tables, {trained_at} positions x {learned.size(1)} dimensions "
                 f"({args.scale} scale)")
    study.save_figure(fig, "tables")
    study.finish({"final": final})


if __name__ == "__main__":
    main()
