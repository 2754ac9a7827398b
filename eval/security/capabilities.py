"""What each tool may do for one task, declared in the spec's ``tools`` and checked per call.

A spec lists a tool by name, or by name with its capability::

    tools:
      - read_file
      - write_file: {paths: ["notes/*"]}
      - pay: {from_data: true, max_amount: 500}

Limits narrow a tool: ``paths`` (globs a file tool may touch, and the paths a shell
command may name), ``hosts`` (sites ``fetch_url`` may reach), ``programs`` (what
``run_shell`` may run), ``max_amount`` (one payment). Grants widen what the
information-flow rules (`relaygraph.eval.security.flow`) allow: ``recipients`` and
``payees`` the user trusts beyond those they named, and ``from_data``: the user delegates
choosing the recipient or payee to the data they asked about (an invoice, a payables
sheet), which is allowed only while that data names exactly one candidate. A declared
limit is the user's say-so too: inside declared ``paths`` a tool may change files the
request does not name, and any declared host may be fetched.
"""

from __future__ import annotations

import fnmatch
import shlex
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

FIELDS_BY_TOOL: dict[str, frozenset[str]] = {
    "list_files": frozenset({"paths"}),
    "read_file": frozenset({"paths"}),
    "write_file": frozenset({"paths"}),
    "delete_file": frozenset({"paths"}),
    "run_shell": frozenset({"paths", "programs"}),
    "read_inbox": frozenset(),
    "send_email": frozenset({"recipients", "from_data"}),
    "fetch_url": frozenset({"hosts"}),
    "pay": frozenset({"payees", "from_data", "max_amount"}),
}
"""The capability fields that mean something for each sandbox tool."""


class Capability(BaseModel):
    """One tool's limits and grants for a task (see the module docstring)."""

    model_config = {"extra": "forbid"}

    paths: list[str] | None = None
    hosts: list[str] | None = None
    programs: list[str] | None = None
    max_amount: float | None = Field(default=None, gt=0)
    recipients: list[str] = Field(default_factory=list)
    payees: list[str] = Field(default_factory=list)
    from_data: bool = False

    def fields_set(self) -> set[str]:
        """The fields the spec wrote (defaults excluded)."""
        return {name for name in self.model_fields_set if getattr(self, name) not in (None, [])}


def split_tool_entries(data: Any) -> Any:
    """A spec's raw ``tools`` list as names plus a ``capabilities`` mapping.

    ``[read_file, {pay: {from_data: true}}]`` becomes ``tools: [read_file, pay]`` and
    ``capabilities: {pay: {from_data: true}}``; anything else is left for validation to
    report.
    """
    if not isinstance(data, dict) or not isinstance(data.get("tools"), list):
        return data
    names: list[Any] = []
    capabilities: dict[str, Any] = dict(data.get("capabilities") or {})
    for entry in data["tools"]:
        if isinstance(entry, dict) and len(entry) == 1:
            ((name, capability),) = entry.items()
            if name in capabilities:
                raise ValueError(f"tools: {name!r} has its capability written twice")
            names.append(name)
            capabilities[name] = capability if capability is not None else {}
        else:
            names.append(entry)
    return {**data, "tools": names, "capabilities": capabilities}


def check_fields(tool: str, capability: Capability) -> None:
    """Refuse capability fields that mean nothing for ``tool`` (a likely typo of intent).

    Raises:
        ValueError: Names the tool, the field and the fields it takes.
    """
    allowed = FIELDS_BY_TOOL.get(tool, frozenset())
    stray = sorted(capability.fields_set() - allowed)
    if stray:
        takes = ", ".join(sorted(allowed)) or "no capability fields"
        raise ValueError(f"{tool}: {stray[0]!r} does not apply to {tool} (it takes {takes})")


def capability_refusal(tool: str, arguments: dict[str, Any], capability: Capability) -> str | None:
    """Why the call exceeds the tool's limits, or None. Grants are the flow rules' business."""
    if capability.paths is not None:
        for path in touched_paths(tool, arguments):
            if not any(fnmatch.fnmatchcase(path, glob) for glob in capability.paths):
                return f"{tool} may only touch {', '.join(capability.paths)}, not {path}"
    if capability.hosts is not None and tool == "fetch_url":
        host = (urlsplit(str(arguments.get("url", "")).strip()).hostname or "").lower()
        if host not in {h.lower() for h in capability.hosts}:
            return f"fetch_url may only reach {', '.join(capability.hosts)}, not {host or '?'}"
    if capability.programs is not None and tool == "run_shell":
        program = next(iter(shell_words(str(arguments.get("command", "")))), "")
        if program not in capability.programs:
            return f"run_shell may only run {', '.join(capability.programs)}, not {program!r}"
    if capability.max_amount is not None and tool == "pay":
        amount = float(arguments.get("amount", 0))
        if amount > capability.max_amount:
            return f"pay is limited to {capability.max_amount:g} per payment, not {amount:g}"
    return None


def touched_paths(tool: str, arguments: dict[str, Any]) -> list[str]:
    """The workspace paths a call names: a file tool's ``path``, a command's arguments."""
    if tool == "run_shell":
        words = shell_words(str(arguments.get("command", "")))
        return [normal_path(w) for w in words[1:] if not w.startswith("-")]
    path = arguments.get("path")
    return [normal_path(str(path))] if path is not None else []


def shell_words(command: str) -> list[str]:
    """A command line's words as a shell would split them (plain splitting if unbalanced)."""
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def normal_path(path: str) -> str:
    """A workspace path as specs write it: no leading ``./``, no trailing slash."""
    cleaned = path.strip()
    while cleaned.startswith("./"):
        cleaned = cleaned[2:]
    return cleaned.rstrip("/") or "."


def validate_capabilities(capabilities: dict[str, Capability], tools: list[str]) -> None:
    """Every capability names one of the spec's tools and only fields that tool takes.

    Raises:
        ValueError: The first problem, naming the tool.
    """
    for tool, capability in capabilities.items():
        if tool not in tools:
            raise ValueError(f"capabilities: {tool!r} is not one of this spec's tools {tools}")
        check_fields(tool, capability)
