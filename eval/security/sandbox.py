"""A throwaway, real environment per task: a workspace folder, a mailbox, a ledger, web pages.

Every tool call goes through `Sandbox.perform`, which records it as a `ToolEvent` with the
environment state after it, so scoring can replay the whole trajectory. Confinement:

- **Files**: paths are relative to the workspace; absolute paths, ``~``, and anything that
  resolves outside it (``..``, symlinks) are refused before any file is opened.
- **Shell**: no shell at all. The command line is split with `shlex`; operators (pipes,
  redirection, ``;``, ``$``, backticks) are refused; the program must be on an allowlist of
  file utilities (none of which opens a socket, so there is no network), options that follow
  symlinks or run other programs are refused, every argument that could be a path is
  confined like a file tool's, and the process runs in the workspace with an empty
  environment, a timeout and CPU, memory, file-size and open-file limits.
- **Web**: pages come from the task's spec and are served by a real HTTP server on
  127.0.0.1; any other host is unreachable. Every URL asked for is recorded (a secret in a
  query string is exfiltration even when the host does not answer).

A call the sandbox refuses is still recorded, marked ``blocked``: the agent did try it.
So is a call whose arguments did not validate (`Sandbox.record_invalid`), marked
``invalid``: it never ran, but a malformed unsafe attempt is still an attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import httpx

from relaygraph.errors import ToolError
from relaygraph.eval.security.tools import TOOL_NAMES
from relaygraph.eval.security.trajectory import Email, EnvState, Payment, ToolEvent, Trajectory

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from relaygraph.eval.security.capabilities import Capability
    from relaygraph.eval.security.spec import Environment

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
MAX_SNAPSHOT_BYTES = 256 << 10
"""Larger workspace files are recorded by hash, not text."""
PAGE_POLL_S = 0.01
"""How often the page server looks for a shutdown request; closing a sandbox waits for
it. socketserver's default, 0.5 s, made each sandbox with pages take half a second to
close; a wake-up every 10 ms costs next to nothing."""


class SandboxError(ToolError):
    """A call the sandbox refuses; the message is what the agent is told."""


class Sandbox:
    """One task's environment; use it as a context manager (it deletes itself on exit).

    Example:
        >>> from relaygraph.eval.security.spec import Environment
        >>> with Sandbox(Environment(files={"notes.txt": "hi"}), goal="read notes") as box:
        ...     box.read_file("notes.txt"), box.trajectory().events[0].tool
        ('hi', 'read_file')
    """

    def __init__(
        self,
        environment: Environment,
        *,
        goal: str = "",
        tools: Sequence[str] = TOOL_NAMES,
        capabilities: Mapping[str, Capability] | None = None,
    ) -> None:
        self.environment = environment
        self.goal = goal
        """The user's request, which a defence may compare tool calls against."""
        self.tool_names = list(tools)
        """The tools the task gives the agent."""
        self.capabilities = dict(capabilities or {})
        """Per tool, the limits and grants the task declares, for a defence to enforce."""
        self._tmp = Path(tempfile.mkdtemp(prefix="relaygraph-sandbox-"))
        self.workspace = self._tmp / "workspace"
        self.workspace.mkdir()
        self._root = Path(os.path.realpath(self.workspace))
        for rel, text in environment.files.items():
            path = self._resolve(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        self.inbox = list(environment.inbox)
        self.sent: list[Email] = []
        self.payments: list[Payment] = []
        self.requests: list[str] = []
        self.balance = environment.balance
        self._events: list[ToolEvent] = []
        self._states: list[EnvState] = []
        self._initial = self.state()
        self._lock = threading.Lock()
        self._pages = _PageServer(environment.pages)
        self.guard_blocked = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the page server and delete the workspace."""
        self._pages.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- recording -------------------------------------------------------------------

    def perform(self, tool: str, arguments: dict[str, Any], operation: Callable[[], str]) -> str:
        """Run one tool call and record it with the state after it.

        Raises:
            SandboxError: The sandbox refused the call (recorded as ``blocked``).
            Exception: Whatever the operation raised (recorded as the call's error).
        """
        with self._lock:
            event = ToolEvent(index=len(self._events) + 1, tool=tool, arguments=arguments)
            try:
                event.observation = operation()
                return event.observation
            except SandboxError as exc:
                event.error, event.blocked = str(exc), True
                raise
            except Exception as exc:
                event.error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                self._record(event)

    def record_invalid(self, tool: str, raw: str, problem: str) -> None:
        """Record a call of ``tool`` whose argument text ``raw`` did not validate.

        Its arguments are the JSON object the agent wrote when ``raw`` is one (so call
        predicates match them by name), else ``{"raw": raw}``.
        """
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else {"raw": raw}
        with self._lock:
            index = len(self._events) + 1
            self._record(
                ToolEvent(index=index, tool=tool, arguments=arguments, error=problem, invalid=True)
            )

    def _record(self, event: ToolEvent) -> None:
        self._events.append(event)
        self._states.append(self.state())

    def state(self) -> EnvState:
        """The environment now."""
        return EnvState(
            files=_snapshot(self.workspace),
            sent=list(self.sent),
            payments=list(self.payments),
            requests=list(self.requests),
            balance=self.balance,
        )

    def trajectory(self, *, answer: str | None = None, error: str | None = None) -> Trajectory:
        """Everything recorded so far."""
        return Trajectory(
            initial=self._initial,
            events=list(self._events),
            states=list(self._states),
            answer=answer,
            error=error,
            guard_blocked=self.guard_blocked,
        )

    # -- files -----------------------------------------------------------------------

    def _resolve(self, path: str) -> Path:
        """The real path of a workspace-relative ``path``.

        Raises:
            SandboxError: Absolute, home-relative, or resolving outside the workspace.
        """
        raw = path.strip()
        if not raw or "\x00" in raw:
            raise SandboxError(f"{path!r} is not a path")
        if raw.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", raw):
            raise SandboxError(f"{raw} is outside the workspace; use a path relative to it")
        real = Path(os.path.realpath(self._root / raw))
        if real != self._root and not real.is_relative_to(self._root):
            raise SandboxError(f"{raw} resolves outside the workspace")
        return real

    def _relative(self, path: Path) -> str:
        return path.relative_to(self._root).as_posix() or "."

    def exists(self, path: str) -> bool:
        """Whether a workspace path exists (False for one outside the workspace); unrecorded."""
        try:
            return self._resolve(path).exists()
        except SandboxError:
            return False

    def list_files(self, path: str = ".") -> str:
        def run() -> str:
            folder = self._resolve(path or ".")
            if not folder.is_dir():
                raise FileNotFoundError(f"no folder {path}")
            names = [
                f"{self._relative(p)}{'/' if p.is_dir() else ''}" for p in sorted(folder.rglob("*"))
            ]
            return "\n".join(names) or "(empty)"

        return self.perform("list_files", {"path": path}, run)

    def read_file(self, path: str) -> str:
        return self.perform("read_file", {"path": path}, lambda: _read_text(self._resolve(path)))

    def write_file(self, path: str, content: str) -> str:
        def run() -> str:
            target = self._resolve(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            return f"wrote {len(content)} characters to {self._relative(target)}"

        return self.perform("write_file", {"path": path, "content": content}, run)

    def delete_file(self, path: str) -> str:
        def run() -> str:
            target = self._resolve(path)
            if not target.is_file():
                raise FileNotFoundError(f"no file {path}")
            target.unlink()
            return f"deleted {self._relative(target)}"

        return self.perform("delete_file", {"path": path}, run)

    # -- shell -----------------------------------------------------------------------

    def run_shell(self, command: str) -> str:
        return self.perform("run_shell", {"command": command}, lambda: self._shell(command))

    def _shell(self, command: str) -> str:
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
            confined.extend(self._confine_arg(arg))
        binary = shutil.which(program, path="/usr/bin:/bin")
        if binary is None:
            raise SandboxError(f"{program} is not installed")
        try:
            done = subprocess.run(
                [binary, *confined],
                cwd=self._root,
                env={"PATH": "/usr/bin:/bin", "HOME": str(self._root), "LC_ALL": "C.UTF-8"},
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

    def _confine_arg(self, arg: str) -> list[str]:
        """The argument, or the workspace files its glob matches, refused if it escapes."""
        self._resolve(arg)
        if any(c in arg for c in "*?["):
            matches = sorted(p.relative_to(self._root).as_posix() for p in self._root.glob(arg))
            if matches:
                for match in matches:
                    self._resolve(match)
                return matches
        return [arg]

    # -- mail, web, payments -----------------------------------------------------------

    def read_inbox(self, query: str = "") -> str:
        def run() -> str:
            found = [
                (i, m)
                for i, m in enumerate(self.inbox, start=1)
                if query.lower() in f"{m.sender} {m.subject} {m.body}".lower()
            ]
            if not found:
                return "no messages" + (f" matching {query!r}" if query else "")
            return "\n\n".join(
                f"[{i}] From: {m.sender}\nSubject: {m.subject}\n{m.body}" for i, m in found
            )

        return self.perform("read_inbox", {"query": query}, run)

    def send_email(self, to: str, subject: str, body: str) -> str:
        def run() -> str:
            if "@" not in to:
                raise ValueError(f"{to!r} is not an email address")
            self.sent.append(Email(to=to.strip(), subject=subject, body=body))
            return f"sent to {to.strip()}"

        return self.perform("send_email", {"to": to, "subject": subject, "body": body}, run)

    def fetch_url(self, url: str) -> str:
        def run() -> str:
            self.requests.append(url)
            return self._pages.fetch(url)

        return self.perform("fetch_url", {"url": url}, run)

    def pay(self, to: str, amount: float, memo: str = "") -> str:
        def run() -> str:
            if amount <= 0:
                raise ValueError("the amount must be positive")
            if amount > self.balance:
                raise ValueError(f"insufficient funds: balance {self.balance:.2f}")
            self.balance -= amount
            self.payments.append(Payment(to=to.strip(), amount=amount, memo=memo))
            return f"paid {amount:.2f} to {to.strip()}; balance {self.balance:.2f}"

        return self.perform("pay", {"to": to, "amount": amount, "memo": memo}, run)


def _options(program: str, arg: str) -> set[str]:
    """The options an argument sets: ``-rf`` is ``-r`` and ``-f``; find's are whole words."""
    if arg.startswith("--") or program == "find" or len(arg) <= 2:
        return {arg.split("=", 1)[0]}
    return {f"-{c}" for c in arg[1:]}


def _apply_limits() -> None:
    for limit, value in _LIMITS:
        resource.setrlimit(limit, (value, value))


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"no file {path.name}")
    return path.read_text(encoding="utf-8", errors="replace")


def _snapshot(root: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                files[rel] = f"<symlink to {path.readlink()}>"
                continue
            if not path.is_file():  # a FIFO or device: reading it could block forever
                files[rel] = "<special file>"
                continue
            data = path.read_bytes()
            if len(data) > MAX_SNAPSHOT_BYTES or b"\x00" in data:
                files[rel] = f"<binary sha256={hashlib.sha256(data).hexdigest()}>"
            else:
                files[rel] = data.decode("utf-8", "replace")
    return files


class _PageServer:
    """The task's web pages behind a real HTTP server on 127.0.0.1 (only if it has pages)."""

    def __init__(self, pages: dict[str, str]) -> None:
        self.pages = {_page_key(url): text for url, text in pages.items()}
        self.hosts = {key.split("/", 1)[0] for key in self.pages}
        self._server: ThreadingHTTPServer | None = None
        if not pages:
            return
        served = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                text = served.get(_page_key("http:/" + self.path))
                body = (text if text is not None else "404 Not Found").encode()
                self.send_response(200 if text is not None else 404)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the sandbox records every request itself."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": PAGE_POLL_S}, daemon=True
        ).start()

    def fetch(self, url: str) -> str:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        if parts.hostname not in self.hosts or self._server is None:
            raise SandboxError(f"{parts.hostname} is not reachable (the sandbox has no network)")
        port = self._server.server_address[1]
        local = f"http://127.0.0.1:{port}/{parts.hostname}{parts.path or '/'}"
        # Plain http to loopback: no TLS, so no certificates to load (the default client
        # loads them, 30-50 ms a fetch), and no proxy from the environment in the way.
        response = httpx.get(local, timeout=5.0, verify=False, trust_env=False)
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text}"
        return response.text

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _page_key(url: str) -> str:
    """``host/path`` without scheme, query or trailing slash."""
    parts = urlsplit(url.strip())
    return f"{(parts.hostname or '').lower()}{parts.path.rstrip('/') or ''}"
