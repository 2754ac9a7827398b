"""Request types of the OpenAI-compatible API (responses: `serving.responses`).

Requests are lenient the way vLLM's are: OpenAI clients send fields a server may not
know (``user``, ``metadata``…), so unknown fields are accepted and logged, never fatal.
Known fields are validated strictly: a negative ``max_tokens`` or ``seed`` is a 400, not
a default; a boolean is JSON ``true`` or ``false``, never ``"yes"`` or ``1``; and text
holding a lone UTF-16 surrogate (JSON ``"\\ud800"``), which no tokenizer can encode, is a
400 naming the field.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Literal

import jsonschema
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from relaygraph.errors import ConfigError
from relaygraph.llm.constraints import (
    ChoiceFormat,
    GrammarFormat,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    RegexFormat,
    ResponseFormat,
    ToolSpec,
)
from relaygraph.llm.openai_wire import calls_from_json
from relaygraph.llm.types import (
    ChatPrompt,
    GenerationParams,
    Message,
)

logger = logging.getLogger("relaygraph.serving")


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
"""A UTF-16 surrogate alone. JSON's ``"\\ud83d\\ude00"`` decodes to one character, but
``"\\ud800"`` leaves a code point that UTF-8, and so every tokenizer, refuses."""


def _lone_surrogate(value: Any, path: str = "") -> tuple[str, str] | None:
    r"""The first lone surrogate in ``value`` (text, or lists and dicts of it) as (what,
    where): where is its path inside ``value``, empty for ``value`` itself; None when all
    of the text is valid Unicode. JSON schemas and tool calls are dicts, so the path
    points inside them.

    Example:
        >>> _lone_surrogate({"properties": {"q": ["ok", "a\ud800"]}})
        ("'\\ud800' at character 1", 'properties.q.1')
    """
    if isinstance(value, str):
        found = _LONE_SURROGATE.search(value)
        return (f"{found.group()!a} at character {found.start()}", path) if found else None
    if isinstance(value, dict):
        for key in value:
            if isinstance(key, str) and _LONE_SURROGATE.search(key):
                return f"in the key {key!a}", path
        items = [(str(key), item) for key, item in value.items()]
    elif isinstance(value, list | tuple):
        items = [(str(index), item) for index, item in enumerate(value)]
    else:  # numbers, booleans, None; a nested request model has checked its own fields
        return None
    for key, item in items:
        if (inner := _lone_surrogate(item, f"{path}.{key}" if path else key)) is not None:
            return inner
    return None


def _check_unicode(value: Any, field: str) -> None:
    """Raise a field error for the first lone surrogate in ``value``, naming where it is.

    Raises:
        PydanticCustomError: Text in ``value`` is not valid Unicode.
    """
    found = _lone_surrogate(value)
    if found is not None:
        what, where = found
        at = f" of {field}.{where}" if where else ""
        problem = f"has a lone UTF-16 surrogate ({what}{at}); text must be valid Unicode"
        raise PydanticCustomError("unicode_surrogate", "{problem}", {"problem": problem})


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")

    @field_validator("*")
    @classmethod
    def _valid_unicode(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse text with a lone surrogate in any field: it would fail as a 500 where the
        text is first encoded (the tokenizer, a JSON reply), far from the field to blame."""
        _check_unicode(value, info.field_name or "")
        return value

    @model_validator(mode="after")
    def _log_ignored(self) -> _Lenient:
        if self.model_extra:
            logger.info("ignoring unsupported request fields: %s", sorted(self.model_extra))
        return self


class StreamOptions(_Lenient):
    include_usage: StrictBool = False


def _check_schema(schema: dict[str, Any], where: str) -> dict[str, Any]:
    """A JSON schema that is itself valid (a 400 naming the problem otherwise)."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = "/".join(str(p) for p in exc.path) or "(root)"
        raise ValueError(f"{where} is not a valid JSON schema at {path}: {exc.message}") from None
    return schema


class JsonSchemaIn(_Lenient):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: StrictBool | None = None

    @field_validator("schema_")
    @classmethod
    def _valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_schema(value, "json_schema.schema")


class ResponseFormatIn(_Lenient):
    """OpenAI's ``response_format``: text, json_object or json_schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaIn | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormatIn:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a json_schema object")
        return self

    def to_format(self) -> ResponseFormat | None:
        if self.type == "json_object":
            return JsonObjectFormat()
        if self.type == "json_schema":
            assert self.json_schema is not None  # checked by the validator
            return JsonSchemaFormat(
                json_schema=self.json_schema.schema_,
                name=self.json_schema.name,
                strict=bool(self.json_schema.strict),
            )
        return None


class StructuredOutputsIn(_Lenient):
    """vLLM's ``structured_outputs`` extension: exactly one of json, regex, choice, grammar."""

    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputsIn:
        given = [k for k in ("json_", "regex", "choice", "grammar") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of json, regex, choice or grammar")
        if isinstance(self.json_, str):
            try:
                self.json_ = json.loads(self.json_)
            except json.JSONDecodeError as exc:
                raise ValueError(f"json is not a JSON schema: {exc}") from None
        if isinstance(self.json_, dict):
            _check_schema(self.json_, "structured_outputs.json")
        return self

    def to_format(self) -> ResponseFormat:
        if isinstance(self.json_, dict):
            return JsonSchemaFormat(json_schema=self.json_)
        if self.regex is not None:
            return RegexFormat(pattern=self.regex)
        if self.choice is not None:
            return ChoiceFormat(choices=tuple(self.choice))
        assert self.grammar is not None  # exactly one is set
        # llama.cpp/xgrammar EBNF writes rules with ::=; Lark never does.
        syntax: Literal["lark", "gbnf"] = "gbnf" if "::=" in self.grammar else "lark"
        return GrammarFormat(grammar=self.grammar, syntax=syntax)


class FunctionIn(_Lenient):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: StrictBool | None = None

    @field_validator("parameters")
    @classmethod
    def _valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_schema(value, "function.parameters")


class ToolIn(_Lenient):
    type: Literal["function"]
    function: FunctionIn

    def to_spec(self) -> ToolSpec:
        f = self.function
        return ToolSpec(
            name=f.name, description=f.description, parameters=f.parameters, strict=bool(f.strict)
        )


class FunctionNameIn(_Lenient):
    name: str


class ToolChoiceIn(_Lenient):
    type: Literal["function"]
    function: FunctionNameIn


_GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


class SamplingFields(_Lenient):
    model: str
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    """Non-negative: the sampler's generator refuses a negative seed."""
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    return_token_ids: StrictBool = False
    """vLLM extension: include the completion's token ids in each choice."""
    return_tokens_as_token_ids: StrictBool = False
    """vLLM extension: write logprob tokens as ``token_id:<id>``."""
    response_format: ResponseFormatIn | None = None
    structured_outputs: StructuredOutputsIn | None = None
    """vLLM extension: regex, choice, grammar (or a JSON schema) for the reply."""

    @model_validator(mode="after")
    def _one_format(self) -> SamplingFields:
        extra = self.model_extra or {}
        if guided := [k for k in _GUIDED_FIELDS if k in extra]:
            # Old vLLM fields: refused, not ignored, since they would constrain the reply.
            raise ValueError(f"{guided[0]} is not supported; send structured_outputs instead")
        wants = self.response_format is not None and self.response_format.type != "text"
        if wants and self.structured_outputs is not None:
            raise ValueError("give response_format or structured_outputs, not both")
        return self

    def response_constraint(self) -> ResponseFormat | None:
        if self.structured_outputs is not None:
            return self.structured_outputs.to_format()
        return self.response_format.to_format() if self.response_format else None

    def generation_params(
        self, max_tokens: int, *, logprobs: bool, top_logprobs: int
    ) -> GenerationParams:
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return GenerationParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            n=self.n,
            stop=tuple(stop),
            seed=self.seed,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            response_format=self.response_constraint(),
            **self.tool_params(),
        )

    def tool_params(self) -> dict[str, Any]:
        """Tool fields of `GenerationParams` (chat requests have them)."""
        return {}


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ChatMessageIn(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _parts_valid_unicode(cls, value: Any) -> Any:
        """Check the parts' text before pydantic tries each type of the union: a part's
        error would come with one for the string type first (``content.str``)."""
        _check_unicode(value, "content")
        return value

    @field_validator("tool_calls")
    @classmethod
    def _calls_name_functions(cls, value: list[dict[str, Any]] | None) -> Any:
        for index, call in enumerate(value or []):
            function = call.get("function")
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise ValueError(f"tool_calls[{index}] must have function.name")
        return value

    def to_message(self) -> Message:
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content or [])
        )
        calls = calls_from_json(self.tool_calls, source="the request's messages")
        # OpenAI's "developer" role is the newer name of "system".
        return Message(
            role="system" if self.role == "developer" else self.role,
            content=text,
            tool_calls=tuple(calls),
            tool_call_id=self.tool_call_id,
        )


class _ChatFields(_Lenient):
    messages: list[ChatMessageIn] = Field(min_length=1)
    continue_final_message: StrictBool = False
    """vLLM extension: the last (assistant) message is the start of the reply to continue."""
    add_generation_prompt: StrictBool = True
    """vLLM extension: must be False with continue_final_message."""

    def chat_prompt(self) -> ChatPrompt:
        messages = [m.to_message() for m in self.messages]
        if not self.continue_final_message:
            return ChatPrompt(messages=tuple(messages))
        if messages[-1].role != "assistant" or self.add_generation_prompt:
            raise ConfigError(
                "continue_final_message needs an assistant message last and "
                "add_generation_prompt=false",
                parameter="continue_final_message",
            )
        return ChatPrompt(messages=tuple(messages[:-1]), prefill=messages[-1].content)


class ChatCompletionRequest(SamplingFields, _ChatFields):
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[ToolIn] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceIn | None = None
    parallel_tool_calls: StrictBool = True

    @model_validator(mode="after")
    def _choice_names_a_tool(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or []]
        choice = self.tool_choice
        if isinstance(choice, ToolChoiceIn) and choice.function.name not in names:
            raise ValueError(
                f"tool_choice names {choice.function.name!r}, which is not among the tools "
                f"({', '.join(names) or 'none given'})"
            )
        if choice == "required" and not names:
            raise ValueError("tool_choice 'required' needs tools")
        return self

    def tool_params(self) -> dict[str, Any]:
        if not self.tools:
            return {}
        choice = self.tool_choice or "auto"
        return {
            "tools": tuple(t.to_spec() for t in self.tools),
            "tool_choice": (
                NamedToolChoice(name=choice.function.name)
                if isinstance(choice, ToolChoiceIn)
                else choice
            ),
            "parallel_tool_calls": self.parallel_tool_calls,
        }


class CompletionRequest(SamplingFields):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int = Field(default=16, gt=0)
    """OpenAI's default for the legacy completions endpoint."""
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: StrictBool = False
    prompt_logprobs: int | None = Field(default=None, ge=0, le=20)
    """vLLM extension: log-probabilities of the prompt tokens, with this many alternatives."""
    prompt_logprobs_start: int | None = Field(default=None, ge=1)
    """relaygraph extension: score prompt positions from this one on (earlier entries are
    null), so the server reuses its cached prefix; a speculative verifier needs only the
    drafted window's positions."""
    suffix: str | None = None


class TokenizeRequest(_Lenient):
    model: str
    prompt: str | None = None
    messages: list[ChatMessageIn] | None = None
    add_special_tokens: StrictBool = True
    add_generation_prompt: StrictBool = True
    continue_final_message: StrictBool = False

    def chat_prompt(self) -> ChatPrompt:
        chat = _ChatFields(
            messages=self.messages or [],
            continue_final_message=self.continue_final_message,
            add_generation_prompt=self.add_generation_prompt,
        )
        return chat.chat_prompt()

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            given = "both" if self.prompt is not None else "neither"
            raise ValueError(f"exactly one of prompt or messages is required; got {given}")
        return self


class DetokenizeRequest(_Lenient):
    model: str
    tokens: list[int]
