"""Constrained decoding in the embedded engine, on the real models: formats, tool calls,
batching, streaming, n > 1, stop strings, log-probabilities, and the same constraints
through relaygraph's own worker and a cascade."""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaygraph.decoding.drafts import PromptLookupDrafter
from relaygraph.decoding.speculative import SpeculativeLLM
from relaygraph.decoding.window import FixedWindow
from relaygraph.errors import ConfigError
from relaygraph.llm import GenerationParams, LocalLLM, OpenAICompatLLM
from relaygraph.llm.constraints import (
    ChoiceFormat,
    GrammarFormat,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    RegexFormat,
    ToolSpec,
)
from relaygraph.routing.models import Cascade, Rung
from relaygraph.routing.uncertainty import MeanLogprob

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
    },
    "required": ["name", "age", "city"],
}
ASK = [{"role": "user", "content": "Describe a person as JSON."}]
ADD = ToolSpec(
    name="add",
    description="Add two integers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
SEARCH = ToolSpec(
    name="search",
    description="Search the web.",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "required": ["query"],
    },
)
ASK_SUM = [{"role": "user", "content": "What is 12 plus 30?"}]


def _schema_params(**extra: Any) -> GenerationParams:
    return GenerationParams(
        max_tokens=80, response_format=JsonSchemaFormat(json_schema=PERSON), **extra
    )


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_each_format_is_obeyed(model: str, request: pytest.FixtureRequest) -> None:
    llm: LocalLLM = request.getfixturevalue(model)
    person = llm.complete(ASK, _schema_params())
    assert person.choice.finish_reason == "stop"
    jsonschema.validate(json.loads(person.text), PERSON)
    obj = llm.complete(ASK, GenerationParams(max_tokens=150, response_format=JsonObjectFormat()))
    assert obj.text.startswith("{")
    if obj.choice.finish_reason == "stop":
        assert isinstance(json.loads(obj.text), dict)
    year = llm.complete(
        [{"role": "user", "content": "When did the Berlin wall fall?"}],
        GenerationParams(max_tokens=8, response_format=RegexFormat(pattern="(19|20)[0-9]{2}")),
    )
    assert len(year.text) == 4 and year.text[:2] in ("19", "20")
    assert year.choice.finish_reason == "stop"
    yes_no = llm.complete(
        [{"role": "user", "content": "Is the sky blue?"}],
        GenerationParams(max_tokens=8, response_format=ChoiceFormat(choices=("yes", "no"))),
    )
    assert yes_no.text in ("yes", "no")
    lark = GrammarFormat(grammar='start: "The answer is " NUM "."\nNUM: /[0-9]{1,3}/')
    answer = llm.complete(ASK_SUM, GenerationParams(max_tokens=12, response_format=lark))
    assert answer.text.startswith("The answer is ") and answer.text.endswith(".")


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_required_and_named_tools_always_call(model: str, request: pytest.FixtureRequest) -> None:
    llm: LocalLLM = request.getfixturevalue(model)
    for choice in ("required", NamedToolChoice(name="search")):
        params = GenerationParams(
            max_tokens=60, tools=(ADD, SEARCH), tool_choice=choice, parallel_tool_calls=False
        )
        reply = llm.complete(ASK_SUM, params)
        assert reply.choice.finish_reason == "tool_calls", reply
        (call,) = reply.choice.tool_calls or []
        assert reply.text == ""
        spec = {"add": ADD, "search": SEARCH}[call.name]
        jsonschema.validate(call.parsed_arguments(), spec.parameters)
        if isinstance(choice, NamedToolChoice):
            assert call.name == "search"


def test_tools_need_chat_messages(smollm2: LocalLLM) -> None:
    with pytest.raises(ConfigError, match="tools need a chat prompt"):
        smollm2.complete("12 + 30 =", GenerationParams(tools=(ADD,), tool_choice="required"))


def test_unsupported_schema_is_refused_before_decoding(smollm2: LocalLLM) -> None:
    bad = JsonSchemaFormat(json_schema={"type": "string", "format": "no-such-format"})
    with pytest.raises(ConfigError, match="response_format cannot be decoded"):
        smollm2.complete(ASK, GenerationParams(response_format=bad))


def test_the_budget_cuts_a_grammar_short_with_length(smollm2: LocalLLM) -> None:
    reply = smollm2.complete(
        ASK, GenerationParams(max_tokens=3, response_format=JsonObjectFormat())
    )
    assert reply.choice.finish_reason == "length"
    assert len(reply.choice.token_ids) == 3


def test_batched_and_streamed_equal_unbatched(smollm2: LocalLLM) -> None:
    prompts = [
        [{"role": "user", "content": f"Describe a person from {city} as JSON."}]
        for city in ("Paris", "Rome", "Oslo")
    ]
    params = _schema_params()
    # Start from empty slots: which prefixes earlier tests left cached changes how a
    # prompt's prefill is split into passes, and so its last digits.
    smollm2.clear_cache()
    alone = [smollm2.complete(p, params) for p in prompts]
    together = smollm2.complete_batch(prompts, params)
    assert [c.text for c in together] == [c.text for c in alone]
    streamed = "".join(chunk.text for chunk in smollm2.stream(prompts[0], params))
    assert streamed == alone[0].text
    tools = GenerationParams(
        max_tokens=60, tools=(ADD,), tool_choice="required", parallel_tool_calls=False
    )
    whole = smollm2.complete(ASK_SUM, tools)
    chunks = list(smollm2.stream(ASK_SUM, tools))
    calls = [call for chunk in chunks for call in chunk.tool_calls or ()]
    assert [c.arguments for c in calls] == [c.arguments for c in whole.choice.tool_calls or ()]
    assert chunks[-1].finish_reason == "tool_calls"


def test_samples_each_follow_the_schema(smollm2: LocalLLM) -> None:
    params = _schema_params(n=4, temperature=1.0, seed=7)
    reply = smollm2.complete(ASK, params)
    assert len(reply.choices) == 4
    for choice in reply.choices:
        if choice.finish_reason == "stop":
            jsonschema.validate(json.loads(choice.text), PERSON)
    assert len({c.text for c in reply.choices}) > 1


def test_stop_strings_still_apply_under_a_grammar(smollm2: LocalLLM) -> None:
    reply = smollm2.complete(ASK, _schema_params(stop=('"age"',)))
    assert reply.choice.finish_reason == "stop"
    assert reply.text.startswith('{"name": ') and '"age"' not in reply.text


def test_logprobs_are_the_models_own_before_the_mask(smollm2: LocalLLM) -> None:
    reply = smollm2.complete(ASK, _schema_params(logprobs=True, top_logprobs=3))
    logprobs = reply.choice.logprobs or []
    assert len(logprobs) == len(reply.choice.token_ids)
    scored = smollm2.score(ASK, reply.choice.token_ids)
    for reported, raw in zip(logprobs, scored.tokens, strict=True):
        assert reported.token_id == raw.token_id
        assert math.isclose(reported.logprob, raw.logprob, abs_tol=1e-4)
    # The mask forced some tokens the model did not rank first.
    assert any(t.rank and t.rank > 1 for t in logprobs)


# -- schemas drawn from a family always give valid output ------------------------------

_LEAVES = st.sampled_from(
    [
        {"type": "string", "maxLength": 12},
        {"type": "integer", "minimum": -50, "maximum": 50},
        {"type": "number", "minimum": 0, "maximum": 10},
        {"type": "boolean"},
        {"enum": ["red", "green", "blue"]},
        {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "null"}]},
    ]
)


def _objects(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.lists(
        st.sampled_from(["id", "name", "size", "tags", "kind", "note"]),
        min_size=1,
        max_size=3,
        unique=True,
    )

    def build(keys: list[str], values: list[dict[str, Any]], optional: int) -> dict[str, Any]:
        properties = dict(zip(keys, values, strict=False))
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties)[: max(1, len(properties) - optional)],
        }

    return names.flatmap(
        lambda keys: st.builds(
            build,
            st.just(keys),
            st.lists(children, min_size=len(keys), max_size=len(keys)),
            st.integers(0, 1),
        )
    )


_SCHEMAS = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        _objects(inner),
        st.builds(lambda item: {"type": "array", "items": item, "maxItems": 3}, inner),
    ),
    max_leaves=5,
).filter(lambda schema: schema.get("type") in ("object", "array"))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(schema=_SCHEMAS)
def test_schemas_from_a_family_always_give_valid_output(
    smollm2: LocalLLM, schema: dict[str, Any]
) -> None:
    reply = smollm2.complete(
        [{"role": "user", "content": "Fill in this JSON."}],
        GenerationParams(max_tokens=160, response_format=JsonSchemaFormat(json_schema=schema)),
    )
    if reply.choice.finish_reason == "stop":
        jsonschema.validate(json.loads(reply.text), schema)
    else:  # the budget ran out first: everything so far is still on the grammar's path
        assert reply.choice.finish_reason == "length" and len(reply.choice.token_ids) == 160


# -- the same constraints through a worker and a cascade ------------------------------


def test_constraints_travel_to_a_relaygraph_worker(
    remote_smollm2: OpenAICompatLLM, smollm2: LocalLLM
) -> None:
    params = _schema_params()
    assert remote_smollm2.complete(ASK, params).text == smollm2.complete(ASK, params).text
    tools = GenerationParams(
        max_tokens=60, tools=(ADD,), tool_choice="required", parallel_tool_calls=False
    )
    remote = remote_smollm2.complete(ASK_SUM, tools)
    local = smollm2.complete(ASK_SUM, tools)
    assert remote.choice.finish_reason == "tool_calls"
    assert [c.arguments for c in remote.choice.tool_calls or ()] == [
        c.arguments for c in local.choice.tool_calls or ()
    ]
    streamed = list(remote_smollm2.stream(ASK_SUM, tools))
    calls = [call for chunk in streamed for call in chunk.tool_calls or ()]
    assert [c.name for c in calls] == ["add"] and streamed[-1].finish_reason == "tool_calls"


def test_a_cascade_answers_under_the_constraint(smollm2: LocalLLM, gemma3: LocalLLM) -> None:
    for threshold in (-math.inf, math.inf):  # escalate always / never
        cascade = Cascade([Rung(smollm2, MeanLogprob(), threshold=threshold), Rung(gemma3)])
        result = cascade.route(ASK, _schema_params())
        jsonschema.validate(json.loads(result.completion.text), PERSON)


class _WildDraft:
    """SmolLM2 drafting at temperature 1.5 and without the grammar: most of its proposals
    break the format and must be rejected."""

    def __init__(self, llm: LocalLLM) -> None:
        self._llm = llm
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def complete(self, prompt: Any, params: GenerationParams | None = None) -> Any:
        self.calls += 1
        assert params is not None and not params.constrained  # drafts propose freely
        hot = params.model_copy(update={"temperature": 1.5, "seed": self.calls})
        return self._llm.complete(prompt, hot)


def test_speculative_decoding_keeps_the_targets_constrained_output(smollm2: LocalLLM) -> None:
    for draft in (PromptLookupDrafter(), smollm2, _WildDraft(smollm2)):
        spec = SpeculativeLLM(draft, smollm2, FixedWindow(4))  # type: ignore[arg-type]
        for params in (
            _schema_params(),
            GenerationParams(
                max_tokens=60, tools=(ADD,), tool_choice="required", parallel_tool_calls=False
            ),
        ):
            direct = smollm2.complete(ASK_SUM if params.tools else ASK, params)
            drafted = spec.complete(ASK_SUM if params.tools else ASK, params)
            assert drafted.choice.token_ids == direct.choice.token_ids
            assert drafted.text == direct.text
            assert drafted.choice.finish_reason == direct.choice.finish_reason
            assert [c.arguments for c in drafted.choice.tool_calls or ()] == [
                c.arguments for c in direct.choice.tool_calls or ()
            ]
    sampled = SpeculativeLLM(smollm2, smollm2, FixedWindow(3)).complete(
        ASK, _schema_params(temperature=0.8, seed=3)
    )
    if sampled.choice.finish_reason == "stop":
        jsonschema.validate(json.loads(sampled.text), PERSON)


def test_speculative_decoding_refuses_constraints_on_a_remote_target(
    smollm2: LocalLLM, remote_smollm2: OpenAICompatLLM
) -> None:
    spec = SpeculativeLLM(smollm2, remote_smollm2, FixedWindow(4))
    with pytest.raises(ConfigError, match="needs an in-process target"):
        spec.complete(ASK, _schema_params())
