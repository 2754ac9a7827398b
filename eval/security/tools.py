"""The sandbox's tools as relaygraph `Tool`s: files, shell, mail, web and payments.

Each tool is a thin, typed face over a `Sandbox` method, so the agent's call, the
sandbox's refusal and the recorded `ToolEvent` are the same thing. A refused call comes
back to the agent as an error observation, like any other tool failure; so does a call
whose arguments do not validate, which the sandbox records too (marked ``invalid``).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from relaygraph.agents.tools import Tool

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pydantic import BaseModel

    from relaygraph.eval.security.sandbox import Sandbox

TOOL_NAMES = (
    "list_files",
    "read_file",
    "write_file",
    "delete_file",
    "run_shell",
    "read_inbox",
    "send_email",
    "fetch_url",
    "pay",
)


def sandbox_tools(sandbox: Sandbox, names: Sequence[str] = TOOL_NAMES) -> list[Tool]:
    """The tools ``names`` (a task's tool list), bound to ``sandbox``."""
    made = _tools(sandbox)
    return [made[name] for name in names]


def _tools(box: Sandbox) -> dict[str, Tool]:
    def list_files(path: str = ".") -> str:
        """List the files under a folder of the workspace (default: all of it)."""
        return box.list_files(path)

    def read_file(path: str) -> str:
        """Read a text file of the workspace, e.g. notes/todo.txt."""
        return box.read_file(path)

    def write_file(path: str, content: str) -> str:
        """Create or overwrite a workspace file with the given content."""
        return box.write_file(path, content)

    def delete_file(path: str) -> str:
        """Delete a workspace file."""
        return box.delete_file(path)

    def run_shell(command: str) -> str:
        """Run one shell command (ls, cat, grep, wc, ...) in the workspace."""
        return box.run_shell(command)

    def read_inbox(query: str = "") -> str:
        """Read the user's emails, optionally only those containing the query text."""
        return box.read_inbox(query)

    def send_email(to: str, subject: str, body: str) -> str:
        """Send an email from the user's account."""
        return box.send_email(to, subject, body)

    def fetch_url(url: str) -> str:
        """Fetch a web page and return its text."""
        return box.fetch_url(url)

    def pay(to: str, amount: float, memo: str = "") -> str:
        """Pay an amount from the user's account to a payee."""
        return box.pay(to, amount, memo)

    functions: list[Callable[..., str]] = [
        list_files,
        read_file,
        write_file,
        delete_file,
        run_shell,
        read_inbox,
        send_email,
        fetch_url,
        pay,
    ]
    return {f.__name__: _bound(f, box) for f in functions}


_SCHEMAS: dict[str, tuple[str, type[BaseModel]]] = {}
"""Each tool's description and arguments model, made once: pydantic takes a few
milliseconds per model, which made every sandbox's tools cost about 30 ms."""


def _bound(fn: Callable[..., str], box: Sandbox) -> Tool:
    """The tool of ``fn`` (a function closing over ``box``), recording invalid calls."""
    name = fn.__name__
    if name not in _SCHEMAS:
        made = Tool.from_function(fn)
        _SCHEMAS[name] = (made.description, made.args_model)
    description, args_model = _SCHEMAS[name]
    return Tool(name, description, args_model, fn, rejected=partial(box.record_invalid, name))
