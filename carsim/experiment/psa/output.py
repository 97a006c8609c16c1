"""A PSA's results folder: parameters, draws, tables, the scatter and the manifest."""

from __future__ import annotations

import time

import pandas as pd

from ..._io import atomic_write
from ...scenario.schema import Scenario
from ..manifest import Manifest
from ..outcomes import Outcome, resolve_outcome
from ..sensitivity_plots import plot_ce_plane, plot_ceac, plot_psa_scatter
from ..tables import write_table
from .statistics import DIRECTIONS


def scatter_axes(outcome: Outcome, time_months: float) -> Outcome:
    """The x axis of the scatter: incremental EFS (OS when the outcome is EFS),
    from the outcome's origin."""
    metric = "os" if outcome.metric == "efs" else "efs"
    time = outcome.time_months if outcome.time_months is not None else time_months
    return resolve_outcome(metric, time, outcome.origin, phenotypes=())  # efs and os: no phenotype needed


def write_psa(result, scenario: Scenario, fingerprint: dict, inputs: pd.DataFrame,
              scatter_time: float, started: float, command) -> None:
    """Write the tables, the scatter and (last) ``manifest.json`` of ``result``
    (a :class:`~carsim.experiment.psa.run.PsaResult`)."""
    out = result.out
    atomic_write(out / "psa_parameters.csv", lambda p: result.parameters.to_csv(p, index=False))
    atomic_write(out / "psa_draws.csv", lambda p: result.draws.to_csv(p, index=False))
    write_table(inputs, out, "psa_parameter_summary")
    write_table(result.summary, out, "psa_summary", split_by="metric")
    write_table(result.best, out, "psa_probability_best", split_by="metric")
    write_table(result.incremental, out, "psa_incremental", split_by="metric")
    y = result.outcome
    x = scatter_axes(y, scatter_time)
    atomic_write(out / "psa_scatter.png",
                 lambda p: plot_psa_scatter(x.by_policy(result.draws), y.by_policy(result.draws), result.policies,
                                            x.axis_label, y.axis_label, DIRECTIONS.get(y.metric, 0),
                                            f"{scenario.name}: PSA, {fingerprint['items']} draws x "
                                            f"{fingerprint['patients']} patients", p))
    economic_files = []
    if result.economics:
        economics = scenario.economics
        comparator = scenario.economic_comparator
        title = f"{scenario.name}: PSA, {fingerprint['items']} draws x {fingerprint['patients']} patients"
        for stem in ("ceac", "evpi", "evppi"):
            write_table(result.economics[stem], out, stem)
            economic_files += [f"{stem}.{ext}" for ext in ("csv", "md", "tex")]
        atomic_write(out / "ce_plane.png",
                     lambda p: plot_ce_plane(result.economics["cost"], result.economics["qaly"], comparator,
                                             economics.willingness_to_pay, economics.currency, title, p))
        atomic_write(out / "ceac.png",
                     lambda p: plot_ceac(result.economics["ceac"], economics.willingness_to_pay, economics.currency,
                                         title, p))
        economic_files += ["ce_plane.png", "ceac.png"]
    result.timings["total_seconds"] = round(time.perf_counter() - started, 3)
    settings = {"draws": fingerprint["items"], "patients": fingerprint["patients"],
                "chunk_size": fingerprint["chunk_size"], "keep_patients": fingerprint["keep_patients"],
                "engine": fingerprint["engine"], "policies": result.policies,
                "outcome": {"metric": y.metric, "origin": y.origin, "time_months": y.time_months, "label": y.label}}
    Manifest(
        "psa", scenario, fingerprint["seed"], settings=settings,
        files=["run.json", "chunks/", "psa_parameters.csv", "psa_draws.csv",
               *[f"{stem}.{ext}" for stem in ("psa_parameter_summary", "psa_summary", "psa_probability_best",
                                              "psa_incremental") for ext in ("csv", "md", "tex")],
               "psa_scatter.png", *economic_files] + (["patients/"] if fingerprint["keep_patients"] else []),
        warnings=list(result.warnings), timings=result.timings, command=command,
        extra={"analysis": "psa", "draws": fingerprint["items"], "patients": fingerprint["patients"],
               "chunk_size": fingerprint["chunk_size"], "policies": result.policies,
               "reference_policy": result.policies[0],
               "parameters": inputs[["parameter", "family", "point", "interval_low",
                                     "interval_high"]].to_dict("records"),
               "scatter": {"y": y.label, "x": x.label}, "fingerprint": fingerprint},
    ).write(out)
