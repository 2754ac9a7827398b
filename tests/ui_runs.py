"""Run directories and trace files for the viewer's tests, made the way users make them.

`make_runs` evaluates the scripted two-agent team of ``scripts/ui_graphs.py`` on a few
HotPotQA items (a right run and a ``hostile`` one whose answers hold a script), so the
viewer reads what `relaygraph eval` writes; `rich_trace` is a trace with every decision
the runtime records (a cascade, speculative rounds, extracted-answer scores, a budget),
untrusted text in every field a model or tool fills.
"""

from __future__ import annotations

from pathlib import Path

from relaygraph.agents.record import (
    BudgetRecord,
    ContextRecord,
    DecodingRecord,
    ModelRecord,
    ReasoningRecord,
    StepRecord,
)
from relaygraph.eval.hotpotqa import HotpotSuite, load_hotpotqa
from relaygraph.eval.runner import evaluate
from relaygraph.graph.loader import load_factory
from relaygraph.graph.trace import Route, Trace
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.llm.types import Message
from relaygraph.routing.models import CascadeStep

GRAPHS = Path(__file__).parent / "scripts" / "ui_graphs.py"
ITEMS = 4
SCRIPT = "<script>window.pwned = 3</script>"


def make_runs(root: Path) -> dict[str, Path]:
    """``team`` and ``hostile`` runs under ``root``, and a trace file under root/traces."""
    data = load_hotpotqa(limit=ITEMS).examples
    runs = {}
    for name in ("team", "hostile"):
        suite = HotpotSuite(load_factory(f"{GRAPHS}:{name}"), ScriptedLLM([]))
        runs[name] = root / name
        evaluate(
            suite,
            data,
            runs[name],
            dataset="hotpotqa-dev",
            graph=name,
            model="scripted",
            show_progress=False,
        )
    runs["trace"] = root / "traces" / "cascade.json"
    rich_trace().save(runs["trace"])
    return runs


def rich_trace() -> Trace:
    """A two-step trace with a cascade, speculative decoding and extracted answers."""
    first = StepRecord(
        step=0,
        agent="researcher",
        role="researcher",
        turn_step=0,
        prompt=[
            Message(role="system", content="You are the researcher."),
            Message(role="user", content=f"Question {SCRIPT}"),
        ],
        output=f"Thought: search it\nAction: search[{SCRIPT}]",
        reason="search it",
        action={"type": "tool", "tool": "search", "arguments": SCRIPT},
        observation=f"The page says {SCRIPT}",
        context=ContextRecord(
            policy="rcr",
            items=["0.0", "0.1"],
            tokens=57,
            dropped=["0.2"],
            reason="2 of 3 candidates by role/stage/recency/relevance",
            costs={"0.0": 12, "0.1": 45, "0.2": 300},
            scores={"0.0": 1.0, "0.1": 0.62, "0.2": 0.08},
        ),
        model=ModelRecord(
            name="gemma3-270m",
            policy="cascade",
            reason="smollm2-135m was unsure (0.71 > 0.5)",
            cascade=[
                CascadeStep(
                    model="smollm2-135m",
                    decision="escalate",
                    estimator="mean_entropy",
                    score=0.71,
                    threshold=0.5,
                ),
                CascadeStep(model="gemma3-270m", decision="final"),
            ],
        ),
        reasoning=ReasoningRecord(policy="learned", action="reason_and_act", reason="early step"),
        decoding=DecodingRecord(
            decoder="speculative",
            report={
                "decoder": "speculative",
                "rounds": 2,
                "drafted": 8,
                "accepted": 6,
                "per_round": {"window": [4, 4], "drafted": [4, 4], "accepted": [4, 2]},
            },
        ),
        budget=BudgetRecord(
            verdict="ok",
            note="ok",
            tokens_before=2000,
            tokens_after=1910,
            seconds_before=60.0,
            seconds_after=58.8,
        ),
        prompt_tokens=80,
        completion_tokens=10,
        latency_s=1.2,
        cost=0.0001,
    )
    second = StepRecord(
        step=1,
        agent="solver",
        role="solver",
        turn_step=0,
        output="Paris",
        action={"type": "finish", "answer": "Paris"},
        model=ModelRecord(
            name="smollm2-135m",
            policy="fixed",
            answer_scores={"Paris": 2.5, "Lyon": 0.4, SCRIPT: -1.0},
        ),
        budget=BudgetRecord(verdict="cut", note="cut to 16 tokens by the run's budget"),
        prompt_tokens=60,
        completion_tokens=2,
        latency_s=0.4,
    )
    return Trace(
        run_id="0123456789abcdef0123456789abcdef",
        thread_id="t",
        graph="cascade-team",
        task=f"Where is the Louvre? {SCRIPT}",
        answer="Paris",
        steps=[first, second],
        routes=[Route(after_step=0, source="researcher", targets=["solver"], reason=SCRIPT)],
    )
