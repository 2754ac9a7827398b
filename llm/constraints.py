"""What a generation must look like: response formats, tools and the tool choice.

These types travel inside `GenerationParams`, so every backend sees them and must honour
them (the embedded engine masks tokens with a grammar, workers receive them on the wire)
or refuse the request. Each is a small pydantic model that forbids unknown fields.

Example:
    >>> fmt = JsonSchemaFormat(json_schema={"type": "object"}, name="reply")
    >>> fmt.type
    'json_schema'
    >>> ToolSpec(name="add", parameters={"type": "object"}).name
    'add'
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JsonSchemaFormat(_Strict):
    """The reply is one JSON value that validates against ``json_schema``."""

    type: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any]
    """The JSON schema (draft 2020-12 keywords that the grammar library supports)."""
    name: str = "response"
    """A name for the schema, as OpenAI's ``response_format.json_schema.name``."""
    strict: bool = True
    """OpenAI's strict flag. The embedded engine always enforces the schema; workers
    receive the flag as given."""


class JsonObjectFormat(_Strict):
    """The reply is one JSON object, any keys (OpenAI's ``json_object`` mode)."""

    type: Literal["json_object"] = "json_object"


class RegexFormat(_Strict):
    """The reply matches a regular expression (Rust ``regex`` syntax, anchored at both ends)."""

    type: Literal["regex"] = "regex"
    pattern: str = Field(min_length=1)


class ChoiceFormat(_Strict):
    """The reply is exactly one of these strings."""

    type: Literal["choice"] = "choice"
    choices: tuple[str, ...] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not c for c in value):
            raise ValueError("choices must not be empty strings")
        return value


class GrammarFormat(_Strict):
    """The reply is a sentence of a context-free grammar.

    ``lark`` is llguidance's Lark dialect (a ``start`` rule, ``%json {...}`` for inline
    schemas); ``gbnf`` is llama.cpp's EBNF (a ``root`` rule), converted to Lark.
    """

    type: Literal["grammar"] = "grammar"
    grammar: str = Field(min_length=1)
    syntax: Literal["lark", "gbnf"] = "lark"


ResponseFormat: TypeAlias = Annotated[
    JsonSchemaFormat | JsonObjectFormat | RegexFormat | ChoiceFormat | GrammarFormat,
    Field(discriminator="type"),
]
"""A constraint on the reply's text."""


class ToolSpec(_Strict):
    """A function the model may call, described by a JSON schema of its arguments."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    """The function's name (letters, digits, ``_``, ``.``, ``-``, as OpenAI allows)."""
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON schema of the arguments object."""
    strict: bool = False
    """OpenAI's strict flag; the embedded engine always decodes arguments under the schema."""


class NamedToolChoice(_Strict):
    """Force a call of this one tool."""

    name: str


ToolChoice: TypeAlias = Literal["auto", "none", "required"] | NamedToolChoice
"""``auto``: the model chooses between a reply and calls; ``none``: no call; ``required``:
at least one call; a `NamedToolChoice`: a call of that tool."""


def new_call_id() -> str:
    """A fresh tool-call id in OpenAI's style."""
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCall(_Strict):
    """One function call the model made: OpenAI's ``tool_calls[i]``.

    Example:
        >>> call = ToolCall(name="add", arguments='{"a": 1, "b": 2}')
        >>> call.parsed_arguments()
        {'a': 1, 'b': 2}
    """

    id: str = Field(default_factory=new_call_id)
    name: str
    arguments: str
    """The arguments as a JSON text (what OpenAI sends; parse with `parsed_arguments`)."""

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict.

        Raises:
            ValueError: The arguments are not a JSON object (a worker that does not
                constrain its tool calls can produce that).
        """
        value = json.loads(self.arguments)
        if not isinstance(value, dict):
            raise ValueError(f"tool call arguments are not a JSON object: {self.arguments!r}")
        return value
