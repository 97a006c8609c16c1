"""Tables to read.  A run's summary and comparison: one table per outcome,
one column per policy, shares as percentages, intervals in brackets, numbers
rounded to the digits that mean something.  Written as ``summary.md``,
``summary.tex``, ``comparison.md`` and ``comparison.tex`` beside the CSV files
(which keep full precision for other tools), and shown in ``report.html``."""

from __future__ import annotations

import math

import pandas as pd

from .._io import atomic_write
from .tables import latex_parts, markdown_parts

ECONOMIC = {"cost": "cost per patient", "qaly": "QALYs per patient", "life_years": "life-years per patient",
            "nmb": "net monetary benefit per patient"}
TIMES = {"rmst_os": "restricted mean OS (months)", "wait_manufacturing_days": "median wait for manufacturing (days)",
         "vein_to_vein_days": "median vein-to-vein time (days)",
         "wait_hsct_bed_days": "median wait for a transplant bed (days)"}
SHARES = {"infused": "infused (of enrolled)", "manufacturing_failure": "manufacturing failure (of enrolled)",
          "death_before_infusion": "death before infusion (of enrolled)", "cr": "CR/CRi at day 28 (of infused)",
          "hsct": "HSCT after CAR (of infused)", "hsct_death": "transplant-related death (of infused)",
          "reinfusion": "reinfused (of infused)"}
# (title, metric test) in the order the sections are shown
SECTIONS = (
    ("Event-free survival (EFS)", lambda m: m == "efs"),
    ("Relapse-free survival of responders (RFS)", lambda m: m == "rfs"),
    ("Overall survival (OS)", lambda m: m == "os"),
    ("Cumulative incidence of relapse (CIR), any and by phenotype", lambda m: m == "cir" or m.startswith("cir_")),
    ("Shares of patients", lambda m: m in SHARES or m.startswith(("relapse_share_", "utilisation_"))),
    ("Times", lambda m: m in TIMES),
    ("Costs and QALYs (discounted)", lambda m: m in ECONOMIC),
)


def is_share(metric: str) -> bool:
    """Metrics that are shares of patients or probabilities (shown as percentages)."""
    return metric not in TIMES and metric not in ECONOMIC


def metric_label(metric: str) -> str:
    if metric in SHARES or metric in TIMES or metric in ECONOMIC:
        return {**SHARES, **TIMES, **ECONOMIC}[metric]
    if metric.startswith("relapse_share_"):
        return f"{metric.removeprefix('relapse_share_').replace('_', ' ')} (of relapses)"
    if metric.startswith("utilisation_"):
        return f"{metric.removeprefix('utilisation_').replace('_', ' ')} capacity in use"
    if metric.startswith("cir_"):
        return f"CIR {metric.removeprefix('cir_').replace('_', ' ')}"
    return metric.upper()


def format_value(value, metric: str, difference: bool = False) -> str:
    """One number in the unit of its metric: percentages (percentage points
    for differences) to 0.1, money whole, QALYs and years to 0.01, days and
    months to 0.1; a missing value is '-'.  Rounding removes float noise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    value = float(value)
    if is_share(metric):
        text = f"{round(100 * value, 1) + 0.0:{'+' if difference else ''}.1f}"
        return text + (" pp" if difference else "%")
    if metric in ("cost", "nmb"):
        return f"{round(value) + 0:{'+' if difference else ''},.0f}"
    digits = 2 if metric in ("qaly", "life_years") else 1
    return f"{round(value, digits) + 0.0:{'+' if difference else ''}.{digits}f}"


def _cell(estimate, lower, upper, metric: str, difference: bool) -> str:
    text = format_value(estimate, metric, difference)
    if text == "-" or any(v is None or math.isnan(v) for v in (lower, upper)):
        return text
    low, high = (format_value(v, metric, difference).removesuffix(" pp").removesuffix("%") for v in (lower, upper))
    return f"{text} ({low} to {high})"


def sections(frame: pd.DataFrame, policies, value: str = "estimate") -> list[tuple[str, pd.DataFrame]]:
    """(title, table) per outcome: rows are (outcome, from, month), columns
    the policies (for a comparison: each policy minus the reference)."""
    difference = value == "difference"
    shown = [p for p in policies if p in set(frame["policy"])]
    out = []
    for title, wanted in SECTIONS:
        part = frame[frame["metric"].map(wanted)]
        if part.empty:
            continue
        # Rows grouped by (metric, origin, month) in order of first appearance,
        # read as plain records (a pandas filter per row costs more than the table).
        groups: dict[tuple, dict] = {}
        for record in part.to_dict("records"):
            time = record["time_months"]
            key = (record["metric"], record["origin"], None if pd.isna(time) else time)
            groups.setdefault(key, {})[record["policy"]] = record
        rows = []
        for (metric, origin, time), by_policy in groups.items():
            month = "" if time is None or metric == "rmst_os" else f"{time:g}"
            row = {"outcome": metric_label(metric), "from": origin, "month": month}
            for policy in shown:
                r = by_policy.get(policy)
                row[policy] = "-" if r is None else _cell(r[value], r["lower"], r["upper"], metric, difference)
            rows.append(row)
        table = pd.DataFrame(rows)
        if (table["month"] == "").all():
            table = table.drop(columns="month")
        if difference:
            reference = frame["reference"].iloc[0]
            table = table.rename(columns={p: f"{p} vs {reference}" for p in shown})
        out.append((title, table))
    return out


def markdown_sections(title: str, parts) -> str:
    return "\n".join([f"# {title}\n", *([markdown_parts(parts, level=2)] if parts else [])])


def latex_sections(title: str, parts) -> str:
    return "\n".join([f"% {title}", *([latex_parts(parts)] if parts else [])])


SUMMARY_TITLE = "Summary: estimate (95% Monte Carlo interval) per policy"


def comparison_title(reference: str) -> str:
    return (f"Comparison: each policy minus {reference} (95% Monte Carlo interval; percentage points for shares "
            f"and survival)")


def write_readable(summary: pd.DataFrame, comparison: pd.DataFrame, policies, folder) -> None:
    """``summary.{md,tex}`` and ``comparison.{md,tex}`` in ``folder``."""
    parts = sections(summary, policies)
    documents = [("summary", SUMMARY_TITLE, parts)]
    if not comparison.empty:
        documents.append(("comparison", comparison_title(comparison["reference"].iloc[0]),
                          sections(comparison, policies, "difference")))
    else:
        documents.append(("comparison", "Comparison: a single policy, nothing to compare", []))
    for stem, title, content in documents:
        atomic_write(folder / f"{stem}.md", lambda p, t=title, c=content: p.write_text(markdown_sections(t, c),
                                                                                    encoding="utf-8"))
        atomic_write(folder / f"{stem}.tex", lambda p, t=title, c=content: p.write_text(latex_sections(t, c),
                                                                                     encoding="utf-8"))


def shown_indices(indices: pd.DataFrame) -> pd.DataFrame:
    """Sobol' indices as shown (tables, figure): estimates and interval bounds
    clipped to [0, 1], the range of a share of variance (the CSV keeps the
    estimator's values, which noise can push past it)."""
    shown = indices.copy()
    for column in shown.columns:
        if column.split("_")[0] in ("S1", "ST"):
            shown[column] = shown[column].clip(0.0, 1.0)
    return shown
