"""A thin, typed owner of one llama.cpp model and context (through llama-cpp-python's C API).

relaygraph drives llama.cpp's C API directly rather than the high-level ``Llama`` class
because it needs three things that class does not give together: logits for chosen
positions only (``score`` over k tokens without ``logits_all``, whose buffer would be
n_ctx x 262k floats for Gemma), several sequences decoded in one batch (batched
generation), and explicit control of each sequence's KV cache (prefix reuse).

Not thread-safe: `LocalLLM` serialises access with a lock.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import llama_cpp
import numpy as np
from llguidance.llamacpp import lltokenizer_from_vocab

from relaygraph.errors import LLMError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import llguidance

logger = logging.getLogger("relaygraph.llm.llamacpp")

_GGML_LOG_ERROR = 4  # ggml.h: NONE=0 DEBUG=1 INFO=2 WARN=3 ERROR=4 CONT=5


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _log_errors_only(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp narrates every model load (hundreds of lines) on stderr; keep its errors.
    if level == _GGML_LOG_ERROR:
        logger.error(text.decode("utf-8", errors="replace").rstrip())


_backend_lock = threading.Lock()


@functools.cache
def _init_backend_once() -> None:
    llama_cpp.llama_log_set(_log_errors_only, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


def init_backend() -> None:
    """Start llama.cpp once per process, quiet but for its errors."""
    with _backend_lock:  # functools.cache alone lets two first callers both run it
        _init_backend_once()


@dataclass(frozen=True, slots=True)
class DecodeItem:
    """Tokens to append to one sequence's KV cache.

    Attributes:
        seq_id: Which sequence (0 .. n_seq_max-1).
        tokens: Token ids to evaluate.
        start_pos: Position of ``tokens[0]`` in the sequence.
        logits_from: Index into ``tokens`` from which logits are wanted (``len(tokens)-1``
            for just the next-token distribution).
    """

    seq_id: int
    tokens: Sequence[int]
    start_pos: int
    logits_from: int


class LlamaRuntime:
    """One GGUF model, one context with ``n_seq_max`` independent sequences.

    Each sequence gets ``seq_len`` KV cells (the context is not unified, so sequences
    never evict each other).
    """

    def __init__(self, path: Path, *, seq_len: int, n_seq_max: int, n_threads: int) -> None:
        init_backend()
        model_params = llama_cpp.llama_model_default_params()
        # No repacked weight layouts: on CPUs with AMX (Sapphire Rapids) llama.cpp moves
        # Q4_1 weights into AMX tiles, and a prefill of a few dozen tokens through them
        # segfaults (a 17-token prompt did, here). Plain layouts run on every CPU alike.
        model_params.use_extra_bufts = False
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise LLMError(f"llama.cpp could not load {path}; is it a GGUF file?")
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self._model))
        self.seq_len = min(seq_len, self.n_ctx_train)
        self.n_seq_max = n_seq_max
        self.n_batch = 512
        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = self.seq_len * n_seq_max
        ctx_params.n_batch = self.n_batch
        ctx_params.n_ubatch = self.n_batch
        ctx_params.n_seq_max = n_seq_max
        ctx_params.kv_unified = False
        ctx_params.n_threads = n_threads
        ctx_params.n_threads_batch = n_threads
        ctx_params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise LLMError(f"llama.cpp could not create a context for {path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, n_seq_max)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.size_bytes = int(llama_cpp.llama_model_size(self._model))
        self.n_params = int(llama_cpp.llama_model_n_params(self._model))
        self._pieces: dict[int, bytes] = {}

    def close(self) -> None:
        """Free the C objects; the runtime is unusable afterwards."""
        if self._ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            llama_cpp.llama_model_free(self._model)
            self._ctx = None

    def __del__(self) -> None:
        self.close()

    # -- vocabulary -------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """Token ids of ``text``; ``parse_special`` maps text like ``<|im_start|>`` to its token."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buffer = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(
            self._vocab, data, len(data), buffer, capacity, add_special, parse_special
        )
        if n < 0:  # buffer too small: -n is the size needed
            capacity = -n
            buffer = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buffer, capacity, add_special, parse_special
            )
        return list(buffer[:n])

    def piece(self, token_id: int) -> bytes:
        """The bytes one token stands for, control tokens rendered empty (cached)."""
        cached = self._pieces.get(token_id)
        if cached is None:
            buffer = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buffer, 64, 0, False)
            if n < 0:
                buffer = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buffer, -n, 0, False)
            cached = buffer.raw[:n]
            self._pieces[token_id] = cached
        return cached

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in token_ids).decode("utf-8", errors="replace")

    def is_end_of_generation(self, token_id: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token_id))

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata string, or None when the file lacks the key."""
        size = 1 << 16
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buffer, size)
        if n < 0:
            return None
        if n >= size:
            buffer = ctypes.create_string_buffer(n + 1)
            llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buffer, n + 1)
        return buffer.value.decode("utf-8", errors="replace")

    def grammar_tokenizer(self, end_ids: Sequence[int]) -> llguidance.LLTokenizer:
        """llguidance's view of this vocabulary, for grammar masks (about a second to build).

        ``end_ids`` are the tokens a finished grammar allows (end of text and of turn).
        """
        with warnings.catch_warnings():
            # llguidance reads token attributes through a llama-cpp-python alias that
            # warns it is deprecated; the call is theirs and still correct.
            warnings.simplefilter("ignore", DeprecationWarning)
            return lltokenizer_from_vocab(self._vocab, eos_token=list(end_ids))

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry of a token (``<|im_end|>`` for control tokens)."""
        return str(llama_cpp.llama_vocab_get_text(self._vocab, token_id).decode("utf-8", "replace"))

    # -- KV cache ---------------------------------------------------------------------

    def truncate(self, seq_id: int, keep: int) -> bool:
        """Drop the sequence's cache from position ``keep`` on; False if only a full clear works.

        Sliding-window layers (Gemma 3) cannot always drop a suffix; the caller then
        clears the sequence with ``truncate(seq_id, 0)`` and evaluates from scratch.
        """
        return bool(llama_cpp.llama_memory_seq_rm(self._memory, seq_id, keep, -1))

    def copy_sequence(self, src: int, dst: int) -> None:
        """Make ``dst``'s cache a copy of ``src``'s (for n samples of one prompt)."""
        llama_cpp.llama_memory_seq_rm(self._memory, dst, 0, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, src, dst, -1, -1)

    # -- evaluation -------------------------------------------------------------------

    def decode(self, items: Sequence[DecodeItem]) -> list[np.ndarray]:
        """Evaluate the items in as few llama_decode calls as fit ``n_batch``.

        Returns, per item, a float32 array of shape (len(tokens) - logits_from, n_vocab):
        the logits predicting the token after each wanted position.
        """
        wanted: list[list[np.ndarray]] = [[] for _ in items]
        pending: list[tuple[int, int]] = []  # (item index, token index) in this batch
        filled = 0
        for index, item in enumerate(items):
            for offset, token in enumerate(item.tokens):
                if filled == self.n_batch:
                    self._run(filled, pending, wanted)
                    filled, pending = 0, []
                batch = self._batch
                batch.token[filled] = token
                batch.pos[filled] = item.start_pos + offset
                batch.n_seq_id[filled] = 1
                batch.seq_id[filled][0] = item.seq_id
                want = offset >= item.logits_from
                batch.logits[filled] = want
                if want:
                    pending.append((index, filled))
                filled += 1
        if filled:
            self._run(filled, pending, wanted)
        return [
            np.stack(rows) if rows else np.empty((0, self.n_vocab), np.float32) for rows in wanted
        ]

    def _run(
        self, n_tokens: int, pending: list[tuple[int, int]], wanted: list[list[np.ndarray]]
    ) -> None:
        self._batch.n_tokens = n_tokens
        status = llama_cpp.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise LLMError(f"llama_decode failed with status {status} (KV cache full or aborted)")
        for index, row in pending:
            pointer = llama_cpp.llama_get_logits_ith(self._ctx, row)
            wanted[index].append(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy())
