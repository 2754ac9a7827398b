"""Extracted answers: candidates, the agent's contract, and the real model choosing."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from relaygraph.agents import Agent
from relaygraph.agents.extraction import (
    answer_candidates,
    answer_types,
    calibrated,
    candidate_spans,
    is_of_type,
)
from relaygraph.errors import ConfigError
from relaygraph.graph import AgentGraph
from relaygraph.llm.constraints import JsonSchemaFormat
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.memory import SharedMemory

FACTS = "Paris: Paris is the capital of France. The river Seine flows through Paris."


def test_candidates_are_names_and_numbers_once_each() -> None:
    text = (
        "The Seine is a 777 km river in northern France. In 1998, 12.5% of the "
        "United States of America voted for John F. Kennedy. The Seine is long."
    )
    assert candidate_spans(text) == [
        "Seine",
        "777",
        "France",
        "1998",
        "12.5%",
        "United States of America",
        "John F. Kennedy",
    ]


def test_a_sentence_break_ends_a_name() -> None:
    assert candidate_spans("It is in France. The river is long.") == ["France"]


def test_the_question_names_are_not_candidates_unless_it_offers_a_choice() -> None:
    context = "Eiffel Tower: The Eiffel Tower is in Paris. The Seine flows through Paris."
    assert answer_candidates("Which river flows by the Eiffel Tower?", context) == [
        "Paris",
        "Seine",
    ]
    assert "Eiffel Tower" in answer_candidates("Is the Eiffel Tower or Paris older?", context)


def test_the_asked_type_is_the_noun_after_which_or_what_head_first() -> None:
    assert answer_types("Which river flows through Paris?") == ["flows", "river"]
    assert answer_types("The House is in what Hawaii county?") == ["county"]
    assert answer_types("Directed by which famous director?") == ["director", "famous"]
    assert answer_types("In what year was she born?") == ["year"]
    assert answer_types("What is Opry Mills?") == []
    assert answer_types("Which of Jonny Craig and Pete Doherty sang more?") == []
    assert answer_types("Who wrote Hamlet?") == []


def test_the_context_says_which_names_are_of_a_type() -> None:
    context = (
        "The river Seine flows through Paris. The Loire is a long French river. "
        "Sam Boyd Stadium is in Whitney, near the city of Henderson."
    )
    assert is_of_type("Seine", "river", context) and is_of_type("Loire", "rivers", context)
    assert not is_of_type("Paris", "river", context)
    assert is_of_type("Sam Boyd Stadium", "stadium", context)
    assert is_of_type("Henderson", "city", context) and not is_of_type("Whitney", "city", context)
    assert is_of_type("1998", "year", context) and not is_of_type("777", "year", context)


def test_only_the_asked_type_is_a_candidate_when_the_context_names_one() -> None:
    context = "Eiffel Tower: The Eiffel Tower is in Paris. The river Seine flows through Paris."
    assert answer_candidates("Which river flows by the Eiffel Tower?", context) == ["Seine"]
    assert answer_candidates("Which river flows by the Eiffel Tower?", context, typed=False) == [
        "Paris",
        "Seine",
    ]
    # Nothing in the context is said to be a country: every name stays a candidate.
    assert answer_candidates("In which country is it?", context) == [
        "Eiffel Tower",
        "Paris",
        "Seine",
    ]


def test_a_yes_no_question_is_answered_yes_or_no() -> None:
    assert answer_candidates("Are Paris and Rome both capitals?", FACTS) == ["yes", "no"]
    assert answer_candidates("Is Paris or Rome larger?", FACTS) != ["yes", "no"]


def test_calibration_removes_what_the_context_alone_makes_likely() -> None:
    # "Paris" is likelier in absolute terms but the question adds nothing to it.
    paris = calibrated(question=-1.0, neutral=-1.0, tokens=1)
    seine = calibrated(question=-2.0, neutral=-5.0, tokens=2)
    assert seine > paris


class _Answer(BaseModel):
    answer: str


class _OtherModelOrDecoder:
    """Stands in for a cascade or a speculative decoder: never called here."""

    name = "other"

    def generate(self, *args: object) -> object:
        raise AssertionError("not called: the agent is refused first")


def search(query: str) -> str:
    """Search."""
    return query


@pytest.mark.parametrize(
    ("field", "value", "parameter"),
    [
        ("tools", [search], "answer_format"),
        ("output_schema", _Answer, "output_schema"),
        ("decoder", _OtherModelOrDecoder(), "decoder"),
        ("model_policy", _OtherModelOrDecoder(), "model_policy"),
    ],
)
def test_an_extracting_agent_refuses_what_it_cannot_honour(
    field: str, value: object, parameter: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        agent = Agent(name="solver", answer_format="extract", **{field: value})  # type: ignore[arg-type]
        agent.bind(ScriptedLLM(["x"]))
    assert caught.value.parameter == parameter


def test_a_model_that_cannot_score_fails_the_step_clearly() -> None:
    memory = SharedMemory()
    memory.scope("run").add(FACTS, kind="fact")
    graph = AgentGraph("extract", model=ScriptedLLM(["unused"]), memory=memory)
    graph.add_agent(Agent(name="solver", answer_format="extract"))
    result = (
        graph.set_entry("solver")
        .set_finish("solver")
        .compile()
        .invoke("Which river?", thread_id="run")
    )
    assert not result.ok and result.error is not None
    assert "needs a model that scores text" in result.error.message


def test_a_run_answer_format_makes_an_extracting_finisher_write_json() -> None:
    graph = AgentGraph("extract", model=ScriptedLLM(['{"river": "Seine"}']))
    graph.add_agent(Agent(name="solver", answer_format="extract"))
    compiled = graph.set_entry("solver").set_finish("solver").compile()
    schema = {"type": "object", "properties": {"river": {"type": "string"}}}
    result = compiled.invoke("Which river?", answer_format=JsonSchemaFormat(json_schema=schema))
    assert result.ok and result.structured == {"solver": {"river": "Seine"}}
    assert result.trace.steps[0].model.answer_scores is None  # written, not extracted


@pytest.mark.slow
def test_the_real_model_extracts_the_answer_with_its_scores() -> None:
    memory = SharedMemory()
    memory.scope("run").add(FACTS, kind="fact")
    graph = AgentGraph("extract", model="smollm2-135m", memory=memory)
    graph.add_agent(Agent(name="solver", answer_format="extract"))
    tokens: list[str] = []
    compiled = graph.set_entry("solver").set_finish("solver").compile()
    # No name of the context is said to be what the question asks for ("what"), so each
    # is a candidate.
    events = list(compiled.stream("What flows through Paris?", thread_id="run", tokens=True))
    result = events[-1].result  # type: ignore[attr-defined]
    step = result.trace.steps[-1]
    tokens = [e.text for e in events if type(e).__name__ == "TokenEvent"]
    scores = step.model.answer_scores
    assert scores is not None and set(scores) == {"France", "Seine"}  # Paris is the question's
    best = max(scores, key=scores.__getitem__)
    assert result.answer == best and tokens == [best]
    assert step.output == best and step.prefill == "Answer: " and step.prompt_tokens > 0
