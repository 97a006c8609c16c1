"""Writing files so that a file that exists is complete.

Each file is written to a temporary name in the same folder and renamed into
place (an atomic rename on one file system); an interrupted write leaves no
half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write) -> None:
    """Call ``write(temporary_path)`` then rename the file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_default(value):
    """JSON for NumPy scalars (as Python numbers) and anything else (as text)."""
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


def write_json(path: Path, data) -> None:
    """``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, default=json_default) + "\n"
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def check_output_folder(path, option: str = "--out", create: bool = True) -> Path:
    """Make sure ``path`` can be the results folder before any simulation:
    a writable folder, or one that can be created.  ``create``: leave it
    created; otherwise the folders made for the check are removed again (the
    results folder appears only once there are results).  A one-line
    :class:`~carsim.errors.CarsimError` otherwise."""
    from .errors import CarsimError

    text = str(path)
    if "\x00" in text:
        raise CarsimError(f"{option} {text!r}: a folder name cannot contain a NUL byte")
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == path else f"is under {parent}, which is a file"
            raise CarsimError(f"{option} {path}: expected a folder for the results, but it {what}")
    missing = [p for p in [path, *path.parents] if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CarsimError(f"{option} {path}: cannot create the results folder ({exc.strerror or exc})") from None
    writable = os.access(path, os.W_OK | os.X_OK)
    if not create:
        for made in missing:  # deepest first
            try:
                made.rmdir()
            except OSError:
                break
    if not writable:
        raise CarsimError(f"{option} {path}: the results folder is not writable")
    return path
