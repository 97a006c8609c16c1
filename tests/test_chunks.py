"""A cohort whose patients share finite resources, split into chunks of
patients (each simulating the shared queues whole and advancing its own
patients): joined, the chunks give exactly the whole cohort's results,
also when transplant beds were over-subscribed (the cohort is then
simulated again with the bed queue under the policies concerned)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carsim.experiment import runner
from carsim.model.definition import ModelDefinition
from carsim.model.simulation import queues_ahead, simulate_replications
from carsim.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


@pytest.mark.parametrize("file, n, queued", [("baseline.yaml", 1500, False), ("hsct_capacity.yaml", 1500, True)])
def test_chunks_with_the_whole_queue_equal_the_whole_cohort(file, n, queued):
    scenario = load_scenario(SCENARIOS / file, {"cohort.size": n})
    model = ModelDefinition(scenario)
    policies, seed = scenario.policy_names, scenario.run.seed
    tasks = runner.plan_tasks(model, policies, 1, n, 3)
    assert [(t.start, t.stop, t.whole_queue) for t in tasks] == [(0, n // 3, True), (n // 3, 2 * n // 3, True),
                                                                 (2 * n // 3, n, True)]
    assert all(t.policies == tuple(policies) for t in tasks)
    parts = [part for t in tasks for part in runner._run_task(model, t, n, seed, True, "auto")]
    with queues_ahead(model, seed, [0], n, True):  # the queues simulated once, for every chunk
        ahead = [part for t in tasks for part in runner._run_task(model, t, n, seed, True, "auto")]
    whole = simulate_replications(model, policies, [0], n, seed)
    for chunks in (parts, ahead):
        _assert_joined_equal_whole(runner._joined(model, chunks, n, seed, True, "auto"), whole, queued)


def _assert_joined_equal_whole(joined, whole, queued):
    assert bool(any(w.warnings for w in whole)) == queued  # the over-subscribed case is exercised
    assert [(p.replication, p.policy) for p in joined] == [(w.replication, w.policy) for w in whole]
    for a, b in zip(joined, whole, strict=True):
        for name in ("outcomes", "covariates", "events"):
            x, y = getattr(a, name), getattr(b, name)
            assert list(x) == list(y)
            for column in x:
                np.testing.assert_array_equal(x[column], y[column], err_msg=f"{a.policy} {name} {column}")
        assert a.resource_use == b.resource_use and a.warnings == b.warnings


def _square_or_fail(x):
    if x == 5:
        raise ValueError("five")
    return x * x


def test_fork_map_keeps_the_order_and_surfaces_errors_of_children():
    from carsim.experiment.parallel import fork_map

    assert fork_map(_square_or_fail, [0, 1, 2, 3, 4, 6, 7], 3) == [0, 1, 4, 9, 16, 36, 49]
    assert fork_map(_square_or_fail, [1], 4) == [1]
    with pytest.raises(ValueError, match="five"):
        fork_map(_square_or_fail, [1, 2, 3, 5], 2)  # 5 fails in a child, then again here


def _columns(k):
    """Columns as the engines write them: numbers, booleans, a few texts repeated (and one of each other kind)."""
    n = 5000 + k
    texts = np.array(["relapse", "death", "response"], dtype=object)
    return {"k": k, "day": np.arange(n) * 0.5 + k, "flag": np.arange(n) % 3 == 0, "event": texts[np.arange(n) % 3],
            "mixed": np.array([None, 1, "x"] * 2000, dtype=object), "empty": np.zeros(0), "matrix": np.ones((7, 3)).T}


@pytest.mark.parametrize("memory_file", [True, False], ids=["memfd", "temporary-file"])
def test_fork_map_returns_the_childrens_arrays_whole_and_writable(memory_file, monkeypatch):
    """Results come back from the children through a file in memory (or a
    removed temporary file where there is none), the arrays read in place
    from its mapping: equal, with their dtypes and layouts, texts as texts,
    and writable (a private mapping)."""
    import os

    from carsim.experiment.parallel import fork_map

    if not memory_file:
        monkeypatch.delattr(os, "memfd_create", raising=False)

    got = fork_map(_columns, [0, 1, 2], 3)
    for k, result in enumerate(got):
        expected = _columns(k)
        assert list(result) == list(expected) and result["k"] == k
        for name, values in expected.items():
            if name == "k":
                continue
            np.testing.assert_array_equal(result[name], values)
            assert result[name].dtype == values.dtype and (result[name].strides == values.strides or not values.size)
        assert all(type(t) is str for t in result["event"])
        result["day"][0] = -1.0  # writable
    assert [result["day"][1] for result in got] == [0.5, 1.5, 2.5]  # each its own memory
