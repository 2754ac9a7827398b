"""Routing policies: what an agent sees, which model answers, how much it reasons."""

from relaygraph.routing.calibration import Calibration, CalibrationItem, fit_calibration
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
from relaygraph.routing.models import Cascade, FixedModel, ModelCall, ModelPolicy, ModelResult, Rung
from relaygraph.routing.rcr import RCRContext, RCRWeights
from relaygraph.routing.reasoning import (
    ReActPolicy,
    ReasoningAction,
    ReasoningDecision,
    ReasoningPolicy,
    ReasoningState,
)
from relaygraph.routing.uncertainty import (
    ESTIMATORS,
    LogprobsUnavailableError,
    MeanEntropy,
    MeanLogprob,
    Perplexity,
    PTrue,
    SampleDisagreement,
    SemanticDispersion,
    UncertaintyEstimate,
    UncertaintyEstimator,
    VerbalizedConfidence,
)

__all__ = [
    "ESTIMATORS",
    "Calibration",
    "CalibrationItem",
    "Cascade",
    "ContextItem",
    "ContextPolicy",
    "ContextRequest",
    "ContextSelection",
    "FixedModel",
    "FullContext",
    "LogprobsUnavailableError",
    "MeanEntropy",
    "MeanLogprob",
    "ModelCall",
    "ModelPolicy",
    "ModelResult",
    "PTrue",
    "Perplexity",
    "RCRContext",
    "RCRWeights",
    "ReActPolicy",
    "ReasoningAction",
    "ReasoningDecision",
    "ReasoningPolicy",
    "ReasoningState",
    "RecencyWindow",
    "Rung",
    "SampleDisagreement",
    "SemanticDispersion",
    "TopKSimilarity",
    "UncertaintyEstimate",
    "UncertaintyEstimator",
    "VerbalizedConfidence",
    "fit_calibration",
    "render_item",
]
