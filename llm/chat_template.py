"""Rendering chat messages into a prompt string with a model's Jinja chat template.

Instruct models carry their template in the GGUF metadata (``tokenizer.chat_template``)
and it is rendered exactly as Hugging Face's ``apply_chat_template`` does: a sandboxed
Jinja environment with ``messages``, ``add_generation_prompt``, ``bos_token``,
``eos_token`` and ``raise_exception``. Base models have no template; for them
`PLAIN_TEMPLATE` writes a transcript that a completion model continues naturally.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from relaygraph.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from relaygraph.llm.types import Message

PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% else %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""Transcript format for base models: ``User: …`` / ``Assistant: …`` lines."""

PLAIN_STOP = ("\nUser:", "\nSystem:")
"""Stop strings that end a base model's turn under `PLAIN_TEMPLATE`."""


def _raise(message: str) -> NoReturn:
    raise TemplateError(message)


class ChatTemplate:
    """A compiled chat template.

    Example:
        >>> t = ChatTemplate(PLAIN_TEMPLATE, bos_token="", eos_token="")
        >>> t.render([Message(role="user", content="Hi")])
        'User: Hi\\nAssistant:'
    """

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now(UTC).strftime(fmt)
        self._template = env.from_string(source)
        self._bos = bos_token
        self._eos = eos_token

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for these messages, ending where the assistant's turn begins."""
        try:
            return self._template.render(
                messages=[m.model_dump() for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except TemplateError as exc:
            raise ConfigError(
                f"the model's chat template rejected these messages: {exc}", parameter="messages"
            ) from None
