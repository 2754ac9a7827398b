"""The README's headline figures, generated from ``benchmarks/results/*.json``.

README.md's Results section holds a table between ``<!-- results:begin -->`` and
``<!-- results:end -->`` that nobody types: each row is one `Headline` of
``docs/headlines.py`` (what it is, where the JSON keeps the figure and the baseline it
is compared with in the same run), rendered with the commit the run measured and the
command that reproduces it.
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
from typing import TYPE_CHECKING, Any

# docs/ is no package: MkDocs loads gen_results.py from its path and running this file
# puts docs/ on sys.path, while mypy, checking the repository as `relaygraph`, sees
# docs/ as a namespace package of it and resolves the import only under that name.
if TYPE_CHECKING:
    from pathlib import Path

    from relaygraph.docs import gen_results
    from relaygraph.docs.headlines import HEADLINES, Headline
else:
    import gen_results
    from headlines import HEADLINES, Headline

ROOT = gen_results.ROOT
README = ROOT / "README.md"
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
REGENERATE = "make readme-results"


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
