"""Validation at the `llm` boundary: every bad input gets a clear error naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from relaygraph.errors import ConfigError
from relaygraph.llm import ChatPrompt, GenerationParams, Message, TextPrompt, TokenPrompt, to_prompt


def test_prompt_forms_are_recognised() -> None:
    assert to_prompt("hi") == TextPrompt(text="hi")
    assert to_prompt([1, 2]) == TokenPrompt(token_ids=(1, 2))
    chat = to_prompt([{"role": "user", "content": "hi"}, Message(role="assistant", content="yo")])
    assert isinstance(chat, ChatPrompt)
    assert [m.role for m in chat.messages] == ["user", "assistant"]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("", "prompt"),
        ([], "prompt"),
        (b"\xff\xfe", "prompt"),
        ("bad \udcff surrogate", "prompt"),
        ([-1, 5], "prompt"),
        ([{"role": "wizard", "content": "x"}], "messages[0]"),
        ([{"role": "user"}], "messages[0]"),
        ([{"role": "user", "content": "ok \udc80"}], "messages[0].content"),
    ],
)
def test_bad_prompts_name_the_field(bad: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        to_prompt(bad)  # type: ignore[arg-type]
    assert info.value.parameter == field
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"n": 0}, "n"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"stop": [""]}, "stop"),
        ({"max_tokenz": 5}, "max_tokenz"),
    ],
)
def test_bad_generation_params_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        GenerationParams(**kwargs)  # type: ignore[arg-type]
    assert field in str(info.value)


def test_top_logprobs_requires_logprobs() -> None:
    with pytest.raises(ValidationError, match="requires logprobs=True"):
        GenerationParams(top_logprobs=3)


def test_a_single_stop_string_is_accepted() -> None:
    assert GenerationParams(stop="\n").stop == ("\n",)  # type: ignore[arg-type]
