"""Simulated randomised trials: power and type I error of a trial design.

A trial compares policies (arms; the first is the control) on patients who
enrol by Poisson accrual, are randomised, and are analysed once, at the
analysis time ``last enrolment + follow_up_months``.  Every simulated trial
is one replication of the model: its own patients and random numbers.

**How patients get their arm.**  Each patient belongs to one arm, so a trial
must not analyse the same patient under both policies.  For every simulated
trial the N enrolled patients are simulated once under *each* arm's policy
(one cohort per policy, with common random numbers: patient ``i`` has the
same covariates, arrival and random draws in every cohort), the patients are
randomised by a seeded allocation sequence, and each patient's outcome is
taken from the cohort of the arm they were randomised to.  This is the
potential-outcomes view of a trial: patient ``i``'s observed outcome is his
outcome under his assigned policy, and outcomes of different patients are
independent (each draws only his own rows of random numbers), exactly as in a
trial that simulated each patient under one policy only.  It costs one
cohort per policy instead of one mixed cohort, lets the randomisation be
redrawn without re-simulating, and makes a null trial (every arm the same
policy) exact: the arms are then random subsets of one cohort.  The one
approximation: transplant beds are queued for as if every trial patient
followed the arm's policy (the access queues, apheresis and manufacturing,
come before any policy acts, so they are the same in every arm); with the
baseline's ample beds this does not matter.  Cohorts are simulated by
``simulate_policies`` with the scenario's engine (``--engine``).

**Analysis.**  Times are days since each patient's enrolment; the analysis
day is counted from the trial's start, so a patient enrolled on day ``a`` is
administratively censored ``analysis_day - a`` days after enrolment.  From
infusion, only patients infused (for RFS: responding) by the analysis time
are analysed.  Tests: the log-rank test (NumPy; identical to
``lifelines.statistics.logrank_test``, which costs 30 ms a call), a Cox model
on the arm indicator (``lifelines.CoxPHFitter``, Wald test) or the
difference in Kaplan-Meier survival at a landmark time (Greenwood variance).
One-sided tests reject when the experimental arm is better.

**Reproducibility.**  Simulated trial ``k`` uses replication ``k`` of the
model (the same patients for every grid combination and sample size: common
random numbers across the assumption grid) and its own allocation stream;
results do not depend on the number of workers or the backend.

The model is one :class:`OutcomeSource`; any object with the same two
methods can stand in for it (e.g. :class:`ExponentialOutcomes`, two
exponential arms with a known hazard ratio), and goes through the same
randomisation, censoring and analysis code.

Modules: :mod:`.schema` (the trial file), :mod:`.design` (arms, sample sizes,
allocation), :mod:`.sources` (where outcomes come from), :mod:`.statistics`
(the tests and the power table), :mod:`.simulate` (simulated trials, from a
design or from a trial file), :mod:`.output` (the results folder, the power
figure and the terminal table) and :mod:`.command` (``carsim trial``).
"""
