"""
Cost of the valid bidirectional language model (question 1.2b), which reruns the BiRNN on every prefix,
against the Elman RNN and the invalid one-pass BiRNN (1.2a): forward+backward time as the sequence grows.

    python scripts/bench_birnn.py                 # T = 32 .. 512, batch 8, hidden 64
"""

import argparse

import torch

from mingpt.app.files import machine_info
from mingpt.app.probes import time_ms
from mingpt.app.settings import build_model
from mingpt.config import at_least
from mingpt.errors import check_script_args
from mingpt.experiments.bench import best_device
from mingpt.model import GPT

MODEL_TYPES = ("rnn", "birnn_invalid", "birnn_prefix")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--device", default=best_device(), help="default: the best one here, as training picks it")
    args = parser.parse_args()
    check_script_args(args, lengths=at_least(1), batch=at_least(1), hidden=at_least(1))
    print(machine_info())
    print(f"forward+backward ms on {args.device}, batch {args.batch}, hidden {args.hidden}, 1 layer, tanh")
    print(f"{'T':>5} | " + " ".join(f"{m:>14}" for m in MODEL_TYPES) + " | prefix/invalid")
    for T in args.lengths:
        times = []
        for model_type in MODEL_TYPES:
            C = GPT.get_default_config()
            C.merge_from_dict(dict(model_type=model_type, vocab_size=65, block_size=T, n_layer=1,
                                   n_embd=args.hidden, rnn_activation="tanh"))
            model = build_model(C).to(args.device)
            idx = torch.randint(65, (args.batch, T), device=args.device)
            times.append(time_ms(lambda: model(idx, idx)[1].backward(), 1, args.device))
        print(f"{T:>5} | " + " ".join(f"{t:>14.1f}" for t in times) + f" | {times[2] / times[1]:>13.1f}x",
              flush=True)


if __name__ == "__main__":
    main()
