"""A throwaway, real environment per task: a workspace folder, a mailbox, a ledger, web pages.

Every tool call goes through `Sandbox.perform`, which records it as a `ToolEvent` with the
environment state after it, so scoring can replay the whole trajectory. Confinement:

- **Files and shell** (`confinement`): paths stay inside the workspace, and the shell is
  no shell: one allowlisted file utility per call, its path arguments confined, run with
  an empty environment, a timeout and resource limits.
- **Web** (`pages`): pages come from the task's spec and are served by a real HTTP server
  on 127.0.0.1; any other host is unreachable. Every URL asked for is recorded (a secret
  in a query string is exfiltration even when the host does not answer).

A call the sandbox refuses is still recorded, marked ``blocked``: the agent did try it.
So is a call whose arguments did not validate (`Sandbox.record_invalid`), marked
``invalid``: it never ran, but a malformed unsafe attempt is still an attempt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from relaygraph.eval.security.confinement import SandboxError, confined_path, run_confined
from relaygraph.eval.security.pages import PageServer
from relaygraph.eval.security.tools import TOOL_NAMES
from relaygraph.eval.security.trajectory import Email, EnvState, Payment, ToolEvent, Trajectory

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from relaygraph.eval.security.capabilities import Capability
    from relaygraph.eval.security.spec import Environment

MAX_SNAPSHOT_BYTES = 256 << 10
"""Larger workspace files are recorded by hash, not text."""


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
        self._pages = PageServer(environment.pages)
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
        return confined_path(self._root, path)

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
        return self.perform(
            "run_shell", {"command": command}, lambda: run_confined(command, self._root)
        )

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
