"""HotPotQA: the loader, the official metrics, ReAct and team graphs, the suite, the judge."""

from relaygraph.eval.answers import Score, answer_score, normalize_answer
from relaygraph.eval.hotpotqa.data import (
    SAMPLES,
    HotpotDataset,
    HotpotExample,
    Paragraph,
    SampleName,
    load_hotpotqa,
)
from relaygraph.eval.hotpotqa.judge import AnswerJudge, Judgement
from relaygraph.eval.hotpotqa.metrics import joint_score, mean, support_score
from relaygraph.eval.hotpotqa.suite import HotpotSuite, question_with_paragraphs
from relaygraph.eval.hotpotqa.tools import ParagraphTools

__all__ = [
    "SAMPLES",
    "AnswerJudge",
    "HotpotDataset",
    "HotpotExample",
    "HotpotSuite",
    "Judgement",
    "Paragraph",
    "ParagraphTools",
    "SampleName",
    "Score",
    "answer_score",
    "joint_score",
    "load_hotpotqa",
    "mean",
    "normalize_answer",
    "question_with_paragraphs",
    "support_score",
]
