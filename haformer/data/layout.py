"""The SegNet CamVid folder layout: where the data root is, which files make up a split.

A root holds ``<split>/<name>.png`` images, ``<split>annot/<name>.png`` labels and, per split,
a list ``<split>.txt`` with lines ``"<split>/<name>.png <split>annot/<name>.png"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from haformer.data.errors import DatasetFormatError

ROOT_ENV = "CAMVID_ROOT"
DEFAULT_ROOT = Path("data") / "camvid"
SPLITS = ("train", "val", "test")
COMBINED_SPLITS = {"trainval": ("train", "val")}
SPLIT_CHOICES = (*SPLITS, *COMBINED_SPLITS)


def resolve_root(root: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """The data root and where it came from: the argument, else ``$CAMVID_ROOT``, else the default.

    Returns ``(absolute path, "how it was chosen")`` so that errors can say where they looked.
    """
    if root is not None:
        return Path(root).expanduser().absolute(), "given as the root argument"
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().absolute(), f"from ${ROOT_ENV}"
    return DEFAULT_ROOT.absolute(), f"the default ./{DEFAULT_ROOT.as_posix()} (${ROOT_ENV} unset)"


def split_parts(split: str) -> tuple[str, ...]:
    """The on-disk splits that make up ``split`` (``"trainval"`` -> ``("train", "val")``)."""
    if split in SPLITS:
        return (split,)
    if split in COMBINED_SPLITS:
        return COMBINED_SPLITS[split]
    raise ValueError(f"split must be one of {', '.join(SPLIT_CHOICES)}; got {split!r}")


def label_dir(split: str) -> str:
    """The folder of the label PNGs of an on-disk split (``"train"`` -> ``"trainannot"``)."""
    return f"{split}annot"


def pair_paths(split: str, name: str) -> tuple[str, str]:
    """Relative POSIX paths of the image and label called ``name`` in ``split``."""
    return f"{split}/{name}", f"{label_dir(split)}/{name}"


def format_split_list(split: str, names: Iterable[str]) -> str:
    """The text of ``<split>.txt``: one ``"<image> <label>"`` line per name, sorted."""
    return "".join(" ".join(pair_paths(split, name)) + "\n" for name in sorted(names))


def parse_split_list(path: Path, split: str) -> list[str]:
    """The file names listed in ``<split>.txt``, in file order.

    Entries may be relative (``train/x.png``) or absolute as in the upstream SegNet lists
    (``/SegNet/CamVid/train/x.png``): only the last two path components count.
    Raises :class:`~haformer.data.errors.DatasetFormatError` for a line that does not name an
    image of ``split`` and its label.
    """
    names = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = [PurePosixPath(f.replace("\\", "/")).parts[-2:] for f in line.split()]
        if (
            len(fields) != 2
            or len(fields[0]) != 2
            or fields[0][0] != split
            or fields[1] != (label_dir(split), fields[0][1])
        ):
            raise DatasetFormatError(
                f"{path}, line {number}: expected '{' '.join(pair_paths(split, '<name>.png'))}', "
                f"got {line.strip()!r}"
            )
        names.append(fields[0][1])
    return names
