"""Writing results: files written beside the caller, Parquet tables."""

from __future__ import annotations

import io
import os
import re
import sys

import numpy as np
import pandas as pd
import pytest

from carsim._io import atomic_write
from carsim.experiment import parallel
from carsim.experiment.output import write_parquet_parts
from carsim.experiment.parallel import run_beside


def _write_pid(path):
    path.write_text(str(os.getpid()))


def _fail_unless_in(pid, path):
    if os.getpid() != pid:
        raise OSError("disk full (simulated)")
    path.write_text("written by the caller")


def _interrupted_unless_in(pid, path):
    def write(temporary):
        temporary.write_text("half")
        if os.getpid() != pid:
            raise KeyboardInterrupt  # Ctrl-C reaches the child mid-write
        temporary.write_text("whole")

    atomic_write(path, write)


def _always_fail(path):
    raise ValueError(f"cannot write {path.name}")


@pytest.mark.skipif(not parallel._CAN_FORK, reason="runs inline where fork is unsafe")
def test_work_beside_runs_in_another_process(tmp_path):
    target = tmp_path / "pid.txt"
    run_beside(_write_pid, target).wait()
    assert int(target.read_text()) != os.getpid()


def test_failed_side_work_is_redone_by_the_caller(tmp_path):
    target = tmp_path / "out.txt"
    run_beside(_fail_unless_in, os.getpid(), target).wait()
    assert target.read_text() == "written by the caller"


def test_interrupted_side_work_leaves_no_partial_file(tmp_path):
    """Ctrl-C in the child: its half-written file is removed and it ends
    quietly; the caller (here not interrupted) does the work."""
    target = tmp_path / "figure.png"
    run_beside(_interrupted_unless_in, os.getpid(), target).wait()
    assert target.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]


def test_side_work_error_reaches_the_caller(tmp_path):
    with pytest.raises(ValueError, match="cannot write out.txt"):
        run_beside(_always_fail, tmp_path / "out.txt").wait()


def test_without_fork_the_work_runs_inline(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "_CAN_FORK", False)
    target = tmp_path / "pid.txt"
    handle = run_beside(_write_pid, target)
    assert int(target.read_text()) == os.getpid()  # done before the handle returns
    handle.wait()


def test_parquet_columns_read_back_as_pandas_would_write_them(tmp_path):
    columns = {"replication": np.zeros(3, np.int64), "policy": np.array(["a", "b", "a"], dtype=object),
               "day": np.array([1.5, np.nan, 3.0]), "flag": np.array([True, False, True]),
               "cause": np.array(["", None, "x"], dtype=object), "detail": np.array(["a", 3, "b"], dtype=object)}
    write_parquet_parts([columns], tmp_path / "t.parquet")
    got = pd.read_parquet(tmp_path / "t.parquet")
    expected = pd.DataFrame(columns).astype({"cause": str, "detail": str})  # a non-text value: its str()
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_leaves_one_line_and_is_quiet_elsewhere(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert parallel.parallel_map(abs, [-1, -2, -3], n_jobs=1, progress="work") == [1, 2, 3]
    last = terminal.getvalue().rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert re.fullmatch(r"work: 3 tasks in \d+\.\d s", last), terminal.getvalue()
    counter = parallel.progress_bar(None, "calibrating", unit="simulated cohorts")
    for _ in range(5):
        counter.update()
    counter.close()
    assert re.search(r"\rcalibrating: 5 simulated cohorts in \d+\.\d s\n$", terminal.getvalue())
    elsewhere = io.StringIO()  # not a terminal: nothing at all
    monkeypatch.setattr(sys, "stderr", elsewhere)
    assert parallel.parallel_map(abs, [-1, -2], n_jobs=1, progress="work") == [1, 2]
    assert parallel.progress_bar(None, "calibrating") is None and elsewhere.getvalue() == ""


def test_a_long_table_is_split_by_outcome_in_markdown_and_latex_and_whole_in_csv(tmp_path):
    import pandas as pd

    from carsim.experiment.tables import write_table

    frame = pd.DataFrame({"policy": ["a", "b", "a", "b"], "metric": ["os", "os", "efs", "efs"],
                          "mean": [0.5, 0.6, 0.4, 2.776e-18]})
    csv, md, tex = write_table(frame, tmp_path, "t", split_by="metric")
    assert pd.read_csv(csv).equals(frame)
    text = md.read_text()
    assert text.index("### metric = os") < text.index("### metric = efs")  # in the table's order
    assert text.count("| policy | mean |") == 2 and "| metric |" not in text
    assert "| b | 0 |" in text  # float noise shown as 0
    latex = tex.read_text()
    assert latex.count("\\begin{tabular}") == 2 and "\\paragraph{metric = efs}" in latex


def test_parquet_parts_read_back_as_one_table(tmp_path):
    """Parts written one after the other (text as dictionaries, different in each part)
    read back as the concatenated columns."""
    from carsim.experiment.output import write_parquet_parts

    parts = [{"policy": (np.zeros(2, np.int32), np.array(["a"], dtype=object)), "n": np.arange(2),
              "event": np.array(["x", "y"], dtype=object)},
             {"policy": (np.zeros(3, np.int32), np.array(["b"], dtype=object)), "n": np.arange(2, 5),
              "event": np.array(["y", None, "z"], dtype=object)}]
    write_parquet_parts(iter(parts), tmp_path / "t.parquet")
    got = pd.read_parquet(tmp_path / "t.parquet")
    expected = pd.DataFrame({"policy": ["a", "a", "b", "b", "b"], "n": np.arange(5),
                             "event": ["x", "y", "y", "None", "z"]})
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_parquet_row_groups_carry_statistics_of_the_label_columns_only(tmp_path):
    """A reader can skip row groups by replication, policy or patient (each
    row group's minimum and maximum); the outcome columns carry none."""
    import pyarrow.parquet as pq

    from carsim.experiment.output import write_parquet_parts

    parts = [{"replication": np.full(3, r, np.int64), "policy": (np.zeros(3, np.int32), np.array([p], dtype=object)),
              "patient": np.arange(3) + 3 * r, "death_day": np.array([1.0, np.nan, 2.0 + r])}
             for r, p in enumerate(("a", "b"))]
    write_parquet_parts(iter(parts), tmp_path / "t.parquet")
    metadata = pq.ParquetFile(tmp_path / "t.parquet").metadata
    for group in range(2):
        columns = {metadata.schema.column(c).name: metadata.row_group(group).column(c) for c in range(4)}
        assert (columns["patient"].statistics.min, columns["patient"].statistics.max) == (3 * group, 3 * group + 2)
        assert columns["replication"].statistics.min == group
        assert columns["policy"].statistics.min == "ab"[group]
        assert not columns["death_day"].is_stats_set
    got = pq.read_table(tmp_path / "t.parquet", filters=[("policy", "=", "b")]).to_pandas()
    assert list(got["patient"]) == [3, 4, 5]


def test_text_codes_number_texts_as_pandas_does():
    from carsim.model.records import text_codes

    text = "xy"
    same_text = "".join(chr(c) for c in (120, 121))
    assert same_text == text and same_text is not text  # another object with the same text
    values = np.array([text, "b", text, None, 3, "b", "3", same_text], dtype=object)
    codes, texts = text_codes(values)
    expected_codes, expected_texts = pd.factorize(pd.Series(values).astype(str).to_numpy(object))
    np.testing.assert_array_equal(codes, expected_codes)
    assert list(texts) == list(expected_texts) == ["xy", "b", "None", "3"]
    assert [len(x) for x in text_codes(np.zeros(0, object))] == [0, 0]
