"""
The files the lab writes, each through mingpt.utils.atomic_open (a run killed at any instant leaves the previous good
file in place): JSON, torch and text files, the temporaries a killed write left behind, the checks that a folder can
be written before anything is, the machine's description for benchmark numbers, CSV rows.
"""

import contextlib
import io
import json
import os
import tempfile

import torch

from mingpt.errors import UserError
from mingpt.utils import TEMP_SUFFIX, atomic_open


def remove_stale_temporaries(directory):
    """Delete the temporary files that a write killed half-way (kill -9, power loss) left in `directory`."""
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if name.startswith(".") and name.endswith(TEMP_SUFFIX) and len(name.split(".")) >= 4:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))


def save_json(obj, path):
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2)


def save_torch(obj, path):
    # serialised in memory first, so that a failing disk shows up as an OSError of the plain write
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getbuffer())


def save_text(text, path):
    with atomic_open(path, "w") as f:
        f.write(text)


def save_figure(figure, path):
    """A matplotlib figure as a PNG file."""
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png")


def check_writable_folder(path, flag):
    """UserError unless `path` is, or can be made as, a folder this process may write to: without creating it."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        where = "is a file" if probe == os.path.abspath(path) else f"is under {probe}, which is a file"
        raise UserError(f"{flag}={path} {where}; give a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag}={path}: {probe} is not writable; choose another folder")


def check_temporary_folder():
    """UserError unless Python finds a temporary folder it can write to. torch's compile machinery, which the
    optimizer imports, asks for one (tempfile.gettempdir, which writes a probe file in each candidate), and a full
    or read-only disk would otherwise end the run in a traceback from inside torch."""
    try:
        tempfile.gettempdir()
    except OSError as e:
        raise UserError(f"cannot write a temporary file ({e.strerror or e}; a full or read-only disk?): free some "
                        f"space or set TMPDIR to a writable folder") from None


def cpu_model():
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what platform says)."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_info():
    """One line naming the machine and torch version, printed with every benchmark number."""
    import platform
    cpu = cpu_model()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {device}; " \
           f"torch {torch.__version__}, Python {platform.python_version()}"


def write_csv(rows, path):
    """Rows (a list of dicts with the same keys) to a CSV file, atomically."""
    import csv
    with atomic_open(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
