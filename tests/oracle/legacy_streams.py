"""The new engines' named streams read from the old positional blocks, so the
new code can be compared draw for draw with the frozen engines."""

from __future__ import annotations

import re

from carsim.model.random import RandomStreams

from .random import RandomStreams as OldStreams

_FIXED = {
    "arrival": ("arrival", 0), "referral": ("referral", 0), "apheresis.deferral": ("apheresis", 0),
    "pre_infusion.death": ("pre_infusion", 0), "pre_infusion.withdrawal": ("pre_infusion", 1),
    "pre_infusion.survival_after_exit": ("pre_infusion", 2), "infusion.delay": ("infusion", 0),
    "toxicity.severe_crs": ("toxicity", 0), "toxicity.severe_icans": ("toxicity", 1),
    "toxicity.early_death": ("toxicity", 2), "toxicity.time_to_early_death": ("toxicity", 3),
    "response.cr": ("response", 0), "response.survival_after_nonresponse": ("response", 1),
    "mrd.informative": ("mrd", 0), "mrd.present_at_assessment": ("mrd", 1), "mrd.emergence": ("mrd", 2),
    "relapse.cd19pos": ("relapse", 0), "relapse.cd19neg": ("relapse", 1), "relapse.lineage_switch": ("relapse", 2),
    "post_relapse.survival": ("relapse", 3), "salvage.reremission": ("relapse", 4),
    "salvage.time_to_reremission": ("relapse", 5), "non_relapse_death": ("non_relapse_death", 0),
}
_HSCT = ["donor_search", "bed_occupancy", "transplant_death", "time_to_transplant_death", "acute_gvhd",
         "chronic_gvhd"]


def legacy_slot(name: str) -> tuple[str, int]:
    if name in _FIXED:
        return _FIXED[name]
    if name.startswith("covariate."):
        return "covariate:" + name[len("covariate."):], 0
    kind, *rest = name.split(".")
    if kind == "apheresis":  # apheresis.duration.a
        return "apheresis", 2 * int(rest[1]) + 1
    if kind == "manufacturing":
        a = int(rest[1])
        return "manufacturing", 3 * a + {"duration": 0, "failure": 1, "recollection": 2}[rest[0]]
    if kind == "bca":
        return "bca", int(rest[1])
    if kind == "mrd" and rest[0] == "test":
        return "mrd", 3 + int(rest[1])
    if kind == "hsct":
        return "hsct", 6 * int(rest[0]) + _HSCT.index(rest[1])
    if kind == "reinfusion":
        return "reinfusion", 2 * int(rest[0]) + {"delay": 0, "regain_bca": 1}[rest[1]]
    raise KeyError(name)


class LegacyStreams(RandomStreams):
    def __init__(self, seed, replication, n_patients, slots):
        super().__init__(seed, replication, n_patients)
        self.old = OldStreams(seed, replication, n_patients, slots)

    def _draw(self, name):
        kind, slot = legacy_slot(name)
        assert re.match(r"^[a-z_:0-9]+$", kind)
        return self.old.block(kind)[:, slot]
