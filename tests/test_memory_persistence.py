"""Saving and loading shared memory: round trips, a process killed mid-save, damaged saves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from embedders import HashEmbedder

from relaygraph.errors import ConfigError
from relaygraph.memory import IndexConfig, SentenceEmbedder, SharedMemory


def _snapshot(directory: Path) -> Path:
    return directory / (directory / "CURRENT").read_text().strip()


def _same(a: SharedMemory, b: SharedMemory, queries: Sequence[str]) -> None:
    assert a.entries() == b.entries()
    for entry in a.entries():
        np.testing.assert_array_equal(a.vector(entry.id), b.vector(entry.id))
    for query in queries:
        for namespace in (None, "b"):
            # Rows are stored in another order after a load, which may move a score by
            # a rounding step, so scores are compared approximately.
            mine = a.search(query, k=5, namespace=namespace)
            theirs = b.search(query, k=5, namespace=namespace)
            assert [h.entry for h in mine] == [h.entry for h in theirs]
            np.testing.assert_allclose(
                [h.score for h in mine], [h.score for h in theirs], atol=1e-6
            )


def _notes(n: int) -> list[dict[str, object]]:
    animals = ("fox", "owl", "cat", "dog", "eel")
    places = ("river", "road", "hill", "bridge", "field", "sea", "street", "forest")
    return [
        {
            "text": f"Note {i}: the {animals[i % 5]} crossed the {places[i // 5 % 8]}.",
            "author": f"agent-{i % 3}",
            "round": i,
            "namespace": "ab"[i % 2],
            "metadata": {"i": i, "even": i % 2 == 0, "w": 0.5, "tag": animals[i % 5], "no": None},
        }
        for i in range(n)
    ]


def test_round_trip_with_the_packaged_model(tmp_path: Path) -> None:
    # IVF trained on 40 real sentences: the most involved index to serialise, saved by
    # the default embedder, which load() then finds on its own.
    memory = SharedMemory(SentenceEmbedder(), IndexConfig(kind="ivf", train_at=39))
    memory.add_many(_notes(40))
    for entry in memory.entries()[:12]:
        memory.delete(entry.id)
    memory.update(memory.entries()[0].id, text="A heron stood in the shallow pond.")
    memory.save(tmp_path / "mem")

    loaded = SharedMemory.load(tmp_path / "mem")
    assert loaded.index_config == memory.index_config
    _same(memory, loaded, ["Which bird was near water?", "the dog on the road", "cat"])
    # The loaded memory keeps working: new labels do not collide with saved ones.
    added = loaded.add("An otter swam past the boat.", namespace="b")
    assert loaded.search("otter in the water", k=1)[0].entry.id == added.id
    assert len(loaded) == len(memory) + 1


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_round_trip_per_index_kind(tmp_path: Path, kind: str) -> None:
    config = IndexConfig(kind=kind, train_at=100, nprobe=2, tombstone_share=0.5)
    memory = SharedMemory(HashEmbedder(), config)
    memory.add_many(_notes(300))
    for entry in memory.entries()[::4]:
        memory.delete(entry.id)
    for entry in memory.entries()[:20]:
        memory.update(entry.id, text=entry.text.upper(), namespace="b")
    memory.save(tmp_path)

    loaded = SharedMemory.load(tmp_path, embedder=HashEmbedder())
    _same(memory, loaded, [f"Note {i}: the cat crossed the sea." for i in range(0, 300, 17)])
    extra = loaded.add_many(_notes(310)[300:])
    assert [loaded.search(e.text, k=1)[0].entry.id for e in extra] == [e.id for e in extra]


def test_hnsw_tombstones_survive_a_save(tmp_path: Path) -> None:
    memory = SharedMemory(HashEmbedder(), IndexConfig(kind="hnsw", tombstone_share=0.9))
    entries = memory.add_many([{"text": f"t{i}"} for i in range(30)])
    for entry in entries[:10]:
        memory.delete(entry.id)
    memory.save(tmp_path)
    loaded = SharedMemory.load(tmp_path, embedder=HashEmbedder())
    hits = loaded.search("t0", k=30)
    assert len(hits) == 20 and {h.entry.id for h in hits} == {e.id for e in entries[10:]}
    _same(memory, loaded, ["t0", "t15"])


def test_each_save_replaces_the_last(tmp_path: Path) -> None:
    memory = SharedMemory(HashEmbedder())
    memory.add("first")
    first = memory.save(tmp_path)
    memory.add("second")
    second = memory.save(tmp_path)
    assert first != second and not first.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["CURRENT", second.name])
    assert len(SharedMemory.load(tmp_path, embedder=HashEmbedder())) == 2
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["count"] == 2 and manifest["dim"] == 16 and manifest["version"] == 1
    assert manifest["embedder"] == "hash-test" and manifest["index"]["kind"] == "exact"
    assert set(manifest["sha256"]) == {"entries.jsonl", "vectors.npy", "labels.npy", "index.faiss"}


def test_empty_memory_round_trip(tmp_path: Path) -> None:
    SharedMemory(HashEmbedder(), "hnsw").save(tmp_path)
    loaded = SharedMemory.load(tmp_path, embedder=HashEmbedder())
    assert len(loaded) == 0 and loaded.search("x") == []


def test_loads_while_another_thread_saves(tmp_path: Path) -> None:
    writer = SharedMemory(HashEmbedder())
    writer.add("seed")
    writer.save(tmp_path)
    saves = 0
    stop = threading.Event()

    def keep_saving() -> None:
        nonlocal saves
        while not stop.is_set() and saves < 15:
            writer.add("more")
            writer.save(tmp_path)
            saves += 1

    thread = threading.Thread(target=keep_saving)
    thread.start()
    sizes = []
    try:
        while thread.is_alive():
            sizes.append(len(SharedMemory.load(tmp_path, embedder=HashEmbedder())))
    finally:
        stop.set()
        thread.join()
    # Every load saw a complete save, never an older one than the load before it.
    assert sizes == sorted(sizes) and sizes
    assert len(SharedMemory.load(tmp_path, embedder=HashEmbedder())) == 16


# -- a process killed mid-save ---------------------------------------------------------

_CHILD = """
import sys, time
from embedders import HashEmbedder
from relaygraph.memory import SharedMemory, persistence

directory, stall_at = sys.argv[1], sys.argv[2]
memory = SharedMemory(HashEmbedder(), "hnsw")
memory.add_many([{"text": f"old {i}"} for i in range(50)])
memory.save(directory)
memory.delete_namespace("default")
memory.add_many([{"text": f"new {i}"} for i in range(70)])

def stall():
    print("stalled", flush=True)
    time.sleep(600)

write = persistence._write_file
def slow_write(path, data):
    if path.name.startswith(stall_at):
        write(path, data[: len(data) // 2])  # half a file on disk, as a crash leaves it
        stall()
    write(path, data)

persistence._write_file = slow_write
if stall_at == "cleanup":
    persistence._remove_stale = lambda directory, keep: stall()
memory.save(directory)
print("finished", flush=True)
"""


@pytest.mark.parametrize(
    ("stall_at", "survivor"),
    [
        ("vectors.npy", "old"),  # killed while writing the new snapshot's files
        ("manifest.json", "old"),  # killed writing the last file of the snapshot
        (".CURRENT", "old"),  # killed writing the new pointer, before the switch
        ("cleanup", "new"),  # killed after the switch, before old snapshots are removed
    ],
)
def test_a_save_killed_midway_leaves_the_last_complete_state(
    tmp_path: Path, stall_at: str, survivor: str
) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD))
    directory = tmp_path / "mem"
    child = subprocess.Popen(
        [sys.executable, str(script), str(directory), stall_at],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parent)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "stalled"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    loaded = SharedMemory.load(directory, embedder=HashEmbedder())
    expected = 50 if survivor == "old" else 70
    assert len(loaded) == expected
    assert {e.text.split()[0] for e in loaded.entries()} == {survivor}
    assert loaded.search(f"{survivor} 7", k=1)[0].entry.text == f"{survivor} 7"

    # The next save clears what the killed one left behind.
    loaded.save(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["CURRENT", _snapshot(directory).name]


# -- damaged saves ---------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    memory = SharedMemory(HashEmbedder())
    memory.add_many([{"text": f"entry {i}"} for i in range(5)])
    memory.save(tmp_path / "mem")
    return tmp_path / "mem"


def _load_fails(directory: Path, match: str, embedder: HashEmbedder | None = None) -> None:
    with pytest.raises(ConfigError, match=match):
        SharedMemory.load(directory, embedder=embedder or HashEmbedder())


def test_not_a_saved_memory(tmp_path: Path) -> None:
    _load_fails(tmp_path / "absent", "no such directory")
    _load_fails(tmp_path, "no CURRENT file")
    (tmp_path / "CURRENT").write_text("../../etc\n")
    _load_fails(tmp_path, "not a snapshot here")


def test_bad_manifest(saved: Path) -> None:
    manifest = _snapshot(saved) / "manifest.json"
    good = manifest.read_text()
    manifest.write_text("{not json")
    _load_fails(saved, "manifest.json")
    manifest.write_text(good.replace('"version": 1', '"version": 99'))
    _load_fails(saved, "format version 99 is not supported")
    manifest.write_text(good.replace('"count": 5', '"count": 6'))
    _load_fails(saved, "has 5 entries, manifest says 6")
    manifest.write_text(good.replace('"kind": "exact"', '"kind": "hnsw"'))
    _load_fails(saved, "not a 'hnsw' index")
    data = json.loads(good)
    del data["sha256"]["labels.npy"]
    manifest.write_text(json.dumps(data))
    _load_fails(saved, "no checksum for labels.npy")
    manifest.unlink()
    _load_fails(saved, "manifest.json is missing")


@pytest.mark.parametrize("name", ["entries.jsonl", "vectors.npy", "labels.npy", "index.faiss"])
def test_missing_or_altered_files(saved: Path, name: str) -> None:
    path = _snapshot(saved) / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    _load_fails(saved, f"{name} does not match its checksum")
    path.unlink()
    _load_fails(saved, f"{name} is missing")


def test_embedder_must_match_the_saved_vectors(saved: Path) -> None:
    _load_fails(saved, "16-d vectors .* with 32 dimensions", HashEmbedder(dim=32))
    _load_fails(
        saved, "embedder 'hash-test'.* given embedder is 'other'", HashEmbedder(name="other")
    )
    with pytest.raises(ConfigError, match="saved with embedder 'hash-test'; pass that embedder"):
        SharedMemory.load(saved)
