"""
The attention maps of a trained run (mingpt/app/attention_maps.py): every layer's and head's attention weights
for a prompt, drawn as one figure (layers by heads, the prompt's tokens on both axes) into RUN_DIR/attention_maps.png.

    python chargpt.py --model.n_kv_head=2 --model.window=32 --system.work_dir=out/gqa_window
    python scripts/attention_maps.py out/gqa_window --prompt "ROMEO: But soft, what light"
    python scripts/attention_maps.py out/gqa_window --layers 0 5 --heads 0 1 2

Under grouped-query attention a map's title names the key/value head its query head reads, and the heads of one
group share a colour; under --model.gqa_scores=group_sum there is one map per key/value group; a window's band
edge is a dashed line. A prompt longer than 128 tokens (or than the model's block_size) is cropped to its last
part, and a note says so. docs/studies.md says how to read the maps.
"""

import argparse
import sys

from mingpt.app.attention_maps import draw_run
from mingpt.app.settings import get_config
from mingpt.errors import fail
from mingpt.errors import UserError


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.error = fail  # a missing or malformed argument is one line, exit 2, as every bad input
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a trained run's folder (its --system.work_dir)")
    parser.add_argument("--prompt", default=get_config().sample.prompt, help="the text whose attention is drawn "
                        "(default: chargpt's --sample.prompt default, %(default)r)")
    parser.add_argument("--layers", type=int, nargs="+", help="the layers to draw, from 0 (default: all)")
    parser.add_argument("--heads", type=int, nargs="+", help="the query heads to draw, from 0, or under group_sum the "
                        "key/value groups (default: all)")
    args = parser.parse_args()
    try:
        path, maps = draw_run(args.run_dir, args.prompt, args.layers, args.heads)
    except UserError as e:
        fail(e)
    if maps.cropped:
        print(f"note: the prompt has {maps.cropped + len(maps.tokens)} tokens; the maps show its last "
              f"{len(maps.tokens)}", file=sys.stderr)
    print(f"wrote {path}: {maps.about}; {len(maps.tokens)} tokens")


if __name__ == "__main__":
    main()
