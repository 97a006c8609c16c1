"""Uncertain parameters: every value in a scenario that states a
``distribution:`` (its uncertainty), with its quantile function.

This is the problem specification that sensitivity analyses chain through:
sample (uniforms -> values), evaluate (apply values, simulate), analyse.
A parameter is addressed by its path in the scenario (see :mod:`.paths`), e.g.
``pathway.hsct.transplant_related_death.value``,
``pathway.relapse.cd19pos.multipliers.mrd_present.value`` or, for a
time-to-event law, the law's scale field
(``pathway.post_relapse.survival.cd19pos.median``).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from .paths import set_value_at, value_at
from .schema import Law, Scalar, Scenario, Uncertainty

Z975 = 1.959963984540054


CALIBRATION_STREAM = "calibration"


@dataclass(frozen=True)
class UncertainParameter:
    path: str  # its first place in the scenario (its name in tables)
    point: float
    uncertainty: Uncertainty | None  # None: a calibrated parameter, drawn from ``draws``
    kind: str  # "probability", "ratio", "duration", "value", "calibrated"
    also: tuple[str, ...] = ()  # further places that share its draw (``distribution.shared``)
    draws: tuple[float, ...] = ()  # a calibrated parameter's column of the joint calibration draws
    stream: str | None = None  # parameters of one stream read the same uniform (one joint row)

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path, *self.also)

    @property
    def family(self) -> str:
        return self.uncertainty.family if self.uncertainty is not None else "calibration draws"

    @property
    def frozen(self):
        """The scipy distribution of this parameter."""
        from scipy import stats  # imported when sampling, not when a scenario is loaded

        u, m = self.uncertainty, self.point
        if u.family == "beta":
            if u.a is not None:
                return stats.beta(u.a, u.b)
            sd = (u.ci[1] - u.ci[0]) / (2 * Z975)
            var = min(sd**2, 0.99 * m * (1 - m))
            common = m * (1 - m) / var - 1
            return stats.beta(m * common, (1 - m) * common)
        if u.family == "lognormal":
            if u.sdlog is not None:
                return stats.lognorm(s=u.sdlog, scale=m)
            lo, hi = u.ci
            # centred on the point value used in the base case; the CI sets the spread
            return stats.lognorm(s=(math.log(hi) - math.log(lo)) / (2 * Z975), scale=m)
        if u.family == "gamma":
            if u.shape is not None:
                return stats.gamma(u.shape, scale=m / u.shape)
            sd = (u.ci[1] - u.ci[0]) / (2 * Z975)
            return stats.gamma((m / sd) ** 2, scale=sd**2 / m)
        if u.family == "normal":
            sd = u.sd if u.sd is not None else (u.ci[1] - u.ci[0]) / (2 * Z975)
            return stats.norm(m, sd)
        lo, hi = (u.low, u.high) if u.low is not None else u.ci
        return stats.uniform(lo, hi - lo)

    def ppf(self, q):
        """Value at probability ``q`` (uniform(s) -> parameter values).  A
        calibrated parameter takes row ``floor(q * rows)`` of the joint draws,
        so parameters read from one uniform take one row together."""
        if self.draws:
            column = np.asarray(self.draws)
            rows = np.minimum((np.asarray(q) * len(column)).astype(np.int64), len(column) - 1)
            return column[rows]
        return self.frozen.ppf(q)

    def interval(self) -> tuple[float, float]:
        """Low and high values for one-way analysis: the published 95% CI when
        given, else the 2.5% and 97.5% quantiles (of the draws, when calibrated).

        A calibrated parameter's best fit can sit at the edge of the values
        that fit as well (its draws' 95% interval may leave it out): its
        range is stretched to include the fitted value."""
        if self.draws:
            lo, hi = np.quantile(self.draws, [0.025, 0.975])
            return float(min(lo, self.point)), float(max(hi, self.point))
        if self.uncertainty.ci is not None:
            return tuple(float(x) for x in self.uncertainty.ci)
        lo, hi = self.frozen.ppf([0.025, 0.975])
        return float(lo), float(hi)


_LAW_SCALE_FIELDS = ("median", "mean", "scale", "value", "rate")


def uncertain_parameters(scenario: Scenario) -> list[UncertainParameter]:
    """Every parameter with a ``distribution:``, in scenario order, then the
    calibrated ones (``calibration_uncertainty``)."""
    stated = stated_parameters(scenario)
    return stated + _calibrated_parameters(scenario, _opt_outs(scenario, stated))


def stated_parameters(scenario: Scenario) -> list[UncertainParameter]:
    """Every parameter with a ``distribution:``, in scenario order."""
    found: list[UncertainParameter] = []

    def walk(node, path):
        if isinstance(node, Law):
            if node.distribution is not None:
                field = next(f for f in _LAW_SCALE_FIELDS if getattr(node, f) is not None)
                found.append(UncertainParameter(f"{path}.{field}", float(getattr(node, field)), node.distribution,
                                                "duration"))
            walk(getattr(node, "multipliers", []), f"{path}.multipliers")  # a survival law's
            return
        if isinstance(node, Scalar) and node.distribution is not None:
            kind = {"beta": "probability", "lognormal": "ratio"}.get(node.distribution.family, "value")
            found.append(UncertainParameter(f"{path}.value", float(node.value), node.distribution, kind))
        if isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name), f"{path}.{name}" if path else name)
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                label = getattr(value, "label", None)
                walk(value, f"{path}.{label or i}")

    walk(scenario.pathway, "pathway")
    walk(scenario.surveillance, "surveillance")
    if scenario.economics is not None:
        walk(scenario.economics, "economics")
    return _merge_shared(found)


def _calibrated_parameters(scenario: Scenario, skipped: dict) -> list[UncertainParameter]:
    """One parameter per column of the scenario's calibration draws, all read
    from one stream: a draw is a whole row.  Columns the scenario opts out of
    (``skipped``, see :func:`calibration_opt_outs`) are left at its value."""
    calibration = scenario.calibration_uncertainty
    if calibration is None:
        return []
    columns = np.asarray(calibration.draws, dtype=float).T
    return [UncertainParameter(path, float(fitted), None, "calibrated", calibration.tied_to(path),
                               tuple(columns[j].tolist()), CALIBRATION_STREAM)
            for j, (path, fitted) in enumerate(zip(calibration.parameters, calibration.fitted, strict=True))
            if path not in skipped]


def calibration_opt_outs(scenario: Scenario) -> dict[str, str]:
    """Calibrated key paths whose draws do not apply, and why: the scenario
    changed or removed the fitted value (a derived scenario's own assumption,
    fixed in PSA unless it states a distribution), or gives it a
    ``distribution:`` of its own (drawn from that instead)."""
    return _opt_outs(scenario, stated_parameters(scenario))


def _opt_outs(scenario: Scenario, stated: list[UncertainParameter]) -> dict[str, str]:
    calibration = scenario.calibration_uncertainty
    if calibration is None:
        return {}
    data = scenario.model_dump(by_alias=True, exclude_none=True)
    stated_places = {place for p in stated for place in p.paths}
    out = {}
    for path, fitted in zip(calibration.parameters, calibration.fitted, strict=True):
        places = (path, *calibration.tied_to(path))
        try:
            current = [value_at(data, place) for place in places]
        except (KeyError, IndexError, ValueError, TypeError):
            out[path] = "the scenario no longer has this value"
            continue
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in current):
            out[path] = "the scenario no longer has this value"
        elif path in stated_places:
            out[path] = "the scenario states a distribution for it"
        elif not all(math.isclose(v, fitted, rel_tol=1e-9, abs_tol=1e-12) for v in current):
            out[path] = f"the scenario sets it to {current[0]:g} (fitted: {fitted:g})"
    return out


class SharedParameterError(ValueError):
    """Values sharing one draw disagree; ``path`` is the one that differs."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def _merge_shared(found: list[UncertainParameter]) -> list[UncertainParameter]:
    """One parameter per ``shared`` name (at its first place), the others as ``also``."""
    out: list[UncertainParameter] = []
    first: dict[str, int] = {}
    for parameter in found:
        name = parameter.uncertainty.shared
        if name is None:
            out.append(parameter)
            continue
        if name not in first:
            first[name] = len(out)
            out.append(parameter)
            continue
        head = out[first[name]]
        if parameter.point != head.point or parameter.uncertainty != head.uncertainty:
            raise SharedParameterError(
                parameter.path, f"shares the draw {name!r} with {head.path} but differs from it (value "
                f"{parameter.point:g} vs {head.point:g}, or its distribution); expected the same value and distribution")
        out[first[name]] = UncertainParameter(head.path, head.point, head.uncertainty, head.kind,
                                              (*head.also, parameter.path))
    return out


# Per scenario object (frozen, so what it links cannot change), while it
# lives: the PSA applies every draw to the same scenario, and finding its
# uncertain parameters again each time cost half of applying the values.
_LINKED: dict[int, dict[str, tuple]] = {}


def _linked_places(scenario: Scenario) -> dict[str, tuple]:
    """Each shared parameter's head path -> the other places its value goes."""
    key = id(scenario)
    linked = _LINKED.get(key)
    if linked is None:
        linked = _LINKED[key] = {p.path: p.also for p in uncertain_parameters(scenario) if p.also}
        weakref.finalize(scenario, _LINKED.pop, key, None)
    return linked


def apply_values(scenario: Scenario, values: dict[str, float]) -> Scenario:
    """A copy of ``scenario`` with the values at the given key paths replaced
    (validated again, so an impossible draw is reported, not simulated)."""
    data = scenario.model_dump(by_alias=True, exclude_none=True)
    linked = _linked_places(scenario)
    places = [(place, value) for path, value in values.items() for place in (path, *linked.get(path, ()))]
    for place, value in places:
        set_value_at(data, place, float(value))
    return Scenario.model_validate(data)


def values_at_quantiles(parameters: list[UncertainParameter], uniforms: np.ndarray) -> np.ndarray:
    """Rows of uniforms (n, n_parameters) -> the parameters' values at those quantiles, same shape."""
    if not parameters:
        return np.empty((uniforms.shape[0], 0))
    return np.column_stack([np.asarray(p.ppf(uniforms[:, j]), dtype=float) for j, p in enumerate(parameters)])