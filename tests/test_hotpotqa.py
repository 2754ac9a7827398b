"""HotPotQA: the official metrics on hand-computed cases, and the loader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from relaygraph.errors import ConfigError
from relaygraph.eval.hotpotqa import (
    Score,
    answer_score,
    joint_score,
    load_hotpotqa,
    mean,
    normalize_answer,
    support_score,
)


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  an apple, a pear!  ", "apple pear"),
        ("Theatre", "theatre"),  # "the" inside a word stays
        ("U.S.A.", "usa"),
    ],
)
def test_normalization(text: str, normal: str) -> None:
    assert normalize_answer(text) == normal


def test_exact_match_after_normalization() -> None:
    assert answer_score("the Seine.", "Seine") == Score(1.0, 1.0, 1.0, 1.0)


def test_partial_overlap_by_hand() -> None:
    # prediction "river seine in france" vs gold "the seine river":
    # tokens [river, seine, in, france] vs [seine, river]; 2 in common.
    # precision 2/4, recall 2/2, F1 = 2*0.5*1/1.5 = 2/3.
    s = answer_score("river Seine in France", "the Seine river")
    assert (s.em, s.precision, s.recall) == (0.0, 0.5, 1.0)
    assert s.f1 == pytest.approx(2 / 3)


def test_yes_no_answers_only_score_when_exact() -> None:
    assert answer_score("yes", "yes").f1 == 1.0
    assert answer_score("yes", "no") == Score(0.0, 0.0, 0.0, 0.0)
    assert answer_score("yes it is", "yes").f1 == 0.0
    assert answer_score("no", "no way").f1 == 0.0


def test_supporting_facts_by_hand() -> None:
    gold = [("Paris", 0), ("Seine", 1)]
    assert support_score(gold, gold) == Score(1.0, 1.0, 1.0, 1.0)
    # One right, one wrong, one missed: tp=1 fp=1 fn=1 -> P=R=F1=0.5, EM=0.
    assert support_score([("Paris", 0), ("Seine", 0)], gold) == Score(0.0, 0.5, 0.5, 0.5)
    assert support_score([], gold) == Score(0.0, 0.0, 0.0, 0.0)


def test_joint_by_hand() -> None:
    answer = Score(0.0, 2 / 3, 0.5, 1.0)
    support = Score(0.0, 0.5, 0.5, 0.5)
    joint = joint_score(answer, support)
    # P = 0.5*0.5 = 0.25, R = 1.0*0.5 = 0.5, F1 = 2*0.25*0.5/0.75 = 1/3.
    assert (joint.precision, joint.recall) == (0.25, 0.5)
    assert joint.f1 == pytest.approx(1 / 3)
    assert joint_score(Score(1, 1, 1, 1), Score(1, 1, 1, 1)).em == 1.0


def test_mean() -> None:
    assert mean([Score(1, 1, 1, 1), Score(0, 0.5, 0.5, 0.5)]) == Score(0.5, 0.75, 0.75, 0.75)
    assert mean([]) == Score(0, 0, 0, 0)


def test_shipped_samples() -> None:
    distractor = load_hotpotqa()
    assert len(distractor.examples) == 100
    assert distractor.metrics == ["answer", "supporting_facts", "joint", "supporting_paragraphs"]
    first = distractor.examples[0]
    assert len(first.context) == 10 and first.sentence_level
    assert {t for t, _ in first.supporting_facts or []} <= {p.title for p in first.context}
    paragraphs = load_hotpotqa(sample="paragraphs-376", limit=5)
    assert len(paragraphs.examples) == 5 and paragraphs.metrics == [
        "answer",
        "supporting_paragraphs",
    ]
    assert paragraphs.examples[0].gold_titles and not paragraphs.examples[0].sentence_level


def record(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "_id": "q1",
        "question": "Which river?",
        "answer": "Seine",
        "type": "bridge",
        "level": "hard",
        "supporting_facts": [["Paris", 0]],
        "context": [["Paris", ["Paris is on the Seine."]]],
    }
    return base | overrides


def test_user_files_json_and_gzip(tmp_path: Path) -> None:
    plain = tmp_path / "dev.json"
    plain.write_text(json.dumps([record(), record(_id="q2")]))
    assert [e.id for e in load_hotpotqa(plain).examples] == ["q1", "q2"]
    packed = tmp_path / "dev.json.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert len(load_hotpotqa(packed).examples) == 2


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([record(), record(_id="q2", type="tricky")], "record 1 (_id=q2): type"),
        ([record(question="")], "record 0 (_id=q1): question"),
        ([record(context=[])], "record 0 (_id=q1): context"),
        ([record(supporting_facts=None)], "needs supporting_facts or supporting_titles"),
        ([record(supporting_facts=[["Paris", "zero"]])], "supporting_facts.0.1"),
        ({"not": "a list"}, "must hold a JSON list"),
    ],
)
def test_malformed_files_name_record_and_field(
    tmp_path: Path, records: object, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ConfigError) as info:
        load_hotpotqa(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_unreadable_and_non_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read HotPotQA file"):
        load_hotpotqa(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_hotpotqa(broken)
