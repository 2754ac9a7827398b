"""Extractive answers: the answer is a name or number the context holds, chosen by the model.

A small model that reads "The river Seine flows through Paris." often cannot *write*
"Seine" as the answer to a question that needs it: it copies the first sentence or drifts.
It can still *rank*: scored as continuations of the answer prompt, against the same
prompt without the question (`calibrated`), the right span of the context often comes
first. This is the multiple-choice reading used to evaluate small models (each choice
scored, the best taken), with the choices drawn from the context: capitalised names and
numbers, narrowed to those the context says are of the type the question asks for
("Which river ...": "the river Seine", not "Paris"), the answer-type filter of classic
question answering.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

_CONNECTORS = r"(?:of|the|de|du|la|le|von|van|der|da|di|y)"
_WORD = r"(?:[A-Z]\.|[A-Z][\w'\u2019-]*)"  # an initial ("F.") or a capitalised word
_NAME = re.compile(rf"{_WORD}(?:\s+(?:{_CONNECTORS}\s+)*(?:{_WORD}|\d+\b))*")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[,.]\d+)*(?:\s?%)?")
# fmt: off
_LEADING = frozenset((
    "a", "an", "the", "in", "on", "at", "it", "its", "this", "that", "these", "those",
    "he", "she", "they", "his", "her", "their", "there", "when", "where", "while", "after",
    "before", "during", "from", "for", "by", "with", "as", "if", "but", "and", "or", "so",
    "which", "what", "who", "whom", "whose", "how", "why", "is", "are", "was", "were",
    "did", "do", "does", "can", "could",
))
"""Words that start a sentence more often than a name (dropped from a name's front)."""
# fmt: on
_SPLIT_WORDS = re.compile(r"\s+")


def candidate_spans(context: str, *, exclude: Iterable[str] = ()) -> list[str]:
    """Names (runs of capitalised words, with connectors such as "of") and numbers of
    ``context``, first occurrence first, each once.

    A sentence's first word is capitalised whatever it is, so leading function words
    ("The", "In", "It") are dropped from a name. Spans that equal one of ``exclude``
    (case-insensitive; the question's own names, say) are left out.
    """
    excluded = {e.casefold() for e in exclude}
    seen: dict[str, None] = {}
    for match in sorted(
        [*_NAME.finditer(context), *_NUMBER.finditer(context)], key=lambda m: m.start()
    ):
        words = _SPLIT_WORDS.split(match.group().rstrip("'\u2019"))
        while words and words[0].casefold() in _LEADING:
            words = words[1:]
        span = " ".join(words).strip()
        if span and span.casefold() not in excluded and span[0].isalnum():
            seen.setdefault(span, None)
    return list(seen)


_AUXILIARY = re.compile(
    r"\s*(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b", re.I
)
_CHOICE = re.compile(r"\bor\b")


def answer_candidates(question: str, context: str, *, typed: bool = True) -> list[str]:
    """What an extracted answer may be: yes or no for a question that starts with an
    auxiliary verb and offers no choice ("Are both bands from Canada?"); otherwise the
    context's names and numbers, without those the question itself mentions, and (with
    ``typed``) of those only the ones the context says are of the asked type when it says
    so of any ("Which river ...": "the river Seine", not "Paris")."""
    if _AUXILIARY.match(question) and not _CHOICE.search(question):
        return ["yes", "no"]
    spans = candidate_spans(context, exclude=question_names(question))
    for kind in answer_types(question) if typed else ():
        of_kind = [span for span in spans if is_of_type(span, kind, context)]
        if of_kind:
            return of_kind
    return spans


# fmt: off
_TYPE_STOPS = frozenset((
    "a", "an", "the", "this", "that", "these", "those", "which", "who", "whom", "whose",
    "of", "in", "on", "at", "to", "for", "from", "by", "with", "about", "as", "than",
    "and", "or", "but", "is", "are", "was", "were", "be", "been", "do", "does", "did",
    "has", "have", "had", "can", "could", "will", "would", "should", "may", "might",
    "through", "into", "over", "under", "after", "before", "between", "during", "near",
    "across", "against", "since", "until", "via", "not",
))
"""Words that end the noun phrase after "which" or "what"."""
# fmt: on
_QUESTION_WORDS = re.compile(r"[\w'\u2019-]+|[^\w\s]")
_YEAR = re.compile(r"(?:1\d|20)\d\d")


def answer_types(question: str) -> list[str]:
    """The nouns that may say what a "which"/"what" question asks for, head first: the
    lower-case words of the phrase after the question word, last first ("in what Hawaii
    county" asks for a county; "Which river flows ..." gives flows, then river). Capitalised
    words there are names that qualify the noun ("what New York city"); "What is ...",
    "Which of ..." and questions without those words give none.

    Without a parser the phrase may run into the verb, so the caller takes the first of
    these that the context uses for one of its names (`is_of_type`)."""
    words = _QUESTION_WORDS.findall(question)
    for i, word in enumerate(words):
        if word.casefold() not in ("which", "what"):
            continue
        phrase: list[str] = []
        for following in words[i + 1 :]:
            if following.casefold() in _TYPE_STOPS or not following[0].isalnum():
                break
            phrase.append(following)
        nouns = [w for w in phrase if w.islower()]
        if nouns:
            return nouns[::-1]
    return []


def is_of_type(span: str, kind: str, context: str) -> bool:
    """Whether ``context`` says ``span`` is a ``kind``: the name holds the word
    ("Sam Boyd Stadium" for a stadium), the word stands right before it ("the river
    Seine", "the city of Paris"), or a copula or apposition follows it ("Seine is a
    777 km river", "Stone Brewing, an American brewery"); a year is a four-digit number.
    """
    singular = kind[:-1] if kind.endswith("s") and not kind.endswith("ss") else kind
    if singular == "year":
        return _YEAR.fullmatch(span) is not None
    noun = rf"(?:{re.escape(singular)}|{re.escape(singular)}s|{re.escape(singular)}es)"
    if re.search(rf"\b{noun}\b", span, re.I):
        return True
    name = re.escape(span)
    before = rf"\b{noun}\s+(?:of\s+)?(?:the\s+)?{name}\b"
    after = rf"\b{name}(?:,|\s+(?:is|was|are|were))\s+(?:a|an|the)\s+(?:[\w-]+\s+){{0,4}}?{noun}\b"
    return re.search(f"{before}|{after}", context, re.I) is not None


def question_names(question: str) -> list[str]:
    """The names a question mentions, which are rarely its answer unless it offers a
    choice ("Which is older, X or Y?")."""
    if _CHOICE.search(question):
        return []
    return candidate_spans(question)


ANSWER_PREFILL = "Answer: "
"""Where a candidate is scored: as the start of the reply's answer."""
NEUTRAL_TASK = "Answer the question."
"""The task of the calibration prompt: the same context, no question."""


def calibrated(question: float, neutral: float, tokens: int) -> float:
    """A candidate's score: how much the question raises its log-probability over the
    same context without the question, per token.

    Scored raw, a small model prefers names it would say anyway (the first or the most
    frequent one of the context, and short ones); the difference cancels that prior, the
    surface-form competition correction of Holtzman et al. (2021). Chosen among raw and
    calibrated, total and per-token scores on a tuning sample
    (benchmarks/extractive_answers.py).
    """
    return (question - neutral) / max(tokens, 1)
