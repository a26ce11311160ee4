"""
minGPT's utilities: set_seed, setup_logging, the config node CfgNode, Optimizers (several stepped as one) with the
builders of AdamW and Muon that configure_optimizers returns, and the sampler every model's generate uses.

CfgNode is minGPT's, with each setting declared once with its default, help text, type and check (Check and its
helpers), merged from command-line flags (parse_value) or from a dict, and validated as a whole. A node without
declarations is minGPT's free-form one (any key, as projects/adder's C.system); a node with declarations refuses a
key that none of them names, so a misspelt setting is an error instead of a value nobody reads.
"""

import ast
import contextlib
import difflib
import json
import math
import os
import random
import sys
import tempfile

import numpy as np
import torch
from torch.nn import functional as F


class UserError(ValueError):
    """Bad input from the user: the entry points print its message alone as one line and exit with status 2
    (mingpt/lab/errors.py); from Python it is a ValueError naming what is wrong."""


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


def parse_value(text):
    """Turn one flag value into a Python object. Anything that is not a literal stays a string, so paths such as
    ./out/x or /tmp/x work (minGPT's literal_eval crashes on them)."""
    if text in ("True", "true"):
        return True
    if text in ("False", "false"):
        return False
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return text


class Check:
    """A condition on one setting's value. `text` is what --help shows (e.g. ">= 1"); calling the check returns
    None for a good value, else the problem in words. `test` says yes or no; `problem` (value -> str or None)
    serves checks that explain themselves, such as the device check."""

    def __init__(self, text, test=None, problem=None):
        self.text, self.test, self.problem = text, test, problem

    def __call__(self, value):
        if self.problem is not None:
            return self.problem(value)
        return None if self.test(value) else f"must be {self.text}"

    def __str__(self):
        return self.text


def at_least(low):
    return Check(f">= {low}", lambda v: v >= low)


def above(low):
    return Check(f"> {low}", lambda v: v > low)


def between(low, high, high_open=False):
    """low <= v <= high, or low <= v < high with high_open."""
    return Check(f"in [{low}, {high}{')' if high_open else ']'}",
                 lambda v: low <= v < high if high_open else low <= v <= high)


def each(check):
    """`check` on every element of a tuple setting."""
    return Check(f"each {check}", problem=lambda values: None if all(check(v) is None for v in values)
                 else f"must have every value {check}")


NOT_EMPTY = Check("a non-empty string", lambda v: v != "")


class Setting:
    """What one setting may hold: its type, whether None is allowed, its choices and its check; its default;
    `used`, whether the node's other settings make the program read it (None: always); for a preset, what each of
    its values sets."""

    def __init__(self, kind, nullable, choices, check, default=None, used=None, expands=None):
        self.kind, self.nullable, self.choices, self.check = kind, nullable, choices, check
        self.default, self.used, self.expands = default, used, expands

    def describe(self):
        """The range or choices for --help, e.g. 'cosine | constant' or '>= 1'."""
        if self.choices:
            return "one of " + " | ".join(map(str, self.choices + ((None,) if self.nullable else ())))
        return f"{self.check} or None" if self.check and self.nullable else str(self.check or "")


def _shown(value):
    return value if isinstance(value, str) and value and value.strip() == value else repr(value)


def _type_name(kind):
    return {bool: "bool", int: "int", float: "float", str: "str", tuple: "tuple"}.get(kind, kind.__name__)


def _is_kind(value, kind):
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def coerce(key, value, example):
    """Check `value` against the type of `example` (the default, or a value of the declared type); return it
    converted where lossless (an int for a float setting, a list for a tuple one)."""
    if value is None:
        return value
    if isinstance(example, (tuple, list)):
        if isinstance(value, (tuple, list)) and len(value) == len(example):
            return type(example)(coerce(key, v, d) for v, d in zip(value, example))
        raise UserError(f"--{key}: expected a {_type_name(type(example))} of {len(example)} values like "
                        f"{example!r}, got {value!r}")
    if isinstance(example, str):
        return str(value)
    if _is_kind(value, type(example)):
        return float(value) if isinstance(example, float) else value
    raise UserError(f"--{key}: expected {_type_name(type(example))}, got {value!r}")


class CfgNode:
    """minGPT's config node: attributes are settings, nested nodes group them. Each setting is declared once with
    `set` (default, help, and what values it may take) or `derive`; `validate` checks every setting against its
    declaration, and `python chargpt.py --help` prints them all."""

    def __init__(self, **kwargs):
        for private in ("_doc", "_spec", "_derived", "_aliases"):
            self.__dict__[private] = {}
        self.__dict__["_rules"] = []
        self.__dict__["_given"] = set()  # the declared settings given a value since their declaration
        self.__dict__["_prefix"] = ""  # the node's place in the tree, e.g. "model.", once it is attached
        self.__dict__.update(kwargs)

    def __setattr__(self, key, value):
        key = self._aliases.get(key, key)
        if self._spec and key not in self.__dict__ and not isinstance(value, CfgNode):
            raise UserError(f"unknown config key {self._prefix}{key}{self._hint(key)}")
        if isinstance(value, CfgNode):
            value.__dict__["_prefix"] = f"{self._prefix}{key}."
        self.__dict__[key] = value
        if key in self._spec:
            self._given.add(key)

    def __getattr__(self, key):  # only for names that are not attributes: the aliases
        aliases = self.__dict__.get("_aliases", {})
        if key in aliases:
            return getattr(self, aliases[key])
        raise AttributeError(f"config node {self.__dict__.get('_prefix', '')!r} has no key {key!r}")

    def _hint(self, key):
        close = difflib.get_close_matches(key, [k for k, _ in self.items()] + list(self._aliases), n=3, cutoff=0.5)
        return f"; did you mean {', '.join(self._named(self._prefix + c) for c in close)}?" if close else ""

    def _named(self, dotted, dashes=""):
        """A setting's dotted name as a hint shows it, with the setting that an alias stands for."""
        *path, leaf = dotted.split(".")
        node = self
        for part in path[len(self._prefix.split(".")) - 1:]:
            node = getattr(node, part, None)
        target = node._aliases.get(leaf) if isinstance(node, CfgNode) else None
        return f"{dashes}{dotted}" + (f" ({dashes}{'.'.join(path + [target])})" if target else "")

    def set(self, key, default, doc, *, kind=None, choices=None, check=None, nullable=None, used=None,
            expands=None):
        """Declare a setting. kind: its type (default: the default's type; give it when the default is None);
        choices: the values it may take; check: a Check its values must pass; nullable: whether None is allowed
        (default: when the default is None); used: node -> whether the program reads the setting with the node's
        other values (default: always), for `ignored`; expands: makes it a preset, {value: {other setting: its
        value}}, which applies to the settings of this node that are not given a value of their own."""
        kind = kind or (type(default) if default is not None else type(choices[0]) if choices else None)
        if kind is None:
            raise TypeError(f"setting {key}: give kind= when the default is None")
        self.__dict__[key] = default
        self._doc[key] = doc
        self._spec[key] = Setting(kind, default is None if nullable is None else nullable, choices, check, default,
                                  used, expands)
        return self

    def given(self):
        """The declared settings of this node that were given a value (flags, a dict, attributes) since their
        declaration: what a preset leaves alone."""
        return set(self._given)

    def alias(self, name, key):
        """A second name for setting `key` (minGPT's n_head for n_query_head): reading, setting and flags alike."""
        self._aliases[name] = key
        return self

    def _expand_presets(self):
        """Apply the presets of this node to its settings that were not given a value of their own, wherever the
        preset and they were set (flags, a dict, attributes)."""
        for key, spec in self._spec.items():
            if spec.expands:
                for other, value in spec.expands.get(getattr(self, key), {}).items():
                    if other not in self._given:
                        self.__dict__[other] = value

    def derive(self, key, why, kind=int, check=None):
        """A setting the program fills in itself (e.g. from the data): a flag for it is an error saying `why`."""
        self.set(key, None, why, kind=kind, check=check)
        self._derived[key] = why
        return self

    def rule(self, check, when=None):
        """A check across this node's settings, run by `validate` after each setting passed its own:
        check(node) raises UserError naming the flags and the fix. when: node -> whether the settings it checks are
        used (default: always); the rule is skipped where they are not."""
        self._rules.append((check, when))
        return self

    def ignored(self, prefix=""):
        """The flags (--node.key) of this node and those below that hold a value other than their default while
        their `used` says the program does not read them."""
        flags = []
        for key, value in self.items():
            spec = self._spec.get(key)
            if isinstance(value, CfgNode):
                flags += value.ignored(f"{prefix}{key}.")
            elif spec and spec.used and value != spec.default and not spec.used(self):
                flags.append(f"--{prefix}{key}")
        return flags

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

    def alias_names(self, prefix=""):
        """The dotted names of every alias of this node and those below (for flags' did-you-mean)."""
        names = [prefix + name for name in self._aliases]
        for k, v in self.items():
            if isinstance(v, CfgNode):
                names += v.alias_names(f"{prefix}{k}.")
        return names

    def describe(self, key):
        """The range or choices of setting `key` ('' when it has none)."""
        spec = self._spec.get(key)
        return spec.describe() if spec and key not in self._derived else ""

    def validate(self, prefix=""):
        """Check every setting against its declaration, then this node's rules, then the nodes below; raises
        UserError naming the first bad flag. `prefix` is the node's place in the tree (e.g. "model.")."""
        self._expand_presets()
        for key, value in self.items():
            spec = self._spec.get(key)
            if spec is None or isinstance(value, CfgNode):
                continue
            flag = f"--{prefix}{key}"
            if value is None:
                if spec.nullable:
                    continue
                raise UserError(f"{flag} must be set (see --help)")
            if not _is_kind(value, spec.kind) or (spec.kind is tuple and not value):
                raise UserError(f"{flag}={_shown(value)}: expected {_type_name(spec.kind)}")
            if isinstance(value, float) and not math.isfinite(value) or \
                    isinstance(value, tuple) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
                raise UserError(f"{flag}={_shown(value)} must be a finite number")
            if spec.choices is not None and value not in spec.choices:
                raise UserError(f"{flag}={_shown(value)} must be one of {', '.join(map(str, spec.choices))}")
            problem = spec.check(value) if spec.check else None
            if problem:
                raise UserError(f"{flag}={_shown(value)} {problem}")
        for check, when in self._rules:
            if when is None or when(self):
                check(self)
        for key, value in self.items():
            if isinstance(value, CfgNode):
                value.validate(f"{prefix}{key}.")
        return self

    def merge_from_dict(self, d):
        for k, v in d.items():
            if isinstance(v, dict) and isinstance(getattr(self, k, None), CfgNode):
                getattr(self, k).merge_from_dict(v)
            else:
                setattr(self, k, tuple(v) if isinstance(v, list) and self._is_tuple(k) else v)
        self._expand_presets()

    def _is_tuple(self, key):
        spec = self._spec.get(key)
        return spec is not None and spec.kind is tuple

    def merge_from_args(self, args):
        """Merge `--node.key=value` (or `node.key=value`) flags, checking each value's type; ranges, choices and
        rules are `validate`'s. A preset sets the settings of its node that no flag gives, wherever it stands among
        the flags. Raises UserError naming the bad flag."""
        known = [key for key, _, _ in self.flat()] + self.alias_names()
        given = set()  # the nodes that flags gave values
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
            leaf = obj._aliases.get(path[-1], path[-1]) if obj is not None and path else None
            if obj is None or leaf is None or leaf not in dict(obj.items()) or isinstance(getattr(obj, leaf), CfgNode):
                close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(self._named(c, '--') for c in close)}?" if close else "; see --help"
                raise UserError(f"unknown config key --{key}{hint}")
            if leaf in obj._derived:
                raise UserError(f"--{key} cannot be set: {obj._derived[leaf]}")
            default, spec = getattr(obj, leaf), obj._spec.get(leaf)
            kind = spec.kind if spec else type(default)
            if kind is str:  # the text as written: a path or a name never goes through literal_eval
                value = None if text == "None" and (spec is None or spec.nullable) else text
            else:
                value = parse_value(text)
            example = default if default is not None else kind()
            setattr(obj, leaf, coerce(key, value, example))
            given.add(obj)
        for obj in given:
            obj._expand_presets()

    def __str__(self):
        return json.dumps(self.to_dict(), indent=2, default=str)


class Optimizers:
    """Several optimizers stepped as one (Muon for the blocks' matrices beside AdamW for the rest): the trainer sees
    one list of param_groups, one step, and one state dict holding each optimizer's under its name."""

    def __init__(self, **optimizers):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [group for optimizer in self.optimizers.values() for group in optimizer.param_groups]

    def step(self):
        for optimizer in self.optimizers.values():
            optimizer.step()

    def zero_grad(self, set_to_none=True):
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state):
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])


def adamw_with_decay(model, decay, train_config, skip=frozenset()):
    """AdamW with weight decay on the parameters named in `decay` and none on the others (but those in `skip`)."""
    params = {name: p for name, p in model.named_parameters() if name not in skip}
    groups = [
        {"params": [params[n] for n in sorted(decay)], "weight_decay": train_config.weight_decay},
        {"params": [params[n] for n in sorted(params.keys() - decay)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=train_config.learning_rate, betas=train_config.betas)


def muon_and_adamw(model, matrices, decay, train_config):
    """torch's Muon (Jordan et al.: momentum orthogonalised by Newton-Schulz iterations, its default momentum) for
    the matrices named in `matrices`, at muon_lr, and adamw_with_decay for the other parameters, stepped as one.
    The schedule sets each group's lr to its lr_scale times the AdamW learning rate of the step."""
    params = dict(model.named_parameters())
    muon = torch.optim.Muon([params[n] for n in sorted(matrices)], lr=train_config.muon_lr,
                            weight_decay=train_config.weight_decay)
    muon.param_groups[0]["lr_scale"] = train_config.muon_lr / train_config.learning_rate
    return Optimizers(adamw=adamw_with_decay(model, decay, train_config, skip=matrices), muon=muon)


# -----------------------------------------------------------------------------
# the sampler behind every model's generate


def check_sampling(temperature, top_k, top_p):
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None), got {top_p}")


def sample_next(logits, temperature=1.0, do_sample=False, top_k=None, top_p=None, generator=None):
    """Pick one token id per row of logits (B, vocab): greedy, or sampled after temperature, top-k and
    nucleus (top-p) filtering. Returns (B, 1)."""
    if not do_sample or temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    ids = None  # the token id of each column once logits are cut to the top k or sorted
    if top_k is not None and top_k < logits.size(-1):
        logits, ids = torch.topk(logits, top_k)  # (B, k), most likely first: only these can be drawn
    if top_p is not None:
        if ids is None:
            logits, ids = torch.sort(logits, descending=True)
        probs = F.softmax(logits, dim=-1)
        # keep the smallest prefix whose probability reaches top_p: drop a token when the tokens before it
        # already reach it
        logits = logits.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    # an exponential race draws what torch.multinomial(probs, 1) draws, with three small operations instead of
    # its checks and cumulative sum: with E_i ~ Exp(1), E_i / p_i ~ Exp(p_i), and the smallest of independent
    # exponentials is i with probability p_i / sum(p). E is kept above 0 so that a dropped token (p = 0) never
    # reads 0 / 0
    race = torch.empty_like(probs).exponential_(generator=generator).clamp_min_(torch.finfo(probs.dtype).tiny)
    choice = (probs / race).argmax(dim=-1, keepdim=True)
    return choice if ids is None else ids.gather(-1, choice)
