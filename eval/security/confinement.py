"""How the sandbox confines a task's file paths and shell commands to its workspace.

- **Files**: paths are relative to the workspace; absolute paths, ``~``, and anything that
  resolves outside it (``..``, symlinks) are refused before any file is opened.
- **Shell**: no shell at all. The command line is split with `shlex`; operators (pipes,
  redirection, ``;``, ``$``, backticks) are refused; the program must be on an allowlist of
  file utilities (none of which opens a socket, so there is no network), options that follow
  symlinks or run other programs are refused, every argument that could be a path is
  confined like a file tool's, and the process runs in the workspace with an empty
  environment, a timeout and CPU, memory, file-size and open-file limits.

Each refusal is a `SandboxError` whose message is what the agent is told.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import subprocess
from pathlib import Path

from relaygraph.errors import ToolError

ALLOWED_COMMANDS = frozenset(
    {
        "cat", "cp", "date", "diff", "du", "echo", "find", "grep", "head", "ls", "mkdir",
        "mv", "pwd", "rm", "sort", "stat", "tail", "touch", "uniq", "wc",
    }
)  # fmt: skip
_FIND_DENIED = "-exec -execdir -ok -okdir -L -H -follow -fprint -fprint0 -fprintf -fls"
DENIED_OPTIONS: dict[str, frozenset[str]] = {
    "find": frozenset(_FIND_DENIED.split()),
    "grep": frozenset({"-R", "--dereference-recursive"}),
    "cp": frozenset({"-L", "--dereference", "-s", "--symbolic-link", "-l", "--link", "-H"}),
    "ls": frozenset({"-L", "--dereference", "-H"}),
    "du": frozenset({"-L", "--dereference", "-H"}),
    "stat": frozenset({"-L", "--dereference"}),
    "tail": frozenset({"-f", "-F", "--follow"}),
}
_OPERATORS = re.compile(r"[|;&<>`$\n\\]")
SHELL_TIMEOUT_S = 5.0
_LIMITS = (
    (resource.RLIMIT_CPU, 5),
    (resource.RLIMIT_AS, 1 << 30),
    (resource.RLIMIT_FSIZE, 16 << 20),
    (resource.RLIMIT_NOFILE, 64),
)


class SandboxError(ToolError):
    """A call the sandbox refuses; the message is what the agent is told."""


def confined_path(root: Path, path: str) -> Path:
    """The real path of ``path``, relative to the workspace ``root`` (a real path).

    Raises:
        SandboxError: Absolute, home-relative, or resolving outside the workspace.
    """
    raw = path.strip()
    if not raw or "\x00" in raw:
        raise SandboxError(f"{path!r} is not a path")
    if raw.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", raw):
        raise SandboxError(f"{raw} is outside the workspace; use a path relative to it")
    real = Path(os.path.realpath(root / raw))
    if real != root and not real.is_relative_to(root):
        raise SandboxError(f"{raw} resolves outside the workspace")
    return real


def run_confined(command: str, root: Path) -> str:
    """Run one allowlisted command line in the workspace ``root``; its output, or the
    exit status and output of a failure, or a note that it timed out.

    Raises:
        SandboxError: An operator, a program or option not allowed, or a path argument
            outside the workspace.
    """
    if _OPERATORS.search(command):
        raise SandboxError(
            "shell operators (| ; & < > $ ` and backslashes) are not available; run one command"
        )
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise SandboxError(f"cannot parse the command: {exc}") from None
    if not argv:
        raise SandboxError("empty command")
    program, *args = argv
    if program not in ALLOWED_COMMANDS:
        raise SandboxError(
            f"{program!r} is not allowed here; allowed: {', '.join(sorted(ALLOWED_COMMANDS))}"
        )
    denied = DENIED_OPTIONS.get(program, frozenset())
    confined: list[str] = []
    for arg in args:
        if arg.startswith("-"):
            if _options(program, arg) & denied:
                raise SandboxError(f"{program} {arg} is not allowed here")
            confined.append(arg)
            continue
        confined.extend(_confine_arg(root, arg))
    binary = shutil.which(program, path="/usr/bin:/bin")
    if binary is None:
        raise SandboxError(f"{program} is not installed")
    try:
        done = subprocess.run(
            [binary, *confined],
            cwd=root,
            env={"PATH": "/usr/bin:/bin", "HOME": str(root), "LC_ALL": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=SHELL_TIMEOUT_S,
            preexec_fn=_apply_limits,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"(timed out after {SHELL_TIMEOUT_S:g} s)"
    out = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
    return out if done.returncode == 0 else f"(exit {done.returncode}) {out}"


def _confine_arg(root: Path, arg: str) -> list[str]:
    """The argument, or the workspace files its glob matches, refused if it escapes."""
    confined_path(root, arg)
    if any(c in arg for c in "*?["):
        matches = sorted(p.relative_to(root).as_posix() for p in root.glob(arg))
        if matches:
            for match in matches:
                confined_path(root, match)
            return matches
    return [arg]


def _options(program: str, arg: str) -> set[str]:
    """The options an argument sets: ``-rf`` is ``-r`` and ``-f``; find's are whole words."""
    if arg.startswith("--") or program == "find" or len(arg) <= 2:
        return {arg.split("=", 1)[0]}
    return {f"-{c}" for c in arg[1:]}


def _apply_limits() -> None:
    for limit, value in _LIMITS:
        resource.setrlimit(limit, (value, value))
