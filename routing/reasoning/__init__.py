"""Resource-aware reasoning: the policy protocol, its modules and profiles, the
environment it learns in, learned and baseline policies."""

from relaygraph.routing.reasoning.policy import (
    ReActPolicy,
    ReasoningAction,
    ReasoningDecision,
    ReasoningPolicy,
    ReasoningState,
)

__all__ = [
    "ReActPolicy",
    "ReasoningAction",
    "ReasoningDecision",
    "ReasoningPolicy",
    "ReasoningState",
]
