"""``carsim calibrate``: fit, write the fitted parameter file, write the report."""

from __future__ import annotations

import copy
import datetime as _dt
import os
import time
from pathlib import Path

import yaml

from .._io import atomic_write
from ..errors import CarsimError, display_path
from ..experiment.manifest import Manifest, clear
from ..experiment.parallel import progress_bar
from ..scenario import load_scenario
from ..scenario.paths import label_of, locate, parent_of, set_value_at, value_at
from .fit import Calibrator, fit, match_interval
from .report import markdown, parameters_at_bounds, recovery_rows, target_rows, write_report
from .spec import load_calibration, load_targets_file
from .synthesis import SynthesisResult, synthesize
from .uncertainty import Posterior, sample_posterior


def fitted_overrides(raw: dict, values: dict, note: str, tied: dict | None = None) -> dict:
    """The smallest mapping that, extending the model, sets ``values``.

    A value inside a list of labelled entries (one multiplier, say) brings only
    its entry, which ``extends`` merges by label; an unlabelled list comes
    whole.  The mapping holding a fitted value gets a note saying so."""
    tied = tied or {}
    fitted = copy.deepcopy(raw)
    paths = [each for path in values for each in tied.get(path, (path,))]
    for path, value in values.items():
        for each in tied.get(path, (path,)):
            set_value_at(fitted, each, _round(value))
            _mark(value_at(fitted, parent_of(each)), note)
    out: dict = {}
    for path in paths:
        loc = locate(fitted, path)
        node, source = out, fitted
        for i, part in enumerate(loc[:-1]):
            child = source[part]
            if i == len(loc) - 2:
                node[part] = copy.deepcopy(child)
                break
            if isinstance(child, list):
                entry = child[loc[i + 1]]
                if label_of(entry) is None:  # positions: the whole list
                    node[part] = copy.deepcopy(child)
                    break
                entries = node.setdefault(part, [])
                mine = next((e for e in entries if e["label"] == entry["label"]), None)
                if mine is None:
                    entries.append(copy.deepcopy(entry))
                else:
                    mine.update(copy.deepcopy(entry))
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


def run_calibration(path, patients=None, n_jobs=None, log=print, max_evaluations=None, command=None,
                    out=None) -> dict:
    """Fit, write the fitted parameter file and the report (``manifest.json`` in the report folder, last).

    ``out``: a results folder that takes both (the fitted file under the name
    the calibration file gives it); None: the tracked places the calibration
    file names (``writes:`` and ``report:``)."""
    started = time.perf_counter()
    path = Path(path)
    spec, targets = load_calibration(path)
    if max_evaluations is not None:
        spec = spec.model_copy(update={"stages": [s.model_copy(update={"max_evaluations": max_evaluations})
                                                  for s in spec.stages]})
    if patients is not None:
        spec = spec.model_copy(update={"patients": patients})
    published = load_targets_file(path.parent / spec.targets_file)
    report_dir = (path.parent / spec.report) if out is None else Path(out)
    clear(report_dir)  # the report is unfinished until its manifest is written
    with Calibrator(spec, targets, path, n_jobs=n_jobs) as calibrator:
        calibrator.progress = progress_bar(None, "calibrating", unit="simulated cohorts")
        priors = calibrator.prior_values(calibrator.parameters)
        values, stages = fit(calibrator, log=log, published=published)
        n_draws = spec.uncertainty.keep if spec.uncertainty is not None else 200
        stages += [synthesize(calibrator, values, synthesis, published, log, n_draws) for synthesis in spec.synthesis]
        intervals = {}
        for match in spec.match:
            interval = published[match.id].get("ci")
            holder = value_at(calibrator.raw, parent_of(match.parameter.path))
            if interval and "distribution" not in holder:
                intervals[match.id] = match_interval(calibrator, values, match, interval)
                (low, high), unreached = intervals[match.id]
                log(f"match {match.id}: published interval {interval[0]:g}-{interval[1]:g} -> "
                    f"{match.parameter.path} {low:.6g}-{high:.6g}"
                    + (f" (not reached: {', '.join(unreached)}; the search bound is kept)" if unreached else ""))
        posterior = (sample_posterior(calibrator, values, spec.uncertainty, log)
                     if spec.uncertainty is not None else None)
        fit_seconds = time.perf_counter() - started
        final = calibrator.evaluate(values, list(targets))
        if calibrator.progress is not None:
            calibrator.progress.close()  # leaves one line: how many cohorts, how long
    contributions = {}
    for stage in stages:
        contributions.update(stage.contributions)
    table = target_rows(calibrator, final.patients, final.outputs, contributions)
    recovered = [(r, calibrator.recover(values, r.analysis, final.patients, r.subgroup, r.high_burden)) for r in spec.recover]
    import pandas as pd

    if recovered:
        table = pd.concat([table, recovery_rows(spec, published, recovered)], ignore_index=True)
    table = table.astype({"inside": bool, "fitted": bool})
    seconds = time.perf_counter() - started
    synthesized = [stage for stage in stages if isinstance(stage, SynthesisResult)]
    text = markdown(spec, table, stages, values, priors, seconds, calibrator.evaluations, intervals, posterior)
    write_report(report_dir, table, text, f"{spec.name}: model vs published")
    fitted_path = (path.parent / spec.writes) if out is None else Path(out) / Path(spec.writes).name
    write_fitted(fitted_path, calibrator, values, spec, path, report_dir, intervals, posterior, synthesized)
    manifest = calibration_manifest(calibrator, spec, path, fitted_path, values, stages,
                                    {"fit_seconds": round(fit_seconds, 3),
                                     "total_seconds": round(time.perf_counter() - started, 3),
                                     "evaluations": calibrator.evaluations}, command)
    if posterior is not None:
        manifest.extra["calibration_uncertainty"] = {
            "samples": posterior.samples, "accepted": posterior.accepted, "kept": len(posterior.draws),
            "effective_sample_size": round(posterior.effective_sample_size, 1), "distinct": posterior.distinct,
            "moves_taken": round(posterior.moves, 3)}
        if posterior.effective_sample_size < MIN_EFFECTIVE_SAMPLES:
            message = (f"calibration uncertainty rests on an effective sample size of "
                       f"{posterior.effective_sample_size:.0f} (< {MIN_EFFECTIVE_SAMPLES}): raise "
                       "uncertainty.chains (more chains from dispersed starts; longer chains mix no better)")
            manifest.warn(message)
            log(f"warning: {message}")
    for result in synthesized:
        messages = []
        if not result.converged:
            messages.append(f"{result.name} stopped at max_evaluations ({result.evaluations} evaluations) before "
                            "converging: raise max_evaluations in the calibration file")
        if result.draws is None:
            messages.append(f"{result.name}: the published figures do not pin down {', '.join(result.values)} (the "
                            "objective is not curved around the fit); PSA keeps them at the fitted values")
        for message in messages:
            manifest.warn(message)
            log(f"warning: {message}")
    for parameter, value, bound in parameters_at_bounds(spec, stages):
        message = f"fitted parameter {parameter} = {value:.6g} sits at the bound {bound:g} of its search range"
        manifest.warn(message)
        log(f"warning: {message} (a failure of the fit, not a result)")
    manifest.write(report_dir)
    log(f"fitted parameters: {display_path(fitted_path)}")
    log(f"report: {display_path(report_dir / 'report.md')}")
    return {"table": table, "values": values, "stages": stages, "seconds": seconds, "folder": report_dir}


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


MIN_EFFECTIVE_SAMPLES = 30  # below this the draws rest on a handful of independent parameter sets


def uncertainty_overrides(body: dict, spec, intervals: dict, posterior: Posterior | None, tied: dict,
                          raw_model: dict, values: dict, synthesized=()) -> None:
    """Matched parameters get the interval matched to the published one (one
    draw for the values tied to them); calibrated and synthesized ones joint
    draws (``calibration_uncertainty``), the two sets paired row by row."""
    by_id = {match.id: match for match in spec.match}
    for match_id, ((low, high), _unreached) in intervals.items():
        parameter = by_id[match_id].parameter
        for place in tied.get(parameter.path, (parameter.path,)):
            holder = value_at(body, parent_of(place))
            holder["distribution"] = {"family": "lognormal", "ci": [_round(low), _round(high)],
                                      "shared": match_id}
    columns, methods = [], []  # (path, column of draws)
    if posterior is not None:
        columns += [(p.path, posterior.draws[:, j]) for j, p in enumerate(posterior.parameters)]
        methods.append(f"approximate Bayesian calibration by Markov chains: {posterior.samples} parameter sets "
                       f"simulated, the chains took {posterior.moves:.0%} of their moves, effective sample size "
                       f"{posterior.effective_sample_size:.0f}, {len(posterior.draws)} joint draws "
                       f"({posterior.distinct} distinct)")
    for result in synthesized or ():
        # The published distribution of a synthesized value no longer applies:
        # its draws come from the synthesis (or none, when it is not pinned down).
        for path in result.values:
            for place in tied.get(path, (path,)):
                value_at(body, parent_of(place))["distribution"] = None
        if result.draws is not None:
            columns += [(p.path, result.draws[:, j]) for j, p in enumerate(result.parameters)]
            methods.append(f"{result.name}: {len(result.draws)} joint draws from the Laplace approximation around "
                           "the fit, paired row by row with the draws above (taken as independent of them)")
    inherited = raw_model.get("calibration_uncertainty")
    if not columns:
        if inherited and set(inherited["parameters"]) & set(values):
            body["calibration_uncertainty"] = None  # draws of values this calibration has changed
        return
    paths = [path for path, _column in columns]
    fitted = [_round(values[path]) for path in paths]
    n_rows = max(len(column) for _path, column in columns)
    draws = [[_round(float(column[i % len(column)])) for _path, column in columns] for i in range(n_rows)]
    groups = [[path, *tied[path][1:]] for path in paths if len(tied.get(path, ())) > 1]
    method = "; ".join(methods)
    if inherited:
        # The model's own calibration draws, for the values not refitted here,
        # are paired row by row with these (the two fits taken as independent).
        keep = [j for j, path in enumerate(inherited["parameters"]) if path not in values]
        rows = inherited["draws"]
        draws = [row + [rows[i % len(rows)][j] for j in keep] for i, row in enumerate(draws)]
        paths = paths + [inherited["parameters"][j] for j in keep]
        fitted = fitted + [inherited["fitted"][j] for j in keep]
        groups += [group for group in inherited.get("tied", []) if group[0] in paths and group[0] not in values]
        method += f"; with the draws of the model it extends for {len(keep)} values not refitted here"
    body["calibration_uncertainty"] = {"method": method, "parameters": paths, "fitted": fitted, "tied": groups,
                                       "draws": draws}


def write_fitted(fitted_path: Path, calibrator: Calibrator, values: dict, spec, spec_path: Path, report_dir: Path,
                 intervals: dict | None = None, posterior: Posterior | None = None, synthesized=()):
    scenario_rel = os.path.relpath(calibrator.scenario_path, fitted_path.parent)
    report_rel = os.path.relpath(report_dir / "report.md", spec_path.parent.parent)
    note = f"fitted to published targets by carsim calibrate {spec_path.name} (see {report_rel})"
    header = (f"# Fitted parameters written by `carsim calibrate {spec_path.name}` "
              f"(seed {spec.seed}, {spec.patients} patients) on {_dt.date.today().isoformat()}.\n"
              "# Re-run the calibration to change them; edit the model file for anything else.\n")
    overrides = fitted_overrides(calibrator.raw, values, note, calibrator.tied)
    body = {"extends": scenario_rel, **overrides}
    uncertainty_overrides(body, spec, intervals or {}, posterior, calibrator.tied, calibrator.raw, values, synthesized)
    text = header + yaml.safe_dump(body, sort_keys=False, width=110, default_flow_style=None)

    def write_checked(part: Path) -> None:
        part.write_text(text)
        try:  # a fitted file that does not load never replaces the last good one
            load_scenario(part)
        except CarsimError as exc:
            raise CarsimError(f"the fitted parameters do not make a valid scenario, so {display_path(fitted_path)} "
                              f"was not written: {exc}") from None

    atomic_write(fitted_path, write_checked)

