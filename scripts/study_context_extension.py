"""
Study 2, context_extension: the course's second RoPE question. Train 600 iterations at block 128, then 200 more
at block 256 starting from the first run (--model.pretrained_folder), with learned positions (the table's new
rows start untrained) and with RoPE (nothing to extend); training loss across the switch, and validation loss
at both lengths.

    python scripts/study_context_extension.py --scale quick|cpu|full
"""

from mingpt.lab.plots import loss_curve_figure
from mingpt.lab.study import Study, study_args


def main(argv=None):
    args = study_args(__doc__, argv)
    study = Study("context_extension", args.scale, args.out, args.wandb)
    short = 32 if args.scale == "quick" else 128
    curves, curve_rows, final_rows = {}, [], []
    for label, flags in {"learned positions": [], "RoPE": ["--model.rope=True"]}.items():
        first = study.train(f"{label} {short}", flags + [f"--data.block_size={short}"], course_iters=600)
        second = study.train(f"{label} {2 * short}", flags + [
            f"--data.block_size={2 * short}", f"--model.pretrained_folder={study.run_dir(f'{label} {short}')}"], course_iters=200)
        losses = first.logs["train_losses"] + second.logs["train_losses"]
        curves[label] = list(enumerate(losses, start=1))
        curve_rows += [{"run": label, "iter": i, "block_size": short if i <= len(first.logs["train_losses"])
                        else 2 * short, "train_loss": loss} for i, loss in curves[label]]
        final_rows.append({"run": label, "switch_iter": len(first.logs["train_losses"]),
                           f"val_loss_at_{short}": first.logs["val_losses"][-1][1],
                           f"first_train_loss_at_{2 * short}": second.logs["train_losses"][0],
                           f"val_loss_at_{2 * short}": second.logs["val_losses"][-1][1]})
    study.save_csv("curves", curve_rows)
    study.save_csv("final", final_rows)
    fig = loss_curve_figure(curves, f"Context extension {short} -> {2 * short} ({args.scale} scale)")
    fig.axes[0].axvline(final_rows[0]["switch_iter"], color="grey", linestyle="--", linewidth=1)
    fig.axes[0].text(final_rows[0]["switch_iter"], fig.axes[0].get_ylim()[1], f" block {2 * short}", va="top")
    study.save_figure(fig, "loss")
    study.finish({"final": final_rows})


if __name__ == "__main__":
    main()
