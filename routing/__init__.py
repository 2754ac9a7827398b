"""Routing policies: what an agent sees, which model answers, how much it reasons."""

from relaygraph.routing.context import (
    ContextItem,
    ContextPolicy,
    ContextRequest,
    ContextSelection,
    FullContext,
    RecencyWindow,
    TopKSimilarity,
    render_item,
)
from relaygraph.routing.models import FixedModel, ModelCall, ModelPolicy, ModelResult
from relaygraph.routing.rcr import RCRContext, RCRWeights
from relaygraph.routing.reasoning import (
    ReActPolicy,
    ReasoningAction,
    ReasoningDecision,
    ReasoningPolicy,
    ReasoningState,
)

__all__ = [
    "ContextItem",
    "ContextPolicy",
    "ContextRequest",
    "ContextSelection",
    "FixedModel",
    "FullContext",
    "ModelCall",
    "ModelPolicy",
    "ModelResult",
    "RCRContext",
    "RCRWeights",
    "ReActPolicy",
    "ReasoningAction",
    "ReasoningDecision",
    "ReasoningPolicy",
    "ReasoningState",
    "RecencyWindow",
    "TopKSimilarity",
    "render_item",
]
