"""The variables a condition may read: covariates and the patient state.

Policy rules may read only what a clinician can observe (covariates, test
results as seen at scheduled tests, treatments given).  Hazard multipliers may
also read the hidden biology (``bca_lost``, ``mrd_present``): the leukaemia
does not wait for the next test.
"""

from __future__ import annotations

# name -> (what it is, observable by clinicians)
STATE_VARIABLES: dict[str, tuple[str, bool]] = {
    "marrow_blasts_infusion": ("marrow blast % at infusion (referral blasts x bridging effect)", True),
    "days_since_infusion": ("days since the (first) CAR infusion", True),
    "months_since_infusion": ("months since the (first) CAR infusion", True),
    "cr": ("reached CR/CRi at the response assessment", True),
    "severe_crs": ("grade >= 3 cytokine release syndrome", True),
    "severe_icans": ("grade >= 3 neurotoxicity", True),
    "mrd_informative": ("has a trackable IgH clone for NGS-MRD", True),
    "mrd_positive": ("the latest NGS-MRD test was positive", True),
    "mrd_positive_tests": ("number of positive NGS-MRD tests so far", True),
    "mrd_test_number": ("index of the latest NGS-MRD test (0 = first scheduled test)", True),
    "bca_loss_detected": ("loss of B-cell aplasia seen at a scheduled check", True),
    "reinfusions": ("number of CAR reinfusions given", True),
    "bca_regained": ("the latest reinfusion re-established B-cell aplasia", True),
    "hsct_after_car": ("number of HSCTs after CAR infusion", True),
    "transplanted": ("has had an HSCT after CAR infusion", True),
    "hsct_pending": ("an HSCT is planned (donor search or bed queue)", True),
    "relapsed": ("has relapsed after CAR", True),
    "relapse_phenotype": ("'none' or the name of the relapse phenotype (pathway.relapse)", True),
    "bca_lost": ("functional CAR persistence has ended (biology, seen only at checks)", False),
    "mrd_present": ("measurable residual disease is present (biology, seen only at tests)", False),
    "mrd_present_at_hsct": ("MRD was present when the last HSCT was given (biology)", False),
}

# Each changing state variable's value before infusion, for both engines.
INITIAL_STATE: dict[str, bool | int | str] = {
    "cr": False, "severe_crs": False, "severe_icans": False, "mrd_informative": True, "mrd_positive": False,
    "mrd_positive_tests": 0, "mrd_test_number": -1, "bca_loss_detected": False, "reinfusions": 0,
    "bca_regained": False, "hsct_after_car": 0, "transplanted": False, "hsct_pending": False, "relapsed": False,
    "relapse_phenotype": "none", "bca_lost": False, "mrd_present": False, "mrd_present_at_hsct": False,
}

# Covariates the pathway itself reads (others may be added freely and used in conditions).
REQUIRED_COVARIATES = {
    "prior_hsct": "bernoulli",
    "marrow_blasts_referral": "family",
    "bridging": "categorical",
    "apheresis_deferred": "bernoulli",
}

# Every event kind the pathway records (events.parquet), which the economics
# block may attach costs and QALY losses to, and which open or close its states.
EVENT_KINDS: tuple[str, ...] = (
    "enrolled", "apheresis", "apheresis_deferred", "manufacturing_queued", "manufacturing_start",
    "manufacturing_failure", "recollection", "withdrawal", "infusion", "severe_crs", "severe_icans", "response",
    "mrd_test", "mrd_emergence", "bca_lost", "bca_loss_detected", "decision", "decision_skipped", "hsct_planned",
    "hsct_cancelled", "hsct", "acute_gvhd", "chronic_gvhd", "reinfusion_planned", "reinfusion_cancelled",
    "reinfusion", "reinfusion_result", "relapse", "reremission", "death", "censored",
)
