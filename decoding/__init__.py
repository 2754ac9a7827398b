"""Decoding: how tokens are produced for a model call (directly, or speculatively)."""

from relaygraph.decoding.base import Decoder, DirectDecoder
from relaygraph.decoding.drafts import Drafter, ModelDrafter, PromptLookupDrafter
from relaygraph.decoding.network import NetworkLink
from relaygraph.decoding.speculative import CloudUnavailableError, SpeculativeLLM
from relaygraph.decoding.window import AdaptiveWindow, CostPrior, FixedWindow, WindowPolicy

__all__ = [
    "AdaptiveWindow",
    "CloudUnavailableError",
    "CostPrior",
    "Decoder",
    "DirectDecoder",
    "Drafter",
    "FixedWindow",
    "ModelDrafter",
    "NetworkLink",
    "PromptLookupDrafter",
    "SpeculativeLLM",
    "WindowPolicy",
]
