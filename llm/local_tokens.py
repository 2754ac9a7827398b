"""`LocalTokens`: the text side of an embedded GGUF model — its chat template, prompts to
token ids and back, the vocabulary and window checks, and the tokens that end a reply.

`LocalLLM` asks it for every prompt it queues; the end-of-turn token is discovered here
from the chat template itself, since GGUF metadata names only end of text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph.errors import ConfigError, ContextWindowError
from relaygraph.llm.chat_template import PLAIN_STOP, PLAIN_TEMPLATE, ChatTemplate
from relaygraph.llm.types import ChatPrompt, Message, Prompt, PromptInput, TextPrompt, to_prompt

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from relaygraph.llm.catalog import ChatFormat
    from relaygraph.llm.llamacpp import LlamaRuntime


class LocalTokens:
    """Tokens of one loaded GGUF model.

    Args:
        runtime: The loaded model.
        name: The model name, for errors.
        path: The model file, for errors.
        chat_format: ``"gguf"`` renders chats with the file's own template; ``"plain"``
            with a plain transcript that stops on its turn marker.

    Raises:
        ConfigError: A ``"gguf"`` model whose file has no chat template.

    Example:
        >>> runtime = LlamaRuntime(path, seq_len=2048, n_seq_max=1, n_threads=2)  # doctest: +SKIP
        >>> tokens = LocalTokens(runtime, name="m", path=path, chat_format="gguf")  # doctest: +SKIP
        >>> tokens.detokenize(tokens.tokenize("Paris"))                           # doctest: +SKIP
        'Paris'
    """

    def __init__(
        self, runtime: LlamaRuntime, *, name: str, path: Path, chat_format: ChatFormat
    ) -> None:
        self._runtime = runtime
        self._name = name
        source = runtime.metadata("tokenizer.chat_template") if chat_format == "gguf" else None
        if chat_format == "gguf" and source is None:
            raise ConfigError(
                f"{path} has no chat template; load it with chat_format='plain'",
                parameter="chat_format",
            )
        self._bos_id = int(runtime.metadata("tokenizer.ggml.bos_token_id") or -1)
        self._eos_id = int(runtime.metadata("tokenizer.ggml.eos_token_id") or -1)
        self._template = ChatTemplate(
            source or PLAIN_TEMPLATE,
            bos_token=runtime.token_text(self._bos_id) if self._bos_id >= 0 else "",
            eos_token=runtime.token_text(self._eos_id) if self._eos_id >= 0 else "",
        )
        self.template_stop: tuple[str, ...] = PLAIN_STOP if chat_format == "plain" else ()
        """Stop strings a chat prompt adds (a plain transcript's turn marker)."""
        self._end_ids: frozenset[int] | None = None
        self._end_of_turn_id: int | None = None

    def render(self, prompt: PromptInput | Prompt) -> str:
        """The text the model sees for a chat or text prompt (chat template applied)."""
        p = to_prompt(prompt)
        if isinstance(p, ChatPrompt):
            return self._template.render(p.messages) + p.prefill
        if isinstance(p, TextPrompt):
            return p.text
        return self._runtime.detokenize(p.token_ids)

    def encode(self, prompt: PromptInput | Prompt) -> list[int]:
        """Token ids of a prompt, with the model's BOS token when it wants one.

        Raises:
            ConfigError: A token prompt with an id outside the vocabulary.
        """
        p = to_prompt(prompt)
        if not isinstance(p, TextPrompt | ChatPrompt):
            self.check_vocabulary(p.token_ids, parameter="prompt")
            return list(p.token_ids)
        ids = self._runtime.tokenize(self.render(p), add_special=False, parse_special=True)
        if self._runtime.add_bos and self._bos_id >= 0 and (not ids or ids[0] != self._bos_id):
            ids.insert(0, self._bos_id)
        return ids

    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain text (special tokens are text here, not markers)."""
        return self._runtime.tokenize(text, add_special=False, parse_special=False)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of token ids.

        Raises:
            ConfigError: An id outside the vocabulary (llama.cpp would abort the process).
        """
        self.check_vocabulary(token_ids, parameter="token_ids")
        return self._runtime.detokenize(token_ids)

    def check_vocabulary(self, token_ids: Sequence[int], *, parameter: str) -> None:
        """Refuse ids outside the vocabulary before llama.cpp sees them."""
        bad = [t for t in token_ids if not 0 <= t < self._runtime.n_vocab]
        if bad:
            raise ConfigError(
                f"token id {bad[0]} is outside the vocabulary of {self._name} "
                f"(size {self._runtime.n_vocab})",
                parameter=parameter,
                value=bad[0],
            )

    def check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        """Refuse a request whose prompt and reply cannot fit the context window."""
        if prompt_tokens + max_tokens > self._runtime.seq_len:
            raise ContextWindowError(
                model=self._name,
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
                context_window=self._runtime.seq_len,
            )

    @property
    def end_token_ids(self) -> frozenset[int]:
        """Every token id that ends generation (end of text, end of turn)."""
        if self._end_ids is None:
            rt = self._runtime
            self._end_ids = frozenset(t for t in range(rt.n_vocab) if rt.is_end_of_generation(t))
        return self._end_ids

    @property
    def end_of_turn_id(self) -> int:
        """The token that ends the model's reply: the one the chat template closes an
        assistant turn with when it ends generation (SmolLM2's ``<|im_end|>``), else the
        GGUF's end-of-text token (plain-format models stop on text).

        Raises:
            ConfigError: The model has neither.
        """
        if self._end_of_turn_id is None:  # asked once per example of a dataset
            self._end_of_turn_id = self._find_end_of_turn()
        return self._end_of_turn_id

    def _find_end_of_turn(self) -> int:
        # Render a closed assistant turn around a marker: the first token after the
        # marker is what the template ends a turn with.
        marker = "REPLY-END-MARKER"
        closed = self._template.render(
            (Message(role="user", content="?"), Message(role="assistant", content=marker)),
            add_generation_prompt=False,
        )
        after = self._runtime.tokenize(
            closed.split(marker, 1)[1], add_special=False, parse_special=True
        )
        if after and after[0] in self.end_token_ids:
            return after[0]
        if self._eos_id >= 0:
            return self._eos_id
        raise ConfigError(f"{self._name} has no end-of-turn or end-of-text token")
