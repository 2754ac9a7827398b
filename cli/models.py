"""The model commands at the root: ``models`` (what ships), ``generate`` (one
completion, free or under a format) and ``export`` (a packaged model as a Hugging Face
folder)."""

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from relaygraph.cli.root import console, errors, user_errors
from relaygraph.errors import RelayGraphError
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


@user_errors
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


@user_errors
def generate(
    *,
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


@user_errors
def export(
    *,
    model: Annotated[str, typer.Option("--model", "-m", help="A packaged model name.")],
    out: Annotated[Path, typer.Option(help="Folder to create.")],
) -> None:
    """Write a packaged model as a Hugging Face folder (float32) for a vLLM worker."""
    from relaygraph.llm.export import export_hf_folder

    console.print(f"exported {model} to {export_hf_folder(model, out)}")
