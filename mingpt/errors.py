"""
Bad input from the user, and how every entry point (chargpt.py, the scripts) ends on it: `error: <message>` as one
line on stderr, no traceback, exit status 2 (argparse's for a bad option).
"""

import sys


class UserError(ValueError):
    """Bad input from the user: the entry points end with its message alone (fail)."""


def fail(message):
    """End the program on bad input: `error: message` on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
