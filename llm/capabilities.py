"""What a model can decode, for callers that choose a decoding strategy by it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph.errors import TransportError
from relaygraph.llm.local import LocalLLM
from relaygraph.llm.openai_compat import OpenAICompatLLM
from relaygraph.llm.pool import WorkerPool

if TYPE_CHECKING:
    from relaygraph.llm.protocol import LLM


def decodes_lark_grammars(llm: LLM) -> bool:
    """Whether ``llm`` decodes under relaygraph's Lark grammars: the embedded engine, a
    relaygraph worker, or a pool of them (vLLM's grammar backends take other dialects).

    An unreachable worker counts as unable: the caller falls back to a strategy that
    needs no grammar, and the call itself reports the worker's failure.
    """
    if isinstance(llm, LocalLLM):
        return True
    if isinstance(llm, WorkerPool):
        return all(decodes_lark_grammars(worker) for worker in llm.workers)
    if isinstance(llm, OpenAICompatLLM):
        try:
            return llm.relaygraph_worker
        except TransportError:
            return False
    return False
