"""Errors raised by the CamVid code, one base class so the command line can catch them all.

The command line prints ``str(error)`` without a traceback for any :class:`DatasetError`.
"""

from __future__ import annotations

from haformer.errors import EnvironmentFailure, UsageError

DOWNLOAD_COMMAND = "python -m haformer download --root {root}"


class DatasetError(UsageError):
    """Base class of every data problem the user can fix (missing, damaged or wrong files)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The data root, a split folder or a listed file does not exist."""


class DatasetFormatError(DatasetError, ValueError):
    """A file exists but holds the wrong thing: bad PNG, sizes, label values, checksum."""


class DownloadError(EnvironmentFailure, OSError):
    """The download itself failed (network, server, interrupted transfer): exit code 1."""
