"""
minGPT's config node CfgNode, with each setting declared once with its default, help text, type and check (Check
and its helpers), merged from command-line flags (parse_value) or from a dict, and validated as a whole. A node
without declarations is minGPT's free-form one (any key, as projects/adder's C.system); a node with declarations
refuses a key that none of them names, so a misspelt setting is an error instead of a value nobody reads.
"""

import ast
import difflib
import json
import math

from mingpt.errors import UserError


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

    def defaults(self, **values):
        """Give declared settings other defaults (an application's over a library's): each keeps its declaration,
        help and check, with the new default."""
        for key, value in values.items():
            self._spec[key].default = value
            self.__dict__[key] = value
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
