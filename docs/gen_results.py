"""The docs' results pages, generated from ``benchmarks/results/*.json`` at build time.

No figure is copied into the docs by hand: each JSON a benchmark wrote becomes one page
(what was measured and the command that measures it, taken from the script's docstring;
the machine and the commit it ran on; every figure of the JSON as tables; the plots the
script wrote next to it), and an index lists them. Pages are generated on every build
and never written into ``docs/``, so there is nothing to commit and nothing to go stale.

Hand-written commentary on a benchmark lives in ``docs/results/notes/<name>.md`` and is
shown under the tables. It names the sha256 of the JSON it was written against in its
first line (``<!-- results: sha256:... -->``); when the JSON has changed since, the page
says that the commentary describes an earlier run, so a rerun never leaves prose quoting
figures the tables no longer show without a warning.

Used by MkDocs as a hook (``hooks:`` in mkdocs.yml), which also prepares the folder the
API reference is read from (see `package_mirror`). Run directly, it writes the pages to a
folder for a look without MkDocs::

    python docs/gen_results.py build/results-preview

Every string taken from a JSON is escaped: tables, headings and code are emitted as HTML
with `html.escape`, and text in Markdown headings has Markdown's punctuation escaped too.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

# docs/ is no package: MkDocs puts this file's folder on sys.path while it loads the hook,
# and mypy, checking the repository as `relaygraph`, sees docs/ as a namespace package.
if TYPE_CHECKING:
    from relaygraph.docs import result_tables as tables
else:
    import result_tables as tables

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SCRIPTS = ROOT / "benchmarks"
NOTES = ROOT / "docs" / "results" / "notes"
MIRROR = ROOT / "build" / "docs"
PAGES = "results"  # where the generated pages live in the site

MAX_COLUMNS = 12
"""Wider record tables are shown one record at a time."""
MAX_FIELDS = 40
"""Records with more fields than this are shown as sections, not as one table's columns."""
PROVENANCE_KEYS = ("machine", "commit", "versions")

log = logging.getLogger("mkdocs.hooks.gen_results")


# --- the package the API reference reads -------------------------------------------------


def package_mirror(root: Path = ROOT, dest: Path = MIRROR) -> Path:
    """A folder holding ``relaygraph/``, whose entries link to the package's own files.

    The repository root is the package, so no folder on disk is named ``relaygraph``, and
    griffe (mkdocstrings' reader) does not follow setuptools' editable finder into
    subpackages. Pointed at the root through a plain link instead, it walks ``.venv`` and
    every other folder there (over a minute); the mirror holds only what the package is:
    the root's modules and its folders that have an ``__init__.py``.
    """
    package = dest / "relaygraph"
    package.mkdir(parents=True, exist_ok=True)
    wanted = {
        entry.name
        for entry in root.iterdir()
        if (entry.suffix == ".py" and entry.is_file()) or (entry / "__init__.py").is_file()
    }
    for link in package.iterdir():
        if link.name not in wanted or not link.is_symlink():
            link.unlink()
    for name in sorted(wanted):
        link = package / name
        if not link.is_symlink():
            link.symlink_to(root / name)
    return dest


# --- what each benchmark is --------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    """One result file and the script that writes it."""

    name: str
    json_path: Path
    script: Path | None
    data: Any

    @property
    def summary(self) -> str:
        """The first paragraph of the script's docstring: what it measures (for a file the
        script writes beside its results, whose script it is)."""
        doc = self.docstring
        first = " ".join(doc.split("\n\n", 1)[0].split()) if doc else ""
        if self.script is not None and self.script.stem != self.name:
            return f"Written beside the results of benchmarks/{self.script.name}: {first}"
        return first

    @property
    def docstring(self) -> str:
        if self.script is None:
            return ""
        module = ast.parse(self.script.read_text(encoding="utf-8"))
        return ast.get_docstring(module) or ""

    @property
    def command(self) -> str:
        """The script's ``Usage:`` block, or the plain command to run it."""
        match = re.search(r"^Usage:[ \t]*(.*?)(?:\n\s*\n|\Z)", self.docstring, re.M | re.S)
        if match is None:
            return f"python {self.script.relative_to(ROOT)}" if self.script else ""
        lines = [line for line in match.group(1).splitlines() if line.strip()]
        indent = min((len(line) - len(line.lstrip()) for line in lines[1:]), default=0)
        return "\n".join([lines[0].strip(), *(line[indent:] for line in lines[1:])]).strip()

    @property
    def images(self) -> list[Path]:
        """The plots written next to the JSON: ``<name>.png`` and ``<name>_*.png``."""
        exact = self.json_path.with_suffix(".png")
        found = [exact] if exact.is_file() else []
        found += sorted(RESULTS.glob(f"{self.name}_*.png"))
        # A longer result name owns its own plots (speculative_profile is not speculative).
        others = {p.stem for p in RESULTS.glob("*.json")} - {self.name}
        return [p for p in found if not any(p.stem.startswith(o) for o in others)]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.json_path.read_bytes()).hexdigest()


def benchmarks(results: Path = RESULTS) -> list[Benchmark]:
    """Every result JSON, with the script that writes it (the one of its name, or the
    longest script name it starts with: ``speculative_profile`` is ``speculative``'s)."""
    scripts = {p.stem: p for p in SCRIPTS.glob("*.py") if not p.stem.startswith("_")}
    found = []
    for path in sorted(results.glob("*.json")):
        owner = max((s for s in scripts if path.stem.startswith(s)), key=len, default=None)
        data = json.loads(path.read_text(encoding="utf-8"))
        found.append(Benchmark(path.stem, path, scripts.get(owner) if owner else None, data))
    return found


# --- pages -------------------------------------------------------------------------------


def _machine(data: dict[str, Any]) -> dict[str, Any]:
    machine = data.get("machine")
    return machine if isinstance(machine, dict) else {}


def commit_line(data: dict[str, Any]) -> str:
    """The commit a run measured, from ``machine.commit`` or a section's own ``commit``."""
    machine = _machine(data)
    commit = machine.get("commit", data.get("commit"))
    if isinstance(commit, dict) and commit.get("hash"):
        dirty = " (with uncommitted changes)" if commit.get("dirty") else ""
        return f"<code>{tables.esc(commit['hash'])}</code>{dirty}"
    if "commit" in machine or "commit" in data:
        return "unknown (not a git checkout)"
    return "unknown (recorded before provenance)"


def provenance(data: dict[str, Any]) -> str:
    """Commit, machine and package versions of one run."""
    machine = dict(data.get("machine") or {})
    machine.pop("commit", None)
    packages = machine.pop("packages", None) or data.get("versions")
    flags = machine.pop("cpu_flags", None)
    if "cpu_simd" not in machine:
        machine["cpu_simd"] = "not recorded (before provenance)"
    parts = [f"**Commit:** {commit_line(data)}", tables.kv_table(machine)]
    if isinstance(packages, dict):
        parts.append("Package versions:\n\n" + tables.kv_table(packages))
    else:
        parts.append("Package versions: not recorded (before provenance).")
    if flags:
        parts.append(
            "<details><summary>All CPU flags</summary>"
            f"<p><code>{tables.esc(' '.join(flags))}</code></p></details>"
        )
    return "\n\n".join(parts)


def render_section(data: Any, level: int) -> list[str]:
    """Markdown blocks for one part of a result: its provenance and settings first, then
    its scalars as one table, then each nested part under a heading of its name."""
    if not isinstance(data, dict):
        rows = tables.as_records(data)
        return [tables.record_table(rows) if rows is not None else f"<p>{tables.fmt(data)}</p>"]
    blocks: list[str] = []
    if "machine" in data:
        blocks += [_heading(level, "Machine and provenance"), provenance(data)]
    if isinstance(data.get("settings"), dict):
        settings = tables.flatten(data["settings"], depth=3)
        blocks += [_heading(level, "Settings"), tables.kv_table(settings)]
    skip = {*PROVENANCE_KEYS, "settings", "benchmark"}
    rest = {k: v for k, v in data.items() if k not in skip}
    scalars = {k: v for k, v in rest.items() if tables.is_inline(v) or tables.is_values(v)}
    if scalars:
        blocks.append(tables.kv_table(scalars))
    for key, value in rest.items():
        if key not in scalars:
            blocks += [_heading(level, key), *render_part(value, level)]
    return blocks


def render_part(value: Any, level: int) -> list[str]:
    """One nested part: a table of its records, or its own sections one level down."""
    rows = tables.as_records(value)
    if rows is not None and len({c for _, r in rows for c in r}) <= MAX_COLUMNS:
        return [tables.record_table(rows)]
    fields = {c for _, r in rows for c in r} if rows is not None else set()
    if rows is not None and len(rows) <= MAX_COLUMNS and len(fields) <= MAX_FIELDS:
        # a few wide records: one column each
        return [tables.record_table(tables.transposed(rows))]
    if isinstance(value, dict):
        return render_section(value, min(level + 1, 6))
    if rows is None:
        return [f"<p>{tables.fmt(value)}</p>"]
    blocks = []  # many wide records: one table each
    for name, record in tables.labelled(rows)[: tables.MAX_ROWS]:
        blocks += [_heading(min(level + 1, 6), name or "item"), tables.kv_table(record)]
    if len(rows) > tables.MAX_ROWS:
        shown = f"The first {tables.MAX_ROWS} of {len(rows)} items"
        blocks.append(f"*{shown}; the rest are in the JSON.*")
    return blocks


def _heading(level: int, text: str) -> str:
    return f"{'#' * level} {tables.md_text(text)}"


def notes(bench: Benchmark, notes_dir: Path = NOTES) -> str:
    """The hand-written commentary, with a warning when its JSON has changed since."""
    path = notes_dir / f"{bench.name}.md"
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"\s*<!--\s*results:\s*sha256:([0-9a-f]{64})\s*-->\s*\n", text)
    body = text[match.end() :] if match else text
    if match is None or match.group(1) != bench.sha256:
        log.info("results notes %s describe another version of %s", path.name, bench.json_path.name)
        body = (
            '!!! warning "Commentary from an earlier run"\n'
            "    The JSON has changed since this commentary was written: where its figures\n"
            "    and the tables above disagree, the tables are current.\n\n" + body
        )
    body = _TABLE.sub(lambda m: directive_table(bench, m.group(1), m.group(2)), body)
    body = _PIVOT.sub(lambda m: directive_pivot(bench, m.group(1), m.group(2)), body)
    return "## Commentary\n\n" + body


_TABLE = re.compile(r"<!--\s*table:\s*(\S+)\s*\|\s*(.*?)\s*-->", re.S)
_PIVOT = re.compile(r"<!--\s*pivot:\s*(\S+)\s*\|\s*(.*?)\s*-->", re.S)


def _lookup(bench: Benchmark, paths: str) -> list[tuple[str | None, dict[str, Any]]]:
    """The records under each ``+``-joined path (keys split by ``/``): a mapping or list of
    records gives its rows, one flat record gives one row named by its key. A path the
    JSON lacks fails the build."""
    rows: list[tuple[str | None, dict[str, Any]]] = []
    for path in paths.split("+"):
        value: Any = bench.data
        for key in path.split("/"):
            if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            elif isinstance(value, dict) and key in value:
                value = value[key]
            else:
                raise ValueError(f"results notes {bench.name}.md: no {path!r} in the JSON")
        records = tables.as_records(value, nested=True)
        if records is None and isinstance(value, dict):
            records = [(path, tables.flatten(value))]
        if records is None:
            raise ValueError(f"results notes {bench.name}.md: {path!r} holds no records")
        rows += records
    return rows


def directive_pivot(bench: Benchmark, path: str, fields: str) -> str:
    """``<!-- pivot: part | row, column, value -->``: one row per value of the records'
    ``row`` field, one column per value of their ``column`` field, ``value`` in the cells."""
    row_field, column_field, value_field = (f.strip() for f in fields.split(","))
    table: dict[str, dict[str, Any]] = {}
    for _, record in _lookup(bench, path):
        if not {row_field, column_field, value_field} <= record.keys():
            raise ValueError(f"results notes {bench.name}.md: {path!r} lacks a pivot field")
        row = table.setdefault(str(record[row_field]), {})
        row[str(record[column_field])] = record[value_field]
    return tables.record_table([(f"{row_field} {name}", cells) for name, cells in table.items()])


def directive_table(bench: Benchmark, path: str, columns: str) -> str:
    """A table the commentary asks for: ``<!-- table: part/sub | col, col.sub=Label -->``
    shows the records under ``part/sub`` of the JSON with those (flattened) columns, so
    the commentary's tables come from the file too. A path or column the JSON lacks fails
    the build: the commentary no longer matches the benchmark."""
    rows = _lookup(bench, path)
    wanted = [c.strip().partition("=") for c in columns.split(",") if c.strip()]
    known = {c for _, r in rows for c in r}
    missing = [c for c, _, _ in wanted if c not in known]
    if missing:
        raise ValueError(f"results notes {bench.name}.md: {path!r} has no column {missing}")
    picked = [(n, {(label or c): r.get(c) for c, _, label in wanted}) for n, r in rows]
    return tables.record_table(picked)


def render_page(bench: Benchmark) -> str:
    """The Markdown page of one result file."""
    title = bench.name.replace("_", " ").capitalize()
    script = bench.script.relative_to(ROOT) if bench.script else None
    blocks = [f"# {tables.md_text(title)}"]
    if bench.summary:
        blocks.append(tables.md_text(bench.summary))
    source = f"Generated from <code>benchmarks/results/{tables.esc(bench.json_path.name)}</code> "
    source += f"([download]({quote(bench.json_path.name)}))"
    if script is not None:
        source += f", written by <code>{tables.esc(script)}</code>"
    blocks.append(source + ".")
    if bench.command:
        blocks += ["## Reproduce", f"<pre><code>{tables.esc(bench.command)}</code></pre>"]
    for image in bench.images:
        blocks.append(f"![{tables.md_text(image.stem)}]({quote(image.name)})")
    data = bench.data
    if isinstance(data, dict) and "machine" not in data:
        sections = [k for k, v in data.items() if isinstance(v, dict) and "machine" in v]
        if sections:  # parts run apart, each with its own machine (structured.json)
            for key in sections:
                blocks += [f"## {tables.md_text(key)}", *render_section(data[key], 3)]
            data = {k: v for k, v in data.items() if k not in sections}
        else:
            blocks += ["## Machine and provenance", "Not recorded in this file."]
    blocks += render_section(data, 2)
    commentary = notes(bench)
    if commentary:
        blocks.append(commentary)
    return "\n\n".join(blocks) + "\n"


def render_index(found: list[Benchmark]) -> str:
    rows = ["| result | what it measures | CPU | commit |", "|---|---|---|---|"]
    for bench in found:
        data = bench.data if isinstance(bench.data, dict) else {}
        # Sectioned results (structured.json) carry a machine per section: the first's.
        run = (
            data
            if "machine" in data
            else next((v for v in data.values() if isinstance(v, dict) and "machine" in v), {})
        )
        machine = _machine(run)
        name, summary = tables.md_text(bench.name), tables.md_text(bench.summary)
        cpu = tables.md_text(machine.get("cpu", "—"))
        commit = commit_line(run) if run else "unknown"
        rows.append(f"| [{name}]({quote(bench.name)}.md) | {summary} | {cpu} | {commit} |")
    return (
        "# Results\n\n"
        "Every page in this section is generated at build time from the JSON a benchmark "
        "wrote under `benchmarks/results/`, so the figures here are the files' own. Each "
        "page says how to reproduce it, on which machine and at which commit it ran "
        "(results recorded before benchmarks kept provenance say so), and shows the plots "
        "written next to it. `make bench` reruns the quick benchmarks; each page gives its "
        "own command.\n\n" + "\n".join(rows) + "\n"
    )


def pages(results: Path = RESULTS) -> dict[str, str]:
    """Every generated page: site path -> Markdown."""
    found = benchmarks(results)
    out = {f"{PAGES}/index.md": render_index(found)}
    for bench in found:
        out[f"{PAGES}/{bench.name}.md"] = render_page(bench)
    return out


# --- the MkDocs hook ---------------------------------------------------------------------


@event_priority(100)  # before mkdocstrings reads its paths in its own on_config
def on_config(config: Any) -> Any:
    """Prepare the API reference's package folder; list the result pages in the nav."""
    package_mirror()
    titles = [(b.name.replace("_", " ").capitalize(), f"{PAGES}/{b.name}.md") for b in benchmarks()]
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and "Results" in entry:
            section = entry["Results"]
            if not isinstance(section, list):
                section = [section]
            listed = {v for item in section if isinstance(item, dict) for v in item.values()}
            section += [{t: p} for t, p in titles if p not in listed]
            entry["Results"] = section
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages, the JSON files and their plots to the site."""
    for path, text in pages().items():
        files.append(File.generated(config, path, content=text))
    for source in [*RESULTS.glob("*.json"), *RESULTS.glob("*.png")]:
        files.append(File.generated(config, f"{PAGES}/{source.name}", abs_src_path=str(source)))
    return files


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python docs/gen_results.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    for path, text in pages().items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    print(f"wrote {len(pages())} pages under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
