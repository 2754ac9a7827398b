"""HotPotQA questions as hold-out items for calibrating model routing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph.eval.holdout import QAItem
from relaygraph.llm.types import ChatPrompt, Message

if TYPE_CHECKING:
    from collections.abc import Iterable

    from relaygraph.eval.hotpotqa.data import HotpotExample


def hotpot_items(examples: Iterable[HotpotExample]) -> list[QAItem]:
    """Reading-comprehension items: the question with its gold supporting paragraphs.

    With only the paragraphs that hold the answer, the embedded models answer some of
    them, which a routing set needs (a set the small model never answers, or always
    does, cannot relate uncertainty to correctness).
    """
    items = []
    for example in examples:
        gold = set(example.supporting_titles or [t for t, _ in example.supporting_facts or []])
        passages = "\n".join(
            f"{p.title}: {' '.join(s.strip() for s in p.sentences)}"
            for p in example.context
            if p.title in gold
        )
        text = f"{passages}\n\nQuestion: {example.question}\nAnswer in a few words."
        items.append(
            QAItem(
                id=example.id,
                prompt=ChatPrompt(messages=(Message(role="user", content=text),)),
                gold=example.answer,
                group=example.type,
            )
        )
    return items
