"""The root ``relaygraph`` command and what every command group shares.

The root typer app with its ``--version``, the consoles commands print to, the
`user_errors` wrapper that turns a user's mistake into one red line and exit status 2,
and the options and checks several groups take.
"""

from collections.abc import Callable, Collection
from functools import wraps
from typing import Annotated, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from relaygraph import __version__
from relaygraph.errors import RelayGraphError, first_problem

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

LimitOption = Annotated[int | None, typer.Option(help="Evaluate this many items (seeded draw).")]
SeedOption = Annotated[int, typer.Option(help="Seed of the item draw.")]


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn relaygraph and validation errors into one red line and exit status 2.

    The message is escaped: it quotes user input (a pattern, a path, a file's text), and
    rich would take ``[a-z0-9]`` in it for markup and drop it.
    """

    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ValidationError as exc:
            field, problem = first_problem(exc.errors())
            errors.print(f"[red]error:[/red] {escape(f'{field}: {problem}')}")
        except (RelayGraphError, OSError) as exc:
            errors.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2)

    return run


def check_choice(option: str, value: str, choices: Collection[str]) -> None:
    """Refuse ``value`` for ``option`` unless it is one of ``choices``."""
    if value not in choices:
        raise RelayGraphError(f"{option} must be one of {', '.join(choices)}, not {value!r}")


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
