"""A student's `TrainConfig` from command-line options, in one place.

``relaygraph distill train`` and the distillation benchmarks take the student's settings
as options named exactly as `TrainConfig`'s fields (``--layers``, ``--cut``,
``--reason-kl`` ...). `student_config` maps a parsed command line onto the configuration
by those names, so a field added to `TrainConfig` needs only its option, and the command
and the benchmarks cannot drift apart in how they fill it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaygraph.distill.train import TrainConfig

if TYPE_CHECKING:
    from collections.abc import Mapping


def student_config(options: Mapping[str, object], **settings: object) -> TrainConfig:
    """The `TrainConfig` that a command line's options describe.

    Args:
        options: Option values by name, as a parsed command line holds them (a typer
            command's ``ctx.params``, an argparse namespace's ``vars``). Those that are
            no `TrainConfig` field (the dataset, the output folder, a benchmark's own
            settings) are not the student's and are left out.
        **settings: Fields given apart from the command line, over ``options`` (a
            benchmark's loss, seed and span weights per student); an unknown name is an
            error, as in `TrainConfig`.

    Raises:
        pydantic.ValidationError: A value outside its field's range or choices, or an
            unknown name in ``settings``.

    Example:
        >>> config = student_config({"layers": 4, "out": "runs/s"}, loss="kd", seed=1)
        >>> config.layers, config.loss, config.seed
        (4, 'kd', 1)
    """
    fields = {name: value for name, value in options.items() if name in TrainConfig.model_fields}
    return TrainConfig.model_validate(fields | settings)
