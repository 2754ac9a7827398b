"""relaygraph's exceptions: one tree, each message stating the rule, the value and the fix.

Hierarchy::

    RelayGraphError
    ├── ConfigError (ValueError)            bad user input: a parameter, a name, a file
    │   ├── ModelNotFoundError (LookupError)   a model name no registry entry matches
    │   ├── LogprobsUnavailableError           routing.uncertainty: an answer without logprobs
    │   └── NoStructureError                   distill.spans: a trace without REASON/ACT
    ├── LLMError                            a model call failed
    │   ├── ContextWindowError (ValueError)    prompt + max_tokens do not fit the window
    │   ├── RequestRejectedError               a worker answered 4xx: the request is wrong
    │   └── TransportError                     the call may succeed if retried
    │       ├── WorkerTimeoutError
    │       ├── WorkerConnectionError
    │       ├── RateLimitedError               429, carries ``retry_after``
    │       ├── WorkerServerError              5xx
    │       ├── EngineOverloadedError          the embedded engine's queue is full
    │       └── CloudUnavailableError          decoding.speculative: the verifier is gone
    ├── ToolError                           a tool call failed or was refused
    │   ├── ToolCallError                      agents.tools: bad arguments, or the tool raised
    │   ├── SandboxError                       eval.security: the sandbox refused the call
    │   └── GuardBlockedError                  eval.security: the guard stopped the call
    ├── ReActParseError (ValueError)        agents.react: a reply without a readable action
    ├── AlfworldEnvError                    eval.alfworld: the game engine failed
    └── APIError                            serving: an error returned to the client as is

Third-party exceptions (httpx, llama.cpp) are translated where they enter, so callers
catch only these. Records of what went wrong in a run (`StepFailure`, `RunFailure`) are
data in traces, not exceptions.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def first_problem(
    errors: Iterable[Mapping[str, Any]], *, skip: tuple[str, ...] = ()
) -> tuple[str, str]:
    """The entry of a pydantic/FastAPI error list to report, as (field path, message).

    Usually the first entry. An unknown field (``extra_forbidden``) comes first, though:
    a misspelled key also makes the field it meant "missing", and the misspelling is the
    mistake to report, with the missing sibling it resembles as the fix.
    ``skip`` drops location parts that name no field (FastAPI's leading ``body``).

    Example:
        >>> first_problem([{"loc": ("messages", 0, "role"), "msg": "Input should be 'user'"}])
        ('messages.0.role', "Input should be 'user'")
        >>> first_problem([
        ...     {"type": "missing", "loc": ("attack", "payloads"), "msg": "Field required"},
        ...     {"type": "extra_forbidden", "loc": ("attack", "paylods"), "msg": "Extra inputs"},
        ... ])
        ('attack.paylods', "unknown field 'paylods' (did you mean 'payloads'?)")
    """
    listed = list(errors)
    first = next((e for e in listed if e.get("type") == "extra_forbidden"), listed[0])
    loc = tuple(first["loc"])
    field = ".".join(str(part) for part in loc if part not in skip)
    message = str(first["msg"])
    if first.get("type") == "extra_forbidden" and loc:
        missing = [
            str(e["loc"][-1])
            for e in listed
            if e.get("type") == "missing" and tuple(e["loc"][:-1]) == loc[:-1]
        ]
        close = difflib.get_close_matches(str(loc[-1]), missing, n=1)
        if close:
            message = f"unknown field {str(loc[-1])!r} (did you mean {close[0]!r}?)"
    return field, message


class RelayGraphError(Exception):
    """Root of every error relaygraph raises on purpose."""


class ConfigError(RelayGraphError, ValueError):
    """Invalid user input: a parameter, a model name, a file.

    Attributes:
        parameter: The offending field, when there is one.
        value: The offending value, when there is one.
    """

    def __init__(self, message: str, *, parameter: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value


class ModelNotFoundError(ConfigError, LookupError):
    """A model name that no registry entry resolves."""


class ToolError(RelayGraphError):
    """A tool call that failed or was refused; its message is what the agent is told."""


class LLMError(RelayGraphError):
    """A model call failed.

    Attributes:
        model: The model the call was for.
    """

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class ContextWindowError(LLMError, ValueError):
    """The prompt plus the requested completion do not fit the model's context window."""

    def __init__(
        self, *, model: str, prompt_tokens: int, max_tokens: int, context_window: int
    ) -> None:
        super().__init__(
            f"prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}, together "
            f"{prompt_tokens + max_tokens}, but model {model!r} has a context window of "
            f"{context_window} tokens; shorten the prompt or lower max_tokens",
            model=model,
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_window = context_window


class RequestRejectedError(LLMError):
    """A worker rejected the request (HTTP 4xx other than 429); retrying will not help.

    Attributes:
        status: The HTTP status code.
        code: The OpenAI-format error code or type, when the worker gave one.
        param: The request field the worker blamed, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status: int,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, model=model)
        self.status = status
        self.code = code
        self.param = param


class TransportError(LLMError):
    """A call that failed for reasons outside the request itself; it may succeed if retried."""


class WorkerTimeoutError(TransportError):
    """The worker did not answer within the timeout."""


class WorkerConnectionError(TransportError):
    """The worker could not be reached."""


class RateLimitedError(TransportError):
    """The worker answered 429.

    Attributes:
        retry_after: Seconds the worker asked to wait, when it said.
    """

    def __init__(
        self, message: str, *, model: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, model=model)
        self.retry_after = retry_after


class EngineOverloadedError(TransportError):
    """The embedded engine's queue of waiting requests is full; retry later (a server
    answers 503 with Retry-After)."""


class WorkerServerError(TransportError):
    """The worker answered 5xx.

    Attributes:
        status: The HTTP status code.
    """

    def __init__(self, message: str, *, model: str | None = None, status: int) -> None:
        super().__init__(message, model=model)
        self.status = status
