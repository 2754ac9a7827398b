"""The viewer inside ``relaygraph serve``: mounted at ``/ui``, behind the server's keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph.serving.guard import BROWSER_PREFIX
from relaygraph.ui.app import create_ui_app

if TYPE_CHECKING:
    from fastapi import FastAPI

    from relaygraph.serving.config import ServeConfig


def mount_viewer(app: FastAPI, config: ServeConfig) -> None:
    """Mount the viewer over ``config.ui`` (and the server's ``trace_dir``) at ``/ui``.

    The server's `Guard` wraps every route, mounts included, so the viewer asks for the
    same keys as the API (a browser sends the key as a Basic password; see
    `relaygraph.serving.guard`).

    Raises:
        ConfigError: A folder in ``config.ui`` does not exist.
    """
    roots = [*config.ui]
    if config.trace_dir is not None and config.trace_dir.is_dir():
        roots.append(config.trace_dir)
    app.mount(BROWSER_PREFIX, create_ui_app(roots), name="ui")
