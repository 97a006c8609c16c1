"""The pathway defined once reproduces the two engines it replaced.

``tests/oracle`` is a frozen copy of the former SimPy engine (one hand-written
process per patient) and its random-number layout.  With the new engines'
named streams read from that layout, both new engines must reproduce it
patient for patient and event for event, on every policy, with queues at
apheresis and manufacturing and with a transplant-bed queue."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BASELINE
from oracle import definition as frozen_definition
from oracle import simulation as frozen_simulation
from oracle.legacy_streams import LegacyStreams

from carsim.model import definition, simulation
from carsim.scenario import load_scenario

POLICIES = ["observe", "hsct_all", "risk_triggered", "reinfuse"]
CASES = [
    ({"resources.hsct_beds.capacity": None}, POLICIES, 300, 17),
    ({"resources.hsct_beds.capacity": None, "resources.apheresis.capacity": 1,
      "resources.manufacturing.capacity": 3}, ["observe", "reinfuse"], 200, 4),
    ({"resources.hsct_beds.capacity": 3}, POLICIES, 300, 5),
]


@pytest.mark.parametrize("engine", ["vectorised", "simpy"])
@pytest.mark.parametrize("overrides, policies, n, seed", CASES)
def test_new_engines_reproduce_the_frozen_engine(monkeypatch, engine, overrides, policies, n, seed):
    scenario = load_scenario(BASELINE, overrides)
    frozen = frozen_definition.ModelDefinition(scenario)
    monkeypatch.setattr(simulation, "RandomStreams",
                        lambda seed, replication, n: LegacyStreams(seed, replication, n, frozen.stream_slots))
    new = simulation.simulate_policies(definition.ModelDefinition(scenario), policies, 0, n, seed, engine=engine)
    old = frozen_simulation.simulate_policies(frozen, policies, 0, n, seed, engine="simpy")
    for a, b in zip(new, old, strict=True):
        for name, reference in b.outcomes.items():
            got, reference = np.asarray(a.outcomes[name]), np.asarray(reference)
            if reference.dtype.kind == "f":
                np.testing.assert_allclose(got, reference, rtol=1e-9, atol=1e-9, equal_nan=True,
                                           err_msg=f"{a.policy}: {name}")
            else:
                np.testing.assert_array_equal(got, reference, err_msg=f"{a.policy}: {name}")
        for column in ("patient", "event", "detail"):
            np.testing.assert_array_equal(a.events[column].astype(str), b.events[column].astype(str))
        np.testing.assert_allclose(a.events["time_days"], b.events["time_days"], rtol=1e-9, atol=1e-9)
        for resource in ("apheresis", "manufacturing", "hsct_beds"):
            assert a.resource_use[resource]["busy_days"] == pytest.approx(
                b.resource_use[resource]["busy_days"], nan_ok=True)
