"""The ``distill`` group: traces turned into a REASON/ACT dataset, a student trained on
it, and students scored against the teacher on held-out steps."""

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from relaygraph.cli.root import LimitOption, SeedOption, check_choice, console, user_errors
from relaygraph.errors import RelayGraphError
from relaygraph.llm.catalog import DEFAULT_MODEL
from relaygraph.llm.registry import load_llm

distill_app = typer.Typer(
    help="Structured REASON/ACT distillation of agent traces into students.",
    no_args_is_help=True,
)


@distill_app.command("build-dataset")
@user_errors
def distill_build_dataset(
    *,
    traces: Annotated[
        list[Path], typer.Argument(help="Trace files and evaluation run directories.")
    ],
    out: Annotated[Path, typer.Option(help="Dataset folder to write.")],
    tokenizer: Annotated[
        str, typer.Option(help="The student's model, whose tokenizer the masks are on.")
    ] = DEFAULT_MODEL,
    only_successful: Annotated[
        bool,
        typer.Option(
            "--only-successful", help="Keep episodes that succeeded (run directories only)."
        ),
    ] = False,
) -> None:
    """Turn traces into examples: the prompt, the teacher's reply, REASON and ACT masks."""
    from relaygraph.distill import build_dataset, save_dataset
    from relaygraph.llm.local import LocalLLM

    student = load_llm(tokenizer)
    if not isinstance(student, LocalLLM):
        raise RelayGraphError(
            f"--tokenizer {tokenizer} is not an embedded model; the student's tokenizer "
            "must be a packaged model or a .gguf file"
        )
    examples, stats = build_dataset(traces, student, only_successful=only_successful)
    save_dataset(examples, stats, out)
    table = Table(title=f"{stats.examples} examples from {stats.episodes} episodes")
    table.add_column("")
    table.add_column("value", justify="right")
    if stats.successful_episodes is not None:
        table.add_row("successful episodes", str(stats.successful_episodes))
    table.add_row("prompt tokens", f"{stats.prompt_tokens:,}")
    table.add_row("target tokens", f"{stats.target_tokens:,}")
    table.add_row("REASON / ACT tokens", f"{stats.reason_tokens:,} / {stats.act_tokens:,}")
    for why, count in stats.skipped.items():
        table.add_row(f"skipped: {why}", str(count))
    console.print(table)
    console.print(f"dataset: {out}")


@distill_app.command("train")
@user_errors
def distill_train(
    *,
    ctx: typer.Context,
    dataset: Annotated[Path, typer.Argument(help="Dataset folder from `distill build-dataset`.")],
    out: Annotated[Path, typer.Option(help="Run folder (resumed when it holds this run).")],
    loss: Annotated[str, typer.Option(help="sft, kd (token-level) or structured.")] = "structured",
    teacher: Annotated[
        str, typer.Option(help="Packaged llama model or .gguf the student starts from.")
    ] = DEFAULT_MODEL,
    layers: Annotated[int, typer.Option(min=1, help="Student blocks (of the teacher's).")] = 8,
    cut: Annotated[
        str, typer.Option(help="spread (evenly spaced blocks) or middle (drop a middle run).")
    ] = "spread",
    frozen: Annotated[
        int, typer.Option(min=0, help="Lowest student blocks kept as they start (not trained).")
    ] = 0,
    steps: Annotated[int, typer.Option(min=1)] = 100,
    batch: Annotated[int, typer.Option(min=1, help="Examples per step (accumulated).")] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-4,
    seed: SeedOption = 0,
    reason_kl: Annotated[float, typer.Option(help="structured: REASON KL weight.")] = 1.0,
    act_kl: Annotated[float, typer.Option(help="structured: ACT KL weight.")] = 1.0,
    act_ce: Annotated[float, typer.Option(help="structured: ACT cross-entropy weight.")] = 1.0,
    precision: Annotated[
        str, typer.Option(help="The GGUF's matrices: f32, f16 or q8_0 (half of f16).")
    ] = "f16",
    prompt_gradient: Annotated[
        bool,
        typer.Option(
            help="Backpropagate through the trained blocks' work on the prompt "
            "(--no-prompt-gradient: the prompt runs without gradient, a much cheaper step)."
        ),
    ] = True,
    curriculum: Annotated[
        bool,
        typer.Option(
            help="Simple to complex: each step draws from the shortest replies, a share "
            "growing to all of them (Structured Agent Distillation's curriculum)."
        ),
    ] = False,
) -> None:
    """Train a student (the teacher's blocks, truncated) and write it as GGUF."""
    from typing import get_args

    from relaygraph.distill.losses import LOSSES
    from relaygraph.distill.options import student_config
    from relaygraph.distill.student import Cut, Precision
    from relaygraph.distill.train import train

    check_choice("--loss", loss, LOSSES)
    check_choice("--cut", cut, get_args(Cut))
    check_choice("--precision", precision, get_args(Precision))
    # every option but the dataset and the folder is the TrainConfig field of its name
    config = student_config(ctx.params)
    result = train(config, dataset, out)
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    console.print(
        f"{result.steps} steps{resumed}, final loss {result.final_loss:.3f}, "
        f"{result.seconds:.0f} s; student {result.student} ({len(result.blocks)} blocks)"
    )
    console.print(f"loss curve: {out / 'loss.png'}")


@distill_app.command("eval")
@user_errors
def distill_eval(
    *,
    dataset: Annotated[Path, typer.Argument(help="Held-out dataset folder (never trained on).")],
    student: Annotated[list[str], typer.Option(help="Student model(s): a .gguf or a name.")],
    teacher: Annotated[str, typer.Option(help="The teacher (scores REASON text).")] = (
        DEFAULT_MODEL
    ),
    limit: LimitOption = None,
    seed: SeedOption = 0,
) -> None:
    """ACT exact match with the teacher (the student replying as the runtime's guided
    steps do), the teacher's perplexity of the student's REASON text, and tokens/s, on
    held-out steps."""
    from relaygraph.distill import load_dataset
    from relaygraph.distill.evaluate import agent_actions, score_student
    from relaygraph.eval.runner import sample_items

    examples, _ = load_dataset(dataset)
    actions = agent_actions(examples)  # before sampling: every action the agents use
    examples = sample_items(examples, limit, seed)
    judge = load_llm(teacher)
    table = Table(title=f"{len(examples)} held-out steps, teacher {teacher}")
    for column in ("student", "ACT match", "parsed", "REASON ppl (teacher)", "tokens/s"):
        table.add_column(column, justify="left" if column == "student" else "right")
    for name in student:
        scores = score_student(load_llm(name), judge, examples, actions)
        ppl = scores.reason_perplexity
        table.add_row(
            name,
            f"{scores.act_match:.1%}",
            f"{scores.parsed:.1%}",
            "-" if ppl is None else f"{ppl:.1f}",
            f"{scores.tokens_per_s:.1f}",
        )
    console.print(table)
