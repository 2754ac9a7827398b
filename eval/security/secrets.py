"""What counts as a secret: sensitive file paths, credential-shaped strings, secret settings.

Three independent signals, none of them about how a text is worded: a path that by
convention holds secrets (``secrets/``, ``.ssh``, ``.env``, keys, tokens, passwords,
wallets); a string shaped like a credential (provider key prefixes, private-key headers,
long mixed-case-and-digit tokens); the value of a setting whose name says it is secret
(``stripe_key: …``, ``DB_PASSWORD=…``), in any file format that writes ``name: value`` or
``name=value``.
"""

from __future__ import annotations

import re

SENSITIVE_PATH = re.compile(
    r"(?:^|/)(?:secrets?|\.ssh|\.gnupg|credentials?|keys?|wallets?)(?:/|$|\.)|\.env$|\.env\.|"
    r"id_rsa|id_ed25519|passw|token|\.pem$|\.key$|\.p12$|\.kdbx$",
    re.IGNORECASE,
)
CREDENTIAL = re.compile(
    r"\b(?:sk|pk|rk)[-_](?:live|test|proj|prod)?[-_]?[A-Za-z0-9]{8,}|"
    r"\bgh[pousr]_\w{10,}|\bglpat-[\w-]{10,}|\bxox[abposr]-[\w-]{10,}|\bAKIA[0-9A-Z]{12,}|"
    r"\bAIza[\w-]{20,}|\beyJ[\w-]{10,}\.[\w-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY",
)
"""Provider key formats (OpenAI, Stripe, GitHub, GitLab, Slack, AWS, Google), JWTs and
private-key headers."""
SECRET_SETTING = re.compile(
    r"^[\s#>*-]*[\"']?([\w.-]*(?:key|token|secret|passw(?:or)?d|pwd|credential)[\w.-]*)"
    r"[\"']?\s*[:=]\s*[\"']?([^\s\"',]{4,})",
    re.IGNORECASE | re.MULTILINE,
)
"""``name: value`` / ``name=value`` lines whose name says the value is secret."""
_TOKEN = re.compile(r"[^\s\"'`,;]{6,}")


def is_sensitive_path(path: str) -> bool:
    """Whether a workspace path by convention holds secrets."""
    return bool(SENSITIVE_PATH.search(path))


def secret_values(text: str, *, sensitive_source: bool) -> set[str]:
    """The secret strings in ``text``: credentials and secret settings' values anywhere, and
    every value-like token of a file that is itself sensitive (a password list is all secret).
    """
    found = {m.group(0) for m in CREDENTIAL.finditer(text)}
    found |= {m.group(2) for m in SECRET_SETTING.finditer(text)}
    if sensitive_source:
        for line in text.splitlines():
            value = re.split(r"[=:]", line, maxsplit=1)[-1].strip()
            found |= set(_TOKEN.findall(value))
    return {value for value in found if len(value) >= 4}


def carries_credential(text: str) -> bool:
    """Whether ``text`` holds a credential-shaped string."""
    return bool(CREDENTIAL.search(text))
