"""Roles: first-class because context routing and budgets are decided per role."""

from __future__ import annotations

import re
from enum import StrEnum

from relaygraph.errors import ConfigError

_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class StandardRole(StrEnum):
    """Roles relaygraph knows by name; any lowercase identifier is also a valid role."""

    PLANNER = "planner"
    RESEARCHER = "researcher"
    RETRIEVER = "retriever"
    SOLVER = "solver"
    CRITIC = "critic"
    EXECUTOR = "executor"
    ANSWERER = "answerer"


def check_role(role: str) -> str:
    """A role name: lowercase letters, digits, ``_`` or ``-``, starting with a letter.

    Raises:
        ConfigError: The name breaks that rule.
    """
    if not _ROLE.match(role):
        raise ConfigError(
            f"role {role!r} must be a lowercase identifier (letters, digits, '_' or '-', "
            "starting with a letter, at most 40 characters), e.g. 'planner' or 'fact-checker'",
            parameter="role",
            value=role,
        )
    return str(role)
