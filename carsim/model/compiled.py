"""Compilation of the event loops that cannot be vectorised.

A function decorated with :func:`compiled` is compiled by numba when numba
is installed, and otherwise runs as the same plain Python (slower, with the
same results: numba does not reorder floating-point operations unless told
to).  :func:`interpreted` gives the plain Python of a compiled function, for
callers that step one patient at a time, where a compiled call would cost
more than it saves (the SimPy engine).

Compiled code is cached on disk, in a folder named after the contents of
this package's model sources: numba checks a cached function only against
its own file, but a compiled function carries the functions it calls (and
the constants it reads) from other files, so an edit anywhere in the model
must start a new cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import types
from pathlib import Path

try:  # numba is a dependency; its absence (an unusual platform) costs speed, not results
    import numba
    from numba.core import config as numba_config
except ImportError:  # pragma: no cover - exercised by forcing CARSIM_NO_JIT
    numba = None

# CARSIM_NO_JIT=1 runs every compiled function as plain Python (the tests
# compare the two).
ENABLED = numba is not None and os.environ.get("CARSIM_NO_JIT", "") in ("", "0")


def compiled(function=None, *, inline: bool = False):
    """``function`` compiled in nopython mode (cached on disk), when enabled;
    ``inline``: compiled into each caller (for small functions called in a
    hot loop, where the call itself is the cost)."""
    if function is None:
        return lambda f: compiled(f, inline=inline)
    if not ENABLED:
        return function
    # The cache folder is numba's setting when the function is decorated;
    # the user's own setting is restored at once.
    previous = numba_config.CACHE_DIR
    numba_config.CACHE_DIR = str(cache_folder())
    try:
        return numba.njit(cache=True, nogil=True, inline="always" if inline else "never")(function)
    finally:
        numba_config.CACHE_DIR = previous


@functools.cache
def cache_folder() -> Path:
    """Where compiled code is cached: beside the model sources, under a name
    that changes with any of them (numba falls back to its own places
    where this folder cannot be written)."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for source in sorted(here.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return here / "__pycache__" / f"compiled-{digest.hexdigest()[:16]}"


def interpreted(function):
    """The plain Python of a :func:`compiled` function, calling the plain
    Python of every compiled function it reaches, in any module (a call from
    Python into compiled code costs microseconds): copies of the functions
    over copies of their modules' namespaces."""
    copies: dict[int, types.FunctionType] = {}
    namespaces: dict[int, dict] = {}

    def plain(dispatcher):
        python = dispatcher.py_func
        if id(python) not in copies:
            namespace = namespaces.get(id(python.__globals__))
            if namespace is None:
                namespace = namespaces[id(python.__globals__)] = dict(python.__globals__)
            copies[id(python)] = types.FunctionType(python.__code__, namespace, python.__name__,
                                                    python.__defaults__, python.__closure__)
            for name, value in list(namespace.items()):
                if hasattr(value, "py_func") and getattr(value.py_func, "__module__", "").startswith("carsim"):
                    namespace[name] = plain(value)
        return copies[id(python)]

    return plain(function) if hasattr(function, "py_func") else function
