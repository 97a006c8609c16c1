"""Probabilistic sensitivity analysis (PSA): ``carsim psa SCENARIO --draws N``.

Every scenario value with a ``distribution:`` is drawn ``N`` times; draw ``d``
sets those values, then simulates every policy on replication ``d`` (its own
virtual patients, shared by all policies of the draw: common random numbers).

Parameter uniforms come from ``SeedSequence(seed, spawn_key=(PSA_TAG, k))``
with ``k`` a stable number of the parameter's key path: one stream per
parameter, read in draw order.  So draw ``d`` has the same values whatever
the number of draws, workers or chunks, and adding a parameter to a scenario
does not change the draws of the others.

Results are checkpointed in chunks of draws (:mod:`carsim.experiment.checkpoint`); the tables
are written only when every chunk is done, ``manifest.json`` last.

Modules: :mod:`.sampling` (the parameter draws), :mod:`.run` (simulating
the draws, checkpointed), :mod:`.statistics` (summaries over draws, the
probability of being best, increments), :mod:`.output` (the results folder)
and :mod:`.command` (``carsim psa``).
"""
