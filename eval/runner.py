"""Running a suite's items into a run directory: concurrent, resumable, with live progress.

A `Suite` knows its items and how to run one into an `ItemRecord`; the runner skips the
items a resumed run already has, runs the rest on ``concurrency`` threads, persists each
as it finishes, and shows a progress bar with the running score. Whatever escapes a
suite's `run` for one item (a factory that raises, an environment that crashes) becomes
that item's scored failure; the run goes on.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from relaygraph.eval.report import write_report
from relaygraph.eval.spans import item_span, record_item
from relaygraph.graph.runs import ItemRecord, RunManifest, RunStore, fingerprint

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from relaygraph.eval.report import Summary
    from relaygraph.graph.postgres import SharedRecords
    from relaygraph.graph.trace import Trace

Item = TypeVar("Item")
Item_contra = TypeVar("Item_contra", contravariant=True)


class SuiteInfo(Protocol[Item_contra]):
    """What a run directory needs to know of a suite, without running anything."""

    @property
    def name(self) -> str:
        """The suite's name (``hotpotqa``, ``alfworld``)."""
        ...

    @property
    def headline(self) -> str:
        """What ``ItemRecord.success`` means (``EM``, ``success rate``)."""
        ...

    def item_id(self, item: Item_contra) -> str:
        """The item's id in its dataset."""
        ...

    def groups(self, item: Item_contra) -> dict[str, str]:
        """What the report breaks this item's result down by."""
        ...


class Suite(SuiteInfo[Item_contra], Protocol[Item_contra]):
    """A benchmark the runner can drive."""

    def run(self, item: Item_contra) -> tuple[ItemRecord, Trace | None]:
        """Run one item to a scored record (and its trace when a graph ran)."""
        ...


def run_suite(
    suite: Suite[Item],
    items: Sequence[Item],
    store: RunStore,
    *,
    concurrency: int = 1,
    show_progress: bool = True,
) -> list[ItemRecord]:
    """Run the items ``store`` does not have yet; return every item's record, in order."""
    todo = [item for item in items if suite.item_id(item) not in store.done]
    progress = progress_bar(show_progress)
    ids = {suite.item_id(item) for item in items}
    with progress, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        bar = progress.add_task(
            suite.name,
            total=len(items),
            completed=len(items) - len(todo),
            score=running_score(suite.headline, store, ids),
        )
        pending: set[Future[None]] = set()
        queue = iter(todo)
        for item in queue:
            pending.add(pool.submit(_run_one, suite, item, store))
            if len(pending) >= concurrency:
                break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()  # _run_one never raises for an item; a store error does
                progress.update(bar, advance=1, score=running_score(suite.headline, store, ids))
                next_item = next(queue, None)
                if next_item is not None:
                    pending.add(pool.submit(_run_one, suite, next_item, store))
    return [store.done[suite.item_id(item)] for item in items]


def _run_one(suite: Suite[Item], item: Item, store: RunStore) -> None:
    record, trace = run_item(suite, item)
    store.record(record, trace)


def run_item(suite: Suite[Item], item: Item) -> tuple[ItemRecord, Trace | None]:
    """Run one item to its record; whatever escapes the suite becomes a scored failure."""
    began = time.perf_counter()
    with item_span(suite.name, suite.item_id(item), suite.groups(item)) as span:
        try:
            record, trace = suite.run(item)
        except Exception as exc:  # one item's failure is scored, never the end of the run
            record = ItemRecord(
                id=suite.item_id(item),
                groups=suite.groups(item),
                success=0.0,
                error=f"{type(exc).__name__}: {exc}",
                latency_s=time.perf_counter() - began,
            )
            trace = None
        record_item(span, suite.headline, record)
    return record, trace


def progress_bar(show: bool) -> Progress:
    """The live bar a run shows: items done, the running score, the time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[score]}"),
        TimeRemainingColumn(),
        disable=not show,
    )


def running_score(headline: str, store: RunStore, ids: set[str]) -> str:
    """The bar's score text: the mean headline over the finished items among ``ids``."""
    done = [r for r in store.done.values() if r.id in ids]
    if not done:
        return ""
    mean = sum(r.success for r in done) / len(done)
    errors = sum(r.error is not None for r in done)
    return f"{headline} {mean:.1%}" + (f" · {errors} errors" if errors else "")


def sample_items(
    items: Sequence[Item],
    limit: int | None,
    seed: int,
    *,
    stratum: Callable[[Item], str] | None = None,
) -> list[Item]:
    """``limit`` items drawn with ``seed`` (in dataset order), or all of them.

    The draw takes a prefix of a seeded shuffle, so a smaller draw with the same seed is
    part of a larger one and two runs of different sizes can be compared item by item.
    With ``stratum``, each stratum (an ALFWorld task type, say) gets a share proportional
    to its size, rounded by largest remainder, so a small draw still spans every stratum
    it can.
    """
    if limit is None or limit >= len(items):
        return list(items)
    rng = random.Random(seed)
    strata: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        strata["" if stratum is None else stratum(item)].append(i)
    for name in sorted(strata):
        rng.shuffle(strata[name])
    exact = {name: limit * len(members) / len(items) for name, members in strata.items()}
    quota = {name: int(share) for name, share in exact.items()}
    by_remainder = sorted(exact, key=lambda name: (quota[name] - exact[name], name))
    for name in by_remainder[: limit - sum(quota.values())]:
        quota[name] += 1
    chosen = [i for name in sorted(strata) for i in strata[name][: quota[name]]]
    return [items[i] for i in sorted(chosen)]


def evaluate(
    suite: Suite[Item],
    items: Sequence[Item],
    out: str | Path,
    *,
    dataset: str,
    graph: str,
    model: str,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    resume: bool = False,
    concurrency: int = 1,
    show_progress: bool = True,
    shared: SharedRecords | None = None,
) -> Summary:
    """Run ``items`` into the run directory ``out`` (resuming it), then write its report;
    with ``shared``, each item and its trace also go to that database as they finish.

    Raises:
        ConfigError: ``out`` holds another run, or (``resume``) a run on other data,
            another graph or model.
    """
    store = open_run(
        suite,
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
    run_suite(suite, items, store, concurrency=concurrency, show_progress=show_progress)
    return write_report(store.directory)


def open_run(
    suite: SuiteInfo[Item],
    items: Sequence[Item],
    out: str | Path,
    *,
    dataset: str,
    graph: str,
    model: str,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    resume: bool = False,
    shared: SharedRecords | None = None,
) -> RunStore:
    """The run directory ``out`` for ``items``, created or (``resume``) reopened, its
    items also stored in ``shared`` when given.

    Raises:
        ConfigError: As `evaluate`.
    """
    manifest = RunManifest(
        suite=suite.name,
        headline=suite.headline,
        dataset=dataset,
        fingerprint=fingerprint([suite.item_id(i) for i in items]),
        items=len(items),
        graph=graph,
        model=model,
        seed=seed,
        settings=settings or {},
    )
    return RunStore.open(out, manifest, resume=resume, shared=shared)
