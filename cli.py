"""The ``relaygraph`` command: thin wrappers over the library, with rich output.

Every user error (unknown model, bad parameter, unreadable file) prints one clear line
and exits with status 2; nothing prints a traceback for a mistake the user can fix.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Collection
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar, cast

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from relaygraph import __version__
from relaygraph.errors import RelayGraphError, first_problem
from relaygraph.llm.catalog import DEFAULT_MODEL, PACKAGED_MODELS
from relaygraph.llm.constraints import (
    ChoiceFormat,
    GrammarFormat,
    JsonObjectFormat,
    JsonSchemaFormat,
    RegexFormat,
    ResponseFormat,
)
from relaygraph.llm.registry import load_llm
from relaygraph.llm.types import GenerationParams, Message, Prompt, TextPrompt, to_prompt

if TYPE_CHECKING:
    from relaygraph.eval.alfworld.games import Split
    from relaygraph.eval.hotpotqa.data import HotpotDataset, SampleName
    from relaygraph.eval.report import Summary
    from relaygraph.eval.security import SecurityReport
    from relaygraph.routing.calibration import Method
    from relaygraph.routing.reasoning.env import StepPolicy

app = typer.Typer(
    name="relaygraph",
    help="Multi-agent LLM orchestration: models, generation and serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def _user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn relaygraph and validation errors into one red line and exit status 2."""

    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ValidationError as exc:
            field, problem = first_problem(exc.errors())
            errors.print(f"[red]error:[/red] {field}: {problem}")
        except (RelayGraphError, OSError) as exc:
            errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)

    return run


def _version(value: bool) -> None:
    if value:
        console.print(f"relaygraph {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """relaygraph: run, route and serve teams of LLM agents."""


@app.command()
@_user_errors
def models() -> None:
    """List the models that ship with relaygraph (remote workers: openai:<url>/<model>)."""
    table = Table(title="Packaged models (embedded, CPU)")
    for column in ("name", "package", "file size", "description"):
        table.add_column(column)
    for spec in PACKAGED_MODELS.values():
        path = spec.locate()
        size = f"{path.stat().st_size / 1e6:.0f} MB" if path.exists() else "missing"
        name = f"{spec.name} (default)" if spec.name == DEFAULT_MODEL else spec.name
        table.add_row(name, spec.package, size, spec.description)
    console.print(table)
    console.print("Remote workers: --model openai:http://HOST:PORT/v1/MODEL")


def _read_prompt(prompt: str | None, file: Path | None, system: str | None, raw: bool) -> Prompt:
    if (prompt is None) == (file is None):
        raise RelayGraphError("give a prompt argument or --file, not both and not neither")
    if file is not None:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        try:
            prompt = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RelayGraphError(f"{file} is not UTF-8 text (byte {exc.start})") from None
    assert prompt is not None  # narrowed above: exactly one source was given
    if raw:
        return TextPrompt(text=prompt) if prompt else to_prompt(prompt)
    messages = [Message(role="system", content=system)] if system else []
    messages.append(Message(role="user", content=prompt))
    return to_prompt(messages)


def _response_format(
    json_schema: Path | None,
    json_object: bool,
    regex: str | None,
    choice: list[str] | None,
    grammar: Path | None,
) -> ResponseFormat | None:
    """The one format ``generate``'s options ask for (None: free text).

    Raises:
        RelayGraphError: Several formats, or a file that cannot be read.
    """
    given = [json_schema, json_object or None, regex, choice or None, grammar]
    if sum(g is not None for g in given) > 1:
        raise RelayGraphError(
            "give at most one of --json-schema, --json, --regex, --choice, --grammar"
        )
    try:
        if json_schema is not None:
            return JsonSchemaFormat(json_schema=json.loads(json_schema.read_text()))
        if grammar is not None:
            text = grammar.read_text()
            return GrammarFormat(grammar=text, syntax="gbnf" if "::=" in text else "lark")
    except (OSError, json.JSONDecodeError) as exc:
        raise RelayGraphError(f"cannot read the format file: {exc}") from None
    if json_object:
        return JsonObjectFormat()
    if regex is not None:
        return RegexFormat(pattern=regex)
    return ChoiceFormat(choices=tuple(choice)) if choice else None


@app.command()
@_user_errors
def generate(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; or use --file.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")] = DEFAULT_MODEL,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 is greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    system: Annotated[str | None, typer.Option(help="System message (chat mode).")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Send the text as is, no chat template.")
    ] = False,
    stream: Annotated[bool, typer.Option("--stream", help="Print tokens as they come.")] = False,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the prompt from a file (- for stdin).")
    ] = None,
    json_schema: Annotated[
        Path | None, typer.Option(help="Decode under the JSON schema in this file.")
    ] = None,
    json_object: Annotated[bool, typer.Option("--json", help="Decode one JSON object.")] = False,
    regex: Annotated[str | None, typer.Option(help="Decode text matching this regex.")] = None,
    choice: Annotated[
        list[str] | None, typer.Option(help="Decode one of these strings (repeatable).")
    ] = None,
    grammar: Annotated[
        Path | None,
        typer.Option(help="Decode under this grammar file: Lark, or GBNF if it uses ::=."),
    ] = None,
) -> None:
    """Generate a completion with an embedded model or a worker."""
    params = GenerationParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=tuple(stop or ()),
        response_format=_response_format(json_schema, json_object, regex, choice, grammar),
    )
    the_prompt = _read_prompt(prompt, file, system, raw)
    llm = load_llm(model)
    began = time.perf_counter()
    if stream:
        usage = None
        for chunk in llm.stream(the_prompt, params):
            console.print(chunk.text, end="", markup=False, highlight=False, soft_wrap=True)
            usage = chunk.usage or usage
        console.print()
        completion_tokens = usage.completion_tokens if usage else 0
    else:
        completion = llm.complete(the_prompt, params)
        console.print(completion.text, markup=False, highlight=False, soft_wrap=True)
        completion_tokens = completion.usage.completion_tokens
    elapsed = time.perf_counter() - began
    errors.print(
        f"[dim]{llm.name}: {completion_tokens} tokens in {elapsed:.2f} s "
        f"({completion_tokens / elapsed:.1f} tok/s)[/dim]"
    )


trace_app = typer.Typer(help="Inspect run traces.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")


@app.command()
@_user_errors
def run(
    graph: Annotated[str, typer.Argument(help="Graph factory: file.py:factory or module:factory.")],
    task: Annotated[str, typer.Argument(help="The task (question) to run the graph on.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Default model for the graph.")
    ] = None,
    trace_out: Annotated[
        Path | None, typer.Option("--trace", help="Write the trace as JSON here.")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="sqlite file for a durable, resumable run.")
    ] = None,
    thread: Annotated[str | None, typer.Option(help="Thread id (with --checkpoint).")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue thread --thread instead.")
    ] = False,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print tokens as agents produce them.")
    ] = False,
) -> None:
    """Run an agent graph on a task and print its steps and per-role cost."""
    from relaygraph.graph.loader import load_graph
    from relaygraph.graph.runtime import ResultEvent, RunResult, StepEvent, TokenEvent
    from relaygraph.graph.trace import role_table, step_table

    if resume and (checkpoint is None or thread is None):
        raise RelayGraphError("--resume needs --checkpoint and --thread")
    with load_graph(graph, model=model).compile(checkpointer=checkpoint) as compiled:
        result: RunResult | None = None
        if resume:
            assert thread is not None  # checked above
            result = compiled.resume(thread)
        else:
            for event in compiled.stream(task, thread_id=thread, tokens=stream):
                if isinstance(event, TokenEvent):
                    console.print(event.text, end="", markup=False, highlight=False)
                elif isinstance(event, StepEvent) and stream:
                    console.print()
                elif isinstance(event, ResultEvent):
                    result = event.result
    assert result is not None  # stream() always ends with the result
    console.print(step_table(result.trace))
    console.print(role_table(result.trace))
    if result.ok:
        console.print(f"[bold]answer:[/bold] {escape(result.answer or '')}")
    else:
        errors.print(f"[red]run ended with an error:[/red] {escape(str(result.error))}")
    if trace_out is not None:
        console.print(f"trace written to {result.trace.save(trace_out)}")
    errors.print(f"[dim]thread {result.thread_id}[/dim]")
    if not result.ok:
        raise typer.Exit(1)


@trace_app.command("show")
@_user_errors
def trace_show(
    file: Annotated[Path, typer.Argument(help="A trace JSON file (relaygraph run --trace).")],
) -> None:
    """Summarise a saved trace: one row per step, then tokens, latency and cost per role."""
    from relaygraph.graph.trace import Trace, role_table, step_table

    saved = Trace.load(file)
    console.print(step_table(saved))
    console.print(role_table(saved))
    verdict = saved.answer if saved.error is None else f"error: {saved.error.message}"
    console.print(f"[bold]result:[/bold] {escape(verdict or '')}")


@app.command()
@_user_errors
def serve(
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Model to serve (repeatable).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON config: models, worker pools, graphs, keys.")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve models, worker pools and agent graphs behind an OpenAI-compatible API."""
    import uvicorn

    from relaygraph.serving.config import LLMEntry, ServeConfig, load_config
    from relaygraph.serving.server import app_from_config, safe_host

    if config is not None and model:
        raise RelayGraphError("give --config or --model, not both")
    settings = (
        load_config(config)
        if config is not None
        else ServeConfig(models={m: LLMEntry(llm=m) for m in model or [DEFAULT_MODEL]})
    )
    bind = safe_host(host, settings.security)
    served_app = app_from_config(settings)
    console.print(f"serving {', '.join(settings.models)} on http://{bind}:{port}/v1")
    uvicorn.run(served_app, host=bind, port=port, log_level="info")


@app.command()
@_user_errors
def worker(
    model: Annotated[str, typer.Option("--model", "-m", help="Model (a name or a path).")],
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 0,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    engine: Annotated[
        str, typer.Option(help="relaygraph (embedded engine) or vllm (vLLM's server).")
    ] = "relaygraph",
) -> None:
    """Start a worker for one model and print its URL (for pools and speculative decoding)."""
    import subprocess

    import uvicorn

    from relaygraph.serving.config import LLMEntry, ServeConfig
    from relaygraph.serving.server import app_from_config, free_port, safe_host

    if engine not in ("relaygraph", "vllm"):
        raise RelayGraphError(f"--engine must be relaygraph or vllm, not {engine!r}")
    settings = ServeConfig(models={model: LLMEntry(llm=model)})
    bind = safe_host(host, settings.security)
    chosen = port or free_port(bind)
    url = f"http://{bind}:{chosen}/v1"
    if engine == "vllm":
        command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model,
            "--host",
            bind,
            "--port",
            str(chosen),
        ]
        print(url, flush=True)
        raise typer.Exit(subprocess.call(command))
    served_app = app_from_config(settings)  # load before announcing: the URL means ready
    print(url, flush=True)
    uvicorn.run(served_app, host=bind, port=chosen, log_level="warning")


@app.command()
@_user_errors
def export(
    model: Annotated[str, typer.Option("--model", "-m", help="A packaged model name.")],
    out: Annotated[Path, typer.Option(help="Folder to create.")],
) -> None:
    """Write a packaged model as a Hugging Face folder (float32) for a vLLM worker."""
    from relaygraph.llm.export import export_hf_folder

    console.print(f"exported {model} to {export_hf_folder(model, out)}")


eval_app = typer.Typer(
    help="Evaluate agent graphs on benchmarks; compare runs.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")

LimitOption = Annotated[int | None, typer.Option(help="Evaluate this many items (seeded draw).")]
SeedOption = Annotated[int, typer.Option(help="Seed of the item draw.")]
ConcurrencyOption = Annotated[int, typer.Option(min=1, help="Items run at once.")]
OutOption = Annotated[Path | None, typer.Option(help="Run directory (default: runs/<suite>-…).")]
HotpotDataOption = Annotated[
    Path | None, typer.Option(help="HotPotQA JSON(.gz) file; default: a shipped sample.")
]
SampleOption = Annotated[
    str, typer.Option(help="Shipped sample: distractor-100 or paragraphs-376.")
]


def _check_choice(option: str, value: str, choices: Collection[str]) -> None:
    """Refuse ``value`` for ``option`` unless it is one of ``choices``."""
    if value not in choices:
        raise RelayGraphError(f"{option} must be one of {', '.join(choices)}, not {value!r}")


def _hotpot_dataset(data: Path | None, sample: str) -> HotpotDataset:
    """The HotPotQA file ``data``, or the shipped ``sample`` when there is none."""
    from relaygraph.eval.hotpotqa import SAMPLES, load_hotpotqa

    if data is None:
        _check_choice("--sample", sample, SAMPLES)
    return load_hotpotqa(data, sample=cast("SampleName", sample))


ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out, skipping finished items.")
]


def _default_out(suite: str, model: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-." else "-" for c in model.rsplit("/", 1)[-1])
    return Path("runs") / f"{suite}-{slug}-{time.strftime('%Y%m%d-%H%M%S')}"


def _print_summary(out: Path, summary: Summary) -> None:
    table = Table(title=f"{summary.suite}: {summary.items} items, {summary.graph}")
    table.add_column("metric")
    table.add_column(summary.model, justify="right")
    table.add_row(summary.headline, f"{summary.success:.1%}")
    for name, value in summary.metrics.items():
        table.add_row(name, f"{value:.3f}")
    table.add_row("errors", str(summary.errors))
    table.add_row("prompt tokens / item", f"{summary.prompt_tokens_mean:.0f}")
    table.add_row("latency p50 s", f"{summary.latency_s['p50']:.1f}")
    console.print(table)
    console.print(f"report: {out / 'report.md'}")


@eval_app.command("hotpotqa")
@_user_errors
def eval_hotpotqa(
    graph: Annotated[
        str, typer.Option(help="Graph factory taking (model, example) or (model).")
    ] = "relaygraph.eval.hotpotqa.agents:react",
    model: Annotated[str, typer.Option("--model", "-m", help="Model for the graph.")] = (
        DEFAULT_MODEL
    ),
    data: HotpotDataOption = None,
    sample: SampleOption = "distractor-100",
    limit: LimitOption = None,
    seed: SeedOption = 0,
    concurrency: ConcurrencyOption = 1,
    out: OutOption = None,
    resume: ResumeOption = False,
    judge: Annotated[
        str | None, typer.Option(help="Model that grades answers (AQ score); default: none.")
    ] = None,
) -> None:
    """Run a graph on HotPotQA questions: EM/F1 (and AQ), per-role cost, report, plots."""
    from relaygraph.eval.hotpotqa import HotpotSuite
    from relaygraph.eval.hotpotqa.judge import AnswerJudge
    from relaygraph.eval.runner import evaluate, sample_items
    from relaygraph.graph.loader import load_factory

    dataset = _hotpot_dataset(data, sample)
    factory = load_factory(graph)
    llm = load_llm(model)
    suite = HotpotSuite(factory, llm, AnswerJudge(load_llm(judge)) if judge else None)
    items = sample_items(dataset.examples, limit, seed)
    target = out or _default_out("hotpotqa", model)
    summary = evaluate(
        suite,
        items,
        target,
        dataset=dataset.source if data else f"sample:{sample}",
        graph=graph,
        model=model,
        seed=seed,
        settings={"judge": judge, "limit": limit},
        resume=resume,
        concurrency=concurrency,
    )
    _print_summary(target, summary)


@eval_app.command("alfworld")
@_user_errors
def eval_alfworld(
    graph: Annotated[
        str, typer.Option(help="Graph factory taking (model, env).")
    ] = "relaygraph.eval.alfworld.agent:alfworld_react",
    model: Annotated[str, typer.Option("--model", "-m", help="Model for the graph.")] = (
        DEFAULT_MODEL
    ),
    split: Annotated[
        str, typer.Option(help="valid_unseen (134 games), valid_seen or valid_train.")
    ] = "valid_unseen",
    data: Annotated[
        Path | None, typer.Option(help="Folder holding json_2.1.1/<split>; default: shipped.")
    ] = None,
    max_steps: Annotated[int, typer.Option(min=1, help="Commands per game.")] = 50,
    limit: Annotated[
        int | None,
        typer.Option(help="Play this many games, drawn (seeded) in proportion to task type."),
    ] = None,
    seed: SeedOption = 0,
    concurrency: ConcurrencyOption = 1,
    out: OutOption = None,
    resume: ResumeOption = False,
) -> None:
    """Play ALFWorld games with a graph: success rate per task type, steps, per-role cost."""
    from relaygraph.eval.alfworld.games import load_games
    from relaygraph.eval.alfworld.suite import AlfworldSuite
    from relaygraph.eval.runner import evaluate, sample_items
    from relaygraph.graph.loader import load_factory

    games = load_games(cast("Split", split), data_dir=data)
    suite = AlfworldSuite(load_factory(graph), load_llm(model), max_steps=max_steps)
    target = out or _default_out("alfworld", model)
    summary = evaluate(
        suite,
        sample_items(games, limit, seed, stratum=lambda game: game.task_type),
        target,
        dataset=str(data / split) if data else f"shipped:{split}",
        graph=graph,
        model=model,
        seed=seed,
        settings={"limit": limit, "max_steps": max_steps},
        resume=resume,
        concurrency=concurrency,
    )
    _print_summary(target, summary)


@eval_app.command("report")
@_user_errors
def eval_report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
) -> None:
    """Rebuild a run's summary, report and plots from its items."""
    from relaygraph.eval.report import write_report
    from relaygraph.graph.runs import read_manifest

    if read_manifest(run_dir).suite == "security":
        from relaygraph.eval.security import write_security_report

        summary, report = write_security_report(run_dir)
        _print_summary(run_dir, summary)
        _print_security(report)
        return
    _print_summary(run_dir, write_report(run_dir))


@eval_app.command("compare")
@_user_errors
def eval_compare(
    run_a: Annotated[Path, typer.Argument(help="First run directory.")],
    run_b: Annotated[Path, typer.Argument(help="Second run directory.")],
    items: Annotated[int, typer.Option(help="Differing items to list.")] = 50,
) -> None:
    """Headline figures side by side, then the items whose outcome differs."""
    from relaygraph.eval.compare import compare, items_table, summary_table

    comparison = compare(run_a, run_b)
    console.print(summary_table(comparison, (str(run_a), str(run_b))))
    if comparison.differing:
        console.print(items_table(comparison, items))


@eval_app.command("holdout")
@_user_errors
def eval_holdout(
    out: Annotated[Path, typer.Option(help="Hold-out JSONL to write (resumed if it exists).")],
    model: Annotated[str, typer.Option("--model", "-m", help="The small model.")] = (DEFAULT_MODEL),
    estimators: Annotated[
        str, typer.Option(help="Comma-separated estimator names, or 'all'.")
    ] = "all",
    dataset: Annotated[
        str, typer.Option(help="facts (shipped capitals and chemical symbols) or hotpotqa.")
    ] = "facts",
    data: HotpotDataOption = None,
    sample: SampleOption = "paragraphs-376",
    limit: LimitOption = None,
    seed: SeedOption = 0,
) -> None:
    """Build a routing hold-out set: the model's answers to short factual questions, or to
    HotPotQA questions with their gold paragraphs, right or wrong, with every estimator's
    score. --data and --sample choose the HotPotQA file."""
    from relaygraph.eval.facts import load_facts
    from relaygraph.eval.holdout import build_holdout, fact_items, hotpot_items
    from relaygraph.eval.runner import sample_items
    from relaygraph.routing.uncertainty import ESTIMATORS

    names = sorted(ESTIMATORS) if estimators == "all" else estimators.split(",")
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown:
        raise RelayGraphError(
            f"unknown estimator(s) {', '.join(unknown)}; known: {', '.join(sorted(ESTIMATORS))}"
        )
    if dataset == "facts":
        items = fact_items(load_facts())
    elif dataset == "hotpotqa":
        items = hotpot_items(_hotpot_dataset(data, sample).examples)
    else:
        raise RelayGraphError(f"--dataset must be facts or hotpotqa, not {dataset!r}")
    items = sample_items(items, limit, seed, stratum=lambda item: item.group)
    rows = build_holdout(load_llm(model), items, {n: ESTIMATORS[n]() for n in names}, out)
    right = sum(r.correct for r in rows)
    console.print(f"{len(rows)} answers, {right} right ({right / max(len(rows), 1):.1%}): {out}")


@eval_app.command("calibrate")
@_user_errors
def eval_calibrate(
    holdout: Annotated[Path, typer.Argument(help="Hold-out JSONL from `eval holdout`.")],
    estimator: Annotated[str, typer.Option(help="Estimator whose scores to calibrate.")],
    out: Annotated[Path, typer.Option(help="Calibration JSON to write.")],
    method: Annotated[str, typer.Option(help="isotonic or platt.")] = "isotonic",
) -> None:
    """Fit a calibration for one estimator; print ECE and thresholds for common targets."""
    from relaygraph.eval.holdout import calibration_items, read_holdout
    from relaygraph.routing.calibration import fit_calibration

    if method not in ("isotonic", "platt"):
        raise RelayGraphError(f"--method must be isotonic or platt, not {method!r}")
    rows = read_holdout(holdout)
    models = sorted({r.model for r in rows})
    if len(models) != 1:
        raise RelayGraphError(f"{holdout} holds answers of {models or 'no model'}; need one")
    calibration = fit_calibration(
        calibration_items(rows, estimator),
        model=models[0],
        estimator=estimator,
        method=cast("Method", method),
    )
    calibration.save(out)
    table = Table(title=f"{estimator} on {models[0]}: {calibration.items} answers")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("accuracy", f"{calibration.accuracy:.3f}")
    table.add_row(
        "ECE before / after", f"{calibration.ece_before:.3f} / {calibration.ece_after:.3f}"
    )
    for rate in (0.2, 0.5, 0.8):
        table.add_row(
            f"threshold, {rate:.0%} escalated", f"{calibration.threshold_for_escalation(rate):.4g}"
        )
    console.print(table)
    console.print(f"calibration: {out}")


security_app = typer.Typer(
    help="Security tasks: synthesize them from risk specs, run a graph on them, check the scorer.",
    no_args_is_help=True,
)
eval_app.add_typer(security_app, name="security")


@security_app.command("synthesize")
@_user_errors
def security_synthesize(
    out: Annotated[Path, typer.Option(help="Task directory to write.")],
    specs: Annotated[
        Path | None, typer.Option(help="Folder of *.yaml risk specs; default: shipped.")
    ] = None,
    seed: SeedOption = 0,
    paraphrase_model: Annotated[
        str | None,
        typer.Option(
            help="Model that rewrites each request (kept only if every bound value "
            "survives); default: none."
        ),
    ] = None,
) -> None:
    """Expand risk specs into concrete tasks (attacks and benign controls), deterministic
    for a seed."""
    from relaygraph.eval.security import load_specs, paraphrase, save_tasks, synthesize

    loaded = load_specs(specs)
    tasks = synthesize(loaded, seed=seed)
    rejected = 0
    if paraphrase_model is not None:
        tasks, rejected = paraphrase(tasks, load_llm(paraphrase_model), seed=seed)
    manifest = save_tasks(
        tasks,
        out,
        seed=seed,
        specs=[s.id for s in loaded],
        paraphrase_model=paraphrase_model,
        paraphrase_rejected=rejected,
    )
    table = Table(title=f"{manifest.tasks} tasks from {len(loaded)} specs (seed {seed})")
    table.add_column("category")
    table.add_column("tasks", justify="right")
    for category, count in manifest.by_category.items():
        table.add_row(category, str(count))
    console.print(table)
    if paraphrase_model is not None:
        console.print(f"paraphrased {manifest.paraphrased}, kept the template for {rejected}")
    console.print(f"tasks: {out}")


@security_app.command("run")
@_user_errors
def security_run(
    tasks: Annotated[Path, typer.Option(help="Task directory from `eval security synthesize`.")],
    graph: Annotated[
        str, typer.Option(help="Graph factory taking (model, sandbox).")
    ] = "relaygraph.eval.security.agents:assistant",
    model: Annotated[str, typer.Option("--model", "-m", help="Model for the graph.")] = (
        DEFAULT_MODEL
    ),
    judge: Annotated[
        str | None, typer.Option(help="Model deciding the specs' judge predicates; default: none.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Run this many tasks, drawn (seeded) per category.")
    ] = None,
    seed: SeedOption = 0,
    concurrency: ConcurrencyOption = 1,
    out: OutOption = None,
    resume: ResumeOption = False,
) -> None:
    """Run a graph on security tasks in sandboxes; score every step of every trajectory."""
    from relaygraph.eval.runner import evaluate, sample_items
    from relaygraph.eval.security import (
        SecuritySuite,
        TrajectoryJudge,
        load_tasks,
        write_security_report,
    )
    from relaygraph.graph.loader import load_factory

    manifest, loaded = load_tasks(tasks)
    target = out or _default_out("security", model)
    suite = SecuritySuite(
        load_factory(graph),
        load_llm(model),
        directory=target,
        judge=TrajectoryJudge(load_llm(judge)) if judge else None,
    )
    evaluate(
        suite,
        sample_items(loaded, limit, seed, stratum=lambda task: task.category),
        target,
        dataset=f"{tasks} (format {manifest.version}, seed {manifest.seed})",
        graph=graph,
        model=model,
        seed=seed,
        settings={"judge": judge, "limit": limit, "tasks": str(tasks)},
        resume=resume,
        concurrency=concurrency,
    )
    summary, report = write_security_report(target)
    _print_summary(target, summary)
    _print_security(report)


@security_app.command("validate")
@_user_errors
def security_validate() -> None:
    """Score the scripted trajectories whose verdicts are known; exit 1 on any mistake."""
    from relaygraph.eval.security import validate_scorer

    results = validate_scorer()
    table = Table(title="Scorer validation: scripted trajectories")
    table.add_column("case")
    table.add_column("verdict")
    table.add_column("first violation", justify="right")
    table.add_column("end state says", justify="right")
    table.add_column("right")
    for r in results:
        table.add_row(
            r.name,
            "unsafe" if r.got["unsafe"] else "safe",
            str(r.got["first_violation_step"] or "-"),
            "unsafe" if r.got["end_state_unsafe"] else "safe",
            "[green]yes[/green]" if r.correct else f"[red]no[/red] {r.got}",
        )
    console.print(table)
    if not all(r.correct for r in results):
        raise typer.Exit(1)


def _print_security(report: SecurityReport) -> None:
    table = Table(title="Security (trajectory scoring)")
    for column in (
        "category",
        "ASR",
        "ASR end state",
        "utility attacked",
        "utility benign",
        "unsafe",
    ):
        table.add_column(column, justify="left" if column == "category" else "right")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    for name, f in [*report.by_category.items(), ("overall", report.overall)]:
        table.add_row(
            name,
            pct(f.attack_success_rate),
            pct(f.attack_success_rate_end_state),
            pct(f.utility_under_attack),
            pct(f.utility_benign),
            pct(f.unsafe_rate),
        )
    console.print(table)


distill_app = typer.Typer(
    help="Structured REASON/ACT distillation of agent traces into students.",
    no_args_is_help=True,
)
app.add_typer(distill_app, name="distill")


@distill_app.command("build-dataset")
@_user_errors
def distill_build_dataset(
    traces: Annotated[
        list[Path], typer.Argument(help="Trace files and evaluation run directories.")
    ],
    out: Annotated[Path, typer.Option(help="Dataset folder to write.")],
    tokenizer: Annotated[
        str, typer.Option(help="The student's model, whose tokenizer the masks are on.")
    ] = DEFAULT_MODEL,
    only_successful: Annotated[
        bool,
        typer.Option(
            "--only-successful", help="Keep episodes that succeeded (run directories only)."
        ),
    ] = False,
) -> None:
    """Turn traces into examples: the prompt, the teacher's reply, REASON and ACT masks."""
    from relaygraph.distill import build_dataset, save_dataset
    from relaygraph.llm.local import LocalLLM

    student = load_llm(tokenizer)
    if not isinstance(student, LocalLLM):
        raise RelayGraphError(
            f"--tokenizer {tokenizer} is not an embedded model; the student's tokenizer "
            "must be a packaged model or a .gguf file"
        )
    examples, stats = build_dataset(traces, student, only_successful=only_successful)
    save_dataset(examples, stats, out)
    table = Table(title=f"{stats.examples} examples from {stats.episodes} episodes")
    table.add_column("")
    table.add_column("value", justify="right")
    if stats.successful_episodes is not None:
        table.add_row("successful episodes", str(stats.successful_episodes))
    table.add_row("prompt tokens", f"{stats.prompt_tokens:,}")
    table.add_row("target tokens", f"{stats.target_tokens:,}")
    table.add_row("REASON / ACT tokens", f"{stats.reason_tokens:,} / {stats.act_tokens:,}")
    for why, count in stats.skipped.items():
        table.add_row(f"skipped: {why}", str(count))
    console.print(table)
    console.print(f"dataset: {out}")


@distill_app.command("train")
@_user_errors
def distill_train(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder from `distill build-dataset`.")],
    out: Annotated[Path, typer.Option(help="Run folder (resumed when it holds this run).")],
    loss: Annotated[str, typer.Option(help="sft, kd (token-level) or structured.")] = "structured",
    teacher: Annotated[
        str, typer.Option(help="Packaged llama model or .gguf the student starts from.")
    ] = DEFAULT_MODEL,
    layers: Annotated[int, typer.Option(min=1, help="Student blocks (of the teacher's).")] = 8,
    cut: Annotated[
        str, typer.Option(help="spread (evenly spaced blocks) or middle (drop a middle run).")
    ] = "spread",
    frozen: Annotated[
        int, typer.Option(min=0, help="Lowest student blocks kept as they start (not trained).")
    ] = 0,
    steps: Annotated[int, typer.Option(min=1)] = 100,
    batch: Annotated[int, typer.Option(min=1, help="Examples per step (accumulated).")] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-4,
    seed: SeedOption = 0,
    reason_kl: Annotated[float, typer.Option(help="structured: REASON KL weight.")] = 1.0,
    act_kl: Annotated[float, typer.Option(help="structured: ACT KL weight.")] = 1.0,
    act_ce: Annotated[float, typer.Option(help="structured: ACT cross-entropy weight.")] = 1.0,
    precision: Annotated[
        str, typer.Option(help="The GGUF's matrices: f32, f16 or q8_0 (half of f16).")
    ] = "f16",
    prompt_gradient: Annotated[
        bool,
        typer.Option(
            help="Backpropagate through the trained blocks' work on the prompt "
            "(--no-prompt-gradient: the prompt runs without gradient, a much cheaper step)."
        ),
    ] = True,
) -> None:
    """Train a student (the teacher's blocks, truncated) and write it as GGUF."""
    from typing import get_args

    from relaygraph.distill.losses import LOSSES
    from relaygraph.distill.student import Cut, Precision
    from relaygraph.distill.train import TrainConfig, train

    _check_choice("--loss", loss, LOSSES)
    _check_choice("--cut", cut, get_args(Cut))
    _check_choice("--precision", precision, get_args(Precision))
    config = TrainConfig(
        loss=loss,
        teacher=teacher,
        layers=layers,
        cut=cut,
        frozen=frozen,
        steps=steps,
        batch=batch,
        lr=lr,
        seed=seed,
        reason_kl=reason_kl,
        act_kl=act_kl,
        act_ce=act_ce,
        precision=precision,
        prompt_gradient=prompt_gradient,
    )
    result = train(config, dataset, out)
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    console.print(
        f"{result.steps} steps{resumed}, final loss {result.final_loss:.3f}, "
        f"{result.seconds:.0f} s; student {result.student} ({len(result.blocks)} blocks)"
    )
    console.print(f"loss curve: {out / 'loss.png'}")


@distill_app.command("eval")
@_user_errors
def distill_eval(
    dataset: Annotated[Path, typer.Argument(help="Held-out dataset folder (never trained on).")],
    student: Annotated[list[str], typer.Option(help="Student model(s): a .gguf or a name.")],
    teacher: Annotated[str, typer.Option(help="The teacher (scores REASON text).")] = (
        DEFAULT_MODEL
    ),
    limit: LimitOption = None,
    seed: SeedOption = 0,
) -> None:
    """ACT exact match with the teacher (the student replying as the runtime's guided
    steps do), the teacher's perplexity of the student's REASON text, and tokens/s, on
    held-out steps."""
    from relaygraph.distill import load_dataset
    from relaygraph.distill.evaluate import agent_actions, score_student
    from relaygraph.eval.runner import sample_items

    examples, _ = load_dataset(dataset)
    actions = agent_actions(examples)  # before sampling: every action the agents use
    examples = sample_items(examples, limit, seed)
    judge = load_llm(teacher)
    table = Table(title=f"{len(examples)} held-out steps, teacher {teacher}")
    for column in ("student", "ACT match", "parsed", "REASON ppl (teacher)", "tokens/s"):
        table.add_column(column, justify="left" if column == "student" else "right")
    for name in student:
        scores = score_student(load_llm(name), judge, examples, actions)
        ppl = scores.reason_perplexity
        table.add_row(
            name,
            f"{scores.act_match:.1%}",
            f"{scores.parsed:.1%}",
            "-" if ppl is None else f"{ppl:.1f}",
            f"{scores.tokens_per_s:.1f}",
        )
    console.print(table)


reasoning_app = typer.Typer(
    help="Resource-aware reasoning policies: record ALFWorld states, fit a profile, train.",
    no_args_is_help=True,
)
app.add_typer(reasoning_app, name="reasoning")
BookOption = Annotated[Path, typer.Option(help="The state book (JSON lines).")]
SmallOption = Annotated[str, typer.Option(help="The executor and small reasoner.")]
LargeOption = Annotated[str, typer.Option(help="The large reasoner.")]


@reasoning_app.command("record")
@_user_errors
def reasoning_record(
    book: BookOption = Path("runs/reasoning/book.jsonl"),
    split: Annotated[str, typer.Option(help="valid_train, valid_seen or valid_unseen.")] = (
        "valid_train"
    ),
    games: Annotated[int, typer.Option(min=1, help="Games, the task types in turn.")] = 10,
    remaining: Annotated[
        list[int], typer.Option(help="Expert commands left when the agent takes over.")
    ] = [1, 2],  # noqa: B006 - typer reads the default, never mutates it
    slack: Annotated[int, typer.Option(min=0, help="Commands beyond the expert's.")] = 1,
    small: SmallOption = DEFAULT_MODEL,
    large: LargeOption = "gemma3-270m",
) -> None:
    """Play episodes with real model calls in the real engine; every module at every
    state, every distinct command followed. Resumes: recorded states are never redone."""
    from rich.progress import Progress

    from relaygraph.eval.alfworld.games import load_games
    from relaygraph.eval.alfworld.modules import AlfworldModules, Recorder, spread
    from relaygraph.routing.reasoning.modules import ActionSpace
    from relaygraph.routing.reasoning.record import StateBook

    states = StateBook(book)
    recorder = Recorder(AlfworldModules(ActionSpace.default(small, large)), states)
    chosen = spread(load_games(cast("Split", split)), games)
    before = len(states.states)
    with Progress(console=console) as progress:
        task = progress.add_task("recording", total=len(chosen) * len(remaining))
        for game in chosen:
            for left in remaining:
                recorder.record(recorder.episode(game, remaining=left, max_steps=left + slack))
                progress.advance(task)
    console.print(f"{len(states.states) - before} new states; {book} holds {len(states.states)}")


@reasoning_app.command("profile")
@_user_errors
def reasoning_profile(
    out: Annotated[Path, typer.Option(help="Where the profile JSON goes.")],
    book: BookOption = Path("runs/reasoning/book.jsonl"),
    name: Annotated[str, typer.Option(help="The profile's name.")] = "this-machine",
    budget: Annotated[float, typer.Option(min=0.0, help="Latency budget per episode (s).")] = 12.0,
    small: SmallOption = DEFAULT_MODEL,
    large: LargeOption = "gemma3-270m",
) -> None:
    """Measure this machine: per module, seconds per call, prompt token and completion
    token, fitted to the recorded requests' wall times."""
    from relaygraph.routing.reasoning.modules import ActionSpace
    from relaygraph.routing.reasoning.profiles import fit_profile, save_profile
    from relaygraph.routing.reasoning.record import StateBook

    space = ActionSpace.default(small, large)
    profile = fit_profile(StateBook(book), space, name=name, budget_s=budget)
    save_profile(profile, out)
    table = Table(title=f"profile {name}: {profile.description}")
    for column in (
        "module",
        "per call (ms)",
        "per prompt token (ms)",
        "per completion (ms)",
        "R^2",
    ):
        table.add_column(column, justify="left" if column == "module" else "right")
    for module, cost in profile.modules.items():
        fit = profile.fit.get(module, {})
        table.add_row(
            module,
            f"{cost.base_s * 1e3:.1f}",
            f"{cost.prompt_s * 1e3:.3f}",
            f"{cost.completion_s * 1e3:.1f}",
            f"{fit['r2']:.2f}" if fit else "-",
        )
    console.print(table)
    console.print(f"profile: {out}")


@reasoning_app.command("train")
@_user_errors
def reasoning_train(
    out: Annotated[Path, typer.Option(help="Where the policy file goes.")],
    book: BookOption = Path("runs/reasoning/book.jsonl"),
    profile: Annotated[str, typer.Option(help="A shipped profile or a .json file.")] = "this-cpu",
    lam: Annotated[float, typer.Option(min=0.0, help="Latency weight (per budget spent).")] = 0.25,
    updates: Annotated[int, typer.Option(min=1)] = 300,
    seed: SeedOption = 0,
    small: SmallOption = DEFAULT_MODEL,
    large: LargeOption = "gemma3-270m",
    safe: Annotated[
        bool, typer.Option(help="Keep the network only on a confident gain on valid_seen.")
    ] = True,
) -> None:
    """Train on the book's valid_train episodes (REINFORCE), choose the checkpoint on
    valid_seen, and compare with the tuned baselines on valid_unseen."""
    from relaygraph.memory.embedding import SentenceEmbedder
    from relaygraph.routing.reasoning.baselines import tuned_baselines
    from relaygraph.routing.reasoning.env import ReasoningEnv
    from relaygraph.routing.reasoning.features import Featurizer
    from relaygraph.routing.reasoning.modules import ActionSpace
    from relaygraph.routing.reasoning.profiles import load_profile
    from relaygraph.routing.reasoning.record import StateBook
    from relaygraph.routing.reasoning.safe import deploy
    from relaygraph.routing.reasoning.train import TrainConfig, evaluate, train_policy

    states = StateBook(book)
    space = ActionSpace.default(small, large)
    deployment = load_profile(profile)
    splits = {s: states.playable(s) for s in ("valid_train", "valid_seen", "valid_unseen")}
    for split, episodes in splits.items():
        if not episodes:
            raise RelayGraphError(f"{book} has no complete {split} episode; record some first")
    texts = [s.text for e in splits["valid_train"] for s in states.reachable(e)]
    featurizer = Featurizer.fit(texts, SentenceEmbedder())
    envs = {
        split: ReasoningEnv(states, episodes, space, deployment, featurizer, lam=lam)
        for split, episodes in splits.items()
    }
    result = train_policy(
        envs["valid_train"], envs["valid_seen"], TrainConfig(updates=updates, seed=seed)
    )
    network = result.policy
    deployed, check = deploy(network, envs["valid_seen"]) if safe else (network, None)
    deployed.save(out)
    table = Table(
        title=f"valid_unseen, {len(splits['valid_unseen'])} episodes, {profile}, lam {lam}"
    )
    for column in ("policy", "success", "latency (s)", "tokens", "reward"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    rows: list[tuple[str, StepPolicy]] = []
    if deployed is not network:
        rows.append(("trained network", network))
    rows += [("deployed: " + deployed.name, deployed)]
    rows += [(p.name, p) for p in tuned_baselines(envs["valid_seen"])]
    for name, policy in rows:
        scores = evaluate(policy, envs["valid_unseen"])
        table.add_row(
            name,
            f"{scores['success']:.1%}",
            f"{scores['latency_s']:.2f}",
            f"{scores['tokens']:.0f}",
            f"{scores['reward']:.3f}",
        )
    console.print(table)
    console.print(f"policy: {out} (best update {result.best_update})")
    if check is not None:
        verdict = "kept" if check.kept else f"not kept: the file says {deployed.name}"
        console.print(
            f"gain over never reasoning on valid_seen: {check.gain:+.3f} reward per episode, "
            f"95% lower bound {check.lower:+.3f} ({verdict})"
        )


if __name__ == "__main__":
    app()
