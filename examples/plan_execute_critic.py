"""A planner -> executor -> critic loop with a conditional edge.

The planner writes a plan, the executor carries it out with a calculator (its tool
policy makes it call the calculator, whose result is its answer), the critic approves
or sends the work back with a verdict decoded under a schema; after two rounds the run
ends with the last answer.
``python examples/plan_execute_critic.py "What is 17 * 23 + 4?"``
"""

from __future__ import annotations

import ast
import operator
import sys
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel
from rich.console import Console

from relaygraph import END, Agent, AgentGraph, RunView, StandardRole, Tool
from relaygraph.graph.trace import role_table, step_table

_OPERATORS: dict[type[ast.AST], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
MAX_ROUNDS = 2


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression with + - * / ** and parentheses."""

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"unsupported expression: {ast.dump(node)[:60]}")

    return value(ast.parse(expression, mode="eval").body)


class Review(BaseModel):
    """The critic's verdict."""

    verdict: Literal["APPROVE", "REVISE"]


def review(run: RunView) -> str:
    """Back to the executor unless the critic approved or the rounds are used up."""
    approved = "APPROVE" in (run.answer or "").upper()
    rounds = sum(1 for item in run.log if item.kind == "answer" and item.author == "executor")
    return END if approved or rounds >= MAX_ROUNDS else "executor"


def build(model: str = "smollm2-135m") -> AgentGraph:
    """The planner -> executor -> critic graph."""
    graph = AgentGraph("plan-execute-critic", model=model, max_steps=16)
    graph.add_agent(
        Agent(
            name="planner",
            role=StandardRole.PLANNER,
            instructions="Write a short plan of the calculation the task needs.",
            answer_format="plain",
            max_tokens=48,
        )
    )
    graph.add_agent(
        Agent(
            name="executor",
            role=StandardRole.EXECUTOR,
            instructions="Follow the plan: calculate the expression the task asks for.",
            # The arithmetic goes through the calculator, whose result is the answer.
            tools=[Tool.from_function(calculate, return_direct=True)],
            tool_choice="calculate",
            max_steps=3,
            max_tokens=64,
        )
    )
    graph.add_agent(
        Agent(
            name="critic",
            role=StandardRole.CRITIC,
            instructions="If the executor's answer solves the task, reply APPROVE. Otherwise reply "
            "REVISE.",
            answer_format="plain",
            output_schema=Review,  # the verdict is decoded under this schema
            max_tokens=32,
        )
    )
    graph.set_entry("planner").add_edge("planner", "executor").add_edge("executor", "critic")
    return graph.add_conditional_edges("critic", review, ["executor", END])


def main() -> None:
    console = Console()
    task = " ".join(sys.argv[1:]) or "What is 17 * 23 + 4?"
    result = build().compile().invoke(task)
    console.print(step_table(result.trace))
    console.print(role_table(result.trace))
    console.print(f"executor's answer: {result.answers.get('executor')}; critic: {result.answer}")
    if result.error:
        console.print(f"[red]{result.error}[/red]")


if __name__ == "__main__":
    main()
