"""report.html of a run: the readable tables show the numbers of the CSV
files, and ``carsim report`` refuses a folder that is not a results folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from carsim.cli import main
from carsim.experiment.readable import format_value, sections, shown_indices
from carsim.experiment.tables import format_cell


def test_comparison_shows_each_difference_in_percentage_points(baseline_run):
    _, _, folder = baseline_run
    page = (folder / "report.html").read_text()
    comparison = pd.read_csv(folder / "comparison.csv")
    row = comparison[(comparison.policy == "hsct_all") & (comparison.metric == "efs")
                     & (comparison.origin == "infusion") & (comparison.time_months == 18.0)].iloc[0]
    cell = f"{100 * row.difference:+.1f} pp ({100 * row.lower:+.1f} to {100 * row.upper:+.1f})"
    assert f"<td>{cell}</td>" in page.split('<section id="comparison">')[1].split("</section>")[0]
    assert (folder / "comparison.md").read_text().count(cell) == 1
    assert "hsct\\_all vs observe" in (folder / "comparison.tex").read_text()


def test_summary_sections_split_by_outcome_with_percentages(baseline_run):
    _, _, folder = baseline_run
    summary = pd.read_csv(folder / "summary.csv")
    policies = json.loads((folder / "manifest.json").read_text())["policies"]
    parts = dict(sections(summary, policies))
    assert list(parts)[:3] == ["Event-free survival (EFS)", "Relapse-free survival of responders (RFS)",
                               "Overall survival (OS)"]
    os_table = parts["Overall survival (OS)"]
    assert len(os_table) == 2 * 6  # two origins x the report times (with 18)
    infused = summary[(summary.metric == "infused") & (summary.policy == "observe")].iloc[0]
    shares = parts["Shares of patients"].set_index("outcome")
    assert shares.loc["infused (of enrolled)", "observe"].startswith(f"{100 * infused.estimate:.1f}% (")
    times = parts["Times"].set_index("outcome")
    assert "%" not in times.loc["median vein-to-vein time (days)", "observe"]


def test_numbers_are_rounded_without_float_noise():
    assert format_cell(2.776e-18) == "0" and format_cell(-5.712e-30) == "0"
    assert format_cell(624304.37) == "624,304" and format_cell(0.123456) == "0.1235"
    assert format_value(-1e-17, "os", difference=True) == "+0.0 pp"
    assert format_value(0.5, "cr") == "50.0%" and format_value(812345.4, "cost") == "812,345"
    indices = pd.DataFrame({"parameter": ["a"], "S1": [0.97], "S1_lower": [0.9], "S1_upper": [1.08],
                            "ST": [-0.01], "ST_lower": [-0.05], "ST_upper": [0.03]})
    shown = shown_indices(indices)
    assert shown.S1_upper.iloc[0] == 1.0 and shown.ST.iloc[0] == 0.0 and shown.S1.iloc[0] == 0.97


@pytest.mark.parametrize("make, expected", [
    (lambda d: d, "not a finished results folder (no manifest.json"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "expected a carsim manifest (JSON)"),
    (lambda d: (d / "manifest.json").write_text('{"study": "sweep"}'), "with 'study' one of run, psa"),
])
def test_report_on_a_folder_that_is_not_a_results_folder(tmp_path, capsys, make, expected):
    make(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and err.startswith("carsim: error: ")
    assert not (tmp_path / "report.html").exists()


def test_numbers_at_risk_count_patients_still_followed():
    import numpy as np

    from carsim._units import DAYS_PER_MONTH
    from carsim.analysis.plots import numbers_at_risk, risk_ticks

    durations = np.array([0.5, 6.0, 10.0, 40.0]) * DAYS_PER_MONTH  # an event or censoring at each
    assert numbers_at_risk(durations, np.array([0, 6, 12, 24, 48])).tolist() == [4, 3, 1, 1, 0]
    assert risk_ticks(60).tolist() == [0, 12, 24, 36, 48, 60] and risk_ticks(24).tolist() == [0, 6, 12, 18, 24]


def test_shares_in_the_study_tables_are_percentages(baseline_run):
    _, _, folder = baseline_run
    section = (folder / "report.html").read_text().split('<section id="costs_by_category">')[1].split("</section>")[0]
    costs = pd.read_csv(folder / "costs_by_category.csv")
    for row in costs.head(3).itertuples():
        assert f'<td class="num">{100 * row.share:.1f}%</td>' in section
