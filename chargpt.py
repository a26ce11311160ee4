"""
Trains a character-level language model.

    python chargpt.py                                       # gpt-mini on input.txt (tiny-shakespeare)
    python chargpt.py --trainer.max_iters=600 --model.rope=True --system.work_dir=out/rope
    python chargpt.py --sample.only=True --system.work_dir=out/rope --sample.prompt="ROMEO:" --sample.top_p=0.9
    python chargpt.py @recipes/speedrun-1.88.txt            # a recipe: flags read from a file (docs/speedrun.md)
    python chargpt.py --help                                # every setting with its default
    torchrun --standalone --nproc_per_node=2 chargpt.py     # data parallel over 2 processes (mingpt/distributed.py)

Flags are --node.key=value (or node.key=value) for the nodes system, data, model, trainer and sample; the defaults
and what each does are in mingpt/app/settings.py's get_config and the get_default_config of each part.
"""

import sys
import time

from mingpt.app.run import train
from mingpt.app.sample_text import sample
from mingpt.app.settings import expand_recipes, get_config, help_text
from mingpt.distributed import Processes, quiet_unless
from mingpt.errors import DIVERGED_EXIT, RunDiverged, UserError, report

RANK0_GRACE_S = 5


def main(argv):
    config = get_config()
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(config))
        return 0
    main_process = Processes().main
    with quiet_unless(main_process):  # under torchrun, rank 0 alone prints
        try:
            config.merge_from_args(expand_recipes(argv))
            if config.sample.only:
                sample(config)
            else:
                train(config)
        except (UserError, RunDiverged) as e:
            if not main_process:
                # torchrun stops every process once one exits: give rank 0, which fails the same checks (or
                # diverges at the same step), the time to print why before this silent one exits
                time.sleep(RANK0_GRACE_S)
            if isinstance(e, RunDiverged):
                print(f"error: {e}", file=sys.stderr)
                return DIVERGED_EXIT
            return report(e)
        except KeyboardInterrupt as e:  # a run that saved a checkpoint says where it is
            print("interrupted" + (f": {e}" if e.args else ""), file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
