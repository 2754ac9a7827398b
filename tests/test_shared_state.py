"""Replicas that share one PostgreSQL: runs, traces and evaluation records any of them
wrote are found by the others (the deployment recipe in the README, on one machine)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psycopg_pool
import pytest
import yaml
from commands import eval_cli

from relaygraph.graph.loader import load_graph
from relaygraph.graph.postgres import SharedRecords
from relaygraph.graph.runs import ItemRecord, RunManifest, RunStore, read_items
from relaygraph.graph.runtime import CompiledAgentGraph
from relaygraph.graph.trace import Trace
from relaygraph.memory import open_memory
from relaygraph.serving.config import ServeConfig
from relaygraph.serving.server import BackgroundServer, app_from_config, build_models

ROOT = Path(__file__).resolve().parent.parent
TEAM = f"{ROOT / 'examples' / 'research_team.py'}:build"


RECIPE = ROOT / "examples" / "deploy" / "serve.yaml"
RECIPE_DATABASE = "postgresql://relaygraph@db.internal:5432/relaygraph"
KEY = "replica-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def recipe(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> ServeConfig:
    """The README's deployment recipe (examples/deploy/serve.yaml) on this test's database."""
    monkeypatch.chdir(ROOT)  # the recipe names its graph from the repository root
    monkeypatch.setenv("RELAYGRAPH_API_KEYS", KEY)
    text = RECIPE.read_text().replace(RECIPE_DATABASE, postgres_url)
    return ServeConfig.model_validate(yaml.safe_load(text))


@pytest.fixture
def replicas(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[BackgroundServer, BackgroundServer]]:
    """Two replicas of the deployment recipe."""
    config = recipe(postgres_url, monkeypatch)
    with (
        BackgroundServer(app=app_from_config(config)) as first,
        BackgroundServer(app=app_from_config(config)) as second,
    ):
        yield first, second


@pytest.mark.server
def test_a_run_served_by_one_replica_is_found_by_the_other(
    replicas: tuple[BackgroundServer, BackgroundServer], postgres_url: str
) -> None:
    first, second = replicas
    client = openai.OpenAI(base_url=first.base_url, api_key=KEY, max_retries=0)
    response = client.chat.completions.create(
        model="research-team",
        messages=[{"role": "user", "content": "Which river flows through London?"}],
    )
    trace_id = (response.model_extra or {})["relaygraph"]["trace_id"]

    # The other replica finds the trace, and lists it, though it never ran it.
    found = httpx.get(f"{second.base_url}/traces/{trace_id}", headers=AUTH)
    assert found.status_code == 200
    trace = Trace.model_validate(found.json())
    assert trace.answer == response.choices[0].message.content
    listed = httpx.get(f"{second.base_url}/traces", headers=AUTH).json()
    assert trace_id in [t["id"] for t in listed["data"]]
    # The run itself is checkpointed in the shared database: any process reads it back
    # by its thread id, step for step.
    with load_graph(TEAM, model="smollm2-135m").compile(checkpointer=postgres_url) as graph:
        assert graph.trace(trace.thread_id) == trace
    # And what its agents wrote is in the shared memory, under the run's namespace.
    memory = open_memory(postgres_url)
    found_facts = [e.text for e in memory.entries(namespace=trace.thread_id)]
    memory.close()
    assert any("Thames" in text for text in found_facts)


@pytest.mark.server
def test_an_unknown_trace_is_a_404_on_every_replica(
    replicas: tuple[BackgroundServer, BackgroundServer],
) -> None:
    for replica in replicas:
        missing = httpx.get(f"{replica.base_url}/traces/{'0' * 32}", headers=AUTH)
        assert missing.status_code == 404
        assert httpx.get(f"{replica.base_url}/traces/{'0' * 32}").status_code == 401


@pytest.mark.server
def test_a_served_graphs_shared_memory_closes_with_the_server(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = build_models(recipe(postgres_url, monkeypatch))
    graph = served["research-team"]
    assert isinstance(graph, CompiledAgentGraph) and graph.memory is not None
    with BackgroundServer(served):
        assert graph.memory.count(namespace="none-yet") == 0
    # Shut down: the connections the config opened for the graph's memory are closed.
    with pytest.raises(psycopg_pool.PoolClosed):
        graph.memory.count()


def test_evaluation_items_are_kept_once_per_run_and_id(postgres_url: str) -> None:
    trace = Trace(run_id="a" * 32, thread_id="t", graph="g", task="q", answer="x")
    with SharedRecords(postgres_url) as records, SharedRecords(postgres_url) as other:
        records.save_item("run-1", ItemRecord(id="q1", success=0.0), trace)
        # Recorded again (a resumed or retried item): one row, the last record.
        other.save_item("run-1", ItemRecord(id="q1", success=1.0), trace)
        other.save_item("run-1", ItemRecord(id="q2", success=0.0), None)
        records.save_item("run-2", ItemRecord(id="q1", success=1.0), None)
        assert {i: r.success for i, r in records.items("run-1").items()} == {"q1": 1.0, "q2": 0.0}
        assert records.runs() == {"run-1": 2, "run-2": 1}
        assert other.trace("a" * 32) == trace
        assert records.trace("b" * 32) is None


def test_a_run_directory_shares_its_items_and_catches_up_when_reopened(
    tmp_path: Path, postgres_url: str
) -> None:
    manifest = RunManifest(
        suite="s",
        headline="EM",
        dataset="d",
        fingerprint="f",
        items=3,
        graph="g",
        model="m",
        seed=0,
    )
    trace = Trace(run_id="c" * 32, thread_id="t", graph="g", task="q", answer="x")
    out = tmp_path / "hotpot-run"
    # Two items recorded before the run had a database ...
    local = RunStore.open(out, manifest, resume=False)
    local.record(ItemRecord(id="q1", success=1.0), trace)
    local.record(ItemRecord(id="q2", success=0.0), None)
    with SharedRecords(postgres_url) as records:
        # ... reach it when the run is resumed with one; new items go there as they finish.
        resumed = RunStore.open(out, manifest, resume=True, shared=records)
        resumed.record(ItemRecord(id="q3", success=1.0), None)
        shared = records.items("hotpot-run")
        assert {i: r.success for i, r in shared.items()} == {"q1": 1.0, "q2": 0.0, "q3": 1.0}
        assert shared == resumed.done
        assert records.trace("c" * 32) == trace


def test_an_evaluation_run_stores_its_items_in_the_database(
    tmp_path: Path, postgres_url: str
) -> None:
    out = tmp_path / "hotpot-db"
    graph = f"{ROOT / 'tests' / 'scripts' / 'hotpot_graphs.py'}:right"
    args = ["hotpotqa", "--graph", graph, "--limit", "3", "--out", str(out)]
    result = eval_cli(*args, "--database", postgres_url)
    assert result.returncode == 0, result.stderr
    with SharedRecords(postgres_url) as records:
        stored = records.items("hotpot-db")
        assert stored == read_items(out)  # the same three records as the run directory
        assert all(records.trace(t.run_id) is not None for t in _traces(out))
    refused = eval_cli(*args, "--resume", "--database", "sqlite:///runs.db")
    assert (
        refused.returncode == 2
        and "records are shared in PostgreSQL: give a postgresql:// URL" in refused.stderr
    )


def _traces(out: Path) -> list[Trace]:
    return [Trace.load(path) for path in sorted((out / "traces").glob("*.json"))]
