"""Routing metrics, the shipped facts set, estimators on few-shot text prompts, and a
cascade served through the OpenAI-compatible server (the real `openai` client, the real
SmolLM2 and Gemma-3-270M)."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from relaygraph.errors import ConfigError
from relaygraph.eval.facts import load_facts
from relaygraph.eval.holdout import QAItem, fact_items, judge
from relaygraph.eval.routing import (
    auroc,
    escalation_quality,
    oracle_quality,
    random_quality,
    recovered_share,
)
from relaygraph.llm.local import LocalLLM
from relaygraph.llm.types import ChatPrompt, GenerationParams, Message, TextPrompt, TokenPrompt
from relaygraph.routing.calibration import CalibrationItem, fit_calibration
from relaygraph.routing.uncertainty import (
    PTrue,
    SampleDisagreement,
    VerbalizedConfidence,
    ask_about_answer,
)
from relaygraph.serving.config import ServeConfig, load_config
from relaygraph.serving.server import BackgroundServer, app_from_config, build_cascade

# -- metrics -------------------------------------------------------------------------


def brute_auroc(scores: list[float], positive: list[bool]) -> float:
    pairs = [(p, n) for p in range(len(scores)) for n in range(len(scores))
             if positive[p] and not positive[n]]  # fmt: skip
    wins = [1.0 if scores[p] > scores[n] else 0.5 if scores[p] == scores[n] else 0.0
            for p, n in pairs]  # fmt: skip
    return sum(wins) / len(pairs)


def test_auroc_matches_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 4, 15).astype(float).tolist()  # many ties
        positive = (rng.uniform(size=15) < 0.5).tolist()
        if 0 < sum(positive) < 15:
            assert auroc(scores, positive) == pytest.approx(brute_auroc(scores, positive))
    assert auroc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert auroc([0, 1, 2, 3], [True, True, False, False]) == 0.0
    with pytest.raises(ConfigError, match="both"):
        auroc([1, 2], [True, True])


def test_escalation_quality_is_the_expectation_over_tie_orders() -> None:
    scores = [0.9, 0.5, 0.5, 0.5, 0.1]
    small = [0, 1, 0, 1, 1]
    large = [1, 1, 1, 0, 0]
    for count in range(6):
        rate = count / 5
        # every order of the tied queries, escalating the first `count` of the ranking
        outcomes = []
        for middle in itertools.permutations([1, 2, 3]):
            order = [0, *middle, 4]
            routed = [large[i] if order.index(i) < count else small[i] for i in range(5)]
            outcomes.append(np.mean(routed))
        got = escalation_quality(scores, small, large, [rate])[0]
        assert got == pytest.approx(np.mean(outcomes))
    ends = escalation_quality(scores, small, large, [0.0, 1.0])
    assert ends.tolist() == pytest.approx([np.mean(small), np.mean(large)])


def test_random_and_oracle_routing_bound_any_score() -> None:
    rng = np.random.default_rng(1)
    small = rng.uniform(size=200) < 0.4
    large = rng.uniform(size=200) < 0.7
    rates = np.linspace(0, 1, 11)
    oracle = oracle_quality(small, large, rates)
    for _ in range(5):
        assert (
            escalation_quality(rng.uniform(size=200), small, large, rates) <= oracle + 1e-12
        ).all()
    baseline = random_quality(small, large, rates)
    pgr = recovered_share(baseline, small.mean(), large.mean())
    assert pgr == pytest.approx(rates)  # random routing recovers exactly its own rate
    with pytest.raises(ConfigError, match="no gap"):
        recovered_share(baseline, 0.7, 0.4)


# -- the facts set --------------------------------------------------------------------


def test_the_shipped_facts_load_with_unique_ids_and_unasked_shots() -> None:
    facts = load_facts()
    capital, symbol = facts.categories["capital"], facts.categories["symbol"]
    assert (len(capital.items), len(symbol.items)) == (190, 115)
    for category in (capital, symbol):
        shown = {subject for subject, _ in category.shots}
        assert not shown & {fact.subject for fact in category.items}
    items = fact_items(facts)
    assert len({i.id for i in items}) == 305 and all(i.exact for i in items)
    prompt = capital.prompt("Peru")
    assert prompt.text.startswith("Q: What is the capital of France?\nA: Paris\n\n")
    assert prompt.text.endswith("Q: What is the capital of Peru?\nA:")


def test_malformed_facts_files_are_clear_errors(tmp_path: Path) -> None:
    good = {"question": "Capital of {subject}?", "shots": [["France", "Paris"]],
            "items": [{"id": "a", "subject": "Peru", "answer": "Lima"}]}  # fmt: skip
    cases = {
        "no_subject.json": ({"categories": {"c": good | {"question": "Capital?"}}}, "question"),
        "repeated.json": ({"categories": {"c": good, "d": good}}, "repeated fact ids"),
        "empty.json": ({"categories": {}}, "categories"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(data))
        with pytest.raises(ConfigError, match=message):
            load_facts(path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_facts(tmp_path / "bad.json")


def test_fact_answers_need_an_exact_match_of_an_accepted_answer() -> None:
    item = QAItem(id="x", prompt=TextPrompt(text="Q"), gold="San José",
                  aliases=("San Jose",), exact=True)  # fmt: skip
    assert judge(item, " San Jose")[1] and judge(item, "san josé.")[1]
    assert not judge(item, " San Francisco")[1]  # F1 0.5 would pass it
    loose = item.model_copy(update={"exact": False})
    assert judge(loose, " San Francisco")[1]


# -- estimators on few-shot text ------------------------------------------------------

FEW_SHOT = load_facts().categories["capital"].prompt("Germany")
ANSWER = GenerationParams(max_tokens=16, logprobs=True, top_logprobs=5, stop=("\n",))


def test_follow_up_questions_continue_a_chat_or_a_document() -> None:
    chat = ChatPrompt(messages=(Message(role="user", content="Q?"),), prefill="It is")
    asked = ask_about_answer(chat, " Paris", "Sure?", "Confidence: ")
    assert isinstance(asked, ChatPrompt) and asked.prefill == "Confidence: "
    assert [m.role for m in asked.messages] == ["user", "assistant", "user"]
    assert asked.messages[1].content == "It is Paris"
    text = ask_about_answer(TextPrompt(text="Q: x\nA:"), " Paris", "Sure?", "Answer:")
    assert text == TextPrompt(text="Q: x\nA: Paris\n\nSure?\nAnswer:")
    with pytest.raises(ConfigError, match="token ids"):
        ask_about_answer(TokenPrompt(token_ids=(1, 2)), "x", "Sure?", "")


def test_estimators_read_a_real_few_shot_answer(smollm2: LocalLLM) -> None:
    answer = smollm2.complete(FEW_SHOT, ANSWER)
    assert "\n" not in answer.text and answer.text.strip()
    for estimator in (PTrue(), VerbalizedConfidence()):
        estimate = estimator.estimate(smollm2, FEW_SHOT, answer, ANSWER)
        assert 0.0 <= estimate.confidence <= 1.0 and estimate.extra_calls == 1
    # Samples stop where the answer did; without the answer's stop sequence they would
    # run on into the next few-shot question and never equal the answer.
    sampled = SampleDisagreement(k=3, temperature=0.0).estimate(smollm2, FEW_SHOT, answer, ANSWER)
    assert sampled.score == 0.0
    assert all("\n" not in s for s in sampled.details["samples"])


# -- the cascade served ----------------------------------------------------------------


def cascade_config(threshold: float) -> ServeConfig:
    return ServeConfig.model_validate(
        {"models": {"routed": {"cascade": [
            {"llm": "smollm2-135m", "estimator": "mean_logprob", "threshold": threshold},
            {"llm": "gemma3-270m"},
        ]}}}
    )  # fmt: skip


@pytest.fixture(scope="module")
def routed_server(smollm2: LocalLLM, gemma3: LocalLLM) -> Iterator[BackgroundServer]:
    loaded = {"smollm2-135m": smollm2, "gemma3-270m": gemma3}
    models = {
        "trusting": build_cascade(cascade_config(math.inf).models["routed"], loaded.__getitem__),  # type: ignore[arg-type]
        "doubting": build_cascade(cascade_config(-math.inf).models["routed"], loaded.__getitem__),  # type: ignore[arg-type]
    }
    with BackgroundServer(models) as running:
        yield running


@pytest.mark.server
def test_a_served_cascade_answers_text_completions_and_says_who_answered(
    routed_server: BackgroundServer,
) -> None:
    client = openai.OpenAI(base_url=routed_server.base_url, api_key="none", max_retries=0)
    kept = client.completions.create(model="trusting", prompt=FEW_SHOT.text, max_tokens=8,
                                     stop=["\n"])  # fmt: skip
    record = kept.model_extra["relaygraph"]  # type: ignore[index]
    assert record["answered_by"] == "smollm2-135m" and kept.choices[0].text.strip()
    [step] = record["cascade"]
    assert step["decision"] == "accept" and step["threshold"] == "inf"

    escalated = client.completions.create(model="doubting", prompt=FEW_SHOT.text, max_tokens=8,
                                          stop=["\n"])  # fmt: skip
    record = escalated.model_extra["relaygraph"]  # type: ignore[index]
    assert record["answered_by"] == "gemma3-270m"
    assert [s["decision"] for s in record["cascade"]] == ["escalate", "final"]
    # usage covers both answers: the small model's escalated one and the large one's
    assert escalated.usage is not None and kept.usage is not None
    assert escalated.usage.prompt_tokens > kept.usage.prompt_tokens


@pytest.mark.server
def test_a_served_cascade_answers_chat_and_refuses_what_it_cannot_route(
    routed_server: BackgroundServer,
) -> None:
    client = openai.OpenAI(base_url=routed_server.base_url, api_key="none", max_retries=0)
    chat = client.chat.completions.create(
        model="trusting", messages=[{"role": "user", "content": "Say hi."}], max_tokens=6,
        logprobs=True,
    )  # fmt: skip
    assert chat.choices[0].message.content and chat.choices[0].logprobs is not None
    assert chat.model_extra["relaygraph"]["answered_by"] == "smollm2-135m"  # type: ignore[index]
    for bad, param in (({"stream": True}, "stream"), ({"n": 2}, "n")):
        with pytest.raises(openai.BadRequestError) as error:
            client.completions.create(model="trusting", prompt="Q", max_tokens=2, **bad)  # type: ignore[call-overload]
        assert error.value.body["param"] == param  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="one text prompt"):
        client.completions.create(model="trusting", prompt=[1, 2, 3], max_tokens=2)
    tokenize = httpx.post(
        f"http://{routed_server.host}:{routed_server.port}/tokenize",
        json={"model": "trusting", "prompt": "x"},
    )
    assert tokenize.status_code == 400 and "cascade" in tokenize.json()["error"]["message"]
    cards = {m.id: m for m in client.models.list()}
    assert cards["trusting"].owned_by == "relaygraph-cascade"


def test_cascade_entries_are_validated(tmp_path: Path) -> None:
    bad = {
        "last.yaml": ("[{llm: a, estimator: mean_logprob, threshold: 1}, "
                      "{llm: b, estimator: p_true, threshold: 1}]", "last rung"),
        "first.yaml": ("[{llm: a}, {llm: b}]", "needs an estimator"),
        "both.yaml": ("[{llm: a, estimator: p_true, threshold: 1, calibration: c.json, "
                      "escalation_rate: 0.3}, {llm: b}]", "exactly one of threshold"),
        "target.yaml": ("[{llm: a, estimator: p_true, calibration: c.json}, {llm: b}]",
                        "escalation_rate or target_accuracy"),
        "one.yaml": ("[{llm: a, estimator: p_true, threshold: 1}]", "at least 2"),
    }  # fmt: skip
    for name, (rungs, message) in bad.items():
        path = tmp_path / name
        path.write_text(f"models:\n  routed:\n    cascade: {rungs}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    unknown = cascade_config(1.0).model_copy(deep=True)
    entry = unknown.models["routed"].model_copy(  # type: ignore[union-attr]
        update={"cascade": [r.model_copy(update={"estimator": "vibes"}) if r.estimator else r
                            for r in unknown.models["routed"].cascade]}  # type: ignore[union-attr]
    )  # fmt: skip
    with pytest.raises(ConfigError, match="unknown estimator 'vibes'"):
        build_cascade(entry, lambda name: None)  # type: ignore[arg-type,return-value]


def test_a_config_cascade_reads_its_calibration_and_checks_the_model(
    tmp_path: Path, smollm2: LocalLLM
) -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 2, 60)
    items = [CalibrationItem(id=str(i), score=s, confidence=0.5, correct=s < 1)
             for i, s in enumerate(scores)]  # fmt: skip
    for model in ("smollm2-135m", "gemma3-270m"):
        fit = fit_calibration(items, model=model, estimator="mean_logprob")
        fit.save(tmp_path / f"{model}.json")
    for fitted_for, ok in (("smollm2-135m", True), ("gemma3-270m", False)):
        path = tmp_path / "serve.yaml"
        path.write_text(
            "models:\n  routed:\n    cascade:\n"
            f"      - {{llm: smollm2-135m, estimator: mean_logprob, "
            f"calibration: {tmp_path / fitted_for}.json, escalation_rate: 0.5}}\n"
            "      - {llm: smollm2-135m}\n"
        )
        if ok:
            app_from_config(load_config(path))
        else:
            with pytest.raises(ConfigError, match="fitted for 'gemma3-270m'"):
                app_from_config(load_config(path))
