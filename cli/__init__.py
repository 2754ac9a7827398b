"""The ``relaygraph`` command: thin wrappers over the library, with rich output.

Every user error (unknown model, bad parameter, unreadable file) prints one clear line
and exits with status 2; nothing prints a traceback for a mistake the user can fix.

One module per command group; this file assembles them into one tree:

=====================  ==========================================================  =============
group                  commands                                                    module
=====================  ==========================================================  =============
``relaygraph``         ``models`` ``generate`` ``export``                          `models`
                       ``run``                                                     `run`
                       ``serve`` ``worker``                                        `serve`
                       ``ui``                                                      `ui`
``trace``              ``show``                                                    `run`
``eval``               ``hotpotqa`` ``alfworld`` ``report`` ``compare``            `eval`
                       ``holdout`` ``calibrate``
``eval security``      ``synthesize`` ``run`` ``validate``                         `security`
``distill``            ``build-dataset`` ``train`` ``eval``                        `distill`
``reasoning``          ``record`` ``profile`` ``train``                            `reasoning`
=====================  ==========================================================  =============

`root` holds the root app and what every group shares; `runs` what the commands that
write a run directory share. Commands take keyword-only parameters (typer passes each
option by name), and no module here postpones its annotations (``from __future__ import
annotations``): typer reads them at run time.
"""

from relaygraph.cli import models, run, serve, ui
from relaygraph.cli.distill import distill_app
from relaygraph.cli.eval import eval_app
from relaygraph.cli.reasoning import reasoning_app
from relaygraph.cli.root import app, main
from relaygraph.cli.security import security_app

# root commands in the order --help lists them
for command in (
    models.models,
    models.generate,
    run.run,
    serve.serve,
    serve.worker,
    ui.ui,
    models.export,
):
    app.command()(command)
app.add_typer(run.trace_app, name="trace")
app.add_typer(eval_app, name="eval")
eval_app.add_typer(security_app, name="security")
app.add_typer(distill_app, name="distill")
app.add_typer(reasoning_app, name="reasoning")

__all__ = ["app", "main"]
