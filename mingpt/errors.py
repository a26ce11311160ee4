"""
Bad input from the user, and how every entry point (chargpt.py, the scripts) ends on it: `error: <message>` as one
line on stderr, no traceback, exit status 2 (argparse's for a bad option). Library code raises UserError; the
programs end with fail().
"""

import sys


class UserError(ValueError):
    """Bad input from the user: the entry points print its message alone as one line and exit with status 2
    (fail, below); from Python it is a ValueError naming what is wrong."""


USER_ERROR_EXIT = 2
DIVERGED_EXIT = 3  # a run whose loss or gradient norm stopped being finite


class RunDiverged(Exception):
    """A run ended because a step diverged: its message says where and what to try; the entry point prints it
    as one line and exits with DIVERGED_EXIT."""


def report(message):
    """Say what is wrong as one line, `error: message` on stderr; return the exit status for it."""
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR_EXIT


def fail(message):
    """End the program on bad input: report it, exit status 2."""
    sys.exit(report(message))


def check_script_args(args, **checks):
    """For the scripts: each named argparse value (or each value of a list) against its Check, e.g.
    check_script_args(args, iters=at_least(1)); on a bad one, one line naming the option and exit 2."""
    for name, check in checks.items():
        values = getattr(args, name)
        for value in values if isinstance(values, list) else [values]:
            problem = check(value)
            if problem:
                fail(f"--{name.replace('_', '-')}={value} {problem}")
