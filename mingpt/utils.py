"""
Small shared pieces: the config tree that command-line flags are merged into, seeding, atomic file writes
and the one exception type that means "the user asked for something wrong" (printed as one line, no traceback).
"""

import ast
import contextlib
import difflib
import json
import os
import random
import tempfile

import torch


class UserError(ValueError):
    """Bad input from the user: the CLI prints the message alone and exits non-zero."""


def set_seed(seed):
    random.seed(seed)
    torch.manual_seed(seed)


# -----------------------------------------------------------------------------
# atomic writes: a run killed at any instant leaves the previous good file in place

@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Open a temporary file beside `path`; rename it over `path` only when the block finishes cleanly."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_json(obj, path):
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2)


def save_torch(obj, path):
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save_text(text, path):
    with atomic_open(path, "w") as f:
        f.write(text)


# -----------------------------------------------------------------------------
# config

def parse_value(text):
    """Turn one flag value into a Python object. Anything that is not a literal stays a string, so paths such as
    ./out/x or /tmp/x work (minGPT's literal_eval crashes on them)."""
    if text in ("True", "true"):
        return True
    if text in ("False", "false"):
        return False
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _type_name(value):
    return type(value).__name__


def coerce(key, value, default):
    """Check `value` against the type of the default it replaces; return it converted where lossless."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        return str(value)
    elif isinstance(default, (tuple, list)):
        if isinstance(value, (tuple, list)) and len(value) == len(default):
            return type(default)(coerce(key, v, d) for v, d in zip(value, default))
        raise UserError(f"--{key}: expected a {_type_name(default)} of {len(default)} values like "
                        f"{default!r}, got {value!r}")
    else:
        return value
    raise UserError(f"--{key}: expected {_type_name(default)} (default {default!r}), got {value!r}")


class CfgNode:
    """minGPT's config node: attributes are settings, nested nodes group them. `set` also records a one-line
    description that `python chargpt.py --help` prints."""

    def __init__(self, **kwargs):
        self.__dict__["_doc"] = {}
        self.__dict__["_derived"] = {}
        self.__dict__.update(kwargs)

    def set(self, key, default, doc):
        setattr(self, key, default)
        self._doc[key] = doc
        return self

    def derive(self, key, why):
        """A setting the program fills in itself (e.g. from the data): a flag for it is an error saying `why`."""
        setattr(self, key, None)
        self._doc[key] = why
        self._derived[key] = why
        return self

    def items(self):
        return [(k, v) for k, v in self.__dict__.items() if not k.startswith("_")]

    def to_dict(self):
        return {k: v.to_dict() if isinstance(v, CfgNode) else v for k, v in self.items()}

    def flat(self, prefix=""):
        """[(dotted_key, value, doc)] for every leaf setting."""
        rows = []
        for k, v in self.items():
            if isinstance(v, CfgNode):
                rows += v.flat(prefix + k + ".")
            else:
                rows.append((prefix + k, v, self._doc.get(k, "")))
        return rows

    def merge_from_dict(self, d):
        for k, v in d.items():
            if isinstance(v, dict) and isinstance(getattr(self, k, None), CfgNode):
                getattr(self, k).merge_from_dict(v)
            else:
                setattr(self, k, v)

    def merge_from_args(self, args):
        """Merge `--node.key=value` (or `node.key=value`) flags. Raises UserError naming the bad flag."""
        known = [key for key, _, _ in self.flat()]
        for arg in args:
            body = arg[2:] if arg.startswith("--") else arg
            if "=" not in body:
                raise UserError(f"flag {arg!r} is not of the form --node.key=value (see --help)")
            key, text = body.split("=", 1)
            node, *path = key.split(".")
            obj = self
            for part in [node] + path[:-1]:
                obj = getattr(obj, part, None)
                if not isinstance(obj, CfgNode):
                    obj = None
                    break
            leaf = path[-1] if path else None
            if obj is None or leaf is None or leaf not in dict(obj.items()) or isinstance(getattr(obj, leaf), CfgNode):
                close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else "; see --help"
                raise UserError(f"unknown config key --{key}{hint}")
            if leaf in obj._derived:
                raise UserError(f"--{key} cannot be set: {obj._derived[leaf]}")
            default = getattr(obj, leaf)
            value = text if isinstance(default, str) else parse_value(text)
            setattr(obj, leaf, coerce(key, value, default))

    def __str__(self):
        return json.dumps(self.to_dict(), indent=2, default=str)


def machine_info():
    """One line naming the machine and torch version, printed with every benchmark number."""
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
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
