"""Constrained decoding: a request's format and tools as a grammar, and per-sequence token masks.

Built on llguidance (Microsoft's grammar engine behind Guidance, also used by llama.cpp
and vLLM). Why llguidance over xgrammar, both tried on the two packaged tokenizers
(``benchmarks/structured.py`` measures the mask cost):

* it builds its tokenizer straight from llama.cpp's vocabulary (``llguidance.llamacpp``),
  so SmolLM2's and Gemma's GGUF vocabularies need no Hugging Face tokenizer files;
* it is one dependency-free wheel, where xgrammar pulls torch, triton and transformers
  (a CUDA build of torch on a fresh machine);
* its Lark dialect inlines JSON schemas (``%json {...}``), so a tool call's fixed text and
  each tool's argument schema compose into one grammar without a converter of our own;
* masks are computed lazily per step (no per-grammar precompilation over the vocabulary),
  which keeps Gemma's 262k-token vocabulary cheap for one-off schemas.

Every grammar is Lark text; `grammar_for` writes it from `GenerationParams`:

* ``response_format`` alone: its grammar (``%json`` for schemas, a regex terminal,
  string alternatives for a choice, the user's Lark or converted GBNF);
* tools with ``required`` or a named tool: ``start: calls`` over the allowed tools, each
  call the exact text of `llm.tool_format` with the tool's arguments schema inside;
* tools with ``auto``: ``start: content | calls``, where content is the response format
  (or free text that does not open a call).

JSON is written compactly with single spaces after ``:`` and ``,`` (no free whitespace,
which a small model can fill forever), and objects carry only their declared properties
(`closed`).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import llguidance
import numpy as np
from llguidance.gbnf_to_lark import gbnf_to_lark

from relaygraph.errors import ConfigError
from relaygraph.llm.constraints import (
    ChoiceFormat,
    GrammarFormat,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    RegexFormat,
)
from relaygraph.llm.tool_format import CALL_CLOSE, CALL_OPEN

if TYPE_CHECKING:
    import numpy.typing as npt

    from relaygraph.llm.constraints import ToolSpec
    from relaygraph.llm.types import GenerationParams

SAFE_INTEGER = 2**53 - 1
"""The largest integer every JSON reader holds exactly (RFC 7493, I-JSON)."""

_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

# Free text that does not open a tool call: whatever does not start with the call marker.
_FREE_TEXT = f"/(.|\\n)*/ & ~/{CALL_OPEN}(.|\\n)*/"


def closed(schema: Any) -> Any:
    """The schema with every object that declares ``properties`` closed to others.

    JSON Schema allows undeclared properties by default, and a small model given the
    freedom invents them without end (``{"a": 1, "b": 2, "c": 3, ...}``). Like llama.cpp's
    schema converter, relaygraph decodes only the declared properties unless the schema
    says ``additionalProperties`` (or ``patternProperties``) itself, and integers without
    bounds within ``SAFE_INTEGER``; what comes out still validates against the original
    schema.

    Example:
        >>> closed({"type": "object", "properties": {"a": {"type": "string"}}})
        {'type': 'object', 'properties': {'a': {'type': 'string'}}, 'additionalProperties': False}
    """
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: closed(value) for key, value in schema.items()}
    if "properties" in out and not {"additionalProperties", "patternProperties"} & out.keys():
        out["additionalProperties"] = False
    if out.get("type") == "integer":
        # Unbounded digits are another thing a small model never stops writing; bound
        # integers to I-JSON's interoperable range (RFC 7493), which every caller can hold.
        out.setdefault("minimum", -SAFE_INTEGER)
        out.setdefault("maximum", SAFE_INTEGER)
    if isinstance(schema.get("properties"), dict):  # property names are not schemas to close
        out["properties"] = {k: closed(v) for k, v in schema["properties"].items()}
    return out


def json_rule(schema: dict[str, Any]) -> str:
    """A Lark ``%json`` rule for a schema, written as every grammar here writes JSON:
    compact and `closed`."""
    styled = closed(schema)
    styled["x-guidance"] = {**_JSON_STYLE, **schema.get("x-guidance", {})}
    return f"%json {json.dumps(styled, ensure_ascii=False)}"


def _content_rules(params: GenerationParams, *, with_tools: bool) -> list[str]:
    """Lark rules defining ``content`` (the reply when it is not a call)."""
    fmt = params.response_format
    if fmt is None:
        return [f"content: FREE_TEXT\nFREE_TEXT: {_FREE_TEXT}"]
    if isinstance(fmt, JsonSchemaFormat):
        return [f"content: {json_rule(fmt.json_schema)}"]
    if isinstance(fmt, JsonObjectFormat):
        return [f"content: {json_rule({'type': 'object'})}"]
    if isinstance(fmt, RegexFormat):
        return [f"content: CONTENT\nCONTENT: /{llguidance.regex_to_lark(fmt.pattern)}/"]
    if isinstance(fmt, ChoiceFormat):
        return ["content: " + " | ".join(json.dumps(c, ensure_ascii=False) for c in fmt.choices)]
    assert isinstance(fmt, GrammarFormat)
    if with_tools:
        raise ConfigError(
            "a grammar response_format cannot be combined with tools the model may call; "
            "use tool_choice='none' or a JSON schema format",
            parameter="response_format",
        )
    return []  # the user's grammar is the whole grammar (grammar_for)


def _call_rules(tools: list[ToolSpec], parallel: bool) -> list[str]:
    """``calls``: one call, or several separated by a line break, of the given tools."""
    rules = [
        "calls: call" + (' ("\\n" call)*' if parallel else ""),
        "call: " + " | ".join(f"call_{i}" for i in range(len(tools))),
    ]
    for i, tool in enumerate(tools):
        head = f'{CALL_OPEN}\n{{"name": {json.dumps(tool.name)}, "arguments": '
        tail = f"}}\n{CALL_CLOSE}"
        arguments = json_rule(tool.parameters)
        rules.append(f"call_{i}: {json.dumps(head)} {arguments} {json.dumps(tail)}")
    return rules


def _user_grammar(fmt: GrammarFormat) -> str:
    if fmt.syntax == "lark":
        return fmt.grammar
    try:
        return gbnf_to_lark(fmt.grammar)
    except Exception as exc:  # the converter raises its own error class and plain ones
        raise ConfigError(
            f"response_format.grammar is not valid GBNF: {exc}", parameter="response_format"
        ) from None


def grammar_for(params: GenerationParams, *, turn_end: str = "") -> str | None:
    """The Lark grammar the reply must follow, or None when it is free text.

    ``turn_end`` is text that ends the assistant's turn when the model has no
    end-of-turn token (a base model's transcript: ``"\nUser:"``); after its calls the
    reply may write it, and the engine's stop strings end generation there.

    Raises:
        ConfigError: A combination the grammar cannot express (a grammar format with
            tools the model may call).
    """
    if not params.constrained:
        return None
    if not params.calls_tools:
        fmt = params.response_format
        if isinstance(fmt, GrammarFormat):
            return _user_grammar(fmt)
        return "\n".join(["start: content", *_content_rules(params, with_tools=False)])
    choice = params.tool_choice
    tools = list(params.tools)
    if isinstance(choice, NamedToolChoice):
        tools = [t for t in tools if t.name == choice.name]
    rules = _call_rules(tools, params.parallel_tool_calls)
    calls = f"calls {json.dumps(turn_end)}?" if turn_end else "calls"
    if choice == "auto":
        content = _content_rules(params, with_tools=True)
        return "\n".join([f"start: content | {calls}", *content, *rules])
    return "\n".join([f"start: {calls}", *rules])


class GrammarEngine:
    """One tokenizer's grammar compiler: validates grammars and starts per-sequence matchers.

    Compiling a grammar is checked once per distinct text (a small LRU cache), so an agent
    that sends the same tools every step pays for validation once.
    """

    def __init__(self, tokenizer: llguidance.LLTokenizer, n_vocab: int) -> None:
        self._tokenizer = tokenizer
        self._n_vocab = n_vocab
        self._checked: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, lark: str, *, parameter: str) -> str:
        """The llguidance grammar for Lark text.

        Raises:
            ConfigError: The grammar (or a JSON schema inside it) is invalid or uses a
                feature llguidance does not support; the message is llguidance's.
        """
        with self._lock:
            if (cached := self._checked.get(lark)) is not None:
                self._checked.move_to_end(lark)
                return cached
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            grammar, self._tokenizer
        )
        if is_error:
            raise ConfigError(
                f"{parameter} cannot be decoded under a grammar: {messages[0]}",
                parameter=parameter,
            )
        with self._lock:
            self._checked[lark] = grammar
            while len(self._checked) > 64:
                self._checked.popitem(last=False)
        return grammar

    def matcher(self, grammar: str) -> TokenMatcher:
        """A fresh matcher for one sequence."""
        return TokenMatcher(llguidance.LLMatcher(self._tokenizer, grammar), self._n_vocab)


class TokenMatcher:
    """The grammar state of one sequence: which tokens may come next, and advancing it."""

    def __init__(self, matcher: llguidance.LLMatcher, n_vocab: int) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab

    def bitmask(self) -> bytes:
        """llguidance's mask for the next token: one bit per vocabulary entry."""
        return bytes(self._matcher.compute_bitmask())

    def allowed(self) -> npt.NDArray[np.bool_]:
        """A boolean row over the vocabulary: True where the grammar allows the token."""
        bits = np.frombuffer(self.bitmask(), dtype=np.uint8)
        # unpackbits gives 0/1 bytes; viewing them as bool saves a copy per step.
        return np.unpackbits(bits, count=self._n_vocab, bitorder="little").view(np.bool_)

    def mask(self, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The logits with every token the grammar forbids set to -inf (a new array)."""
        masked = np.full(logits.shape, -np.inf, dtype=np.float32)
        np.copyto(masked, logits, where=self.allowed())
        return masked

    def advance(self, token_id: int) -> None:
        """Consume the chosen token.

        Raises:
            RuntimeError: The token was not allowed (a bug: the mask forbade it).
        """
        if not self._matcher.consume_token(token_id):
            raise RuntimeError(f"grammar rejected token {token_id}: {self._matcher.get_error()}")

    def accepts(self, token_id: int) -> bool:
        """Whether the token may come next (without consuming it)."""
        return self._matcher.validate_tokens([token_id]) == 1

    @property
    def complete(self) -> bool:
        """The grammar is finished: nothing but end-of-turn may follow."""
        return self._matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        """What was generated so far is a whole sentence of the grammar."""
        return self._matcher.is_accepting()
