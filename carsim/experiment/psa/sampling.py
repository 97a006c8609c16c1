"""The parameter draws of a PSA: one random stream per uncertain parameter,
mapped through the parameter's quantile function."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import ValidationError

from ...errors import CarsimError
from ...model.random import stream_id
from ...scenario.parameters import UncertainParameter, apply_values, uncertain_parameters, values_at_quantiles
from ...scenario.schema import Scenario

PSA_TAG = stream_id("carsim.psa.parameters")  # first spawn-key element of every parameter stream


def parameter_uniforms(parameters: list[UncertainParameter], seed: int, draws: int) -> np.ndarray:
    """(draws, n_parameters) uniforms: one stream per parameter, spawned from
    ``SeedSequence(seed, spawn_key=(PSA_TAG,))`` by the key path's number, or
    by its stream's name when parameters share one (the calibration draws:
    one uniform picks one joint row for all of them)."""
    root = np.random.SeedSequence(int(seed), spawn_key=(PSA_TAG,))
    columns = []
    for p in parameters:
        child = np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, stream_id(p.stream or p.path)))
        columns.append(np.random.Generator(np.random.PCG64(child)).random(draws))
    return np.column_stack(columns) if columns else np.empty((draws, 0))


def parameter_table(scenario: Scenario, seed: int, draws: int) -> pd.DataFrame:
    """``draw`` and one column per uncertain parameter (its key path)."""
    parameters = uncertain_parameters(scenario)
    uniforms = parameter_uniforms(parameters, seed, draws)
    values = values_at_quantiles(parameters, uniforms)
    table = pd.DataFrame({"draw": np.arange(draws, dtype=np.int64)})
    for j, p in enumerate(parameters):
        table[p.path] = values[:, j]
    return table


def draw_values(table: pd.DataFrame, draw: int) -> dict[str, float]:
    row = table.iloc[draw]
    return {name: float(row[name]) for name in table.columns if name != "draw"}


def check_draws(scenario: Scenario, table: pd.DataFrame) -> None:
    """Every draw must give a valid scenario (checked before any simulation)."""
    for draw in range(len(table)):
        values = draw_values(table, draw)
        try:
            apply_values(scenario, values)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(x) for x in error["loc"])
            raise CarsimError(f"PSA draw {draw}: {where} = {error.get('input')!r} is invalid "
                              f"({error['msg']}); check its distribution:") from None
