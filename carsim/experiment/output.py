"""Writing a run's results folder.

Each file is written to a temporary name in the same folder and renamed into
place, so a file that exists is complete.  ``manifest.json`` is written last:
a folder without it is an unfinished run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__

_UMASK = os.umask(0)
os.umask(_UMASK)

RESULT_FILES = ("summary.csv", "comparison.csv", "patients.parquet", "events.parquet", "survival.png",
                "manifest.json")


def default_output_dir(scenario_name: str, root: Path = Path("results")) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = root / scenario_name / stamp
    k = 1
    while out.exists():
        out = root / scenario_name / f"{stamp}-{k}"
        k += 1
    return out


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


def patients_frame(result) -> pd.DataFrame:
    frames = []
    for part in result.parts:
        columns = {"replication": np.full(len(part.outcomes["patient"]), part.replication, dtype=np.int64),
                   "policy": np.full(len(part.outcomes["patient"]), part.policy, dtype=object)}
        columns["patient"] = part.outcomes["patient"]
        for name, values in part.covariates.items():
            columns[name] = values
        for name, values in part.outcomes.items():
            if name != "patient":
                columns[name] = values
        frames.append(pd.DataFrame(columns))
    return _tidy(pd.concat(frames, ignore_index=True))


def events_frame(result) -> pd.DataFrame:
    frames = []
    for part in result.parts:
        n = len(part.events["patient"])
        frames.append(pd.DataFrame({
            "replication": np.full(n, part.replication, dtype=np.int64),
            "policy": np.full(n, part.policy, dtype=object),
            **part.events,
        }))
    return _tidy(pd.concat(frames, ignore_index=True))


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    for name in frame.columns:
        if frame[name].dtype == object:
            frame[name] = frame[name].astype(str)
    return frame


def manifest(result, summary_seconds: float, command: list[str] | None) -> dict:
    import joblib
    import scipy
    import simpy

    return {
        "scenario": result.scenario.name,
        "carsim_version": __version__,
        "seed": result.seed,
        "replications": result.replications,
        "patients": result.n_patients,
        "policies": result.policies,
        "reference_policy": result.policies[0],
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "timings": {**result.timings, "summary_seconds": round(summary_seconds, 3)},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                     "simpy": simpy.__version__, "pandas": pd.__version__, "joblib": joblib.__version__},
        "platform": sys.platform,
        "files": list(RESULT_FILES),
        "resolved_scenario": result.scenario.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def write_results(out_dir: Path, result, summary: pd.DataFrame, comparison: pd.DataFrame,
                  summary_seconds: float, command=None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # an old manifest would mark a half-written folder done
    atomic_write(out_dir / "summary.csv", lambda p: summary.to_csv(p, index=False))
    atomic_write(out_dir / "comparison.csv", lambda p: comparison.to_csv(p, index=False))
    atomic_write(out_dir / "patients.parquet", lambda p: patients_frame(result).to_parquet(p, index=False))
    atomic_write(out_dir / "events.parquet", lambda p: events_frame(result).to_parquet(p, index=False))
    from ..analysis.plots import plot_survival

    atomic_write(out_dir / "survival.png", lambda p: plot_survival(result, p))
    info = manifest(result, summary_seconds, command)
    atomic_write(out_dir / "manifest.json",
                 lambda p: p.write_text(json.dumps(info, indent=2, default=_json_default) + "\n"))
    return out_dir


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return str(value)
