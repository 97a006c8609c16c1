"""``report.html``: one self-contained page per results folder, for reading
and for sharing (inline CSS, figures as base64 images, no scripts and no
network).  It shows the scenario's name and description, the settings and
seed, the key tables and figures, the warnings and the provenance (package
version, commit, scenario hash, library versions), all read from the
folder's files and its manifest.

Every study writes it just before its ``manifest.json``
(:meth:`~carsim.experiment.manifest.Manifest.write`); ``carsim report DIR``
builds it again for a finished folder
(:func:`~carsim.experiment.manifest.rebuild_report`)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from .._io import atomic_write
from .readable import shown_indices

REPORT = "report.html"
# Key tables per study, in the order shown (CSV stems); other CSV files
# (every draw, every trial, every sample) stay in the folder.
KEY_TABLES = {
    "run": ("economics", "costs_by_category"),
    "psa": ("psa_summary", "psa_incremental", "psa_probability_best", "psa_parameter_summary", "evpi", "evppi"),
    "dsa": ("tornado",),
    "gsa": ("gsa_indices",),
    "trial": ("power",),
    "calibrate": ("report",),
}
TITLES = {"economics": "Costs, QALYs and cost-effectiveness", "costs_by_category": "Costs by category",
          "psa_summary": "Outcomes over the draws", "psa_incremental": "Each policy minus the reference, over the draws",
          "psa_probability_best": "Probability each policy is best", "psa_parameter_summary":
          "Drawn parameters against their distributions", "evpi": "Expected value of perfect information",
          "evppi": "Expected value of partial perfect information", "tornado": "One-way sensitivity (tornado)",
          "gsa_indices": "Global sensitivity indices", "power": "Power and type I error",
          "report": "Model against published targets"}
FIGURE_CAPTIONS = {
    "survival.png": "Kaplan-Meier event-free and overall survival from infusion per policy, with 95% confidence "
                    "bands and the numbers at risk.",
    "relapse_incidence.png": "Cumulative incidence of relapse among responders, stacked by phenotype.",
    "psa_scatter.png": "Incremental outcomes per draw against the reference policy.",
    "ce_plane.png": "Cost-effectiveness plane.", "ceac.png": "Cost-effectiveness acceptability curves.",
    "tornado.png": "One-way sensitivity: the outcome at each parameter's low and high value.",
    "gsa.png": "Global sensitivity indices with 95% intervals.",
    "power.png": "Rejection rate against sample size, one panel per assumption combination.",
    "report.png": "Model values against the published targets.",
}
LONG_TABLE = 30  # rows; a longer table with a metric column is split by outcome
# Columns that are shares or probabilities: shown as percentages
SHARE_COLUMNS = ("share", "probability", "probability_cost_effective", "prob_better", "rejection_rate",
                 "rate_lower", "rate_upper")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1200px;padding:0 1rem;color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2.2rem}
h3{margin-top:1.4rem;font-size:1.05rem}.sub{color:#57606a;margin-top:0}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.86rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fbfcfd}figure{margin:1rem 0}
figure img{max-width:100%;height:auto;border:1px solid #eaeef2}figcaption{color:#57606a;font-size:.88rem}
.warning{background:#fff8c5;border-left:4px solid #d4a72c;padding:.4rem .7rem;margin:.3rem 0}
.scroll{overflow-x:auto}code{background:#f6f8fa;padding:0 .2rem}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _is_number(value) -> bool:
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def html_table(frame, table_id: str | None = None) -> str:
    """A DataFrame as an HTML table: numbers as the Markdown tables show them, right-aligned."""
    from .tables import format_cell

    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False, name=None):
        cells = "".join(f'<td class="num">{_e(format_cell(v))}</td>' if _is_number(v) or str(v).endswith("%")
                        else f"<td>{_e(format_cell(v))}</td>" for v in row)
        rows.append(f"<tr>{cells}</tr>")
    ident = f' id="{_e(table_id)}"' if table_id else ""
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _percentages(frame):
    """Share and probability columns as percentages (text), other columns as they are."""
    columns = [c for c in frame.columns if c in SHARE_COLUMNS]
    if not columns:
        return frame
    from .readable import format_value

    frame = frame.copy()
    for column in columns:
        frame[column] = [format_value(v, "share") for v in frame[column]]
    return frame


def _split_by_outcome(frame) -> list[tuple[str, object]]:
    """A long table with a ``metric`` column as one table per metric (and origin)."""
    if len(frame) <= LONG_TABLE or "metric" not in frame.columns:
        return [("", frame)]
    keys = ["metric", "origin"] if "origin" in frame.columns else ["metric"]
    out = []
    for values, part in frame.groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        label = " from ".join(str(v) for v in values)
        out.append((label, part.drop(columns=keys)))
    return out


def _sections_html(parts, table_id: str) -> str:
    blocks = []
    for k, (heading, table) in enumerate(parts):
        blocks.append((f"<h3>{_e(heading)}</h3>" if heading else "") + html_table(table, f"{table_id}-{k}"))
    return "".join(blocks)


def _run_tables(folder: Path, manifest: dict) -> list[str]:
    import pandas as pd

    from .readable import SUMMARY_TITLE, comparison_title, sections

    policies = manifest.get("policies") or manifest.get("settings", {}).get("policies") or []
    out = []
    if (folder / "comparison.csv").exists():
        comparison = pd.read_csv(folder / "comparison.csv")
        if not comparison.empty:
            out.append(f'<section id="comparison"><h2>{_e(comparison_title(comparison["reference"].iloc[0]))}</h2>'
                       + _sections_html(sections(comparison, policies, "difference"), "comparison") + "</section>")
    if (folder / "summary.csv").exists():
        summary = pd.read_csv(folder / "summary.csv")
        out.append(f'<section id="summary"><h2>{_e(SUMMARY_TITLE)}</h2>'
                   + _sections_html(sections(summary, policies), "summary") + "</section>")
    return out


def _key_tables(folder: Path, manifest: dict) -> list[str]:
    import pandas as pd

    study = manifest.get("study")
    out = _run_tables(folder, manifest) if study == "run" else []
    for stem in KEY_TABLES.get(study, ()):
        path = folder / f"{stem}.csv"
        if not path.exists():
            continue
        frame = pd.read_csv(path)
        if stem == "gsa_indices" and "S1" in frame.columns:
            frame = shown_indices(frame)
        out.append(f'<section id="{_e(stem)}"><h2>{_e(TITLES.get(stem, stem))}</h2>'
                   + _sections_html(_split_by_outcome(_percentages(frame)), stem) + "</section>")
    return out


def _figures(folder: Path, manifest: dict) -> str:
    names = [f for f in manifest.get("files", []) if f.endswith(".png") and (folder / f).exists()]
    blocks = []
    for name in names:
        data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
        caption = FIGURE_CAPTIONS.get(name, "")
        stem = name.removesuffix(".png")
        blocks.append(f'<figure id="fig-{_e(stem)}"><img alt="{_e(stem)}: {_e(caption)}" '
                      f'src="data:image/png;base64,{data}"><figcaption>{_e(name)}: {_e(caption)}</figcaption></figure>')
    return f'<section id="figures"><h2>Figures</h2>{"".join(blocks) or "<p>No figures.</p>"}</section>'


def _value(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def _pairs_table(pairs, table_id: str) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_value(v))}</td></tr>" for k, v in pairs)
    return f'<table id="{_e(table_id)}"><tbody>{rows}</tbody></table>'


def build_report(folder, manifest: dict) -> str:
    """The page for ``folder``, whose manifest is ``manifest`` (a dict)."""
    folder = Path(folder)
    study = manifest.get("study", "")
    scenario = manifest.get("resolved_scenario") or {}
    name = manifest.get("scenario") or scenario.get("name") or folder.name
    description = scenario.get("description", "")
    settings = [("seed", manifest.get("seed")), *manifest.get("settings", {}).items(),
                ("command", " ".join(manifest.get("command") or []))]
    warnings = manifest.get("warnings") or []
    warning_html = ("".join(f'<div class="warning">{_e(w)}</div>' for w in warnings)
                    if warnings else "<p>None.</p>")
    commit = manifest.get("carsim_commit")
    provenance = [("carsim version", manifest.get("carsim_version")),
                  ("carsim commit", (f"{commit['commit']}{' (with modified files)' if commit.get('modified') else ''}"
                                     if isinstance(commit, dict) else "not run from a source checkout")),
                  ("scenario SHA-256", manifest.get("scenario_sha256")), ("created", manifest.get("created")),
                  ("platform", manifest.get("platform")),
                  *((f"{lib} version", v) for lib, v in (manifest.get("versions") or {}).items()),
                  ("timings (seconds)", manifest.get("timings"))]
    files = [f for f in manifest.get("files", []) if f != REPORT]
    body = [
        f"<header><h1>{_e(name)}: {_e(study)}</h1>",
        f'<p class="sub">{_e(description)}</p>' if description else "",
        (f'<p class="sub">carsim {_e(manifest.get("carsim_version", ""))}, {_e(manifest.get("created", ""))}</p>'
        "</header>"),
        f'<section id="settings"><h2>Settings</h2>{_pairs_table(settings, "settings-table")}</section>',
        f'<section id="warnings"><h2>Warnings</h2>{warning_html}</section>',
        _figures(folder, manifest),
        *_key_tables(folder, manifest),
        (f'<section id="provenance"><h2>Provenance</h2>{_pairs_table(provenance, "provenance-table")}'
        f'<p>Files in this folder: {", ".join(f"<code>{_e(f)}</code>" for f in files)}.</p></section>'),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(name)}: {_e(study)} report</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def write_report(folder, manifest: dict) -> Path:
    """Write ``folder/report.html`` atomically."""
    path = Path(folder) / REPORT
    text = build_report(folder, manifest)
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
    return path
