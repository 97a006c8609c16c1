"""Compilation of the event loops that cannot be vectorised.

A function decorated with :func:`compiled` is compiled by numba when numba
is installed, and otherwise runs as the same plain Python (slower, with the
same results: numba does not reorder floating-point operations unless told
to).  :func:`interpreted` gives the plain Python of a compiled function, for
callers that step one patient at a time, where a compiled call would cost
more than it saves (the SimPy engine).
"""

from __future__ import annotations

import os
import types

try:  # numba is a dependency; its absence (an unusual platform) costs speed, not results
    import numba
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
    return numba.njit(cache=True, nogil=True, inline="always" if inline else "never")(function)


def interpreted(function):
    """The plain Python of a :func:`compiled` function, calling the plain
    Python of the compiled functions it calls (a call from Python into
    compiled code costs microseconds)."""
    python = getattr(function, "py_func", None)
    if python is None:
        return function
    namespace = dict(python.__globals__)
    for name, value in python.__globals__.items():
        inner = getattr(value, "py_func", None)
        if inner is not None and inner.__module__ == python.__module__:
            namespace[name] = types.FunctionType(inner.__code__, namespace, name, inner.__defaults__,
                                                 inner.__closure__)
    return namespace[python.__name__]
