"""
minGPT's utilities: set_seed, setup_logging and the config node CfgNode (declared in mingpt/config.py; imported
here, where minGPT's code imports it from), and the atomic writes every saved file goes through.
"""

import contextlib
import json
import os
import random
import sys
import tempfile

import numpy as np
import torch

from mingpt.config import CfgNode  # noqa: F401  minGPT's import path: from mingpt.utils import CfgNode
from mingpt.errors import UserError


def set_seed(seed):
    """Seed every generator a run draws from: Python's, numpy's and torch's (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -----------------------------------------------------------------------------
# atomic writes: a program killed at any instant leaves the previous good file in place

TEMP_SUFFIX = ".tmp"


def _temp_prefix(path):
    return "." + os.path.basename(path) + "."


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Open a temporary file beside `path`; rename it over `path` only when the block finishes cleanly. A write
    the OS refuses (disk full, file too large, permission) is a UserError naming the file; `path` keeps its
    previous content."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            raise UserError(f"cannot write {path}: {e.strerror or e}; the previous {os.path.basename(path)} "
                            f"(if any) is intact") from None
        raise


def setup_logging(config):
    """minGPT's start of a run: make config.system.work_dir and write the command line (args.txt) and the config
    (config.json) into it, each atomically."""
    work_dir = config.system.work_dir
    os.makedirs(work_dir, exist_ok=True)
    with atomic_open(os.path.join(work_dir, "args.txt")) as f:
        f.write(" ".join(sys.argv))
    with atomic_open(os.path.join(work_dir, "config.json")) as f:
        json.dump(config.to_dict(), f, indent=4)
