"""Typed tools: a Python function with type hints, or a pydantic model, becomes a tool.

The model calls a tool as ``name[argument]``: the argument is the value of a tool's only
parameter, or a JSON object for several. Arguments are validated against the tool's
schema; a bad call or an exception inside the tool becomes an observation for the agent,
never a crash of the graph.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ValidationError, create_model
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError

from relaygraph.errors import ConfigError, ToolError, first_problem

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MAX_OBSERVATION_CHARS = 2000
"""Longer tool results are cut (with a note) so one observation cannot flood a prompt."""


class ToolCallError(ToolError):
    """A tool call that failed; its message is shown to the agent as the observation."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A callable the agent may use, with a JSON schema for its arguments.

    Example:
        >>> def add(a: int, b: int) -> int:
        ...     '''Add two integers.'''
        ...     return a + b
        >>> t = Tool.from_function(add)
        >>> t.call('{"a": 2, "b": 3}')
        '5'
    """

    name: str
    description: str
    args_model: type[BaseModel]
    fn: Callable[..., Any]
    takes_model: bool = False
    """True when ``fn`` takes the arguments model itself rather than keyword arguments."""
    return_direct: bool = False
    """The tool's result is the agent's answer: a successful call ends its turn with it
    (LangChain's ``return_direct``), for tools whose output needs no rewording."""
    choices: Callable[[], Sequence[str]] | None = None
    """For a tool of one string parameter: the arguments valid right now (an environment's
    admissible commands), asked before each step; a step decoded under a grammar then
    writes one of them. None, or an empty list: any text."""
    rejected: Callable[[str, str], None] | None = None
    """Called with the raw argument text and the problem when a call's arguments do not
    validate, so an environment can record attempts it never ran (a security sandbox
    scores a malformed unsafe call like any other)."""

    def __post_init__(self) -> None:
        if self.choices is not None and not self.takes_text:
            raise ConfigError(
                f"tool {self.name!r}: choices need a tool of one string parameter",
                parameter="tools",
            )

    @property
    def takes_text(self) -> bool:
        """Whether the argument is written as plain text: one string parameter."""
        properties = self.args_model.model_json_schema().get("properties", {})
        return len(properties) == 1 and next(iter(properties.values())).get("type") == "string"

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        return_direct: bool = False,
        choices: Callable[[], Sequence[str]] | None = None,
    ) -> Tool:
        """A tool from a type-hinted function (or one taking a single pydantic model).

        Raises:
            ConfigError: A parameter without a type hint, ``*args``/``**kwargs``, a type
                pydantic cannot describe, or no description (docstring).
        """
        tool_name: str = name or str(getattr(fn, "__name__", ""))
        if not tool_name.isidentifier():
            raise ConfigError(f"tool name {tool_name!r} must be an identifier", parameter="tools")
        text = description or inspect.getdoc(fn) or ""
        summary = text.strip().split("\n\n")[0].replace("\n", " ")
        if not summary:
            raise ConfigError(
                f"tool {tool_name!r} has no description; give it a docstring or description=",
                parameter="tools",
            )
        try:
            hints = get_type_hints(fn)
        except Exception as exc:  # unresolvable forward references and the like
            raise ConfigError(f"tool {tool_name!r}: cannot read its type hints ({exc})") from None
        params = list(inspect.signature(fn).parameters.values())
        if len(params) == 1 and _is_model(hints.get(params[0].name)):
            model: type[BaseModel] = hints[params[0].name]
            return cls(
                tool_name,
                summary,
                model,
                fn,
                takes_model=True,
                return_direct=return_direct,
                choices=choices,
            )
        fields: dict[str, Any] = {}
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise ConfigError(
                    f"tool {tool_name!r}: *{p.name} cannot be described by a schema; "
                    "list the parameters explicitly",
                    parameter="tools",
                )
            if p.name not in hints:
                raise ConfigError(
                    f"tool {tool_name!r}: parameter {p.name!r} has no type hint",
                    parameter="tools",
                )
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (hints[p.name], default)
        try:
            model = create_model(f"{tool_name}_args", **fields)
            model.model_json_schema()
        except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as exc:
            raise ConfigError(
                f"tool {tool_name!r}: its parameter types cannot be turned into a JSON schema "
                f"({exc.__class__.__name__}: {str(exc).splitlines()[0]})",
                parameter="tools",
            ) from None
        return cls(tool_name, summary, model, fn, return_direct=return_direct, choices=choices)

    @classmethod
    def from_langchain(cls, lc_tool: Any) -> Tool:
        """A tool from a LangChain tool (``langchain_core.tools.BaseTool``).

        Its ``args_schema`` is the arguments model; calls go through its ``invoke``, so
        LangChain's own validation and callbacks run as they would in LangChain.

        Raises:
            ConfigError: The tool has no pydantic ``args_schema`` or a name that is not
                an identifier.
        """
        schema: Any = getattr(lc_tool, "args_schema", None)
        name = str(lc_tool.name)
        if not _is_model(schema):
            raise ConfigError(
                f"LangChain tool {name!r} has no pydantic args_schema to describe its arguments",
                parameter="tools",
            )
        if not name.isidentifier():
            raise ConfigError(f"tool name {name!r} must be an identifier", parameter="tools")

        def run(args: BaseModel) -> Any:
            return lc_tool.invoke(args.model_dump(exclude_unset=True))

        description = str(lc_tool.description or "").strip().split("\n\n")[0].replace("\n", " ")
        model: type[BaseModel] = schema
        direct = bool(getattr(lc_tool, "return_direct", False))
        return cls(name, description or name, model, run, takes_model=True, return_direct=direct)

    @classmethod
    def from_any(cls, item: Any) -> Tool:
        """A `Tool` as it is, a LangChain tool, or a type-hinted function.

        Raises:
            ConfigError: As `from_function` / `from_langchain`.
        """
        if isinstance(item, Tool):
            return item
        if _is_langchain_tool(item):
            return cls.from_langchain(item)
        return cls.from_function(item)

    @property
    def parameters(self) -> list[str]:
        return list(self.args_model.model_fields)

    def json_schema(self) -> dict[str, Any]:
        """The OpenAI function-tool description of this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.args_model.model_json_schema(),
            },
        }

    def signature(self) -> str:
        """How the prompt shows the call, e.g. ``search[<query>]``.

        The angle brackets mark a placeholder: small models copy a bare parameter name
        as the argument (``search[query]``), much less one in brackets, and the step
        grammar never lets ``<`` or ``>`` into a text argument.
        """
        params = self.parameters
        inner = (
            f"<{params[0]}>"
            if len(params) == 1
            else "{" + ", ".join(f'"{p}": …' for p in params) + "}"
        )
        return f"{self.name}[{inner}]"

    def parse_args(self, raw: str) -> BaseModel:
        """Validate a call's raw argument text.

        Raises:
            ToolCallError: The arguments do not match the schema.
        """
        raw = raw.strip()
        params = self.parameters
        try:
            if len(params) == 1 and not raw.startswith("{"):
                return self.args_model.model_validate({params[0]: _unquote(raw)})
            data = json.loads(raw) if raw else {}
            if not isinstance(data, dict):
                raise ToolCallError(f"{self.name} expects a JSON object of {params}")
            return self.args_model.model_validate(data)
        except json.JSONDecodeError as exc:
            raise ToolCallError(f"{self.name}: arguments are not valid JSON ({exc.msg})") from None
        except ValidationError as exc:
            where, problem = first_problem(exc.errors())
            raise ToolCallError(f"{self.name}: invalid argument {where!r}: {problem}") from None

    def call(self, raw_args: str) -> str:
        """Run the tool on raw argument text; the result as observation text.

        Raises:
            ToolCallError: Bad arguments (reported to ``rejected`` first, when set), or
                the tool raised (the message says which).
        """
        try:
            args = self.parse_args(raw_args)
        except ToolCallError as exc:
            if self.rejected is not None:
                self.rejected(raw_args, str(exc))
            raise
        try:
            result = self.fn(args) if self.takes_model else self.fn(**args.model_dump())
        except Exception as exc:
            raise ToolCallError(f"{self.name} failed: {type(exc).__name__}: {exc}") from None
        return _as_text(result)


def _is_langchain_tool(item: Any) -> bool:
    """A ``langchain_core.tools.BaseTool``, checked without importing LangChain for it."""
    return any(
        cls.__name__ == "BaseTool" and cls.__module__.startswith("langchain_core")
        for cls in type(item).__mro__
    )


def _is_model(hint: Any) -> bool:
    return inspect.isclass(hint) and issubclass(hint, BaseModel)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _as_text(result: Any) -> str:
    if isinstance(result, BaseModel):
        text = result.model_dump_json()
    elif isinstance(result, dict | list):
        text = json.dumps(result, ensure_ascii=False, default=str)
    else:
        text = str(result)
    if len(text) > MAX_OBSERVATION_CHARS:
        cut = len(text) - MAX_OBSERVATION_CHARS
        text = f"{text[:MAX_OBSERVATION_CHARS]} … [{cut} more characters cut]"
    return text


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    return_direct: bool = False,
) -> Any:
    """Decorator: ``@tool`` or ``@tool(name=..., description=..., return_direct=...)``
    makes a `Tool`.

    Example:
        >>> @tool
        ... def shout(text: str) -> str:
        ...     '''Upper-case the text.'''
        ...     return text.upper()
        >>> shout.call("hi")
        'HI'
    """
    if fn is None:
        return lambda f: Tool.from_function(
            f, name=name, description=description, return_direct=return_direct
        )
    return Tool.from_function(fn, name=name, description=description, return_direct=return_direct)
