"""Shared memory: entries, the packaged MiniLM embedder, exact/IVF/HNSW search, filters.

Search tests run the real all-MiniLM-L6-v2 and real faiss. The property test, which needs
thousands of embeddings, uses a deterministic hash embedder and checks every search
against a brute-force numpy reference.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import faiss
import numpy as np
import pytest
from embedders import HashEmbedder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from relaygraph.errors import ConfigError
from relaygraph.eval.hotpotqa import load_hotpotqa
from relaygraph.memory import (
    Embedder,
    IndexConfig,
    MemoryEntry,
    SentenceEmbedder,
    SharedMemory,
)
from relaygraph.memory.embedding import packaged_model_dir
from relaygraph.memory.index import HNSWIndex, IVFIndex
from relaygraph.memory.store import QUERY_CACHE_SIZE

FACTS = {
    "eiffel": "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "python": "Python is a programming language created by Guido van Rossum.",
    "photo": "Photosynthesis turns sunlight, water and carbon dioxide into sugar in plants.",
    "everest": "Mount Everest is the highest mountain above sea level, in the Himalayas.",
    "insulin": "Insulin is a hormone made by the pancreas that regulates blood sugar.",
    "bach": "Johann Sebastian Bach composed the Brandenburg Concertos.",
    "nile": "The Nile flows north through eleven countries into the Mediterranean Sea.",
    "bitcoin": "Bitcoin is a cryptocurrency whose ledger is a public blockchain.",
}
QUERIES = {
    "eiffel": "When was the famous iron tower in France's capital finished?",
    "python": "Who invented the Python language?",
    "photo": "How do plants make food from light?",
    "everest": "What is the tallest peak on Earth?",
    "insulin": "Which hormone controls glucose levels in the blood?",
    "bach": "Who wrote the Brandenburg concertos?",
    "nile": "Which river runs into the Mediterranean through many African countries?",
    "bitcoin": "What digital currency uses a blockchain?",
}


@pytest.fixture(scope="module")
def minilm() -> SentenceEmbedder:
    return SentenceEmbedder()


@pytest.fixture
def facts(minilm: SentenceEmbedder) -> SharedMemory:
    memory = SharedMemory(minilm)
    memory.add_many([{"id": key, "text": text} for key, text in FACTS.items()])
    return memory


# -- entries ---------------------------------------------------------------------------


def test_entry_defaults_and_validation() -> None:
    entry = MemoryEntry(text="The sky is blue.", author="scout", metadata={"n": 1, "ok": True})
    assert len(entry.id) == 32 and entry.kind == "fact" and entry.namespace == "default"
    assert entry.round == 0 and entry.timestamp > 0
    assert MemoryEntry(text="x").id != MemoryEntry(text="x").id
    with pytest.raises(ValidationError, match="blank"):
        MemoryEntry(text="   ")
    with pytest.raises(ValidationError, match="lowercase identifier"):
        MemoryEntry(text="x", kind="Fact")
    with pytest.raises(ValidationError):
        MemoryEntry(text="x", round=-1)
    with pytest.raises(ValidationError):
        MemoryEntry(text="x", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        entry.text = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("value", [["a", "b"], {"nested": 1}, object(), (1, 2)])
def test_non_scalar_metadata_is_rejected_naming_the_key(value: object) -> None:
    with pytest.raises(ValidationError, match=r"metadata\['tags'\] is a"):
        MemoryEntry(text="x", metadata={"ok": 1, "tags": value})


def test_add_reports_bad_fields_as_config_errors() -> None:
    memory = SharedMemory(HashEmbedder())
    with pytest.raises(ConfigError, match=r"metadata\['tags'\] is a list") as info:
        memory.add("x", metadata={"tags": ["a"]})
    assert info.value.parameter == "metadata"
    with pytest.raises(ConfigError, match="text"):
        memory.add("")
    with pytest.raises(ConfigError, match="colour"):
        memory.add("x", colour="red")
    assert len(memory) == 0


def test_duplicate_ids_are_refused_and_add_many_is_all_or_nothing() -> None:
    memory = SharedMemory(HashEmbedder())
    memory.add("first", id="a")
    with pytest.raises(ConfigError, match="already has an entry with id 'a'"):
        memory.add("again", id="a")
    with pytest.raises(ConfigError, match="appears twice"):
        memory.add_many([{"id": "b", "text": "one"}, {"id": "b", "text": "two"}])
    with pytest.raises(ConfigError, match="'a'"):
        memory.add_many([{"id": "c", "text": "fine"}, {"id": "a", "text": "clash"}])
    assert [e.id for e in memory.entries()] == ["a"]


# -- the embedder ----------------------------------------------------------------------


def test_packaged_embedder(minilm: SentenceEmbedder) -> None:
    assert isinstance(minilm, Embedder)
    assert minilm.dim == 384 and minilm.name == "all-MiniLM-L6-v2"
    vectors = minilm.embed(["Paris is in France.", "Berlin is in Germany."])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert minilm.embed([]).shape == (0, 384)
    # The model loads once per process: a second embedder shares it.
    assert SentenceEmbedder()._model is minilm._model
    # A model folder of one's own is named after the folder unless told otherwise.
    assert SentenceEmbedder(packaged_model_dir()).name == "model"


def test_unknown_index_kind() -> None:
    with pytest.raises(ConfigError, match="'exact', 'ivf' or 'hnsw'"):
        SharedMemory(HashEmbedder(), "flat")  # type: ignore[arg-type]


# -- search with the real model --------------------------------------------------------


def test_semantic_search_finds_the_matching_fact(facts: SharedMemory) -> None:
    for key, query in QUERIES.items():
        hits = facts.search(query, k=3)
        assert hits[0].entry.id == key, (query, [h.entry.id for h in hits])
        assert hits[0].score > hits[1].score >= hits[2].score


def test_scores_are_cosines_of_stored_vectors(
    facts: SharedMemory, minilm: SentenceEmbedder
) -> None:
    query = QUERIES["nile"]
    hits = facts.search(query, k=len(FACTS))
    ids = [h.entry.id for h in hits]
    sims = facts.similarities(query, ids)
    np.testing.assert_allclose(sims, [h.score for h in hits], rtol=1e-5, atol=1e-6)
    q = minilm.embed([query])[0]
    np.testing.assert_allclose(facts.vector("nile") @ q, sims[ids.index("nile")], rtol=1e-5)
    # A vector query gives the same ranking as its text.
    assert [h.entry.id for h in facts.search(q, k=3)] == ids[:3]
    with pytest.raises(ConfigError, match="no memory entry has id 'nope'"):
        facts.similarities(query, ["nile", "nope"])


def test_bad_queries(facts: SharedMemory) -> None:
    with pytest.raises(ConfigError, match="k must be"):
        facts.search("tower", k=0)
    with pytest.raises(ConfigError, match="blank"):
        facts.search("  ")
    with pytest.raises(ConfigError, match="shape"):
        facts.search(np.ones(10, dtype=np.float32))
    with pytest.raises(ConfigError, match="zero"):
        facts.search(np.zeros(384, dtype=np.float32))


def test_empty_memory_search_returns_nothing(minilm: SentenceEmbedder) -> None:
    memory = SharedMemory(minilm)
    assert memory.search("anything", k=5) == []
    memory.add("Something to find.", namespace="a")
    assert memory.search("anything", namespace="b") == []
    assert memory.search("anything", where={"author": "nobody"}) == []
    assert len(memory.search("anything", k=5)) == 1


class Memo:
    """The real model, remembering what it embedded so parametrized cases share the work."""

    def __init__(self, model: SentenceEmbedder) -> None:
        self.model, self.name, self.dim = model, model.name, model.dim
        self.seen: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.seen]
        self.seen.update(zip(missing, self.model.embed(missing), strict=True))
        return np.array([self.seen[t] for t in texts]).reshape(len(texts), self.dim)


@pytest.fixture(scope="module")
def memo(minilm: SentenceEmbedder) -> Memo:
    return Memo(minilm)


@pytest.mark.parametrize(
    ("kind", "subset_limit"),
    # 4096: the few matching entries are scored directly, whatever the index; 0: the
    # index searches with an allow-list (HNSW then finds too few and falls back).
    [("exact", 4096), ("exact", 0), ("ivf", 0), ("hnsw", 0)],
)
def test_filters_hold_when_many_better_matches_are_excluded(
    memo: Memo, kind: str, subset_limit: int
) -> None:
    # 60 near-duplicates of the query in another namespace and by another author outrank
    # the one entry the filter allows; a top-k-then-filter search would return nothing.
    memory = SharedMemory(
        memo, IndexConfig(kind=kind, train_at=40, exact_subset_limit=subset_limit)
    )
    memory.add_many(
        [
            {"text": f"The Eiffel Tower in Paris, photo {i}.", "namespace": "noise"}
            for i in range(60)
        ]
    )
    memory.add("A tower of iron stands in the French capital.", namespace="run", author="scout")
    memory.add("Stock prices fell sharply on Monday.", namespace="run", author="analyst")
    memory.add("The Eiffel Tower is a landmark.", namespace="noise", author="scout")
    query = "The Eiffel Tower in Paris"

    hits = memory.search(query, k=1, namespace="run")
    assert [h.entry.author for h in hits] == ["scout"]
    hits = memory.search(query, k=5, namespace="run")
    assert [h.entry.author for h in hits] == ["scout", "analyst"]
    hits = memory.search(query, k=5, where={"author": "scout"})
    assert {h.entry.namespace for h in hits} == {"run", "noise"} and len(hits) == 2
    hits = memory.search(query, k=3, where={"author": ["analyst", "scout"], "namespace": "run"})
    assert [h.entry.author for h in hits] == ["scout", "analyst"]
    hits = memory.search(query, k=2, where=lambda e: e.author == "analyst")
    assert [h.entry.author for h in hits] == ["analyst"]


def test_where_on_metadata_and_kinds(minilm: SentenceEmbedder) -> None:
    memory = SharedMemory(minilm)
    memory.add("Rome is the capital of Italy.", kind="fact", metadata={"source": "wiki", "n": 1})
    memory.add("Check the capital of Italy next.", kind="plan", metadata={"source": "agent"})
    memory.add("Italy's capital is Rome.", kind="answer")
    hits = memory.search("capital of Italy", k=5, where={"source": "wiki"})
    assert [h.entry.kind for h in hits] == ["fact"]
    assert [e.kind for e in memory.entries(where={"source": ["wiki", "agent"]})] == [
        "fact",
        "plan",
    ]
    assert [e.kind for e in memory.entries(kinds=["answer", "plan"])] == ["plan", "answer"]
    assert memory.entries(where={"n": 2}) == []


def test_update_and_delete_keep_search_consistent(facts: SharedMemory) -> None:
    old_vector = facts.vector("bitcoin")
    updated = facts.update(
        "bitcoin", text="The Amazon rainforest produces much of the world's oxygen."
    )
    assert updated.text.startswith("The Amazon") and facts.get("bitcoin") == updated
    assert not np.allclose(facts.vector("bitcoin"), old_vector)
    assert facts.search("Which forest makes oxygen?", k=1)[0].entry.id == "bitcoin"
    assert facts.search("What digital currency uses a blockchain?", k=1)[0].entry.id != "bitcoin"

    # Metadata-only updates keep the vector.
    before = facts.vector("bach")
    facts.update("bach", metadata={"checked": True}, author="critic")
    np.testing.assert_array_equal(facts.vector("bach"), before)
    assert (
        facts.search("Who wrote the Brandenburg concertos?", where={"checked": True})[0].entry.id
        == "bach"
    )

    assert facts.delete("everest").id == "everest"
    assert "everest" not in facts and len(facts) == len(FACTS) - 1
    assert all(h.entry.id != "everest" for h in facts.search("tallest mountain", k=10))
    with pytest.raises(ConfigError, match="no memory entry has id 'everest'"):
        facts.get("everest")
    with pytest.raises(ConfigError, match="cannot change"):
        facts.update("bach", id="other")


def test_namespaces_and_scope(minilm: SentenceEmbedder) -> None:
    memory = SharedMemory(minilm)
    team_a, team_b = memory.scope("team-a"), memory.scope("team-b")
    team_a.add("The meeting moved to Thursday.", author="planner")
    team_a.add_many(
        [{"text": "Lunch is at noon."}, MemoryEntry(text="Bring the slides.", namespace="team-a")]
    )
    team_b.add("The meeting was cancelled.", author="planner")
    assert len(team_a) == 3 and len(team_b) == 1 and len(memory) == 4
    assert team_a.search("When is the meeting?", k=1)[0].entry.text.startswith("The meeting moved")
    assert team_b.search("When is the meeting?", k=5)[0].entry.namespace == "team-b"
    assert [e.text for e in team_a.entries(where={"author": "planner"})] == [
        "The meeting moved to Thursday."
    ]
    with pytest.raises(ConfigError, match="this scope is 'team-a'"):
        team_a.add("x", namespace="team-b")
    with pytest.raises(ConfigError, match="this scope is 'team-a'"):
        team_a.add_many([MemoryEntry(text="x", namespace="team-b")])
    # Moving an entry to another namespace moves it between scopes.
    moved = team_b.entries()[0]
    memory.update(moved.id, namespace="team-a")
    assert len(team_a) == 4 and len(team_b) == 0
    assert memory.delete_namespace("team-a") == 4 and len(memory) == 0


def test_concurrent_agents(minilm: SentenceEmbedder) -> None:
    memory = SharedMemory(minilm)
    errors: list[BaseException] = []

    def agent(name: str) -> None:
        try:
            for i in range(8):
                memory.add(f"Agent {name} observed event number {i}.", author=name)
                memory.search(f"What did {name} see?", k=3, where={"author": name})
        except BaseException as exc:  # collected for the main thread to report
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(n,)) for n in ("ann", "bob", "cy")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(memory) == 24
    assert {h.entry.author for h in memory.search("event", k=8, where={"author": "bob"})} == {"bob"}


# -- approximate indexes ---------------------------------------------------------------


def test_ivf_and_hnsw_agree_with_exact_on_real_text(minilm: SentenceEmbedder) -> None:
    data = load_hotpotqa(sample="distractor-100", limit=3)
    sentences = list(
        dict.fromkeys(s.strip() for ex in data.examples for p in ex.context for s in p.sentences)
    )
    sentences = [s for s in sentences if s]
    vectors = minilm.embed(sentences)
    items = [{"id": str(i), "text": s} for i, s in enumerate(sentences)]
    lookup = dict(zip(sentences, vectors, strict=True))

    class Precomputed:
        name, dim = minilm.name, minilm.dim

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return np.array([lookup[t] for t in texts]).reshape(len(texts), self.dim)

    exact = SharedMemory(Precomputed())
    ivf = SharedMemory(Precomputed(), IndexConfig(kind="ivf", train_at=39, nprobe=2))
    hnsw = SharedMemory(Precomputed(), IndexConfig(kind="hnsw", hnsw_m=8, ef_search=16))
    for memory in (exact, ivf, hnsw):
        memory.add_many(items)
    queries = minilm.embed([ex.question for ex in data.examples])
    for q in queries:
        best = exact.search(q, k=1)[0].entry.id
        assert ivf.search(q, k=1)[0].entry.id == best
        assert hnsw.search(q, k=1)[0].entry.id == best
    for i in range(0, len(sentences), 7):
        own = exact.vector(str(i))
        assert ivf.search(own, k=1)[0].entry.id == str(i)
        assert hnsw.search(own, k=1)[0].entry.id == str(i)


def test_ivf_searches_exactly_until_trained() -> None:
    config = IndexConfig(kind="ivf", train_at=50, nprobe=1)
    index = IVFIndex(4, config)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((120, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.arange(120, dtype=np.int64)
    index.add(vectors[:49], labels[:49])
    assert not index.stale and isinstance(index.native, faiss.IndexIDMap2)
    index.add(vectors[49:], labels[49:])
    assert index.stale
    index.rebuild(vectors, labels)
    assert isinstance(index.native, faiss.IndexIVFFlat) and index.native.nlist == 3
    assert not index.stale
    index.remove(labels[:10])
    assert index.native.ntotal == 110
    scores, found = index.search(vectors[20:21], 1)
    assert found.tolist() == [20] and scores[0] == pytest.approx(1.0, abs=1e-5)
    _, found = index.search(vectors[20:21], 5, allowed=labels[100:103])
    assert set(found.tolist()) <= {100, 101, 102}


def test_hnsw_hides_tombstones_and_compacts() -> None:
    config = IndexConfig(kind="hnsw", tombstone_share=0.25)
    index = HNSWIndex(4, config)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((40, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.arange(40, dtype=np.int64)
    index.add(vectors, labels)
    index.remove(labels[:10])
    assert index.tombstones == 10 and index.native.ntotal == 40 and not index.stale
    _, found = index.search(vectors[:1], 40)
    assert len(found) == 30 and not set(found.tolist()) & set(range(10))
    index.remove(labels[10:11])
    assert index.stale
    index.rebuild(vectors[11:], labels[11:])
    assert index.tombstones == 0 and index.native.ntotal == 29


# -- property test: every search equals brute force ------------------------------------

_WORDS = st.text(alphabet="abcdefgh", min_size=1, max_size=6)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(_WORDS, min_size=1, max_size=10), st.sampled_from("ab")),
        st.tuples(st.just("delete"), st.integers(0, 10**6)),
        st.tuples(st.just("update"), st.integers(0, 10**6), _WORDS, st.sampled_from("ab")),
        st.tuples(st.just("drop_ns"), st.sampled_from("ab")),
        st.tuples(
            st.just("search"),
            _WORDS,
            st.integers(1, 12),
            st.sampled_from([None, "a", "b"]),
            st.sampled_from([None, 0, 1]),
        ),
    ),
    max_size=40,
)

_CONFIGS = [
    IndexConfig(kind="exact"),
    IndexConfig(kind="exact", exact_subset_limit=0),
    IndexConfig(kind="ivf", train_at=39, exact_subset_limit=0),
    IndexConfig(kind="hnsw", ef_search=128, tombstone_share=0.2, exact_subset_limit=0),
]


@pytest.mark.parametrize("config", _CONFIGS, ids=lambda c: f"{c.kind}-{c.exact_subset_limit}")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_random_histories_match_brute_force(config: IndexConfig, ops: list[tuple]) -> None:
    embedder = HashEmbedder()
    memory = SharedMemory(embedder, config)
    reference: dict[str, tuple[str, str, int]] = {}  # id -> (text, namespace, parity)
    counter = 0
    for op in ops:
        if op[0] == "add":
            items = []
            for text in op[1]:
                counter += 1
                items.append({"text": text, "namespace": op[2], "metadata": {"p": counter % 2}})
                reference[f"e{counter}"] = (text, op[2], counter % 2)
                items[-1]["id"] = f"e{counter}"
            memory.add_many(items)
        elif op[0] == "delete" and reference:
            victim = sorted(reference)[op[1] % len(reference)]
            memory.delete(victim)
            del reference[victim]
        elif op[0] == "update" and reference:
            target = sorted(reference)[op[1] % len(reference)]
            memory.update(target, text=op[2], namespace=op[3])
            reference[target] = (op[2], op[3], reference[target][2])
        elif op[0] == "drop_ns":
            assert memory.delete_namespace(op[1]) == sum(v[1] == op[1] for v in reference.values())
            reference = {k: v for k, v in reference.items() if v[1] != op[1]}
        elif op[0] == "search":
            _, query, k, namespace, parity = op
            where = None if parity is None else {"p": parity}
            hits = memory.search(query, k, namespace=namespace, where=where)
            allowed = [
                i
                for i, (_, ns, p) in reference.items()
                if namespace in (None, ns) and parity in (None, p)
            ]
            q = embedder.embed([query])[0]
            truth = {i: float(embedder.embed([reference[i][0]])[0] @ q) for i in allowed}
            expected = sorted(truth.values(), reverse=True)[:k]
            got = [h.score for h in hits]
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
            for h in hits:
                assert h.entry.text == reference[h.entry.id][0]
                assert h.score == pytest.approx(truth[h.entry.id], abs=1e-5)
        assert len(memory) == len(reference)
    assert {e.id for e in memory.entries()} == set(reference)
    for entry_id, (text, _, _) in reference.items():
        np.testing.assert_allclose(memory.vector(entry_id), embedder.embed([text])[0], atol=1e-6)


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return super().embed(texts)


def test_a_repeated_query_is_embedded_once() -> None:
    embedder = CountingEmbedder()
    memory = SharedMemory(embedder)
    memory.add_many([{"text": "a"}, {"text": "b"}])
    embedder.calls.clear()
    first = memory.search("what is a?", k=1)
    assert memory.search("what is a?", k=1) == first
    memory.similarities("what is a?", [first[0].entry.id])
    assert embedder.calls == [["what is a?"]]
    for i in range(QUERY_CACHE_SIZE):  # the oldest query falls out of the cache
        memory.search(f"query {i}", k=1)
    memory.search("what is a?", k=1)
    assert embedder.calls[-1] == ["what is a?"]
