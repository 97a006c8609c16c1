"""carsim: discrete-event simulation of CD19 CAR T-cell therapy for r/r B-ALL.

The Python API (:mod:`carsim.api`): ``carsim.load``, ``carsim.run``,
``carsim.psa``, ``carsim.dsa``, ``carsim.gsa``, ``carsim.trial``,
``carsim.calibrate`` and ``carsim.read_results``.  They are imported on first use, so ``import
carsim`` stays cheap.
"""

__version__ = "0.1.0"

API = frozenset({"load", "run", "psa", "dsa", "gsa", "trial", "calibrate", "read_results", "Results",
                 "StudyResults"})
__all__ = ["Results", "StudyResults", "__version__", "calibrate", "dsa", "gsa", "load", "psa", "read_results", "run",
           "trial"]


def __getattr__(name):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'carsim' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *API])
