"""Security-task evaluation: risk specs → tasks → sandboxed runs → trajectory scoring."""

from relaygraph.eval.security.agents import (
    SecurityFactory,
    assistant,
    flow_guarded_assistant,
    guarded_assistant,
)
from relaygraph.eval.security.capabilities import Capability
from relaygraph.eval.security.confinement import SandboxError
from relaygraph.eval.security.flow import FlowGuard
from relaygraph.eval.security.guard import ToolGuard
from relaygraph.eval.security.report import SecurityReport, write_security_report
from relaygraph.eval.security.sandbox import Sandbox
from relaygraph.eval.security.scoring import TrajectoryJudge, Verdict, score_trajectory
from relaygraph.eval.security.spec import (
    CATEGORIES,
    HELDOUT_SPECS,
    RiskSpec,
    load_spec,
    load_specs,
)
from relaygraph.eval.security.suite import SecuritySuite
from relaygraph.eval.security.synthesis import (
    SecurityTask,
    load_tasks,
    paraphrase,
    save_tasks,
    synthesize,
)
from relaygraph.eval.security.validation import validate_scorer

__all__ = [
    "CATEGORIES",
    "HELDOUT_SPECS",
    "Capability",
    "FlowGuard",
    "RiskSpec",
    "Sandbox",
    "SandboxError",
    "SecurityFactory",
    "SecurityReport",
    "SecuritySuite",
    "SecurityTask",
    "ToolGuard",
    "TrajectoryJudge",
    "Verdict",
    "assistant",
    "flow_guarded_assistant",
    "guarded_assistant",
    "load_spec",
    "load_specs",
    "load_tasks",
    "paraphrase",
    "save_tasks",
    "score_trajectory",
    "synthesize",
    "validate_scorer",
    "write_security_report",
]
