"""Evaluations fanned out on a real two-node Ray cluster on 127.0.0.1.

The cluster is started with the ``ray`` command (a head and a second node, one CPU each,
session files in a temporary folder) and its processes are killed at the end. The local
side of every comparison is the single-process runner on the session's embedded model.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from commands import eval_cli

from relaygraph.errors import ConfigError
from relaygraph.eval.fanout import RayOptions, evaluate_on_ray, run_on_ray
from relaygraph.eval.hotpotqa import HotpotSuite, load_hotpotqa
from relaygraph.eval.recipes import HotpotRecipe
from relaygraph.eval.runner import open_run, run_suite, sample_items
from relaygraph.graph.loader import load_factory
from relaygraph.graph.runs import ITEMS, RunStore, read_items
from relaygraph.llm import LocalLLM

RAY = Path(sys.executable).with_name("ray")
GRAPH = "relaygraph.eval.hotpotqa.agents:reader"
MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Cluster:
    address: str
    temp_dir: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ray_start(*args: str, temp_dir: Path) -> None:
    started = subprocess.run(
        [str(RAY), "start", "--node-ip-address=127.0.0.1", "--num-cpus=1",
         f"--temp-dir={temp_dir}", "--disable-usage-stats", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert started.returncode == 0, f"ray start {' '.join(args)}:\n{started.stderr[-3000:]}"


def _cluster_processes(temp_dir: Path, port: int) -> set[psutil.Process]:
    """Every process of this cluster: those naming its session folder or its port, and
    their children (the raylets' workers)."""
    marks = (str(temp_dir), f":{port}")
    found: set[psutil.Process] = set()
    for process in psutil.process_iter(["cmdline"]):
        if process.pid == os.getpid():
            continue
        if any(mark in arg for arg in process.info["cmdline"] or () for mark in marks):
            found.add(process)
            with contextlib.suppress(psutil.NoSuchProcess):
                found.update(process.children(recursive=True))
    return found


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    # Short and fresh: Ray puts Unix sockets under it, whose paths have a length limit.
    temp_dir = Path(tempfile.mkdtemp(prefix="rg-ray-", dir="/tmp"))
    port = _free_port()
    with pytest.MonkeyPatch.context() as env:
        # The cluster's own token, for its nodes and this test's driver: Ray would
        # otherwise pick up (or miss, on a joining node) a token in ~/.ray.
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        env.setenv("HF_HUB_OFFLINE", "1")
        yield from _cluster(temp_dir, port)


def _cluster(temp_dir: Path, port: int) -> Iterator[Cluster]:
    try:
        _ray_start("--head", f"--port={port}", "--include-dashboard=false",
                   f"--ray-client-server-port={_free_port()}", temp_dir=temp_dir)  # fmt: skip
        _ray_start(f"--address=127.0.0.1:{port}", temp_dir=temp_dir)
        yield Cluster(f"127.0.0.1:{port}", temp_dir)
    finally:
        processes = _cluster_processes(temp_dir, port)
        for process in processes:
            process.kill()
        _, alive = psutil.wait_procs(processes, timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not alive, f"Ray processes left behind: {alive}"


def _items(limit: int) -> list:
    return sample_items(load_hotpotqa(sample="distractor-100").examples, limit, seed=0)


def _lines(run: Path) -> list[str]:
    return (run / ITEMS).read_text().splitlines()


def _open(out: Path, items: list) -> RunStore:
    return open_run(
        HotpotRecipe(GRAPH, MODEL), items, out, dataset="sample:distractor-100", graph=GRAPH,
        model=MODEL,
    )  # fmt: skip


@pytest.mark.ray
@pytest.mark.slow
def test_ray_run_scores_as_the_local_run(
    ray_cluster: Cluster, smollm2: LocalLLM, tmp_path: Path
) -> None:
    items = _items(4)
    local = _open(tmp_path / "local", items)
    run_suite(HotpotSuite(load_factory(GRAPH), smollm2), items, local, show_progress=False)

    summary = evaluate_on_ray(
        HotpotRecipe(GRAPH, MODEL), items, tmp_path / "ray", dataset="sample:distractor-100",
        graph=GRAPH, model=MODEL, options=RayOptions(address=ray_cluster.address, workers=2),
        show_progress=False,
    )  # fmt: skip

    assert summary.items == len(items)
    on_ray, here = read_items(tmp_path / "ray"), read_items(tmp_path / "local")
    assert on_ray.keys() == here.keys() == {item.id for item in items}
    for key, record in here.items():
        assert on_ray[key].prediction == record.prediction, key
        assert on_ray[key].metrics == record.metrics, key
        assert on_ray[key].success == record.success, key
    assert len(_lines(tmp_path / "ray")) == len(items)
    assert all((tmp_path / "ray" / r.trace).is_file() for r in on_ray.values() if r.trace)


def _kill_a_running_item(temp_dir: Path, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first worker seen running an item (its title is the task's name)."""
    while not stop.is_set():
        for process in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or ())
            if "ray::_run_remote" not in cmdline:
                continue
            try:
                raylet = " ".join(process.parent().cmdline())
            except (psutil.NoSuchProcess, AttributeError):
                continue
            if str(temp_dir) in raylet:  # a worker of this test's cluster
                os.kill(process.pid, signal.SIGKILL)
                killed.append(process.pid)
                return
        time.sleep(0.05)


@pytest.mark.ray
@pytest.mark.slow
def test_a_worker_killed_mid_item_still_records_every_item_once(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    items = _items(4)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(
        target=_kill_a_running_item, args=(ray_cluster.temp_dir, killed, stop)
    )
    killer.start()
    try:
        store = _open(tmp_path / "run", items)
        records = run_on_ray(
            HotpotRecipe(GRAPH, MODEL), items, store,
            RayOptions(address=ray_cluster.address, workers=2), show_progress=False,
        )  # fmt: skip
    finally:
        stop.set()
        killer.join()

    assert killed, "no worker was seen running an item"
    ids = [line.split('"id":"', 1)[1].split('"', 1)[0] for line in _lines(tmp_path / "run")]
    assert Counter(ids) == Counter(item.id for item in items)  # each exactly once
    assert [r.id for r in records] == [item.id for item in items]
    # Ray reran the killed item on a fresh worker: it was scored, not lost to an error.
    assert all(r.error is None for r in records)


@pytest.mark.ray
@pytest.mark.slow
def test_resuming_on_ray_runs_only_the_missing_items(
    ray_cluster: Cluster, smollm2: LocalLLM, tmp_path: Path
) -> None:
    items = _items(4)
    out = tmp_path / "run"
    partial = _open(out, items)
    run_suite(HotpotSuite(load_factory(GRAPH), smollm2), items[:2], partial, show_progress=False)
    before = _lines(out)

    evaluate_on_ray(
        HotpotRecipe(GRAPH, MODEL), items, out, dataset="sample:distractor-100", graph=GRAPH,
        model=MODEL, resume=True, options=RayOptions(address=ray_cluster.address, workers=2),
        show_progress=False,
    )  # fmt: skip

    after = _lines(out)
    assert after[:2] == before  # the finished items were neither rerun nor rewritten
    assert len(after) == len(items)
    assert set(read_items(out)) == {item.id for item in items}


@pytest.mark.ray
@pytest.mark.slow
def test_more_workers_than_the_cluster_has_cpus_is_refused(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    items = _items(2)
    store = _open(tmp_path / "run", items)
    with pytest.raises(ConfigError, match="has 2 CPUs; 3 workers"):
        run_on_ray(
            HotpotRecipe(GRAPH, MODEL), items, store,
            RayOptions(address=ray_cluster.address, workers=3), show_progress=False,
        )  # fmt: skip
    assert not (tmp_path / "run" / ITEMS).exists()


def test_an_address_nothing_listens_on_is_refused_quickly(tmp_path: Path) -> None:
    items = _items(2)
    store = _open(tmp_path / "run", items)
    began = time.monotonic()
    with pytest.raises(ConfigError, match="cannot reach a Ray cluster"):
        run_on_ray(
            HotpotRecipe(GRAPH, MODEL), items, store,
            RayOptions(address=f"127.0.0.1:{_free_port()}"), show_progress=False,
        )  # fmt: skip
    assert time.monotonic() - began < 30


def test_without_ray_installed_the_error_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    items = _items(2)
    with pytest.raises(ConfigError, match="'distributed' extra"):
        run_on_ray(HotpotRecipe(GRAPH, MODEL), items, _open(tmp_path / "run", items),
                   RayOptions(), show_progress=False)  # fmt: skip


@pytest.mark.parametrize(
    ("options", "parameter"),
    [({"workers": 0}, "ray_workers"), ({"cpus_per_item": 0}, "cpus_per_item"),
     ({"max_retries": -1}, "max_retries")],
)  # fmt: skip
def test_options_out_of_range_are_refused(options: dict, parameter: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RayOptions(**options)
    assert raised.value.parameter == parameter


@pytest.mark.ray
@pytest.mark.slow
def test_the_eval_command_runs_on_a_ray_cluster(ray_cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["hotpotqa", "--graph", GRAPH, "--limit", "2", "--out", str(out), "--ray",
            "--ray-address", ray_cluster.address, "--ray-workers", "2"]  # fmt: skip
    ran = eval_cli(*args)
    assert ran.returncode == 0, ran.stderr
    assert len(_lines(out)) == 2
    assert (out / "report.md").is_file()

    resumed = eval_cli(*args, "--resume")  # nothing left to run: Ray is not even started
    assert resumed.returncode == 0, resumed.stderr
    assert len(_lines(out)) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [(["--ray-workers", "2"], "--ray-workers and --ray-address need --ray"),
     (["--ray", "--concurrency", "2"], "--concurrency is for local runs")],
)  # fmt: skip
def test_the_eval_command_refuses_ray_options_that_cannot_apply(
    args: list[str], message: str, tmp_path: Path
) -> None:
    ran = eval_cli("hotpotqa", "--limit", "1", "--out", str(tmp_path / "run"), *args)
    assert ran.returncode != 0
    assert message in ran.stdout + ran.stderr
