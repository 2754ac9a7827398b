"""``python -m relaygraph.cli``: the ``relaygraph`` command."""

from relaygraph.cli import app

if __name__ == "__main__":
    app()
