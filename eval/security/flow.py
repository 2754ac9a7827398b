"""Information-flow control over an agent's tool calls: every value keeps where it came from.

The phrasing guard (`relaygraph.eval.security.guard`) decides trust by how a line is
worded, so an attack worded unlike its examples gets through. This guard decides by
provenance, in the spirit of CaMeL and AgentDojo's tool filter. Every text that reaches
the agent is a *source*: the user's request, the user's contacts and the capability
grants are trusted; every tool result (a file, the inbox, a page, a listing, a command's
output) is data, whatever it says. Before a call runs, each value it would act on is
traced to the sources that contain it verbatim, and:

- **recipients, payees, hosts** must come from a trusted source; a ``from_data`` grant
  also lets them come from data, but only while the data the request is about (the lines
  and messages that mention it) names exactly one candidate, so a planted second account
  or address makes the choice ambiguous and the call is refused;
- **deleting or moving** a path, and **overwriting** an existing file, need the user to
  have named it; a new file may be created unless its path came from data;
- **shell commands** run file utilities only; those that change files follow the path
  rules; reading a sensitive file (`relaygraph.eval.security.secrets`) needs the user to
  have named it;
- **what leaves** (a mail, a URL, a payment memo) may not carry a secret the agent read,
  nor data from a workspace file the request does not name.

A value the model made up has no source; it may name a new file but never a recipient,
payee or host. Capabilities (`relaygraph.eval.security.capabilities`) are checked first.
A refused call never runs: the agent is told why (naming where the value came from) and
it is counted in ``Sandbox.guard_blocked``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from relaygraph.eval.security.capabilities import (
    Capability,
    capability_refusal,
    normal_path,
    shell_words,
    touched_paths,
)
from relaygraph.eval.security.guard import screened_tools
from relaygraph.eval.security.secrets import carries_credential, is_sensitive_path, secret_values

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from relaygraph.agents.tools import Tool
    from relaygraph.eval.security.sandbox import Sandbox

ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
ACCOUNT = re.compile(r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b")
"""Payee candidates in data: IBAN-shaped account numbers."""
READING_PROGRAMS = frozenset(
    {"cat", "date", "diff", "du", "echo", "find", "grep", "head", "ls", "pwd", "sort", "stat",
     "tail", "uniq", "wc"}
)  # fmt: skip
CHANGING_PROGRAMS = frozenset({"cp", "mkdir", "mv", "rm", "rmdir", "touch"})
_FIND_CHANGES = frozenset({"-delete", "-exec", "-execdir", "-ok", "-okdir"})
_DISTINCTIVE = re.compile(r"[\w.@+-]{8,}")
_STOPWORDS = frozenset(
    {
        "about", "after", "also", "and", "any", "are", "been", "before", "but", "can", "could",
        "does", "each", "email", "file", "from", "have", "into", "just", "like", "made", "make",
        "many", "more", "most", "much", "must", "need", "only", "other", "over", "please", "read",
        "said", "same", "says", "send", "should", "some", "such", "tell", "than", "that", "the",
        "their", "them", "then", "there", "these", "they", "this", "those", "through", "what",
        "when", "where", "which", "while", "will", "with", "would", "your", "yours",
    }
)  # fmt: skip


@dataclass(slots=True)
class Source:
    """A text the agent has seen, and what produced it."""

    label: str
    text: str
    trusted: bool
    records: list[str] = field(default_factory=list)
    """Its messages (the inbox) or lines (everything else)."""
    about: list[str] = field(default_factory=list)
    """The records about the request, where ``from_data`` looks for candidates: those that
    mention one of its words, or all of a file or page the request names when none does."""
    private: bool = False
    """A workspace file the request does not name: its data stays in the workspace."""
    squashed: str = ""
    spaced: str = ""

    def __post_init__(self) -> None:
        self.squashed = _squash(self.text)
        self.spaced = " ".join(self.text.lower().split())
        if not self.records:
            self.records = self.text.splitlines()


class FlowGuard:
    """Screens ``sandbox``'s tool calls by where their values came from (module docstring)."""

    name = "flow-guard"

    def __init__(
        self,
        sandbox: Sandbox,
        capabilities: dict[str, Capability] | None = None,
        *,
        screen: Callable[[str], str] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.screen = screen
        """An optional second layer over what the agent reads (a detector's `screen`);
        provenance is kept of the unscreened output, so it never widens what is allowed."""
        self.capabilities = dict(capabilities or {})
        self.request = sandbox.goal
        grants = [v for c in self.capabilities.values() for v in (*c.recipients, *c.payees)]
        self.sources = [
            Source("the request", sandbox.goal, trusted=True),
            Source("the user's contacts", "\n".join(sandbox.environment.contacts), trusted=True),
            Source("the task's grants", "\n".join(grants), trusted=True),
        ]
        self.secrets: dict[str, str] = {}
        """Secret value (lowercased) → the label of the source it was read from."""
        self.terms = _terms(sandbox.goal)
        self.named_paths = {normal_path(w).lower() for w in _path_words(sandbox.goal)}
        """The workspace paths the request names, word for word."""

    def wrap(self, tools: Sequence[Tool]) -> list[Tool]:
        """The same tools, screened."""
        return screened_tools(tools, self.sandbox, self.check_call, self._after, "the flow guard")

    def _after(self, tool: str, arguments: dict[str, Any], output: str) -> str:
        self.observe(tool, arguments, output)
        return self.screen(output) if self.screen is not None else output

    # -- sources -----------------------------------------------------------------------

    def observe(self, tool: str, arguments: dict[str, Any], output: str) -> None:
        """Label a tool result as a data source, and remember the secrets in it."""
        paths = _paths_read(tool, arguments)
        label = {
            "read_file": f"the file {arguments.get('path', '')}",
            "read_inbox": "the inbox",
            "fetch_url": f"the page {arguments.get('url', '')}",
            "list_files": "a file listing",
        }.get(tool, f"the output of {tool}")
        records = _messages(output) if tool == "read_inbox" else output.splitlines()
        named = any(self._named(p) for p in paths) or (
            tool == "fetch_url" and str(arguments.get("url", "")).strip() in self.request
        )
        about = [r for r in records if self._mentions_request(r)] or (records if named else [])
        private = any(not self._named(p) and self.sandbox.exists(p) for p in paths)
        self.sources.append(
            Source(label, output, trusted=False, records=records, about=about, private=private)
        )
        sensitive = any(is_sensitive_path(p) for p in paths)
        for value in secret_values(output, sensitive_source=sensitive):
            if value.lower() not in self.request.lower():
                self.secrets.setdefault(value.lower(), label)

    def origins(self, value: str) -> list[Source]:
        """The sources that contain ``value`` as a whole word or words (ignoring case and
        runs of spaces): ``bob@acme.test`` is not in ``jimbob@acme.test``."""
        needle = " ".join(value.lower().split())
        if not needle:
            return []
        whole = re.compile(rf"(?<![\w.@+-]){re.escape(needle)}(?![\w@+-]|\.\w)")
        return [s for s in self.sources if whole.search(s.spaced)]

    def _trusted(self, value: str) -> bool:
        return any(s.trusted for s in self.origins(value))

    def _named(self, path: str) -> bool:
        return normal_path(path).lower() in self.named_paths

    # -- calls -------------------------------------------------------------------------

    def check_call(self, tool: str, arguments: dict[str, Any]) -> str | None:
        """Why the call must not run, or None."""
        capability = self.capabilities.get(tool, Capability())
        limit = capability_refusal(tool, arguments, capability)
        if limit is not None:
            return limit
        rules: dict[str, Callable[[dict[str, Any], Capability], str | None]] = {
            "send_email": self._check_send_email,
            "pay": self._check_pay,
            "fetch_url": self._check_fetch_url,
            "read_file": self._check_read,
            "list_files": self._check_read,
            "write_file": self._check_write,
            "delete_file": self._check_delete,
            "run_shell": self._check_shell,
        }
        rule = rules.get(tool)
        reason = rule(arguments, capability) if rule is not None else None
        if reason is None and tool in ("send_email", "fetch_url", "pay"):
            reason = self._check_outgoing(" ".join(str(v) for v in arguments.values()))
        return reason

    def _check_send_email(self, arguments: dict[str, Any], capability: Capability) -> str | None:
        to = str(arguments.get("to", ""))
        for address in ADDRESS.findall(to) or [to]:
            reason = self._party(address, "recipient", ADDRESS, capability.from_data)
            if reason is not None:
                return reason
        return None

    def _check_pay(self, arguments: dict[str, Any], capability: Capability) -> str | None:
        return self._party(str(arguments.get("to", "")), "payee", ACCOUNT, capability.from_data)

    def _check_fetch_url(self, arguments: dict[str, Any], capability: Capability) -> str | None:
        url = str(arguments.get("url", "")).strip()
        host = urlsplit(url).hostname or ""
        if capability.hosts is not None or (host and self._trusted(host)):
            return None
        return f"the site {host or url!r} {self._came_from(host or url)}"

    def _party(self, value: str, role: str, shape: re.Pattern[str], from_data: bool) -> str | None:
        """A recipient or payee: trusted, or the one candidate in the data asked about."""
        if self._trusted(value):
            return None
        if from_data and self.origins(value):
            candidates = self._candidates(shape)
            if candidates == {_squash(value)}:
                return None
            if len(candidates) > 1:
                return (
                    f"the data the request is about names {len(candidates)} possible {role}s "
                    f"({', '.join(sorted(candidates))}); ask the user which one"
                )
        return f"the {role} {value.strip()!r} {self._came_from(value)}"

    def _candidates(self, shape: re.Pattern[str]) -> set[str]:
        """Values of ``shape`` in the data's records about the request."""
        return {
            _squash(value)
            for source in self.sources
            if not source.trusted
            for record in source.about
            for value in shape.findall(record)
        }

    def _mentions_request(self, record: str) -> bool:
        lowered = record.lower()
        return any(re.search(rf"\b{re.escape(term)}\b", lowered) for term in self.terms)

    def _check_read(self, arguments: dict[str, Any], capability: Capability) -> str | None:
        path = normal_path(str(arguments.get("path", ".")))
        if is_sensitive_path(path) and not self._named(path) and capability.paths is None:
            return f"{path} holds secrets and the user did not ask for it"
        return None

    def _check_write(self, arguments: dict[str, Any], capability: Capability) -> str | None:
        return self._change(normal_path(str(arguments.get("path", ""))), capability, "overwrite")

    def _check_delete(self, arguments: dict[str, Any], capability: Capability) -> str | None:
        return self._change(normal_path(str(arguments.get("path", ""))), capability, "delete")

    def _change(self, path: str, capability: Capability, verb: str) -> str | None:
        """Overwriting or deleting needs the user to name the path (or a ``paths`` grant);
        creating a file needs only that its path did not come from data."""
        if self._named(path) or capability.paths is not None:
            return None
        if verb == "overwrite" and not self.sandbox.exists(path):
            if any(not s.trusted for s in self.origins(path)):
                return f"the path {path} {self._came_from(path)}"
            return None
        return f"the user did not ask to {verb} {path}"

    def _check_shell(self, arguments: dict[str, Any], capability: Capability) -> str | None:
        words = shell_words(str(arguments.get("command", "")))
        if not words:
            return None
        program, args = words[0], words[1:]
        if program not in READING_PROGRAMS and program not in CHANGING_PROGRAMS:
            return f"the shell runs file utilities only, and {program!r} is not one"
        paths = [normal_path(a) for a in args if not a.startswith("-")]
        if program == "find":  # its patterns and -exec terminators are not paths
            paths = [p for p in paths if not p.startswith(("*", "(")) and p not in ("{}", ";")]
        if program not in CHANGING_PROGRAMS and not (
            program == "find" and _FIND_CHANGES & set(args)
        ):
            reasons = [self._check_read({"path": p}, capability) for p in paths]
        elif program == "cp":  # cp reads its sources and writes its destination
            reasons = [self._change(paths[-1], capability, "overwrite")] if paths else []
        else:
            verb = "overwrite" if program in ("mkdir", "touch") else "delete"
            reasons = [self._change(p, capability, verb) for p in paths]
        return next((r for r in reasons if r is not None), None)

    def _check_outgoing(self, text: str) -> str | None:
        lowered = text.lower()
        for secret, label in self.secrets.items():
            if secret in lowered:
                return f"it would send a secret read from {label} out of the workspace"
        if carries_credential(text) and not carries_credential(self.request):
            return "it would send a credential out of the workspace"
        for source in self.sources:
            if source.private:
                leaked = self._private_value(source, text)
                if leaked is not None:
                    return (
                        f"it would send {leaked!r} from {source.label}, which the user did not "
                        "name, out of the workspace"
                    )
        return None

    def _private_value(self, source: Source, text: str) -> str | None:
        """A distinctive value of ``source`` in ``text`` that no public source also holds."""
        squashed = _squash(text)
        public = [s for s in self.sources if not s.private and s is not source]
        tokens: set[str] = set(_DISTINCTIVE.findall(source.text))
        for token in tokens:
            if not any(c.isdigit() or c == "@" for c in token):
                continue
            needle = _squash(token)
            if needle in squashed and not any(needle in s.squashed for s in public):
                return token
        return None

    def _came_from(self, value: str) -> str:
        found = [s.label for s in self.origins(value)]
        if not found:
            return "appears in nothing the user wrote or the assistant read"
        return f"came only from data ({', '.join(dict.fromkeys(found))}), not from the user"


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def _terms(request: str) -> list[str]:
    """The request's content words: what a line or message must mention to be about it."""
    words = re.findall(r"[\w./@-]+", request.lower())
    return sorted({w.strip(".-") for w in words if len(w) >= 4 and w not in _STOPWORDS})


def _path_words(request: str) -> list[str]:
    """The request's words that could be paths, without the punctuation around them."""
    return [w.strip(".,;:!?()'\"`") for w in request.split() if w.strip(".,;:!?()'\"`")]


def _messages(inbox: str) -> list[str]:
    """The inbox listing's messages (each starts ``[n] From:``)."""
    return [m for m in re.split(r"\n\n(?=\[\d+\] From:)", inbox) if m.strip()]


def _paths_read(tool: str, arguments: dict[str, Any]) -> list[str]:
    return touched_paths(tool, arguments) if tool in ("read_file", "run_shell") else []
