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
