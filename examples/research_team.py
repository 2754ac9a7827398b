"""A two-agent team: a researcher searches a small local corpus, a solver answers.

Run with ``make demo`` (or ``python examples/research_team.py``): the team answers a few
questions on the embedded SmolLM2-135M, then prints each run's steps and the tokens and
latency per role. The researcher's tool policy makes it search before it finishes; its
steps are decoded under a grammar, so each is a valid action; the solver sees only the
context that role-aware routing picks for it, and answers with the name from it that the
question makes likeliest, among those the context says are of the asked type ("the river
Seine" for "Which river ..."). ``build()`` is the factory the CLI takes:
``relaygraph run examples/research_team.py:build "Which river flows through Paris?"``.
"""

from __future__ import annotations

import re
import sys

from rich.console import Console

from relaygraph import Agent, AgentGraph, RCRContext, StandardRole
from relaygraph.agents.agent import AnswerFormat
from relaygraph.graph.trace import role_table, step_table

CORPUS = {
    "Eiffel Tower": "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
    "Paris": "Paris is the capital of France. The river Seine flows through Paris.",
    "Seine": "The Seine is a 777 km river in northern France; it flows into the English Channel.",
    "Rome": "Rome is the capital of Italy. The river Tiber flows through Rome.",
    "Colosseum": "The Colosseum is an ancient amphitheatre in the centre of Rome, Italy.",
    "Big Ben": "Big Ben is the nickname of the great bell of the clock tower in London.",
    "London": "London is the capital of England. The river Thames flows through London.",
}

QUESTIONS = [
    "Which river flows through the city of the Eiffel Tower?",
    "In which country is the Colosseum?",
    "Which river flows through London?",
]


def search(query: str) -> str:
    """Search the encyclopedia; returns the best-matching page and the pages it links to."""
    words = set(re.findall(r"[a-z0-9]+", query.lower()))
    scored = sorted(
        (
            (len(words & set(re.findall(r"[a-z0-9]+", f"{t} {text}".lower()))), t)
            for t, text in CORPUS.items()
        ),
        reverse=True,
    )
    best_score, title = scored[0]
    if best_score == 0:
        return f"No page matches {query!r}. Pages: {', '.join(CORPUS)}."
    # A page links to the pages whose titles it mentions, as an encyclopedia's would.
    linked = [t for t in CORPUS if t != title and t in CORPUS[title]]
    return " ".join(f"{t}: {CORPUS[t]}" for t in [title, *linked])


def build(model: str = "smollm2-135m", answer_format: AnswerFormat = "extract") -> AgentGraph:
    """The researcher -> solver graph; ``answer_format="plain"`` makes the solver write its
    answer instead of extracting it (to compare)."""
    graph = AgentGraph("research-team", model=model, max_steps=12)
    graph.add_agent(
        Agent(
            name="researcher",
            role=StandardRole.RESEARCHER,
            instructions="Search for the facts the task needs, then finish with those facts.",
            tools=[search],
            tool_choice="search",  # it must search before it may finish,
            max_tool_calls=1,  # and then finish with what it found
            max_steps=2,
            max_tokens=64,
        )
    )
    graph.add_agent(
        Agent(
            name="solver",
            role=StandardRole.SOLVER,
            instructions="Answer the task in a few words, using the facts in the context.",
            # Its answer is the name in the context that the question makes likeliest:
            # a 135M model ranks the found facts' names better than it writes one.
            answer_format=answer_format,
            # Role-aware routing: the solver sees the facts the researcher found, not
            # its thoughts, within a small token budget.
            context_policy=RCRContext(),
            context_budget=96,
            max_tokens=32,
        )
    )
    return graph.add_edge("researcher", "solver").set_entry("researcher").set_finish("solver")


def main() -> None:
    console = Console()
    questions = sys.argv[1:] or QUESTIONS
    team = build().compile()
    for question in questions:
        result = team.invoke(question)
        console.print(step_table(result.trace))
        verdict = result.answer if result.ok else f"[red]{result.error}[/red]"
        console.print(f"[bold]{question}[/bold] -> {verdict}\n")
        console.print(role_table(result.trace))


if __name__ == "__main__":
    main()
