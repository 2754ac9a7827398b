"""Loading HotPotQA: the shipped samples or any file in the official layout.

Two layouts are accepted, in ``.json`` or ``.json.gz``:

- the official distractor layout (the full dev set works unchanged): ``_id``, question,
  answer, type, level, ``supporting_facts`` as [title, sentence id] pairs, and
  ``context`` as [title, [sentence, ...]] paragraphs — answer, supporting-fact and joint
  metrics are all available;
- the paragraph layout: ``supporting_titles`` instead of ``supporting_facts`` and each
  paragraph's text as one string — answer metrics and paragraph-level support only.

Every record is validated; a malformed one is reported with its file, index, id and field.
"""

from __future__ import annotations

import gzip
import json
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from relaygraph.errors import ConfigError, first_problem

SAMPLES = {
    "distractor-100": "hotpotqa_dev_distractor_100.json.gz",
    "paragraphs-376": "hotpotqa_dev_paragraphs_376.json.gz",
}
"""The samples that ship with relaygraph (see eval/data/NOTICE.md)."""

SampleName = Literal["distractor-100", "paragraphs-376"]
Metric = Literal["answer", "supporting_facts", "joint", "supporting_paragraphs"]


class Paragraph(BaseModel):
    """One context paragraph: its title and its sentences (one item when unsplit)."""

    model_config = ConfigDict(frozen=True)

    title: str
    sentences: list[str]


class HotpotExample(BaseModel):
    """One HotPotQA question with its ten context paragraphs."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    id: str = Field(alias="_id", min_length=1)
    question: str = Field(min_length=1)
    answer: str
    type: Literal["bridge", "comparison"]
    level: Literal["easy", "medium", "hard"] | None = None
    supporting_facts: list[tuple[str, int]] | None = None
    supporting_titles: list[str] | None = None
    context: list[Paragraph] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _paragraph_pairs(cls, data: object) -> object:
        # The official layout writes paragraphs as [title, [sentences]] pairs.
        if isinstance(data, dict) and isinstance(data.get("context"), list):
            data = dict(data)
            data["context"] = [
                {"title": p[0], "sentences": p[1]}
                if isinstance(p, list | tuple) and len(p) == 2
                else p
                for p in data["context"]
            ]
        return data

    @model_validator(mode="after")
    def _has_support(self) -> HotpotExample:
        if self.supporting_facts is None and self.supporting_titles is None:
            raise ValueError("needs supporting_facts or supporting_titles")
        return self

    @property
    def gold_titles(self) -> list[str]:
        """Titles of the supporting paragraphs."""
        if self.supporting_titles is not None:
            return self.supporting_titles
        return list(dict.fromkeys(title for title, _ in self.supporting_facts or []))

    @property
    def sentence_level(self) -> bool:
        """Whether supporting facts name sentences (the distractor layout)."""
        return self.supporting_facts is not None


class HotpotDataset(BaseModel):
    """Questions loaded from one file, and which metrics its layout supports."""

    source: str
    examples: list[HotpotExample]

    @property
    def metrics(self) -> list[Metric]:
        if all(e.sentence_level for e in self.examples):
            return ["answer", "supporting_facts", "joint", "supporting_paragraphs"]
        return ["answer", "supporting_paragraphs"]


def _read(path: Path) -> object:
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw) if path.suffix == ".gz" else raw
        return json.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read HotPotQA file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from None


def load_hotpotqa(
    path: str | Path | None = None,
    *,
    sample: SampleName = "distractor-100",
    limit: int | None = None,
) -> HotpotDataset:
    """Questions from ``path`` (official layout, .json or .json.gz) or a shipped sample.

    Raises:
        ConfigError: Unreadable or non-JSON file, not a list of records, or a malformed
            record (the message names the file, the record's index and id, and the field).
    """
    source = (
        Path(path)
        if path is not None
        else Path(str(files("relaygraph.eval").joinpath("data", SAMPLES[sample])))
    )
    data = _read(source)
    if not isinstance(data, list):
        raise ConfigError(f"{source} must hold a JSON list of questions, not {type(data).__name__}")
    records = data[:limit] if limit is not None else data
    examples = []
    for index, record in enumerate(records):
        try:
            examples.append(HotpotExample.model_validate(record))
        except ValidationError as exc:
            field, problem = first_problem(exc.errors())
            ident = record.get("_id", "?") if isinstance(record, dict) else "?"
            raise ConfigError(
                f"{source}: record {index} (_id={ident}): {field or 'record'}: {problem}",
                parameter=field,
            ) from None
    return HotpotDataset(source=str(source), examples=examples)
