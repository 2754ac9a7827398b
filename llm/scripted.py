"""`ScriptedLLM`: a model that replays given replies, for deterministic tests of control flow.

It speaks the whole `LLM` contract with a whitespace tokenizer and costs nothing, so it
also measures framework overhead (``benchmarks/runtime.py``). It never replaces a real
model in a test of a feature: every feature is also tested on the embedded model.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import jsonschema

from relaygraph.errors import ConfigError, LLMError
from relaygraph.llm.constraints import (
    ChoiceFormat,
    GrammarFormat,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    RegexFormat,
)
from relaygraph.llm.protocol import BaseLLM
from relaygraph.llm.stops import TextAssembler
from relaygraph.llm.tool_format import ToolCallSplitter
from relaygraph.llm.types import (
    ChatPrompt,
    Choice,
    Completion,
    CompletionChunk,
    GenerationParams,
    TextPrompt,
    Usage,
    to_prompt,
)

if TYPE_CHECKING:
    from relaygraph.llm.constraints import ResponseFormat, ToolCall
    from relaygraph.llm.types import FinishReason, Prompt, PromptInput, Score

_PIECE = re.compile(r"\s*\S+|\s+")
_DEFAULT = GenerationParams()

Reply = str | Callable[["Prompt"], str]


class ScriptedLLM(BaseLLM):
    """Answers each call with the next scripted reply (or a function of the prompt).

    Example:
        >>> llm = ScriptedLLM(["Thought: easy.\\nAction: finish[4]"])
        >>> llm.complete("What is 2 + 2?").text
        'Thought: easy.\\nAction: finish[4]'
    """

    def __init__(
        self,
        replies: Iterable[str] | Callable[[Prompt], str],
        *,
        name: str = "scripted",
        context_window: int = 8192,
    ) -> None:
        self._replies: Iterator[str] | None = None
        self._reply_fn: Callable[[Prompt], str] | None = None
        if callable(replies):
            self._reply_fn = replies
        else:
            self._replies = iter(list(replies))
        self._name = name
        self._context_window = context_window
        self._vocab: dict[str, int] = {}
        self._pieces: list[str] = []
        self.prompts: list[Prompt] = []
        """Every prompt received, in order (for assertions)."""

    @property
    def name(self) -> str:
        return self._name

    @property
    def context_window(self) -> int:
        return self._context_window

    def _ids(self, text: str) -> list[int]:
        ids = []
        for piece in _PIECE.findall(text):
            if piece not in self._vocab:
                self._vocab[piece] = len(self._pieces)
                self._pieces.append(piece)
            ids.append(self._vocab[piece])
        return ids

    def _render(self, prompt: Prompt) -> str:
        if isinstance(prompt, ChatPrompt):
            return "\n".join(f"{m.role}: {m.content}" for m in prompt.messages) + prompt.prefill
        if isinstance(prompt, TextPrompt):
            return prompt.text
        return self.detokenize(prompt.token_ids)

    def encode(self, prompt: PromptInput | Prompt) -> list[int]:
        return self._ids(self._render(to_prompt(prompt)))

    def tokenize(self, text: str) -> list[int]:
        return self._ids(text)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of token ids.

        Raises:
            ConfigError: An id this model has not handed out (as a real model's
                vocabulary check would, so a server answers 400, not 500).
        """
        bad = [t for t in token_ids if not 0 <= t < len(self._pieces)]
        if bad:
            raise ConfigError(
                f"token id {bad[0]} is outside the vocabulary of {self.name} "
                f"(size {len(self._pieces)})",
                parameter="token_ids",
                value=bad[0],
            )
        return "".join(self._pieces[i] for i in token_ids)

    def _next_reply(self, prompt: Prompt) -> str:
        self.prompts.append(prompt)
        if self._reply_fn is not None:
            return self._reply_fn(prompt)
        assert self._replies is not None  # exactly one of the two is set in __init__
        try:
            return next(self._replies)
        except StopIteration:
            raise LLMError("ScriptedLLM ran out of replies", model=self._name) from None

    def complete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        began = time.perf_counter()
        chunks = list(self.stream(prompt, params))
        text = "".join(c.text for c in chunks)
        usage = chunks[-1].usage or Usage()
        calls = [call for c in chunks for call in c.tool_calls or ()]
        choice = Choice(
            text=text,
            token_ids=[t for c in chunks for t in c.token_ids],
            finish_reason=chunks[-1].finish_reason or "stop",
            tool_calls=calls or None,
        )
        elapsed = time.perf_counter() - began
        return Completion(model=self._name, choices=[choice], usage=usage, latency_s=elapsed)

    def stream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Iterator[CompletionChunk]:
        params = params or _DEFAULT
        if params.n != 1:
            raise ConfigError("ScriptedLLM produces one choice per call", parameter="n")
        p = to_prompt(prompt)
        n_prompt = len(self.encode(p))
        reply = self._next_reply(p)
        # A scripted reply is the whole assistant message; after a prefill the model
        # only produces the rest of it.
        if isinstance(p, ChatPrompt) and p.prefill and reply.startswith(p.prefill):
            reply = reply[len(p.prefill) :]
        if isinstance(params.response_format, GrammarFormat):
            raise ConfigError(
                "ScriptedLLM cannot check a reply against a grammar", parameter="response_format"
            )
        ids = self._ids(reply)
        assembler = TextAssembler(params.stop)
        splitter = ToolCallSplitter() if params.calls_tools else None
        emitted: list[int] = []
        for token in ids[: params.max_tokens]:
            emitted.append(token)
            text = assembler.feed(self._pieces[token].encode())
            calls: list[ToolCall] = []
            if splitter is not None:
                text, calls = splitter.feed(text)
            yield CompletionChunk(
                model=self._name, text=text, token_ids=[token], tool_calls=calls or None
            )
            if assembler.stopped:  # the text before the stop string was in this token
                break
        reason: FinishReason = (
            "length" if len(ids) > params.max_tokens and not assembler.stopped else "stop"
        )
        text, calls = assembler.finish(), []
        if splitter is not None:
            text, calls = splitter.feed(text)
            rest, more = splitter.finish()
            text, calls = text + rest, calls + more
            reason = "tool_calls" if splitter.calls and reason == "stop" else reason
        if reason != "length":
            self._check_script(params, assembler.text, splitter)
        yield CompletionChunk(
            model=self._name,
            text=text,
            tool_calls=calls or None,
            finish_reason=reason,
            usage=Usage(prompt_tokens=n_prompt, completion_tokens=len(emitted)),
        )

    def _check_script(
        self, params: GenerationParams, text: str, splitter: ToolCallSplitter | None
    ) -> None:
        """A scripted model cannot constrain its replies, so it checks them: a script that
        breaks the request's format or tool choice is an error, never passed on."""
        called = bool(splitter and splitter.calls)
        content = splitter.content if splitter is not None else text
        if params.tool_choice == "required" or isinstance(params.tool_choice, NamedToolChoice):
            names = {c.name for c in splitter.calls} if splitter else set()
            wanted = params.tool_choice
            if not called or (isinstance(wanted, NamedToolChoice) and names != {wanted.name}):
                raise LLMError(
                    f"scripted reply {text!r} does not make the tool call that "
                    f"tool_choice={wanted!r} requires",
                    model=self._name,
                )
        fmt = params.response_format
        if fmt is None or called:
            return
        problem = _format_problem(fmt, content)
        if problem:
            raise LLMError(
                f"scripted reply {content!r} breaks the response_format: {problem}",
                model=self._name,
            )

    def score(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        """A scripted model has no distribution; it refuses rather than invent one."""
        del prompt, continuation, top_logprobs
        raise LLMError("ScriptedLLM has no token distribution to score with", model=self._name)


def _format_problem(fmt: ResponseFormat, text: str) -> str | None:
    """Why ``text`` does not satisfy ``fmt``, or None when it does."""
    if isinstance(fmt, ChoiceFormat):
        return None if text in fmt.choices else f"not one of {list(fmt.choices)}"
    if isinstance(fmt, RegexFormat):
        return None if re.fullmatch(fmt.pattern, text) else f"does not match {fmt.pattern!r}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc})"
    if isinstance(fmt, JsonObjectFormat):
        return None if isinstance(value, dict) else "not a JSON object"
    assert isinstance(fmt, JsonSchemaFormat)  # grammars are refused before decoding
    try:
        jsonschema.validate(value, fmt.json_schema)
    except jsonschema.ValidationError as exc:
        return str(exc.message)
    return None
