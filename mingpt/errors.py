"""
Bad input from the user, and how every entry point (chargpt.py, the scripts) ends on it: `error: <message>` as one
line on stderr, no traceback, exit status 2 (argparse's for a bad option).
"""

import sys


class UserError(ValueError):
    """Bad input from the user: the entry points end with its message alone (fail)."""


USER_ERROR_EXIT = 2


def report(message):
    """Say what is wrong as one line, `error: message` on stderr; return the exit status for it."""
    print(f"error: {message}", file=sys.stderr)
    return USER_ERROR_EXIT


def fail(message):
    """End the program on bad input: report it, exit status 2."""
    sys.exit(report(message))
