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
