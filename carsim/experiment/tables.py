"""Report tables in three formats: CSV (for other tools), Markdown (for
reading) and LaTeX (for papers).

``write_table(frame, folder, stem)`` writes ``stem.csv``, ``stem.md`` and
``stem.tex``, each atomically.  CSV keeps full precision; Markdown and LaTeX
show numbers to four significant digits (large numbers in whole units with
thousands separators, values within 1e-9 of zero as 0: float noise) and
missing values as empty cells.
The LaTeX is a plain ``tabular`` with ``booktabs`` rules (no jinja2 or
tabulate needed).
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write

TINY = 1e-9  # shown as 0
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def format_cell(value, digits: int = 4) -> str:
    """A cell as text: integers whole, other numbers to ``digits`` significant digits, NaN empty."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isnan(x):
            return ""
        if abs(x) < TINY:
            return "0"  # float noise of a difference that is zero
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        if 10 ** digits <= abs(x) < 1e15:
            return f"{x:,.0f}"  # whole units, not 6.243e+05
        return f"{x:.{digits}g}"
    return str(value)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def to_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown pipe table (numbers right-aligned)."""
    def cell(value):
        return format_cell(value, digits).replace("|", r"\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---:" if _is_numeric(frame[c]) else "---" for c in frame.columns) + " |"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False, name=None)]
    return "\n".join([header, rule, *rows]) + "\n"


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(frame: pd.DataFrame, digits: int = 4) -> str:
    """A ``tabular`` with booktabs rules (``\\usepackage{booktabs}``)."""
    align = "".join("r" if _is_numeric(frame[c]) else "l" for c in frame.columns)

    def line(values):
        return " & ".join(latex_escape(format_cell(v, digits)) for v in values) + r" \\"

    body = [line(row) for row in frame.itertuples(index=False, name=None)]
    return "\n".join([
        "% requires \\usepackage{booktabs}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        line(frame.columns),
        "\\midrule",
        *body,
        "\\bottomrule",
        "\\end{tabular}",
    ]) + "\n"


def markdown_parts(parts, digits: int = 4, level: int = 3) -> str:
    """(heading, table) pairs as headed Markdown tables (``level``: the heading's #s)."""
    return "\n".join(f"{'#' * level} {heading}\n\n{to_markdown(table, digits)}" for heading, table in parts)


def latex_parts(parts, digits: int = 4) -> str:
    """(heading, table) pairs as LaTeX tables, each under a ``\\paragraph``."""
    return "\n".join(f"\\paragraph{{{latex_escape(heading)}}}\n\n{to_latex(table, digits)}" for heading, table in parts)


def write_table(frame: pd.DataFrame, folder, stem: str, digits: int = 4, shown: pd.DataFrame | None = None,
                split_by: str | None = None) -> list[Path]:
    """Write ``stem.csv``, ``stem.md`` and ``stem.tex`` in ``folder``; returns
    the paths.  ``shown``: the table as Markdown and LaTeX show it (e.g.
    clipped to its possible range), when it differs from the CSV's.
    ``split_by``: a column whose values split the Markdown and LaTeX into one
    headed table each (a long table read by outcome); the CSV stays whole."""
    folder = Path(folder)
    shown = frame if shown is None else shown
    paths = [folder / f"{stem}.csv", folder / f"{stem}.md", folder / f"{stem}.tex"]
    atomic_write(paths[0], lambda p: frame.to_csv(p, index=False))
    if split_by is None or split_by not in shown.columns or shown.empty:
        markdown, latex = to_markdown(shown, digits), to_latex(shown, digits)
    else:
        parts = [(f"{split_by} = {value}", part.drop(columns=split_by))
                 for value, part in shown.groupby(split_by, sort=False)]
        markdown, latex = markdown_parts(parts, digits), latex_parts(parts, digits)
    atomic_write(paths[1], lambda p: p.write_text(markdown, encoding="utf-8"))
    atomic_write(paths[2], lambda p: p.write_text(latex, encoding="utf-8"))
    return paths
