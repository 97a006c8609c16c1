"""The calibration report: every target next to the model, in Markdown, CSV
and a picture; fitted values with each target's share of the objective;
hazard ratios recovered from the simulated cohort."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write
from .fit import MAIN, Calibrator
from .outputs import compute_output, resolve_output
from .spec import interval_kind
from .synthesis import SynthesisResult

REPORT_COLUMNS = ["id", "kind", "what", "cohort", "output", "published", "interval_lower", "interval_upper",
                  "interval", "model", "model_lower", "model_upper", "difference", "inside", "fitted",
                  "objective_share", "note", "source"]


def monte_carlo_interval(calibrator: Calibrator, patients: dict, target, n_boot: int = 200, seed: int = 0):
    """95% patient-bootstrap interval of the model output."""
    m = target.mapping
    group = target.patients(patients[m.subgroup or MAIN])
    n = len(group["end_day"])
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(11,)))
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        sample = {k: v[idx] for k, v in group.items()}
        values.append(compute_output(sample, m.output, m.origin, target.time_months, m.censor_at_hsct,
                                     phenotypes=calibrator.phenotypes))
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < 10:
        return math.nan, math.nan
    return tuple(np.percentile(values, [2.5, 97.5]))


def target_rows(calibrator: Calibrator, patients: dict, outputs: dict, contributions: dict) -> pd.DataFrame:
    total = sum(contributions.values()) or 1.0
    rows = []
    for target_id, target in calibrator.targets.items():
        model = outputs[target_id]
        lo, hi = monte_carlo_interval(calibrator, patients, target, seed=calibrator.spec.seed)
        m = target.mapping
        rows.append({
            "id": target_id, "kind": "target", "what": target.entry.get("what", ""),
            "cohort": (f"subgroup {m.subgroup}" if m.subgroup else "cohort"),
            "output": _describe_output(target, calibrator.phenotypes), "published": target.value,
            "interval_lower": target.lower, "interval_upper": target.upper, "interval": target.interval_kind,
            "model": model, "model_lower": lo, "model_upper": hi,
            "difference": model - target.value if not math.isnan(model) else math.nan,
            "inside": bool(target.inside(model)) if not math.isnan(model) else False,
            "fitted": m.fit, "objective_share": contributions.get(target_id, math.nan) / total,
            "note": m.note, "source": target.entry.get("source", ""),
        })
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def recovery_rows(spec, published: dict, recovered: list[tuple]) -> pd.DataFrame:
    rows = []
    for recovery, result in recovered:
        entry = published[recovery.id]
        ci = entry.get("ci")
        value = float(entry["value"])
        if ci:
            (lo, hi), kind = ci, interval_kind(entry)
        elif recovery.tolerance_ratio:
            r = recovery.tolerance_ratio
            (lo, hi), kind = (value / r, value * r), f"stated tolerance x/ {r:g} (no CI published)"
        else:
            (lo, hi), kind = (math.nan, math.nan), "none published"
        inside = bool(lo <= result["hr"] <= hi) if not math.isnan(lo) else False
        rows.append({
            "id": recovery.id, "kind": "input recovered", "what": entry.get("what", ""),
            "cohort": f"subgroup {recovery.subgroup}" if recovery.subgroup else "cohort",
            "output": result["method"], "published": float(entry["value"]), "interval_lower": lo,
            "interval_upper": hi, "interval": kind,
            "model": result["hr"], "model_lower": result["lower"], "model_upper": result["upper"],
            "difference": result["hr"] - float(entry["value"]), "inside": inside, "fitted": False,
            "objective_share": math.nan, "note": f"{result['events']} events; {recovery.note}".strip("; "),
            "source": entry.get("source", ""),
        })
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def _describe_output(target, phenotypes) -> str:
    m = target.mapping
    origin_free = resolve_output(m.output, phenotypes).origin_free  # its definition fixes its own origin
    text = m.output if origin_free else f"{m.output} from {m.origin}"
    if target.time_months is not None:
        text += f" at {target.time_months:g} mo"
    if m.censor_at_hsct:
        text += ", censored at HSCT"
    if m.among:
        text += f", among {m.among}"
    return text


# A fitted value this close to a bound (5% of the search range, on the
# parameter's own scale) sits at the bound: the fit wanted to go further.
AT_BOUND = 0.05


def _ranges(spec) -> dict:
    """Fitted path -> its Parameter (search range and scale)."""
    ranges = {p.path: p for stage in spec.stages for p in stage.parameters}
    ranges.update({m.parameter.path: m.parameter for m in spec.match})
    ranges.update({p.path: p for synthesis in spec.synthesis for p in synthesis.parameters})
    return ranges


def parameters_at_bounds(spec, stages) -> list[tuple[str, float, float]]:
    """(path, fitted value, the bound it sits at) of every fitted parameter at
    a bound of its search range: a failure of the fit (a structural problem
    or a compensating parameter), never a result."""
    ranges = _ranges(spec)
    found = []
    for stage in stages:
        for path, value in stage.values.items():
            parameter = ranges.get(path)
            if parameter is None:
                continue
            lo, hi = parameter.bounds
            if parameter.scale == "log":
                position = (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
            else:
                position = (value - lo) / (hi - lo)
            if position <= AT_BOUND or position >= 1 - AT_BOUND:
                found.append((path, value, lo if position <= AT_BOUND else hi))
    return found


def _fmt(x, digits=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown(spec, table: pd.DataFrame, stages, values: dict, priors: dict, seconds: float,
             evaluations: int, intervals: dict | None = None, posterior=None) -> str:
    targets = table[table.kind == "target"]
    fitted = targets[targets.fitted]
    inside = int(fitted.inside.sum())
    lines = [f"# Calibration report: {spec.name}", "",
             (f"Model `{spec.scenario}`, {spec.patients} simulated patients per cohort, policy `{spec.policy}`, "
             f"seed {spec.seed}; {evaluations} simulations in {seconds / 60:.1f} min."), "",
             (f"**{inside} of {len(fitted)} fitted targets ({100 * inside / max(len(fitted), 1):.0f}%) fall inside "
             "their published interval or stated tolerance.**"), "",
             *_bound_lines(spec, stages),
             ("Model values carry a 95% Monte Carlo interval (patient bootstrap). Intervals of the published "
             "figures: the published 95% CI where there is one, a binomial 95% interval from n where only n is "
             "published, otherwise a stated tolerance."), "", "## Targets", "",
             "| target | what | published | interval | model (95% MC) | diff | inside | share of objective |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in targets.itertuples():
        lines.append(
            f"| `{row.id}` | {row.what} ({row.output}{'; ' + row.cohort if row.cohort != 'cohort' else ''}) | "
            f"{_fmt(row.published)} | {_fmt(row.interval_lower)}-{_fmt(row.interval_upper)} ({row.interval}) | "
            f"{_fmt(row.model)} ({_fmt(row.model_lower)}-{_fmt(row.model_upper)}) | {_fmt(row.difference)} | "
            f"{'yes' if row.inside else '**no**'}{'' if row.fitted else ' (not fitted)'} | "
            f"{_fmt(row.objective_share, 2)} |")
    outside = targets[~targets.inside]
    if len(outside):
        lines += ["", "## Outside their interval, and why", ""]
        for row in outside.itertuples():
            reason = row.note or "the fit trades this target against the others (see the objective shares)"
            lines.append(f"- `{row.id}` ({row.what}): model {_fmt(row.model)} vs {_fmt(row.published)}. {reason}")
    recovered = table[table.kind == "input recovered"]
    if len(recovered):
        lines += ["", "## Inputs recovered from the simulated cohort", "",
                  "| input | published HR (interval) | recovered HR (95% CI) | inside | method |",
                  "| --- | --- | --- | --- | --- |"]
        for row in recovered.itertuples():
            lines.append(f"| `{row.id}` | {_fmt(row.published, 2)} ({_fmt(row.interval_lower, 2)}-"
                         f"{_fmt(row.interval_upper, 2)}; {row.interval}) | {_fmt(row.model, 2)} "
                         f"({_fmt(row.model_lower, 2)}-"
                         f"{_fmt(row.model_upper, 2)}) | {'yes' if row.inside else '**no**'} | {row.output}; "
                         f"{row.note} |")
    at_bounds = {path for path, _value, _bound in parameters_at_bounds(spec, stages)}
    lines += ["", "## Fitted parameters", "", "| stage | parameter | search range | prior | fitted | at a bound |",
              "| --- | --- | --- | --- | --- | --- |"]
    ranges = _ranges(spec)
    for stage in stages:
        for path, value in stage.values.items():
            r = ranges.get(path)
            search = f"{r.bounds[0]:.6g}-{r.bounds[1]:.6g}{' (log)' if r.scale == 'log' else ''}" if r else "-"
            lines.append(f"| {stage.name} | `{path}` | {search} | {priors[path]:.6g} | {value:.6g} | "
                         f"{'**yes: a failure of the fit**' if path in at_bounds else 'no'} |")
    lines += ["", "| stage | objective before | after | evaluations |", "| --- | --- | --- | --- |"]
    for stage in stages:
        lines.append(f"| {stage.name} | {stage.objective_before:.2f} | {stage.objective_after:.2f} | "
                     f"{stage.evaluations} |")
    lines += _synthesis_lines(stages)
    lines += _uncertainty_lines(spec, values, intervals or {}, posterior)
    lines += ["", "## Sources", ""]
    for row in table.drop_duplicates("id").itertuples():
        lines.append(f"- `{row.id}`: {row.source}")
    return "\n".join(lines) + "\n"


def _synthesis_lines(stages) -> list[str]:
    """Published figures weighed together: each figure at the fit, each parameter with its interval."""
    lines = []
    for result in stages:
        if not isinstance(result, SynthesisResult):
            continue
        lines += ["", f"## Published figures weighed together: {result.id}", "",
                  ("The parameters below minimise the sum of squared standardised gaps on the log scale, each "
                   "published figure weighted by the precision of its 95% CI on the side of the gap; their 95% "
                   "intervals come from the Laplace approximation around the fit, from which PSA takes joint "
                   "draws (so their correlation is kept). "
                   + result.note).strip(), "",
                  "| figure | how | published (95% CI) | model | standardised gap | inside |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for row in result.evidence:
            lines.append(f"| `{row['id']}` | {row['how']} | {row['published']:.3g} ({row['lower']:.3g}-"
                         f"{row['upper']:.3g}) | {row['model']:.3g} | {row['z']:+.2f} | "
                         f"{'yes' if row['inside'] else '**no**'} |")
        lines += ["", "| parameter | fitted | 95% interval (Laplace) |", "| --- | --- | --- |"]
        for path, value in result.values.items():
            interval = result.intervals.get(path)
            shown = f"{interval[0]:.6g}-{interval[1]:.6g}" if interval else "not pinned down (flat objective)"
            lines.append(f"| `{path}` | {value:.6g} | {shown} |")
    return lines


def _uncertainty_lines(spec, values: dict, intervals: dict, posterior) -> list[str]:
    """How the calibrated and matched values carry their uncertainty into PSA."""
    lines = []
    if intervals:
        by_id = {match.id: match for match in spec.match}
        lines += ["", "## Uncertainty of matched parameters", "",
                  ("Each is matched again at both ends of the published interval; PSA draws it from a lognormal "
                   "with those values as its 95% interval."), "",
                  "| input | parameter | matched | interval | not reached |", "| --- | --- | --- | --- | --- |"]
        for match_id, ((low, high), unreached) in intervals.items():
            path = by_id[match_id].parameter.path
            lines.append(f"| `{match_id}` | `{path}` | {values[path]:.6g} | {low:.6g}-{high:.6g} | "
                         f"{', '.join(unreached) or '-'} |")
    if posterior is not None:
        ranges = _ranges(spec)
        lines += ["", "## Calibration uncertainty", "",
                  (f"Approximate Bayesian calibration by Markov chains (ABC-MCMC; flat prior over each search "
                   f"range, a parameter set admissible when every fitted target falls inside its interval): "
                   f"{posterior.samples} parameter sets simulated, {posterior.accepted} of them admissible; the "
                   f"chains took {posterior.moves:.0%} of their moves; effective sample size "
                   f"{posterior.effective_sample_size:.0f} (the smallest over the parameters); "
                   f"{len(posterior.draws)} joint draws ({posterior.distinct} distinct), evenly spaced through "
                   "the chains' second halves, written to the fitted file (`calibration_uncertainty`). PSA "
                   "takes one row per draw, so correlations between the parameters are kept."), "",
                  "| parameter | fitted | draws: median | 95% interval | search range |", "| --- | --- | --- | --- | --- |"]
        for row in posterior.summary():
            r = ranges[row["path"]]
            lines.append(f"| `{row['path']}` | {values[row['path']]:.6g} | {row['median']:.6g} | "
                         f"{row['low']:.6g}-{row['high']:.6g} | {r.bounds[0]:.6g}-{r.bounds[1]:.6g}"
                         f"{' (log)' if r.scale == 'log' else ''} |")
    return lines


def _bound_lines(spec, stages) -> list[str]:
    found = parameters_at_bounds(spec, stages)
    if not found:
        return ["No fitted parameter sits at a bound of its search range.", ""]
    listed = "; ".join(f"`{path}` = {value:.6g} at {bound:g}" for path, value, bound in found)
    headline = (f"**{len(found)} fitted parameter(s) at a bound of the search range: a failure of the fit, not a "
                f"result (the model needs a value the plausible range excludes).** {listed}.")
    return [headline, ""]


def plot(table: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = table[(table.kind == "target") & table.model.notna()]
    rows = rows[rows.published.abs() <= 1.5]  # shares and survival; days and months would squash the axis
    figure = Figure(figsize=(8, 0.38 * len(rows) + 1.5), dpi=110)
    ax = figure.subplots()
    y = np.arange(len(rows))[::-1]
    # Arrays, not Series: matplotlib reads a one-row Series badly.
    published, model = rows.published.to_numpy(dtype=float), rows.model.to_numpy(dtype=float)
    ax.errorbar(published, y + 0.15, xerr=np.array([published - rows.interval_lower.to_numpy(dtype=float),
                                                    rows.interval_upper.to_numpy(dtype=float) - published]),
                fmt="s", color="black", label="published (interval)", capsize=2)
    ax.errorbar(model, y - 0.15, xerr=np.array([np.maximum(model - rows.model_lower.to_numpy(dtype=float), 0),
                                                np.maximum(rows.model_upper.to_numpy(dtype=float) - model, 0)]),
                fmt="o", color="tab:red", label="model (95% MC)", capsize=2)
    ax.set_yticks(y, rows.id)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of patients or survival probability")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    figure.tight_layout()
    figure.savefig(path, format="png")


def write_report(folder: Path, table: pd.DataFrame, text: str, title: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "report.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(folder / "report.md", lambda p: p.write_text(text))
    atomic_write(folder / "report.png", lambda p: plot(table, p, title))
