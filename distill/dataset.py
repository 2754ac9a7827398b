"""Traces → distillation examples: the prompt an agent saw, the teacher's reply, span masks.

One example per agent step that produced a REASON/ACT reply: the exact messages of the
step's model call, the reply as the target, and its REASON and ACT token masks on the
student's tokenizer. The target's tokens end with the student's end-of-turn token, in the
ACT mask: stopping after the action is part of acting (a student never taught to stop
repeats its action line to the token cap). Sources are trace files or evaluation run
directories; a run directory also says which items succeeded, so ``only_successful`` can
keep those.

Steps without that structure (plain-answer agents, errors, unparseable replies) are
skipped and counted; a source with no usable step at all is an error, as is asking for
successful episodes from traces that do not say whether they succeeded.

A dataset is a folder: ``examples.jsonl`` (one `DistillExample` per line), ``schema.json``
(its JSON schema) and ``stats.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, ValidationError

from relaygraph.distill.spans import NoStructureError, find_spans, token_masks
from relaygraph.errors import ConfigError, first_problem
from relaygraph.fileio import write_atomic
from relaygraph.graph.runs import ITEMS, MANIFEST, read_items
from relaygraph.graph.trace import Trace
from relaygraph.llm.types import ChatPrompt, Message

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from relaygraph.agents.record import StepRecord
    from relaygraph.llm.local import LocalLLM

EXAMPLES = "examples.jsonl"
SCHEMA = "schema.json"
STATS = "stats.json"


class DistillExample(BaseModel):
    """One training example: prompt, teacher reply, and where REASON and ACT are in it."""

    id: str
    """``<run id>:<step>``."""
    source: str
    agent: str
    role: str
    step: int
    success: bool | None
    """Whether the episode succeeded, when its source says so."""
    teacher: str
    tokenizer: str
    messages: list[Message]
    """The exact messages of the step's model call (the reply starts after them)."""
    max_tokens: int | None = None
    """The step's completion-token cap (None: a trace that did not record it)."""
    prompt_ids: list[int]
    target: str
    target_ids: list[int]
    """The target's tokens, then the end-of-turn token (`reply_ids`)."""
    reason_mask: list[int]
    act_mask: list[int]
    reason_chars: tuple[int, int]
    act_chars: tuple[int, int]


class DatasetStats(BaseModel):
    """What a build kept and skipped."""

    examples: int
    episodes: int
    successful_episodes: int | None
    prompt_tokens: int
    target_tokens: int
    reason_tokens: int
    act_tokens: int
    skipped: dict[str, int] = Field(default_factory=dict)
    """Steps left out, by reason (no structure, step error, unsuccessful episode)."""
    by_agent: dict[str, int] = Field(default_factory=dict)


def build_dataset(
    sources: Sequence[str | Path], tokenizer: LocalLLM, *, only_successful: bool = False
) -> tuple[list[DistillExample], DatasetStats]:
    """Examples from trace files and run directories, tokenized by ``tokenizer``.

    Raises:
        ConfigError: A source that is neither a trace nor a run directory; successful
            episodes asked for where a source does not record success; no usable step.
    """
    examples: list[DistillExample] = []
    skipped: Counter[str] = Counter()
    episodes = 0
    successes: list[bool] = []
    for trace, source, success in _episodes(sources):
        episodes += 1
        if success is not None:
            successes.append(success)
        if only_successful:
            if success is None:
                raise ConfigError(
                    f"{source} does not record whether its episode succeeded; pass run "
                    "directories (or drop the successful-only filter)"
                )
            if not success:
                skipped["unsuccessful episode"] += len(trace.steps)
                continue
        for record in trace.steps:
            example = _example(record, trace, source, success=success, tokenizer=tokenizer)
            if isinstance(example, str):
                skipped[example] += 1
            else:
                examples.append(example)
    if not examples:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items()) or "no steps"
        raise ConfigError(
            f"no step with a REASON/ACT structure in {len(sources)} sources ({reasons})"
        )
    stats = dataset_stats(
        examples,
        episodes=episodes,
        successful_episodes=sum(successes) if successes else None,
        skipped=dict(skipped),
    )
    return examples, stats


def dataset_stats(
    examples: Sequence[DistillExample],
    *,
    episodes: int,
    successful_episodes: int | None,
    skipped: dict[str, int],
) -> DatasetStats:
    """The figures of ``examples`` (for a subset too: counts are taken from the examples)."""
    return DatasetStats(
        examples=len(examples),
        episodes=episodes,
        successful_episodes=successful_episodes,
        prompt_tokens=sum(len(e.prompt_ids) for e in examples),
        target_tokens=sum(len(e.target_ids) for e in examples),
        reason_tokens=sum(sum(e.reason_mask) for e in examples),
        act_tokens=sum(sum(e.act_mask) for e in examples),
        skipped=skipped,
        by_agent=dict(Counter(e.agent for e in examples)),
    )


def _episodes(sources: Iterable[str | Path]) -> Iterable[tuple[Trace, str, bool | None]]:
    """(trace, its file, success or None) for each trace of each source."""
    for source in map(Path, sources):
        if source.is_dir():
            if not (source / MANIFEST).exists() or not (source / ITEMS).exists():
                raise ConfigError(f"{source} is not an evaluation run directory")
            for item in read_items(source).values():
                if item.trace is not None:
                    path = source / item.trace
                    yield Trace.load(path), str(path), item.success >= 1.0
        else:
            yield Trace.load(source), str(source), None


def _example(
    record: StepRecord, trace: Trace, source: str, *, success: bool | None, tokenizer: LocalLLM
) -> DistillExample | str:
    """The step's example, or why it has none."""
    if record.error is not None or not record.prompt:
        return "step error"
    try:
        spans = find_spans(record.output)
    except NoStructureError:
        return "no REASON/ACT structure"
    *text_ids, end = reply_ids(tokenizer, record.output)
    reason_mask, act_mask = token_masks(tokenizer, record.output, text_ids, spans)
    return DistillExample(
        id=f"{trace.run_id}:{record.step}",
        source=source,
        agent=record.agent,
        role=record.role,
        step=record.step,
        success=success,
        teacher=record.model.name,
        tokenizer=tokenizer.name,
        messages=record.prompt,
        max_tokens=record.max_tokens,
        prompt_ids=tokenizer.encode(ChatPrompt(messages=tuple(record.prompt))),
        target=record.output,
        target_ids=[*text_ids, end],
        reason_mask=[*reason_mask, 0],
        act_mask=[*act_mask, 1],
        reason_chars=spans.reason,
        act_chars=spans.act,
    )


def reply_ids(tokenizer: LocalLLM, reply: str) -> list[int]:
    """The tokens a model emits for ``reply``: its text, then the end-of-turn token."""
    return [*tokenizer.tokenize(reply), tokenizer.end_of_turn_id]


def check_reply_tokens(examples: Sequence[DistillExample], tokenizer: LocalLLM) -> None:
    """Check that every target's tokens are ``tokenizer``'s reply tokens, as a teacher's
    logits and a student started from its weights need.

    Raises:
        ConfigError: The first example whose tokens differ, with the tokenizer it was
            built with.
    """
    for example in examples:
        if reply_ids(tokenizer, example.target) != example.target_ids:
            raise ConfigError(
                f"example {example.id}'s target is not {tokenizer.name}'s reply tokens "
                f"(tokenized by {example.tokenizer!r}, or built before targets ended with "
                f"the end-of-turn token); rebuild the dataset with --tokenizer {tokenizer.name}"
            )


def save_dataset(examples: Sequence[DistillExample], stats: DatasetStats, out: str | Path) -> Path:
    """Write a dataset folder (each file atomically)."""
    root = Path(out)
    write_atomic(root / EXAMPLES, "".join(e.model_dump_json() + "\n" for e in examples))
    write_atomic(root / SCHEMA, json.dumps(DistillExample.model_json_schema(), indent=2))
    write_atomic(root / STATS, stats.model_dump_json(indent=2))
    return root


def load_dataset(directory: str | Path) -> tuple[list[DistillExample], DatasetStats]:
    """A dataset folder written by `save_dataset`.

    Raises:
        ConfigError: Not a dataset folder, a bad line (file and line named), or empty.
    """
    root = Path(directory)
    path = root / EXAMPLES
    if not path.exists():
        raise ConfigError(f"{root} is not a distillation dataset (no {EXAMPLES})")
    examples: list[DistillExample] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            examples.append(DistillExample.model_validate_json(line))
        except ValidationError as exc:
            where, problem = first_problem(exc.errors())
            raise ConfigError(f"{path}:{number}: {where}: {problem}") from None
    if not examples:
        raise ConfigError(f"{path} holds no examples")
    return examples, DatasetStats.model_validate_json((root / STATS).read_bytes())
