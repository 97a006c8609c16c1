"""``carsim calibrate``: fit, write the fitted parameter file, write the report."""

from __future__ import annotations

import copy
import datetime as _dt
import os
import time
from pathlib import Path

import yaml

from .._io import atomic_write
from ..errors import display_path
from ..experiment.manifest import Manifest, clear
from .fit import Calibrator, fit, get_path, set_path
from .report import markdown, parameters_at_bounds, recovery_rows, target_rows, write_report
from .spec import load_calibration, load_targets_file


def fitted_overrides(raw: dict, values: dict, note: str, tied: dict | None = None) -> dict:
    """The smallest mapping that, extending the model, sets ``values``.

    A value inside a list (e.g. one multiplier) brings the whole list, since
    ``extends`` replaces lists whole.  The mapping holding a fitted value gets
    a note saying so."""
    tied = tied or {}
    fitted = copy.deepcopy(raw)
    paths = [each for path in values for each in tied.get(path, (path,))]
    for path, value in values.items():
        for each in tied.get(path, (path,)):
            set_path(fitted, each, _round(value))
            _mark(get_path(fitted, each.rsplit(".", 1)[0]), note)
    out: dict = {}
    for path in paths:
        parts = path.split(".")
        node, source = out, fitted
        for i, part in enumerate(parts):
            child = source[part]
            if isinstance(child, list) or i == len(parts) - 2:
                node[part] = copy.deepcopy(child)
                break
            node = node.setdefault(part, {})
            source = child
    return out


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _mark(mapping: dict, note: str) -> None:
    """A fitted value's note says it was fitted (replacing 'pending calibration')."""
    mapping.pop("source", None)
    mapping["assumption"] = note


def run_calibration(path, patients=None, n_jobs=None, log=print, max_evaluations=None, command=None) -> dict:
    """Fit, write the fitted parameter file and the report (``manifest.json`` in the report folder, last)."""
    started = time.perf_counter()
    path = Path(path)
    spec, targets = load_calibration(path)
    if max_evaluations is not None:
        spec = spec.model_copy(update={"stages": [s.model_copy(update={"max_evaluations": max_evaluations})
                                                  for s in spec.stages]})
    if patients is not None:
        spec = spec.model_copy(update={"patients": patients})
    published = load_targets_file(path.parent / spec.targets_file)
    report_dir = (path.parent / spec.report)
    clear(report_dir)  # the report is unfinished until its manifest is written
    with Calibrator(spec, targets, path, n_jobs=n_jobs) as calibrator:
        priors = calibrator.prior_values(calibrator.parameters)
        values, stages = fit(calibrator, log=log, published=published)
        fit_seconds = time.perf_counter() - started
        final = calibrator.evaluate(values, list(targets))
    contributions = {}
    for stage in stages:
        contributions.update(stage.contributions)
    table = target_rows(calibrator, final.patients, final.outputs, contributions)
    recovered = [(r, calibrator.recover(values, r.analysis, final.patients)) for r in spec.recover]
    import pandas as pd

    if recovered:
        table = pd.concat([table, recovery_rows(spec, published, recovered)], ignore_index=True)
    table = table.astype({"inside": bool, "fitted": bool})
    seconds = time.perf_counter() - started
    text = markdown(spec, table, stages, values, priors, seconds, calibrator.evaluations)
    write_report(report_dir, table, text, f"{spec.name}: model vs published")
    fitted_path = (path.parent / spec.writes)
    write_fitted(fitted_path, calibrator, values, spec, path, report_dir)
    manifest = calibration_manifest(calibrator, spec, path, fitted_path, values, stages,
                                    {"fit_seconds": round(fit_seconds, 3),
                                     "total_seconds": round(time.perf_counter() - started, 3),
                                     "evaluations": calibrator.evaluations}, command)
    for parameter, value, bound in parameters_at_bounds(spec, stages):
        message = f"fitted parameter {parameter} = {value:.6g} sits at the bound {bound:g} of its search range"
        manifest.warn(message)
        log(f"warning: {message} (a failure of the fit, not a result)")
    manifest.write(report_dir)
    log(f"fitted parameters: {display_path(fitted_path)}")
    log(f"report: {display_path(report_dir / 'report.md')}")
    return {"table": table, "values": values, "stages": stages, "seconds": seconds}


def calibration_manifest(calibrator: Calibrator, spec, spec_path: Path, fitted_path: Path, values: dict, stages,
                         timings: dict, command) -> Manifest:
    """The report folder's manifest: the scenario simulated with the fitted values."""
    return Manifest(
        "calibrate", calibrator.scenario(values), spec.seed,
        settings={"calibration": spec.name, "calibration_file": display_path(spec_path),
                  "patients": calibrator.patients, "policy": spec.policy, "n_jobs": calibrator.n_jobs, "starts": spec.starts,
                  "stages": [{"name": s.name, "max_evaluations": s.max_evaluations, "targets": list(s.targets),
                              "parameters": [p.path for p in s.parameters]} for s in spec.stages]},
        files=["report.csv", "report.md", "report.png"], timings=timings, command=command,
        extra={"fitted_file": os.path.relpath(fitted_path, spec_path.parent), "values": dict(values),
               "objective": {s.name: {"before": s.objective_before, "after": s.objective_after} for s in stages}})


def write_fitted(fitted_path: Path, calibrator: Calibrator, values: dict, spec, spec_path: Path, report_dir: Path):
    scenario_rel = os.path.relpath(calibrator.scenario_path, fitted_path.parent)
    report_rel = os.path.relpath(report_dir / "report.md", spec_path.parent.parent)
    note = f"fitted to published targets by carsim calibrate {spec_path.name} (see {report_rel})"
    header = (f"# Fitted parameters written by `carsim calibrate {spec_path.name}` "
              f"(seed {spec.seed}, {spec.patients} patients) on {_dt.date.today().isoformat()}.\n"
              "# Re-run the calibration to change them; edit the model file for anything else.\n")
    overrides = fitted_overrides(calibrator.raw, values, note, calibrator.tied)
    body = {"extends": scenario_rel, **overrides}
    text = header + yaml.safe_dump(body, sort_keys=False, width=110)
    atomic_write(fitted_path, lambda p: p.write_text(text))

