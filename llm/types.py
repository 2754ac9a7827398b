"""The request and response types every `LLM` speaks.

Public types are pydantic models (they cross process and API boundaries); user-facing
configuration forbids unknown fields so a typo fails loudly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)

from relaygraph.errors import ConfigError, first_problem
from relaygraph.llm.constraints import NamedToolChoice, ResponseFormat, ToolCall, ToolSpec

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
FinishReason: TypeAlias = Literal["stop", "length", "tool_calls"]


class Message(BaseModel):
    """One chat message.

    Example:
        >>> Message(role="user", content="What is the capital of France?").role
        'user'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    """Who speaks: system, user, assistant or tool."""
    content: str = ""
    """The message text (empty for an assistant turn that only calls tools)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """The calls an assistant turn made."""
    tool_call_id: str | None = None
    """For a tool message: the id of the call it answers."""

    @model_validator(mode="before")
    @classmethod
    def _content_unless_calling(cls, data: Any) -> Any:
        # Only an assistant turn that calls tools may leave out its text.
        if isinstance(data, Mapping) and data.get("content") is None:
            if data.get("role") == "assistant" and data.get("tool_calls"):
                return {**data, "content": ""}
            if "content" not in data:
                raise ValueError("content is required")
        return data

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> Message:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("only tool messages carry a tool_call_id")
        return self


ChatInput: TypeAlias = Sequence[Message | Mapping[str, Any]]
PromptInput: TypeAlias = str | ChatInput | Sequence[int]
"""What `LLM` methods accept: raw text (no chat template), chat messages (the model's
chat template is applied), or token ids (used as they are)."""


class TextPrompt(BaseModel):
    """Raw text, tokenized as is, without a chat template."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["text"] = "text"
    text: str


class ChatPrompt(BaseModel):
    """Chat messages, rendered with the model's chat template.

    ``prefill`` is text the assistant's reply starts with: the model continues it (vLLM's
    ``continue_final_message``). The completion's text excludes it.
    """

    model_config = ConfigDict(frozen=True)
    kind: Literal["chat"] = "chat"
    messages: tuple[Message, ...]
    prefill: str = ""


class TokenPrompt(BaseModel):
    """Token ids of the model's own vocabulary, used as they are."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["tokens"] = "tokens"
    token_ids: tuple[int, ...]


Prompt: TypeAlias = TextPrompt | ChatPrompt | TokenPrompt


def _check_utf8(text: str, where: str) -> None:
    # A str holding lone surrogates (bytes decoded with surrogateescape) cannot be
    # tokenized; say so here instead of failing inside the tokenizer.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"{where} is not valid UTF-8 text ({exc.reason} at position {exc.start}); "
            "decode the input as UTF-8 before passing it",
            parameter=where,
        ) from None


def to_prompt(value: PromptInput | Prompt) -> Prompt:
    """Validate any accepted prompt form into a `Prompt`.

    Raises:
        ConfigError: Empty prompt, bytes, non-UTF-8 text, negative token ids or
            malformed messages, naming the offending field.
    """
    if isinstance(value, TextPrompt | ChatPrompt | TokenPrompt):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"prompt is not valid UTF-8 (byte {exc.start}: {exc.reason})",
                parameter="prompt",
            ) from None
    if isinstance(value, str):
        if not value:
            raise ConfigError("prompt is empty; give at least one character", parameter="prompt")
        _check_utf8(value, "prompt")
        return TextPrompt(text=value)
    items = list(value)
    if not items:
        raise ConfigError("prompt is empty; give at least one message or token", parameter="prompt")
    ids = [i for i in items if isinstance(i, int) and not isinstance(i, bool)]
    if len(ids) == len(items):
        if min(ids) < 0:
            raise ConfigError("token ids must be >= 0", parameter="prompt", value=min(ids))
        return TokenPrompt(token_ids=tuple(ids))
    messages: list[Message] = []
    for index, item in enumerate(items):
        try:
            message = item if isinstance(item, Message) else Message.model_validate(item)
        except ValidationError as exc:
            field, problem = first_problem(exc.errors())
            raise ConfigError(
                f"messages[{index}].{field}: {problem}", parameter=f"messages[{index}]"
            ) from None
        _check_utf8(message.content, f"messages[{index}].content")
        messages.append(message)
    return ChatPrompt(messages=tuple(messages))


class GenerationParams(BaseModel):
    """How to sample a completion.

    Defaults are greedy and deterministic: agents want reproducible steps; ask for
    temperature > 0 to sample.

    Example:
        >>> GenerationParams(max_tokens=32, temperature=0.7, seed=1).n
        1
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=256, gt=0)
    """Most tokens to generate; generation also stops at end-of-turn and stop strings."""
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    """0 is greedy (argmax); higher flattens the distribution."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling: sample only from the smallest set of tokens with this much mass."""
    stop: tuple[str, ...] = Field(default=(), max_length=16)
    """Strings that end generation; the matched stop string is not part of the text."""
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    """Seed for sampling; the same seed and prompt give the same completion."""
    n: int = Field(default=1, ge=1, le=16)
    """Number of completions to sample for the prompt."""
    logprobs: bool = False
    """Return the log-probability of each generated token under the model."""
    top_logprobs: int = Field(default=0, ge=0, le=20)
    """With logprobs, also return this many most likely alternatives per position."""
    response_format: ResponseFormat | None = None
    """A constraint on the reply's text (JSON schema, JSON object, regex, choice, grammar);
    None: free text."""
    tools: tuple[ToolSpec, ...] = Field(default=(), max_length=128)
    """Functions the model may call; calls come back in ``Choice.tool_calls``."""
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice = "auto"
    """Whether the model may (auto), must not (none) or must (required, or a named tool)
    call a tool."""
    parallel_tool_calls: bool = True
    """Whether one reply may hold several calls."""

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice_forms(cls, value: Any) -> Any:
        # OpenAI's wire form {"type": "function", "function": {"name": ...}} is accepted.
        if isinstance(value, Mapping) and isinstance(value.get("function"), Mapping):
            return {"name": value["function"].get("name")}
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        return value

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> GenerationParams:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs > 0 requires logprobs=True")
        return self

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self) -> GenerationParams:
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tools: two tools share a name ({names})")
        if self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs at least one tool")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.name not in names:
            raise ValueError(
                f"tool_choice names {self.tool_choice.name!r}, which is not among the tools "
                f"({', '.join(names) or 'none given'})"
            )
        return self

    def unconstrained(self) -> GenerationParams:
        """These parameters without a response format or tools."""
        return self.model_copy(update={"response_format": None, "tools": (), "tool_choice": "auto"})

    @property
    def constrained(self) -> bool:
        """Whether the reply is constrained by a format or may contain tool calls."""
        return self.response_format is not None or self.calls_tools

    @property
    def calls_tools(self) -> bool:
        """Whether the reply may contain tool calls."""
        return bool(self.tools) and self.tool_choice != "none"


class TopLogprob(BaseModel):
    """One candidate token at a position, with its log-probability."""

    token_id: int
    token: str
    logprob: float


class TokenLogprob(BaseModel):
    """A chosen token's log-probability, and the most likely alternatives at its position."""

    token_id: int
    token: str
    logprob: float
    rank: int | None = None
    """1 for the most likely token; None when the backend does not report it."""
    top: list[TopLogprob] = Field(default_factory=list)


class Usage(BaseModel):
    """Tokens a call consumed, counted with the model's own tokenizer."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Of ``prompt_tokens``, those read from a prefix cache instead of evaluated
    (OpenAI's ``usage.prompt_tokens_details.cached_tokens``)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )


def combined_load(*loads: LoadReport | None) -> LoadReport | None:
    """The sum of the load reports given, skipping absent ones (None when all are)."""
    present = [load for load in loads if load is not None]
    return sum(present[1:], present[0]) if present else None


class LoadReport(BaseModel):
    """How busy the engine was while it served a request: what a caller needs to tell
    its own cost from the load others put on a shared worker (the speculative decoder's
    queue-aware window reads it).

    Served as the ``relaygraph.load`` extension field of responses.
    """

    queue_s: float = Field(default=0.0, ge=0)
    """Seconds the request waited for a free slot before its first pass."""
    passes: int = Field(default=0, ge=0)
    """Batched forward passes the request took part in."""
    shared_tokens: int = Field(default=0, ge=0)
    """Tokens of other requests evaluated in those passes, summed over them."""

    def __add__(self, other: LoadReport) -> LoadReport:
        return LoadReport(
            queue_s=self.queue_s + other.queue_s,
            passes=self.passes + other.passes,
            shared_tokens=self.shared_tokens + other.shared_tokens,
        )


class Choice(BaseModel):
    """One sampled completion.

    ``token_ids`` include an end-of-turn token when one ended generation (its probability
    matters to uncertainty estimates), while ``text`` never shows it or a stop string.
    """

    index: int = 0
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason
    tool_calls: list[ToolCall] | None = None
    """The calls the reply made (``finish_reason`` is then ``tool_calls``); ``text`` is
    then the reply's prose outside the calls (often empty), as OpenAI's ``content``."""


class Completion(BaseModel):
    """The result of `LLM.complete`: one or more choices, usage and latency.

    Example:
        >>> c = Completion(model="m", choices=[Choice(text="Paris", token_ids=[1],
        ...     finish_reason="stop")], usage=Usage(prompt_tokens=5, completion_tokens=1),
        ...     latency_s=0.1)
        >>> c.text
        'Paris'
    """

    model: str
    choices: list[Choice]
    usage: Usage
    latency_s: float
    """Wall time of the whole call, seconds."""
    decoding: dict[str, Any] | None = None
    """How the tokens were produced when a decoder other than the model's own did it
    (speculative decoding: rounds, windows, drafted and accepted tokens, seconds)."""
    load: LoadReport | None = None
    """The engine's load while serving the call, where the backend reports it."""

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.choices[0].text

    @property
    def choice(self) -> Choice:
        """The first choice."""
        return self.choices[0]


class CompletionChunk(BaseModel):
    """One streamed piece of a completion; the last chunk has ``finish_reason`` and ``usage``."""

    model: str
    text: str = ""
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    tool_calls: list[ToolCall] | None = None
    """Tool calls completed with this chunk (each arrives whole, once)."""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    load: LoadReport | None = None
    """On the last chunk, the engine's load while serving the stream (where reported)."""


class Score(BaseModel):
    """Per-token log-probabilities of a given continuation after a prompt (one forward pass).

    ``next_top`` is the distribution of the token after the continuation (top-k), which
    is what a speculative-decoding verifier needs for its bonus token.
    """

    model: str
    prompt_tokens: int
    tokens: list[TokenLogprob]
    next_top: list[TopLogprob] = Field(default_factory=list)
    latency_s: float
    cached_tokens: int = 0
    """Positions read from a prefix cache instead of evaluated."""
    load: LoadReport | None = None
    """The engine's load while scoring, where the backend reports it."""

    @property
    def total_logprob(self) -> float:
        """Sum of the continuation's token log-probabilities."""
        return sum(t.logprob for t in self.tokens)
