"""The edge-cloud serving simulator (`simulate`), its latency profiles, and fitting a
profile to a measured run; `simulator` says what it models."""

from relaygraph.decoding.sim.fit import acceptance_by_kind, fit_profile
from relaygraph.decoding.sim.profile import LatencyProfile
from relaygraph.decoding.sim.simulator import Mode, SimConfig, SimResult, simulate

__all__ = [
    "LatencyProfile",
    "Mode",
    "SimConfig",
    "SimResult",
    "acceptance_by_kind",
    "fit_profile",
    "simulate",
]
