"""A trial design, resolved, and the allocation of patients to arms."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ...model.random import stream_id

ALLOCATION_STREAM = "trial:allocation"
H1, H0 = "H1", "H0"  # each arm its own policy (power); both arms the control policy (type I error)


@dataclass(frozen=True)
class TrialDesign:
    """A trial design, resolved (what a worker needs; no file, no scenario)."""

    arms: tuple[str, ...]  # the policy of each arm; the first is the control
    sample_sizes: tuple[int, ...]  # total patients randomised
    follow_up_months: float  # after the last enrolment
    endpoint: str = "efs"  # efs | os | rfs
    origin: str = "infusion"  # infusion | enrollment
    test: str = "logrank"  # logrank | cox | landmark
    landmark_months: float | None = None
    alpha: float = 0.05
    sides: int = 2
    multiplicity: str = "none"  # none | bonferroni (over the comparisons with the control)
    ratio: tuple[int, ...] | None = None  # default 1 per arm
    method: str = "blocks"  # blocks | simple
    block_size: int | None = None  # default twice the ratio's sum
    trials: int = 100
    seed: int = 0
    null: bool = False  # also analyse every comparison with both arms under the control policy

    def __post_init__(self):
        if len(self.arms) < 2:
            raise ValueError("a trial needs at least two arms")
        if self.ratio is None:
            object.__setattr__(self, "ratio", (1,) * len(self.arms))
        if self.block_size is None:
            object.__setattr__(self, "block_size", 2 * sum(self.ratio))
        if self.test == "landmark" and self.landmark_months is None:
            raise ValueError("the landmark test needs landmark_months")

    @property
    def alpha_per_comparison(self) -> float:
        k = len(self.arms) - 1
        return self.alpha / k if self.multiplicity == "bonferroni" else self.alpha

    def comparison_label(self, j: int) -> str:
        if len(set(self.arms)) < len(self.arms):  # a policy in two arms: name the arms
            return f"arm {j + 1} ({self.arms[j]}) vs arm 1 ({self.arms[0]})"
        return f"{self.arms[j]} vs {self.arms[0]}"

    def plan(self) -> list[tuple[int, str, str, str, str]]:
        """(arm index, label, hypothesis, control policy, experimental policy) per analysis.

        Hypothesis ``H1``: each arm under its own policy (the rejection rate is
        the power); ``H0``: both arms under the control policy (the type I
        error).  Not "null", which CSV readers take for a missing value."""
        out = []
        control = self.arms[0]
        for j in range(1, len(self.arms)):
            label = self.comparison_label(j)
            if self.arms[j] == control:
                out.append((j, label, H0, control, control))
                continue
            out.append((j, label, H1, control, self.arms[j]))
            if self.null:
                out.append((j, label, H0, control, control))
        return out


def allocation(design: TrialDesign, trial: int, n: int) -> np.ndarray:
    """Arm index (0 = control) of patients ``0 .. n-1`` of simulated trial ``trial``.

    Permuted blocks (each block holds ``ratio`` patients per arm, scaled to
    ``block_size``, in random order) or simple randomisation with
    probabilities proportional to ``ratio``.  A smaller trial's allocation is
    the start of a larger one's."""
    seq = np.random.SeedSequence(design.seed, spawn_key=(trial, stream_id(ALLOCATION_STREAM)))
    rng = np.random.Generator(np.random.PCG64(seq))
    ratio = np.asarray(design.ratio, dtype=int)
    if design.method == "simple":
        cum = np.cumsum(ratio) / ratio.sum()
        return np.searchsorted(cum, rng.random(n), side="right").astype(np.int64)
    per_block = np.repeat(np.arange(len(ratio)), ratio * (design.block_size // ratio.sum()))
    blocks = -(-n // per_block.size)
    return np.concatenate([rng.permutation(per_block) for _ in range(blocks)])[:n].astype(np.int64)


def grid_combinations(grid: Mapping[str, Sequence[float]]) -> list[dict]:
    """Every combination of the grid's values (the first path varies slowest)."""
    paths = list(grid)
    return [dict(zip(paths, values)) for values in itertools.product(*(grid[p] for p in paths))] or [{}]


def design_from_spec(spec, seed: int, trials: int | None = None) -> TrialDesign:
    return TrialDesign(
        arms=tuple(spec.arms), sample_sizes=tuple(spec.sample_sizes), follow_up_months=spec.follow_up_months,
        endpoint=spec.endpoint.name, origin=spec.endpoint.origin, test=spec.endpoint.test,
        landmark_months=spec.endpoint.landmark_months, alpha=spec.alpha, sides=spec.sides,
        multiplicity=spec.multiplicity, ratio=spec.ratio, method=spec.randomisation.method,
        block_size=spec.block_size, trials=trials or spec.trials, seed=seed, null=spec.null)
