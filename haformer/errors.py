"""The two kinds of failure the command line reports in one line instead of a traceback.

* :class:`UsageError`: the user can fix it (a bad argument, a missing or unreadable file, wrong
  data, a device this machine lacks). Exit code 2.
* :class:`EnvironmentFailure`: the environment failed (disk full, read-only folder, network).
  Exit code 1.

Anything else is a bug in this package and keeps its traceback. ``haformer.cli.main`` is the
only place that catches them; ``--debug`` shows the traceback for everything.
"""

from __future__ import annotations


class UsageError(Exception):
    """A mistake the user can fix; ``str(error)`` says what was wrong and how to fix it."""

    exit_code = 2


class EnvironmentFailure(Exception):
    """A failure of the machine or network, not of the user's input nor of our code."""

    exit_code = 1


class ConfigError(UsageError, ValueError):
    """A setting or argument that cannot work (unknown model, bad size, empty scale range)."""


class MissingFileError(UsageError, FileNotFoundError):
    """A file the user named does not exist (or is a folder where a file is needed)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a message saying where the work stands (for example the ``--resume``
    command of a training run). Still a ``KeyboardInterrupt``, so notebooks stop as usual.
    Exit code 130, as a shell reports for SIGINT."""

    exit_code = 130
