"""The metric parameters a scoring call applies (:class:`FidelitySettings`): a module of
its own so that the unit inputs can name the type without importing the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch_fidelity.defaults import DEFAULTS


@dataclass(frozen=True)
class FidelitySettings:
    """Metric parameters; torch-fidelity's defaults unless a config says otherwise."""

    kid_subsets: int = DEFAULTS["kid_subsets"]
    kid_subset_size: int = DEFAULTS["kid_subset_size"]  # upper bound; min(this, N, N_ref) is used
    isc_splits: int = DEFAULTS["isc_splits"]
    prc_neighborhood: int = DEFAULTS["prc_neighborhood"]
    rng_seed: int = DEFAULTS["rng_seed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kid_subsets": self.kid_subsets,
            "kid_subset_size_max": self.kid_subset_size,
            "isc_splits_max": self.isc_splits,
            "prc_neighborhood": self.prc_neighborhood,
            "rng_seed": self.rng_seed,
            "kid_kernel": "poly",
            "kid_kernel_poly_degree": DEFAULTS["kid_kernel_poly_degree"],
            "kid_kernel_poly_coef0": DEFAULTS["kid_kernel_poly_coef0"],
            "isc_shuffle": DEFAULTS["samples_shuffle"],
        }
