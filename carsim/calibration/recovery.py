"""Do the input hazard ratios come back out?

Published hazard ratios were estimated with Cox models on observed data.
The model uses them (and fitted baselines) as inputs; here a Cox model is fitted
to the simulated cohort the way the paper did, and its HR is compared with
the published one.  lifelines is the reference implementation.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd

from ..scenario.conditions import parse_condition, vectorise_condition

DAY28 = 28.0
MONTH3 = 365.25 / 4


def _fit_cox(frame: pd.DataFrame, penalizer: float = 0.0, **options):
    """lifelines' Cox fit without the overflow warnings of its Newton steps on
    (near-)separated data: a fit that does not converge raises instead.

    lifelines' default Newton step (0.95) can overshoot and run off to a
    coefficient of -40 with no standard error on ordinary data (seen on a
    lineage-switch fit with 24 and 34 events); a fit without finite standard
    errors is redone with half steps, which reach the same maximum."""
    from lifelines import CoxPHFitter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fitter = CoxPHFitter(penalizer=penalizer).fit(frame, "duration", "event", **options)
        if not np.all(np.isfinite(fitter.summary["se(coef)"])):
            fitter = CoxPHFitter(penalizer=penalizer).fit(frame, "duration", "event",
                                                          fit_options={"step_size": 0.5}, **options)
        return fitter


def _cox(frame: pd.DataFrame, covariate: str, adjusted_for: tuple[str, ...] = ()) -> tuple[float, float, float, int]:
    """HR of ``covariate`` (95% CI, events), multivariable when ``adjusted_for`` names further columns."""
    from lifelines.exceptions import ConvergenceError

    columns = ["duration", "event", covariate, *adjusted_for]
    try:
        fitter = _fit_cox(frame[columns])
    except ConvergenceError:  # (near) separation, e.g. no event in one group: a small ridge penalty
        fitter = _fit_cox(frame[columns], penalizer=0.01)
    summary = fitter.summary.loc[covariate]
    return (float(summary["exp(coef)"]), float(summary["exp(coef) lower 95%"]),
            float(summary["exp(coef) upper 95%"]), int(frame["event"].sum()))


def _relapse_from(p: dict, landmark_days: float):
    """Responders relapse-free, alive and untransplanted at ``landmark`` days
    after infusion: time from the landmark to relapse (death censors)."""
    since = p["end_day"] - p["infusion_day"]
    relapse = p["relapse_day"] - p["infusion_day"]
    hsct = p["first_hsct_day"] - p["infusion_day"]
    at_risk = p["cr"] & (since >= landmark_days) & ~(relapse <= landmark_days) & ~(hsct <= landmark_days)
    # Transplant changes the hazard: censor there, as surveillance studies do.
    stop = np.fmin(np.where(np.isnan(relapse), since, relapse), np.where(np.isnan(hsct), np.inf, hsct))
    event = ~np.isnan(relapse) & (relapse <= stop)
    return at_risk, stop - landmark_days, event


def _survival_by(p: dict, endpoint: str, covariate: str, flag) -> tuple:
    """Cox PH of ``endpoint`` (efs, os) from infusion, infused patients, by a yes/no ``flag`` per patient."""
    from ..experiment.metrics import endpoint_arrays

    mask, durations, events = endpoint_arrays(p, endpoint, "infusion")
    frame = pd.DataFrame({"duration": durations, "event": events.astype(int), covariate: flag[mask].astype(int)})
    return _cox(frame, covariate)


def _prior_lines_os(p: dict, high_burden) -> tuple:
    """Multivariable Cox PH of OS from infusion on the number of prior lines
    (per line) and high marrow burden, infused patients."""
    from ..experiment.metrics import endpoint_arrays

    mask, durations, events = endpoint_arrays(p, "os", "infusion")
    frame = pd.DataFrame({"duration": durations, "event": events.astype(int),
                          "prior_lines": np.asarray(p["prior_lines"], dtype=float)[mask],
                          "high_burden": high_burden[mask].astype(int)})
    return _cox(frame, "prior_lines", adjusted_for=("high_burden",))


def _relapse_by(p: dict, covariate: str, flag, phenotype: str | None = None) -> tuple:
    """Cox PH of relapse (of one phenotype, the others censoring: cause-specific)
    from infusion among responders, death and HSCT censoring, by ``flag``."""
    at_risk, durations, events = _relapse_from(p, 0.0)
    if phenotype is not None:
        events = events & (p["relapse_phenotype"] == phenotype)
    frame = pd.DataFrame({"duration": durations[at_risk], "event": events[at_risk].astype(int),
                          covariate: flag[at_risk].astype(int)})
    return _cox(frame, covariate)


def recover(p: dict, analysis: str, high_burden_definition: str | None = None) -> dict:
    """Hazard ratio, 95% CI, events and a one-line method for ``analysis``;
    ``high_burden_definition``: the burden analyses' high-burden group, a
    condition on baseline covariates (default ``marrow_blasts_infusion >= 5``)."""
    high_burden = p["marrow_blasts_infusion"] >= 5
    contrast = ">= 5% vs < 5% marrow blasts"
    if high_burden_definition is not None:
        test = vectorise_condition(parse_condition(high_burden_definition))
        high_burden = np.asarray(test(SimpleNamespace(**p)), dtype=bool)
        contrast = f"high burden ({high_burden_definition}) vs not"
    if analysis in ("burden_efs", "burden_os"):
        endpoint = analysis.split("_")[1]
        hr, lo, hi, n = _survival_by(p, endpoint, "high_burden", high_burden)
        method = f"Cox PH, {endpoint.upper()} from infusion, {contrast}, infused patients"
    elif analysis in ("burden_relapse", "burden_cd19neg_relapse"):
        phenotype = "cd19neg" if analysis == "burden_cd19neg_relapse" else None
        hr, lo, hi, n = _relapse_by(p, "high_burden", high_burden, phenotype)
        what = "CD19-negative relapse (other relapses censor)" if phenotype else "any relapse"
        method = f"Cox PH: {what} from infusion by {contrast}, responders; death and HSCT censor"
    elif analysis == "prior_lines_os":
        hr, lo, hi, n = _prior_lines_os(p, high_burden)
        method = ("Cox PH, OS from infusion per additional prior line of therapy, adjusted for >= 5% marrow blasts "
                  "(multivariable, as published), infused patients")
    elif analysis == "extramedullary_efs":
        hr, lo, hi, n = _survival_by(p, "efs", "extramedullary", np.asarray(p["extramedullary"], dtype=bool))
        method = "Cox PH, EFS from infusion, active extramedullary disease vs none, infused patients"
    elif analysis == "prior_crs_cd19pos_relapse":
        hr, lo, hi, n = _relapse_by(p, "two_or_more_crs", np.asarray(p["prior_crs"]) >= 2, "cd19pos")
        method = ("Cox PH: CD19-positive relapse (other relapses censor) from infusion by >= 2 vs 1 prior CRs, "
                  "responders; death and HSCT censor")
    elif analysis in ("mrd_day28_relapse", "mrd_month3_relapse"):
        landmark, column = (DAY28, "mrd_day28_positive") if analysis == "mrd_day28_relapse" else \
            (MONTH3, "mrd_month3_positive")
        at_risk, durations, events = _relapse_from(p, landmark)
        tested = at_risk & ~np.isnan(p[column])
        frame = pd.DataFrame({"duration": durations[tested], "event": events[tested].astype(int),
                              "mrd_positive": p[column][tested].astype(int)})
        hr, lo, hi, n = _cox(frame, "mrd_positive")
        method = (f"Cox PH landmark at day {landmark:.0f}: relapse by NGS-MRD result, informative responders "
                  "relapse-free and untransplanted at the landmark; death and HSCT censor")
    elif analysis == "fludarabine_relapse":
        hr, lo, hi, n = _relapse_by(p, "fludarabine_suboptimal", np.asarray(p["fludarabine_suboptimal"], dtype=bool))
        method = ("Cox PH: relapse from infusion by fludarabine exposure (AUC < 13.8 mg*h/L), responders; death and "
                  "HSCT censor")
    elif analysis in ("kmt2a_relapse", "kmt2a_lineage_switch"):
        phenotype = "lineage_switch" if analysis == "kmt2a_lineage_switch" else None
        hr, lo, hi, n = _relapse_by(p, "kmt2a", np.asarray(p["kmt2a"], dtype=bool), phenotype)
        what = "any relapse" if analysis == "kmt2a_relapse" else "lineage switch (other relapses censor)"
        method = f"Cox PH: {what} from infusion by KMT2A rearrangement, responders; death and HSCT censor"
    elif analysis == "bca_loss_relapse":
        hr, lo, hi, n = _bca_time_varying(p)
        method = ("Cox with time-varying covariate: B-cell recovery seen within the first year; relapse from "
                  "infusion among responders; death and HSCT censor")
    else:
        raise ValueError(f"unknown analysis {analysis!r}")
    return {"hr": hr, "lower": lo, "upper": hi, "events": n, "method": method}


def _bca_time_varying(p: dict):
    from lifelines import CoxTimeVaryingFitter

    at_risk, durations, events = _relapse_from(p, 0.0)
    ids = np.nonzero(at_risk)[0]
    loss = (p["bca_loss_detected_day"] - p["infusion_day"])[ids]
    loss = np.where(loss <= 365.25, loss, np.nan)  # B-cell recovery within the first year
    stop = durations[ids]
    event = events[ids]
    rows = []
    for pid, t_loss, t_stop, e in zip(ids, loss, stop, event, strict=True):
        if np.isnan(t_loss) or t_loss >= t_stop:
            rows.append((pid, 0.0, max(t_stop, 1e-6), int(e), 0))
        elif t_loss <= 0:
            rows.append((pid, 0.0, max(t_stop, 1e-6), int(e), 1))
        else:
            rows.append((pid, 0.0, t_loss, 0, 0))
            rows.append((pid, t_loss, t_stop, int(e), 1))
    frame = pd.DataFrame(rows, columns=["id", "start", "stop", "event", "bca_lost"])
    frame = frame[frame["stop"] > frame["start"]]
    fitter = CoxTimeVaryingFitter().fit(frame, id_col="id", start_col="start", stop_col="stop", event_col="event")
    s = fitter.summary.loc["bca_lost"]
    return (float(s["exp(coef)"]), float(s["exp(coef) lower 95%"]), float(s["exp(coef) upper 95%"]),
            int(frame["event"].sum()))


def simulate_hsct_arms(model, n_patients: int, seed: int, replication: int = 0) -> tuple:
    """The cohort under ``observe`` and under ``hsct_all`` (common random
    numbers): the two arms :func:`consolidative_hsct_effect` compares."""
    from ..model.definition import ModelDefinition
    from ..model.simulation import simulate_policies

    wanted = ["observe", "hsct_all"]
    if any(policy not in model.policies for policy in wanted):  # e.g. a calibration that runs observe alone
        scenario = model.scenario
        model = ModelDefinition(scenario.model_copy(update={"run": scenario.run.model_copy(update={"policies": wanted})}))
    return tuple(simulate_policies(model, wanted, replication, n_patients, seed, record_events=False))


def consolidative_hsct_effect(model, n_patients: int, seed: int, replication: int = 0,
                              endpoint: str = "relapse", arms: tuple | None = None) -> dict:
    """The effective relapse hazard ratio of consolidative HSCT, measured the
    way a comparison of transplanted and untransplanted responders would:
    the same HSCT-naive responders under ``hsct_all`` and under ``observe``
    (common random numbers), followed from the day each was transplanted
    under ``hsct_all``; relapse is the event, death censors (cause-specific
    Cox, robust variance clustered by patient).  Also by B-cell aplasia at
    the day of HSCT (lost before it, or intact), where the published pattern
    is a clearer benefit after early loss (Summers TCT 2022).

    ``arms``: the two simulated arms (:func:`simulate_hsct_arms`), when
    already at hand (relapse and LFS read the same simulation); ``model``
    is then not needed.

    Returns {"overall"|"bca_lost"|"bca_intact": {"hr", "lower", "upper",
    "patients", "events"}}."""
    observe, hsct_all = arms if arms is not None else simulate_hsct_arms(model, n_patients, seed, replication)
    o, h = observe.outcomes, hsct_all.outcomes
    prior = np.asarray(observe.covariates["prior_hsct"], dtype=bool)
    day = h["first_hsct_day"]
    transplanted = h["consolidative_hsct"] & ~prior & ~np.isnan(day)

    def at_risk(p):  # relapse-free and alive on the day of HSCT
        return (p["end_day"] > day) & ~(p["relapse_day"] <= day)

    eligible = transplanted & at_risk(o) & at_risk(h)
    bca_lost = ~np.isnan(h["bca_loss_day"]) & (h["bca_loss_day"] <= day)

    def arm(p, treated):
        relapsed = ~np.isnan(p["relapse_day"])
        end = np.where(relapsed, p["relapse_day"], p["end_day"])
        event = relapsed if endpoint == "relapse" else relapsed | ~np.isnan(p["death_day"])  # LFS: death too
        return pd.DataFrame({"patient": np.nonzero(eligible)[0], "duration": np.maximum(end - day, 1e-6)[eligible],
                             "event": event[eligible].astype(int), "hsct": treated,
                             "bca_lost": bca_lost[eligible]})

    frame = pd.concat([arm(o, 0), arm(h, 1)], ignore_index=True)
    out = {}
    for name, rows in (("overall", frame), ("bca_lost", frame[frame.bca_lost]), ("bca_intact", frame[~frame.bca_lost])):
        fitter = _fit_cox(rows[["duration", "event", "hsct", "patient"]], cluster_col="patient")
        s = fitter.summary.loc["hsct"]
        out[name] = {"hr": float(s["exp(coef)"]), "lower": float(s["exp(coef) lower 95%"]),
                     "upper": float(s["exp(coef) upper 95%"]), "patients": int(rows["patient"].nunique()),
                     "events": int(rows["event"].sum())}
    return out


def hsct_recovery(model, n_patients: int, seed: int, endpoint: str = "relapse", arms: tuple | None = None) -> dict:
    """:func:`consolidative_hsct_effect` as a recovered-input row: the overall
    HR, with the HRs by B-cell aplasia at HSCT in the method text."""
    effect = consolidative_hsct_effect(model, n_patients, seed, endpoint=endpoint, arms=arms)
    overall, lost, intact = effect["overall"], effect["bca_lost"], effect["bca_intact"]
    what = ("relapse from the day of HSCT, death censors" if endpoint == "relapse"
            else "relapse or death (leukaemia-free survival) from the day of HSCT")
    method = (f"Cox PH (clustered): the same HSCT-naive responders under hsct_all vs observe, {what}; "
              f"after B-cell aplasia loss HR {lost['hr']:.2f} "
              f"({lost['lower']:.2f}-{lost['upper']:.2f}, {lost['patients']} patients), with aplasia intact HR "
              f"{intact['hr']:.2f} ({intact['lower']:.2f}-{intact['upper']:.2f}, {intact['patients']} patients)")
    return {"hr": overall["hr"], "lower": overall["lower"], "upper": overall["upper"], "events": overall["events"],
            "method": method}
