"""The one error type the command line catches: what went wrong, in one line, and how the
command ends.

Each part raises its own subclass (``InputError``, ``RecipeError``, ``RunError``,
``ModelLoadError``, ...) with a message that says what to do; ``cli.main`` prints it as
``recaption: MESSAGE`` and exits with its ``exit_code``. A bug is not a RecaptionError and
keeps its traceback.
"""

from __future__ import annotations


class RecaptionError(Exception):
    """A failure the user can act on; the message says how."""

    exit_code = 1


class UsageError(RecaptionError):
    """The command line, a recipe, a config or an input asks for what cannot be done."""

    exit_code = 2


class Interrupted(RecaptionError):
    """Stopped by Ctrl-C (or SIGTERM) with what is done kept; the message says how to resume."""

    exit_code = 130
