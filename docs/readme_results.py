"""The README's headline figures, generated from ``benchmarks/results/*.json``.

README.md's Results section holds a table between ``<!-- results:begin -->`` and
``<!-- results:end -->`` that nobody types: each row is one `Headline` below (what it
is, where the JSON keeps the figure and the baseline it is compared with in the same
run), rendered with the commit the run measured and the command that reproduces it.
Regenerate it after rerunning a benchmark; ``make docs`` (so CI) runs the check, which
fails when the block differs from what the JSONs give::

    python docs/readme_results.py          # rewrite the block (make readme-results)
    python docs/readme_results.py --check  # exit 1 and show the difference if stale

A path is the JSON's keys joined by ``/``. A digit indexes a list; ``field=value`` (or
``a=x,b=y``) picks the one record of a list whose fields read so; ``{path}`` inside a path
is replaced by the text at that path first (the estimator a benchmark chose, say). The
label (``what``) may quote the JSON too, as ``{path}`` or ``{path:format}``, escaped for
Markdown. A path the JSON lacks, a value that is not a number or an option the script's
``Usage:`` does not list fails the generator, and so the check.
"""

from __future__ import annotations

import difflib
import html
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# docs/ is no package: MkDocs loads gen_results.py from its path and running this file
# puts docs/ on sys.path, while mypy, checking the repository as `relaygraph`, sees
# docs/ as a namespace package of it and resolves the import only under that name.
if TYPE_CHECKING:
    from pathlib import Path

    from relaygraph.docs import gen_results
else:
    import gen_results

ROOT = gen_results.ROOT
README = ROOT / "README.md"
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
REGENERATE = "make readme-results"


@dataclass(frozen=True)
class Headline:
    """One row of the README's results table.

    Example:
        >>> row = Headline(
        ...     result="runtime",
        ...     what="Graph runtime, ms per step",
        ...     value="zero_cost_model/relaygraph_ms_per_step",
        ...     peer="zero_cost_model/plain_langgraph_ms_per_step",
        ...     peer_name="plain LangGraph",
        ...     fmt="{:.2f}",
        ...     unit="ms",
        ... )
    """

    result: str
    """The JSON's name under ``benchmarks/results/``, without ``.json``."""
    what: str
    """What the figure is (Markdown written here; ``{path}`` quotes the JSON)."""
    value: str
    """Path of the figure in the JSON."""
    fmt: str = "{:,.1f}"
    """Python format of the figure, its peer and its interval (after ``scale``)."""
    unit: str = ""
    """Written after each formatted number."""
    scale: float = 1.0
    """Multiplies the numbers before formatting (100 shows a fraction as points)."""
    peer: str | None = None
    """Path of the same measure of the baseline it is compared with, in the same run."""
    peer_name: str = ""
    """What the peer is (Markdown written here)."""
    interval: str | None = None
    """Path of the figure's 95% interval, ``[low, high]``."""
    args: str = ""
    """Options after the script's command that made this part of the JSON."""


HEADLINES: tuple[Headline, ...] = (
    Headline(
        result="engine",
        what="Decode speed, SmolLM2-135M on the CPU: the embedded engine",
        value="models/model=smollm2-135m/decode_tok_s",
        unit="tok/s",
        peer="models/model=smollm2-135m/raw_llama_decode_tok_s",
        peer_name="llama-cpp-python's `create_completion`, same GGUF",
    ),
    Headline(
        result="engine",
        what="Decode speed, SmolLM2-135M on the CPU: the embedded engine",
        value="models/model=smollm2-135m/decode_tok_s",
        unit="tok/s",
        peer="transformers_comparison/decode_tok_s",
        peer_name="transformers + torch (float32)",
        args="--compare-transformers",
    ),
    Headline(
        result="runtime",
        what="Graph runtime per step, free model: relaygraph",
        value="zero_cost_model/relaygraph_ms_per_step",
        fmt="{:.2f}",
        unit="ms",
        peer="zero_cost_model/plain_langgraph_ms_per_step",
        peer_name="plain LangGraph",
    ),
    Headline(
        result="runtime",
        what="Graph runtime per step, SmolLM2 research team: relaygraph",
        value="smollm2_research_team/relaygraph_ms_per_step",
        fmt="{:,.0f}",
        unit="ms",
        peer="smollm2_research_team/plain_langgraph_ms_per_step",
        peer_name="plain LangGraph",
    ),
    Headline(
        result="serving",
        what="HTTP overhead per request over an in-process call (free model, p50)",
        value="zero_cost_overhead/overhead_p50_ms",
        fmt="{:.2f}",
        unit="ms",
        args="--only own",
    ),
    Headline(
        result="serving",
        what="Streaming throughput through the server, SmolLM2, 48 tokens a stream: "
        "16 concurrent clients",
        value="concurrent_streams/2/server/tokens_per_s",
        unit="tok/s",
        peer="concurrent_streams/0/server/tokens_per_s",
        peer_name="one client",
        args="--only own",
    ),
    Headline(
        result="serving",
        what="Streaming throughput at 16 concurrent clients, prompts of 50-1,500 tokens "
        "(prefill-bound on 2 cores): relaygraph's server",
        value="peers/servers/relaygraph/levels/concurrency=16/tokens_per_s",
        unit="tok/s",
        peer="peers/servers/llama-server/levels/concurrency=16/tokens_per_s",
        peer_name="llama.cpp's own llama-server",
        args="--only peers --peer-requests 32",
    ),
    Headline(
        result="serving",
        what="Time to first token, p50, at 4 concurrent clients: relaygraph's server",
        value="peers/servers/relaygraph/levels/concurrency=4/ttft_p50_ms",
        fmt="{:,.0f}",
        unit="ms",
        peer="peers/servers/llama-server/levels/concurrency=4/ttft_p50_ms",
        peer_name="llama-server",
        args="--only peers --peer-requests 32",
    ),
    Headline(
        result="serving",
        what="Agent workload: recorded HotPotQA and ALFWorld agent calls replayed by 1 agent "
        "(wall time): relaygraph's server",
        value="agents/servers/relaygraph/levels/concurrency=1/wall_s",
        unit="s",
        peer="agents/servers/llama-server/levels/concurrency=1/wall_s",
        peer_name="llama-server",
        args="--only agents --peers relaygraph llama-server",
    ),
    Headline(
        result="serving",
        what="The same replay by 4 agents sharing the server (wall time): relaygraph's server",
        value="agents/servers/relaygraph/levels/concurrency=4/wall_s",
        unit="s",
        peer="agents/servers/llama-server/levels/concurrency=4/wall_s",
        peer_name="llama-server",
        args="--only agents --peers relaygraph llama-server",
    ),
    Headline(
        result="agents_over_http",
        what="HotPotQA ReAct, 20 questions, SmolLM2 through a `relaygraph worker`",
        value="workloads/hotpotqa/http/seconds",
        fmt="{:,.1f}",
        unit="s",
        peer="workloads/hotpotqa/in_process/seconds",
        peer_name="in process",
        args="--parts hotpotqa",
    ),
    Headline(
        result="agents_over_http",
        what="The same, on the items both sides did alike (same steps, same answer): "
        "time through the worker over time in process",
        value="workloads/hotpotqa/agreement/http_vs_in_process_alike",
        fmt="{:.2f}x",
        args="--parts hotpotqa",
    ),
    Headline(
        result="extractive_answers",
        what="HotPotQA reading comprehension (gold paragraphs, 376 questions tuning never "
        "saw), SmolLM2-135M: answer F1 of an agent that extracts its answer",
        value="report/extract/f1",
        fmt="{:.3f}",
        peer="report/plain/f1",
        peer_name="the same agent writing it",
    ),
    Headline(
        result="extractive_answers",
        what="The same: F1 gained by extracting, paired over questions",
        value="report/f1_gain",
        fmt="{:+.3f}",
        interval="report/f1_gain_interval",
    ),
    Headline(
        result="structured",
        what="Decode speed with a JSON-schema token mask on every step (a long text field), "
        "SmolLM2-135M, batch 1",
        value="mask/models/model=smollm2-135m/batches/batch=1/tok_s/json_long",
        unit="tok/s",
        peer="mask/models/model=smollm2-135m/batches/batch=1/tok_s/unconstrained",
        peer_name="free text",
        args="--sections mask",
    ),
    Headline(
        result="structured",
        what="HotPotQA agent, prompt tokens per question: grammar-decoded steps",
        value="agents/hotpotqa/grammar/prompt_tokens_per_item",
        fmt="{:,.0f}",
        peer="agents/hotpotqa/guided/prompt_tokens_per_item",
        peer_name="guided decoding",
        args="--sections agents",
    ),
    Headline(
        result="memory_index",
        what="Memory search at 100,000 entries "
        "({results/kind=hnsw,size=100000/real_entries:,} real, the rest noisy copies), p50: HNSW "
        "(recall@10 {results/kind=hnsw,size=100000/recall_at_10:.1%})",
        value="results/kind=hnsw,size=100000/search/p50_ms",
        fmt="{:.2f}",
        unit="ms",
        peer="results/kind=exact,size=100000/search/p50_ms",
        peer_name="exact search",
    ),
    Headline(
        result="context_routing",
        what="Supporting-fact recall at a 384-token budget: RCR",
        value="routing/rows/rcr@384/sf_recall",
        fmt="{:.1%}",
        peer="routing/rows/topk@384/sf_recall",
        peer_name="top-k similarity",
    ),
    Headline(
        result="context_routing",
        what="Research team on HotPotQA, prompt tokens per question: RCR at 384 tokens",
        value="team/rcr/prompt_tokens_per_question",
        fmt="{:,.0f}",
        peer="team/full/prompt_tokens_per_question",
        peer_name="the full context",
    ),
    Headline(
        result="model_routing",
        what="Calibrated cascade ({analysis/best_estimator}) at 50% escalation: accuracy "
        "gained over random routing",
        value="analysis/estimators/{analysis/best_estimator}/gain_over_random/50%/accuracy_points",
        fmt="{:+.1f}",
        unit="points",
        scale=100,
        interval="analysis/estimators/{analysis/best_estimator}/gain_over_random/50%/ci95",
    ),
    Headline(
        result="speculative",
        what="Speculative decoding (prompt lookup, adaptive window) over HTTP, RTT 0 ms: "
        "speedup over cloud-only decoding",
        value="real/0/speculative/adaptive/speedup",
        fmt="{:.2f}x",
    ),
    Headline(
        result="speculative",
        what="Speculative decoding in process (prompt lookup, adaptive window, 16-bit "
        "target): speedup over plain decoding",
        value="in_process/smollm2-135m-f16.gguf/prompt-lookup/speculative/adaptive/speedup",
        fmt="{:.2f}x",
    ),
    Headline(
        result="speculative_loaded",
        what="Speculative decoding, 4 edges sharing one worker, held-out prompts to repeat: "
        "tuned adaptive window's speedup over the target alone (request seconds)",
        value="workloads/repeat/held_out/comparisons/tuned_adaptive_vs_target_alone/seconds_ratio",
        fmt="{:.2f}x",
        interval="workloads/repeat/held_out/comparisons/tuned_adaptive_vs_target_alone/"
        "seconds_ratio_ci95",
    ),
    Headline(
        result="speculative_loaded",
        what="The same on held-out agent steps (HotPotQA and ALFWorld)",
        value="workloads/agent/held_out/comparisons/tuned_adaptive_vs_target_alone/seconds_ratio",
        fmt="{:.2f}x",
        interval="workloads/agent/held_out/comparisons/tuned_adaptive_vs_target_alone/"
        "seconds_ratio_ci95",
    ),
    Headline(
        result="eval_headline",
        what="HotPotQA, {runs/hotpotqa-embedded/summary/items} hard distractor questions, "
        "embedded SmolLM2-135M: exact match",
        value="runs/hotpotqa-embedded/summary/metrics/em",
        fmt="{:.1%}",
        args="--parts embedded",
    ),
    Headline(
        result="eval_headline",
        what="ALFWorld, {runs/alfworld-embedded/summary/items} unseen games, "
        "embedded SmolLM2-135M: success rate",
        value="runs/alfworld-embedded/summary/success",
        fmt="{:.1%}",
        args="--parts embedded",
    ),
    Headline(
        result="security",
        what="Attack success on held-out specs, scripted assistant that obeys every payload: "
        "behind the information-flow guard",
        value="splits/held_out/scripted_obeying/flow/overall/attack_success_rate",
        fmt="{:.1%}",
        peer="splits/held_out/scripted_obeying/phrasing/overall/attack_success_rate",
        peer_name="behind the phrasing guard",
        args="--no-model",
    ),
    Headline(
        result="security",
        what="Benign utility on held-out specs behind the information-flow guard",
        value="splits/held_out/scripted_reference/flow/overall/utility_benign",
        fmt="{:.1%}",
        peer="splits/held_out/scripted_reference/none/overall/utility_benign",
        peer_name="without a defence",
        args="--no-model",
    ),
    Headline(
        result="distillation",
        what="Distilled student's ACT match on held-out steps: structured minus token-level KD",
        value="structured_vs_kd_act_match/difference",
        fmt="{:+.1f}",
        unit="points",
        scale=100,
        interval="structured_vs_kd_act_match/ci95",
    ),
)


# --- reading the JSON --------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def resolve(data: Any, path: str) -> Any:
    """The value at ``path`` (see the module docstring); `LookupError` if there is none."""
    path = _PLACEHOLDER.sub(lambda m: str(resolve(data, m.group(1))), path)
    value = data
    for key in path.split("/"):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, list) and "=" in key:
            value = _select(value, key, path)
        else:
            raise LookupError(f"no {key!r} in {path!r}")
    return value


def _select(records: list[Any], key: str, path: str) -> Any:
    """The one record whose fields read as ``key`` says: ``a=x,b=y``."""
    wanted = dict(part.partition("=")[::2] for part in key.split(","))
    found = [
        r
        for r in records
        if isinstance(r, dict) and all(f in r and str(r[f]) == v for f, v in wanted.items())
    ]
    if len(found) != 1:
        raise LookupError(f"{len(found)} records match {key!r} in {path!r}, not one")
    return found[0]


def number(data: Any, path: str) -> float:
    value = resolve(data, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LookupError(f"{path!r} holds {value!r}, not a number")
    return float(value)


def measured_at(data: Any, path: str) -> str:
    """The commit recorded nearest to ``path``: a run's ``machine.commit``, or a section's
    own ``commit`` where the parts of one JSON ran apart (structured.json), as a cell."""
    recorded: tuple[Any] | None = None  # a tuple: a recorded None is no git checkout
    value = data
    keys = _PLACEHOLDER.sub(lambda m: str(resolve(data, m.group(1))), path).split("/")
    for key in [*keys, None]:
        if isinstance(value, dict):
            machine = value.get("machine")
            if isinstance(machine, dict) and "commit" in machine:
                recorded = (machine["commit"],)
            elif "commit" in value:
                recorded = (value["commit"],)
        if key is not None:
            value = resolve(value, key)
    if recorded is None:
        return "before provenance"
    commit = recorded[0]
    if not isinstance(commit, dict) or not commit.get("hash"):
        return "unknown (not a git checkout)"
    digest = str(commit["hash"])
    shown = f"`{digest[:7]}`" if re.fullmatch(r"[0-9a-f]{7,64}", digest) else md_cell(digest)
    return f"{shown} with uncommitted changes" if commit.get("dirty") else shown


# --- Markdown ----------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md_cell(value: object) -> str:
    """Text from a JSON, safe in a Markdown table cell: HTML escaped to entities, the
    punctuation that starts Markdown (and the cell separator) backslash-escaped, on one
    line. Cells never start a line, so ``-`` and ``.`` need no escape."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def code_cell(text: str) -> str:
    """``text`` as a code span in a table cell: pipes escaped (GFM reads ``\\|`` as a pipe
    in a code span inside a table), the fence longer than any backtick run in it."""
    text = " ".join(text.split()).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# --- rows --------------------------------------------------------------------------------


def command(bench: gen_results.Benchmark, headline: Headline) -> str:
    """The script's command without its optional ``[...]`` options, then ``args``, each of
    whose options its ``Usage:`` must list."""
    usage = bench.command
    base = " ".join(usage.split())
    while (shorter := re.sub(r"\s*\[[^\[\]]*\]", "", base)) != base:
        base = shorter
    for option in re.findall(r"--[\w-]+", headline.args):
        if not re.search(rf"{re.escape(option)}(?![\w-])", usage):
            raise LookupError(f"option {option} is not in the Usage of {bench.script}")
    return " ".join([*base.split(), *headline.args.split()])


def figure(data: Any, headline: Headline) -> str:
    """The figure, its peer and their ratio, or its interval: Markdown."""

    def show(x: float, unit: bool = True) -> str:
        text = headline.fmt.format(x * headline.scale)
        return f"{text} {headline.unit}" if headline.unit and unit else text

    value = number(data, headline.value)
    cell = f"**{show(value)}**"
    if headline.interval is not None:
        bounds = resolve(data, headline.interval)
        if not (isinstance(bounds, list) and len(bounds) == 2):
            raise LookupError(f"{headline.interval!r} holds {bounds!r}, not [low, high]")
        low, high = (number(bounds, str(i)) for i in range(2))
        cell += f" (95% interval {show(low, unit=False)} to {show(high, unit=False)})"
    if headline.peer is not None:
        peer = number(data, headline.peer)
        cell += f" vs {show(peer)} {headline.peer_name}"
        if peer:
            ratio = value / peer  # two decimals, or two significant digits below 0.1
            cell += f": {ratio:.2f}x" if abs(ratio) >= 0.1 else f": {ratio:.2g}x"
    return cell


def label(data: Any, what: str) -> str:
    def quote(match: re.Match[str]) -> str:
        path, _, spec = match.group(1).partition(":")
        return md_cell(format(resolve(data, path), spec))

    return _PLACEHOLDER.sub(quote, what)


def row(bench: gen_results.Benchmark, headline: Headline) -> str:
    try:
        cells = [
            f"[{md_cell(bench.name)}](benchmarks/results/{bench.json_path.name})",
            label(bench.data, headline.what),
            figure(bench.data, headline),
            measured_at(bench.data, headline.value),
            code_cell(command(bench, headline)),
        ]
    except (LookupError, ValueError, TypeError) as error:
        raise ValueError(f"README headline {headline.what!r} ({bench.name}): {error}") from error
    return "| " + " | ".join(cells) + " |"


def render(headlines: tuple[Headline, ...] = HEADLINES, results: Path | None = None) -> str:
    """The block between the markers: a note on where it comes from, then the table."""
    found = {b.name: b for b in gen_results.benchmarks(results or gen_results.RESULTS)}
    missing = sorted({h.result for h in headlines} - found.keys())
    if missing:
        raise ValueError(f"README headlines name results that do not exist: {missing}")
    lines = [
        f"<!-- Generated from benchmarks/results/*.json by `{REGENERATE}`; do not edit. -->",
        "",
        "| result | what | figure | measured at | reproduce |",
        "|---|---|---|---|---|",
        *(row(found[h.result], h) for h in headlines),
    ]
    return "\n".join(lines)


# --- the README --------------------------------------------------------------------------


def replace_block(readme: str, block: str) -> str:
    """``readme`` with ``block`` between its markers."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs {BEGIN} and, after it, {END}")
    return f"{readme[: start + len(BEGIN)]}\n{block}\n{readme[end:]}"


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print("usage: python docs/readme_results.py [--check]", file=sys.stderr)
        return 2
    current = README.read_text(encoding="utf-8")
    wanted = replace_block(current, render())
    if not argv:
        if wanted != current:
            README.write_text(wanted, encoding="utf-8")
        print(f"README.md: {len(HEADLINES)} headline figures from benchmarks/results/")
        return 0
    if wanted == current:
        return 0
    diff = difflib.unified_diff(
        current.splitlines(keepends=True),
        wanted.splitlines(keepends=True),
        "README.md",
        "README.md from benchmarks/results/*.json",
    )
    sys.stderr.writelines(diff)
    print(
        "README.md's results block differs from benchmarks/results/*.json (a benchmark "
        f"was rerun, or the block edited by hand): run `{REGENERATE}` "
        "(python docs/readme_results.py) and commit README.md.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
