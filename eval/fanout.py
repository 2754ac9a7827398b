"""Running a suite's items as Ray tasks into the same run directory as the local runner.

The driver (this process) keeps the `RunStore` and is its only writer: each item is one
Ray task that returns its `ItemRecord` and trace, and the driver records it through
``store.record`` as it arrives, so the run directory is the one `run_suite` writes,
resumable the same way. What crosses to a worker is a `SuiteRecipe` (specs, not a loaded
model) and the item; each worker process builds the suite once and keeps it for the items
it runs next.

Exactly once: the driver submits each unfinished id once and records the one result its
task returns. A worker that dies mid-item (killed, out of memory, a crashed node) makes
Ray rerun the task, up to ``max_retries`` times; an item that kills every worker it runs
on is recorded as a scored failure, as the local runner records whatever escapes a suite.

Ray is optional (the ``distributed`` extra) and imported only here, when a run asks for it.
"""

from __future__ import annotations

import functools
import math
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relaygraph.errors import ConfigError, RelayGraphError
from relaygraph.eval.report import write_report
from relaygraph.eval.runner import open_run, progress_bar, run_item, running_score
from relaygraph.graph.runs import ItemRecord

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path
    from types import ModuleType

    from relaygraph.eval.recipes import SuiteRecipe
    from relaygraph.eval.report import Summary
    from relaygraph.eval.runner import Suite
    from relaygraph.graph.postgres import SharedRecords
    from relaygraph.graph.runs import RunStore
    from relaygraph.graph.trace import Trace

WAIT_S = 0.5
"""How long the driver blocks waiting for a result before it checks for an interrupt."""
PROBE_TIMEOUT_S = 5.0
"""How long a cluster address may take to accept a connection before the run gives up."""


@dataclass(frozen=True, slots=True)
class RayOptions:
    """Where and how wide a run fans out on Ray.

    Example:
        >>> RayOptions(address="10.0.0.5:6379", workers=16)
        RayOptions(address='10.0.0.5:6379', workers=16, cpus_per_item=1.0, max_retries=3)
    """

    address: str | None = None
    """A running cluster (``host:port``, ``ray://host:port`` or ``auto``); None starts a
    local Ray for this run and stops it afterwards."""
    workers: int = 1
    """Items run at once, each a Ray task holding ``cpus_per_item`` CPUs."""
    cpus_per_item: float = 1.0
    """CPUs Ray reserves for one item's task (and so for its worker's embedded model)."""
    max_retries: int = 3
    """Reruns of an item whose worker process died, before it is scored a failure."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(
                f"Ray workers must be at least 1, not {self.workers}",
                parameter="ray_workers",
                value=self.workers,
            )
        if self.cpus_per_item <= 0:
            raise ConfigError(
                f"CPUs per item must be positive, not {self.cpus_per_item}",
                parameter="cpus_per_item",
                value=self.cpus_per_item,
            )
        if self.max_retries < 0:
            raise ConfigError(
                f"max_retries must be 0 or more, not {self.max_retries}",
                parameter="max_retries",
                value=self.max_retries,
            )


def evaluate_on_ray(
    recipe: SuiteRecipe,
    items: Sequence[Any],
    out: str | Path,
    *,
    dataset: str,
    graph: str,
    model: str,
    options: RayOptions,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    resume: bool = False,
    show_progress: bool = True,
    shared: SharedRecords | None = None,
) -> Summary:
    """`relaygraph.eval.runner.evaluate` with the items run as Ray tasks (the driver
    writes the run directory, and ``shared`` when given).

    Raises:
        ConfigError: As `evaluate`; Ray is not installed, the cluster cannot be reached,
            or it has fewer CPUs than ``options`` asks for.
    """
    store = open_run(
        recipe,
        items,
        out,
        dataset=dataset,
        graph=graph,
        model=model,
        seed=seed,
        settings=settings,
        resume=resume,
        shared=shared,
    )
    run_on_ray(recipe, items, store, options, show_progress=show_progress)
    return write_report(store.directory)


def run_on_ray(
    recipe: SuiteRecipe,
    items: Sequence[Any],
    store: RunStore,
    options: RayOptions,
    *,
    show_progress: bool = True,
) -> list[ItemRecord]:
    """Run the items ``store`` does not have yet on Ray; return every item's record, in order.

    Raises:
        ConfigError: As `evaluate_on_ray`, or a worker cannot build the suite (a graph or
            model spec that does not load there).
    """
    todo = [item for item in items if recipe.item_id(item) not in store.done]
    ids = {recipe.item_id(item) for item in items}
    if not todo:  # a finished run resumed: nothing to start Ray for
        return [store.done[recipe.item_id(item)] for item in items]
    with _ray_session(options) as ray:
        task = ray.remote(_run_remote).options(
            num_cpus=options.cpus_per_item, max_retries=options.max_retries
        )
        threads = max(1, math.floor(options.cpus_per_item))
        pending: dict[Any, Any] = {}  # the task's ObjectRef -> its item
        queue = iter(todo)
        progress = progress_bar(show_progress)
        try:
            with progress:
                bar = progress.add_task(
                    f"{recipe.name} on Ray",
                    total=len(items),
                    completed=len(items) - len(todo),
                    score=running_score(recipe.headline, store, ids),
                )
                for item in queue:
                    pending[task.remote(recipe, item, threads)] = item
                    if len(pending) >= options.workers:
                        break
                while pending:
                    # In short waits: a blocking wait would hold off Ctrl-C until an item ends.
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                    if not ready:
                        continue
                    record, trace = _result(ray, ready[0], recipe, pending.pop(ready[0]), options)
                    store.record(record, trace)
                    progress.update(
                        bar, advance=1, score=running_score(recipe.headline, store, ids)
                    )
                    next_item = next(queue, None)
                    if next_item is not None:
                        pending[task.remote(recipe, next_item, threads)] = next_item
        finally:
            for ref in pending:  # an interrupted or failed run leaves nothing running
                ray.cancel(ref, force=True)
    return [store.done[recipe.item_id(item)] for item in items]


def _result(
    ray: ModuleType, ref: Any, recipe: SuiteRecipe, item: Any, options: RayOptions
) -> tuple[ItemRecord, Trace | None]:
    """The task's record; a failure of the worker rather than the item becomes a record
    too, and one of the suite's build is raised (it would fail every item alike)."""
    try:
        result: tuple[ItemRecord, Trace | None] = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, RelayGraphError):
            raise cause from None
        raise ConfigError(f"a Ray worker could not build the {recipe.name} suite: {cause}") from exc
    except ray.exceptions.RayError as exc:  # Ray's retries are spent: the item lost its worker
        tries = options.max_retries + 1
        return (
            ItemRecord(
                id=recipe.item_id(item),
                groups=recipe.groups(item),
                success=0.0,
                error=f"{type(exc).__name__}: the item's Ray worker died on each of {tries} tries",
            ),
            None,
        )
    return result


def _run_remote(recipe: SuiteRecipe, item: Any, threads: int) -> tuple[ItemRecord, Trace | None]:
    """The Ray task: one item on this worker's suite (never raises for the item itself)."""
    return run_item(_suite(recipe, threads), item)


@functools.lru_cache(maxsize=4)
def _suite(recipe: SuiteRecipe, threads: int) -> Suite[Any]:
    """The suite of ``recipe``, built once per worker process: its model loads once and
    serves every item this worker runs, on the ``threads`` CPUs its task holds (not
    every core of the node, which the other workers' models share)."""
    return recipe.build(threads)


@contextmanager
def _ray_session(options: RayOptions) -> Iterator[ModuleType]:
    """Ray, connected to ``options.address`` or to a local Ray started for the run (and
    stopped after it); a process already connected keeps its connection."""
    ray = _import_ray()
    needed = options.workers * options.cpus_per_item
    started = not ray.is_initialized()
    if started:
        _init(ray, options, needed)
    try:
        cpus = ray.cluster_resources().get("CPU", 0.0)
        if cpus < needed:
            raise ConfigError(
                f"the Ray cluster has {cpus:g} CPUs; {options.workers} workers at "
                f"{options.cpus_per_item:g} CPUs per item need {needed:g}; lower --ray-workers "
                "or add nodes",
                parameter="ray_workers",
            )
        yield ray
    finally:
        if started:
            ray.shutdown()


def _init(ray: ModuleType, options: RayOptions, needed: float) -> None:
    # The workers' own logs (llama.cpp's loading chatter) would scroll through the progress
    # bar; they stay in Ray's session folder.
    common: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
    if options.address is None:
        # A local Ray for this run, with a CPU per worker even beyond the machine's cores:
        # --ray-workers is honoured, and oversubscribing a small machine is the user's call.
        cpus = max(os.cpu_count() or 1, math.ceil(needed))
        ray.init(address="local", num_cpus=cpus, **common)
        return
    try:
        _probe(options.address)
        ray.init(address=options.address, **common)
    except (ConnectionError, TimeoutError, RuntimeError, OSError) as exc:
        raise ConfigError(
            f"cannot reach a Ray cluster at {options.address!r}: {exc}; start one with "
            "`ray start --head` or give its address (host:port, ray://host:port, auto)",
            parameter="ray_address",
        ) from None


def _probe(address: str) -> None:
    """Fail fast on a ``host:port`` nothing listens on: `ray.init` would retry for minutes.

    Raises:
        OSError: The port refuses the connection or does not answer in time.
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if sep and port.isdigit():
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs Ray, which is not installed; install the 'distributed' extra "
            "(pip install 'relaygraph[distributed]')",
            parameter="ray",
        ) from None
    return ray
