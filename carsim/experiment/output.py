"""Writing a run's results folder.

Each file is written to a temporary name in the same folder and renamed into
place, so a file that exists is complete.  ``manifest.json`` is written last:
a folder without it is an unfinished run.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..model.records import text_codes
from . import manifest as _manifest
from .parallel import run_beside
from .readable import write_readable
from .tables import write_table

RESULT_FILES = ("summary.csv", "summary.md", "summary.tex", "comparison.csv", "comparison.md", "comparison.tex",
                "patients.parquet", "events.parquet", "survival.png", "relapse_incidence.png", "manifest.json")


# Patient-policy rows from which a run with workers writes its Parquet files
# in a process of their own: below, that third process (beside the figures'
# and this one) cost more than it saved on two cores (20,000 patients x 4
# policies: 0.94 of one worker's wall time with the files written here,
# about 1.0 with them written beside).
TABLES_BESIDE_FROM = 400_000

# Columns that place a row (a row group is one replication and policy, in patient order).
LABEL_COLUMNS = ("replication", "policy", "patient")


def default_output_dir(scenario_name: str, root: Path = Path("results")) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = root / scenario_name / stamp
    k = 1
    while out.exists():
        out = root / scenario_name / f"{stamp}-{k}"
        k += 1
    return out


def _stacked(rows_per_part) -> dict:
    """Column-wise concatenation of one column dict per result part."""
    columns: dict[str, list] = {}
    for row in rows_per_part:
        for name, values in row.items():
            columns.setdefault(name, []).append(values)
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def _part_labels(part, n: int) -> dict:
    return {"replication": np.full(n, part.replication, dtype=np.int64),
            "policy": np.full(n, part.policy, dtype=object)}


def _part_label_codes(part, n: int) -> dict:
    """:func:`_part_labels` with the policy as (codes, texts), for :func:`write_parquet_parts`."""
    return {"replication": np.full(n, part.replication, dtype=np.int64),
            "policy": (np.zeros(n, np.int32), np.array([part.policy], dtype=object))}


def _patient_rows(part, labels) -> dict:
    """One part's rows of the patient table: ``labels`` (replication, policy), covariates and outcomes."""
    return {**labels(part, len(part.outcomes["patient"])), "patient": part.outcomes["patient"],
            **part.covariates, **{k: v for k, v in part.outcomes.items() if k != "patient"}}


def patients_parts(result):
    """The patient table, one column dict per result part (one row per replication, policy and patient)."""
    for part in result.parts:
        yield _patient_rows(part, _part_label_codes)


def events_parts(result):
    """The event table (replication, policy, patient, time_days, event, detail), one column dict per result part."""
    for part in result.parts:
        yield {**_part_label_codes(part, len(part.events["patient"])), **part.events}


def patients_columns(result) -> dict:
    """The patient table as one column dict: covariates and outcomes."""
    return _stacked(_patient_rows(part, _part_labels) for part in result.parts)


def _text(values: np.ndarray) -> np.ndarray:
    """Object columns as text (a non-string value becomes its str())."""
    if all(type(v) is str for v in values):
        return values
    return np.array([str(v) for v in values], dtype=object)


def patients_frame(result):
    import pandas as pd

    return pd.DataFrame({name: _text(v) if v.dtype == object else v
                         for name, v in patients_columns(result).items()})


def write_parquet_parts(parts, path: Path) -> None:
    """Column dicts of the same columns, one after the other, to one Parquet
    file (a row group each; nothing is concatenated), with pyarrow directly
    (building a pandas frame first would cost more than the write).  Text columns go as
    dictionaries (codes and their few distinct texts), as Parquet stores
    them; numbers are stored plain (a dictionary of mostly distinct numbers
    costs time and saves nothing).  The file records no Arrow schema, so
    text reads back as text.  Column statistics (each row group's minimum
    and maximum, which let a reader skip row groups) are kept for the
    columns a row group is one value or one run of: replication, policy and
    patient; for the others they cost a tenth of the write and skip nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for columns in parts:
            table = _arrow_table(columns)
            if writer is None:
                text = [field.name for field in table.schema if pa.types.is_dictionary(field.type)]
                labels = [name for name in LABEL_COLUMNS if name in table.column_names]
                writer = pq.ParquetWriter(path, table.schema, store_schema=False, use_dictionary=text or False,
                                          write_statistics=labels or False)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _arrow_table(columns: dict):
    import pyarrow as pa

    return pa.table({name: _text_array(v) if isinstance(v, tuple) or v.dtype == object else v
                     for name, v in columns.items()})


def _text_array(values):
    """An object column (or (codes, texts)) as an Arrow dictionary of text;
    a value that is not a string is written as its str()."""
    import pyarrow as pa

    codes, texts = values if isinstance(values, tuple) else text_codes(values)
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=np.int32)),
                                          pa.array(texts, type=pa.string()))


def manifest(result, summary_seconds: float, command: list[str] | None, more_files=()) -> _manifest.Manifest:
    """The manifest of a ``carsim run`` results folder (``more_files``: the tables beside the standard ones)."""
    run = result.scenario.run
    return _manifest.Manifest(
        "run", result.scenario, result.seed,
        settings={"patients": result.n_patients, "replications": result.replications, "policies": result.policies,
                  "engine": run.engine, "n_jobs": run.n_jobs, "horizon_years": run.horizon_years,
                  "write_events": run.write_events},
        files=[*RESULT_FILES[:-1], *more_files, RESULT_FILES[-1]],
        timings={**result.timings, "summary_seconds": round(summary_seconds, 3)},
        command=command,
        warnings=result.warnings,
        extra={"replications": result.replications, "patients": result.n_patients, "policies": result.policies,
               "reference_policy": result.policies[0]})


def write_patient_tables(out_dir: Path, result) -> None:
    """``patients.parquet`` and ``events.parquet``."""
    atomic_write(out_dir / "patients.parquet", lambda p: write_parquet_parts(patients_parts(result), p))
    atomic_write(out_dir / "events.parquet", lambda p: write_parquet_parts(events_parts(result), p))


def write_figures(out_dir: Path, result, plot) -> None:
    """``plot(result, name, path)`` draws each of the run's figures (survival.png, relapse_incidence.png)."""
    for name in ("survival.png", "relapse_incidence.png"):
        atomic_write(out_dir / name, lambda p, name=name: plot(result, name, p))


def write_results(out_dir: Path, result, summarise, plot, command=None, tables=None):
    """Summarise ``result`` and write its results folder; return
    ``(summary, comparison, summary_seconds)``.  ``summarise(result)`` gives
    the summary and comparison tables, ``plot(result, name, path)`` draws
    the figure ``name`` (``survival.png``, ``relapse_incidence.png``).

    The figures need matplotlib, whose import costs about as much as the
    drawing: a second process draws them while this one summarises and writes
    the tables.  If the simulation used more than one worker and the run is
    large (``TABLES_BESIDE_FROM``), a third writes the Parquet files meanwhile.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _manifest.clear(out_dir)  # an old manifest would mark a half-written folder done
    figure = run_beside(write_figures, out_dir, result, plot)
    rows = result.n_patients * len(result.policies) * result.replications
    tables_written = (run_beside(write_patient_tables, out_dir, result)
                      if result.timings.get("workers", 1) > 1 and rows >= TABLES_BESIDE_FROM else None)
    started = time.perf_counter()
    summary, comparison = summarise(result)
    summary_seconds = time.perf_counter() - started
    atomic_write(out_dir / "summary.csv", lambda p: summary.to_csv(p, index=False))
    atomic_write(out_dir / "comparison.csv", lambda p: comparison.to_csv(p, index=False))
    write_readable(summary, comparison, result.policies, out_dir)
    if tables_written is None:
        write_patient_tables(out_dir, result)
    extra = tables(result) if tables is not None else {}
    written = [path.name for stem, frame in extra.items() for path in write_table(frame, out_dir, stem)]
    if tables_written is not None:
        tables_written.wait()
    figure.wait()
    manifest(result, summary_seconds, command, written).write(out_dir)
    return summary, comparison, summary_seconds
