"""The terminal table: key metrics per policy, readable without the files."""

from __future__ import annotations

import math

import pandas as pd

# (label, metric, origin, time_months, kind)
KEY_METRICS = [
    ("Infused (of enrolled)", "infused", "enrollment", None, "pct"),
    ("CR/CRi (of infused)", "cr", "infusion", None, "pct"),
    ("EFS 12 mo", "efs", "infusion", 12, "pct"),
    ("EFS 24 mo", "efs", "infusion", 24, "pct"),
    ("EFS 60 mo", "efs", "infusion", 60, "pct"),
    ("OS 12 mo", "os", "infusion", 12, "pct"),
    ("OS 24 mo", "os", "infusion", 24, "pct"),
    ("OS 60 mo", "os", "infusion", 60, "pct"),
    ("OS 60 mo (ITT)", "os", "enrollment", 60, "pct"),
    ("Relapse by 24 mo (CIR)", "cir", "infusion", 24, "pct"),
    ("RMST OS, months (ITT)", "rmst_os", "enrollment", None, "num"),
    ("HSCT (of infused)", "hsct", "infusion", None, "pct"),
    ("Transplant deaths", "hsct_death", "infusion", None, "pct"),
    ("Reinfused", "reinfusion", "infusion", None, "pct"),
    ("Vein-to-vein, median days", "vein_to_vein_days", "infusion", None, "num"),
]


def _select(summary: pd.DataFrame, policy, metric, origin, time):
    rows = summary[(summary.policy == policy) & (summary.metric == metric) & (summary.origin == origin)]
    if time is not None:
        rows = rows[rows.time_months == time]
    return rows.iloc[0] if len(rows) else None


def _cell(row, kind) -> str:
    if row is None or row.estimate is None or (isinstance(row.estimate, float) and math.isnan(row.estimate)):
        return "-"
    scale, fmt = (100.0, "{:.1f}") if kind == "pct" else (1.0, "{:.1f}")
    text = fmt.format(row.estimate * scale)
    if not (math.isnan(row.lower) or math.isnan(row.upper)):
        text += f" ({fmt.format(row.lower * scale)}-{fmt.format(row.upper * scale)})"
    return text


def policy_table(summary: pd.DataFrame, policies: list[str]) -> str:
    """Aligned text table: one row per key metric, one column per policy."""
    header = ["", *policies]
    lines = [header]
    for label, metric, origin, time, kind in KEY_METRICS:
        lines.append([label + (" %" if kind == "pct" else "")]
                     + [_cell(_select(summary, p, metric, origin, time), kind) for p in policies])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = []
    for k, row in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
