"""The mutable state of one patient, for the SimPy engine."""

from __future__ import annotations

from carsim._units import DAYS_PER_MONTH
from carsim.scenario.vocabulary import INITIAL_STATE


class PatientState:
    """The mutable state of one patient under one policy.  Covariates are set as
    attributes; conditions read attributes by name."""

    def __init__(self, env, covariates: dict):
        self._env = env
        self.__dict__.update(covariates)
        self.infusion_time = None
        self.__dict__.update(INITIAL_STATE)

    @property
    def days_since_infusion(self) -> float:
        if self.infusion_time is None:
            return 0.0
        return self._env.now - self.infusion_time

    @property
    def months_since_infusion(self) -> float:
        return self.days_since_infusion / DAYS_PER_MONTH
