"""Incremental detokenization with stop strings, for streaming without leaking a stop string.

Tokens arrive as byte pieces; a multi-byte character can span two tokens, and a stop
string can span several. `TextAssembler` turns pieces into text deltas that are safe to
show: it holds back any tail that could still become a stop string. `DetokenizedText` does
the same from token ids, for a model that only detokenizes (a remote one).
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class TextAssembler:
    """Accumulates token pieces into text, cutting at the first stop string.

    Invariant: ``emitted`` is always a prefix of the final text, and never contains a
    stop string or a prefix of one that could still complete.

    Example:
        >>> a = TextAssembler(stop=["\\nQ:"])
        >>> a.feed(b"Paris"), a.feed(b"\\n"), a.feed(b"Q:"), a.stopped
        ('Paris', '', '', True)
        >>> a.text
        'Paris'
    """

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(stop)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self._text = ""
        self._emitted = 0
        self.stopped = False

    @property
    def text(self) -> str:
        """The text so far, cut before the stop string once one matched."""
        return self._text

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that became safe to emit."""
        if self.stopped:
            return ""
        self._text += self._decoder.decode(piece)
        if self._stop:
            # A new match can only start within the last `longest_stop - 1` characters
            # before this piece, so search from there.
            start = max(0, self._emitted - self._longest_stop + 1)
            hits = [i for s in self._stop if (i := self._text.find(s, start)) >= 0]
            if hits:
                self._text = self._text[: min(hits)]
                self.stopped = True
                return self._release(len(self._text))
            return self._release(len(self._text) - self._held_back())
        return self._release(len(self._text))

    def finish(self) -> str:
        """Flush what was held back (generation ended without a stop string)."""
        if not self.stopped:
            self._text += self._decoder.decode(b"", final=True)
        return self._release(len(self._text))

    def _held_back(self) -> int:
        """Length of the longest text suffix that is a proper prefix of a stop string."""
        for length in range(min(self._longest_stop - 1, len(self._text)), 0, -1):
            tail = self._text[-length:]
            if any(s.startswith(tail) for s in self._stop):
                return length
        return 0

    def _release(self, upto: int) -> str:
        upto = max(upto, self._emitted)
        delta = self._text[self._emitted : upto]
        self._emitted = upto
        return delta


class DetokenizedText:
    """The answer's text as tokens arrive, cut at the first stop string.

    Decoded from all the answer's tokens each time (a character may span two tokens,
    and a remote model only detokenizes), holding back a trailing partial character.
    """

    def __init__(
        self, detokenize: Callable[[Sequence[int]], str], ends: frozenset[int], stop: Sequence[str]
    ) -> None:
        self._detokenize, self._ends = detokenize, ends
        self._ids: list[int] = []
        self._decoded = 0
        self._assembler = TextAssembler(stop)

    @property
    def stopped(self) -> bool:
        return self._assembler.stopped

    def add(self, ids: Sequence[int], *, final: bool) -> str:
        """The text that became safe to emit after ``ids``."""
        self._ids.extend(t for t in ids if t not in self._ends)
        full = self._detokenize(self._ids)
        stable = full if final else full.rstrip("\ufffd")
        delta = self._assembler.feed(stable[self._decoded :].encode())
        self._decoded = max(self._decoded, len(stable))
        return delta + (self._assembler.finish() if final else "")
