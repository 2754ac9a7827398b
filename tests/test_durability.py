"""A run killed mid-graph resumes from its last completed step and loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from relaygraph.agents import Agent
from relaygraph.errors import ConfigError
from relaygraph.graph import AgentGraph
from relaygraph.llm.scripted import ScriptedLLM

SCRIPT = Path(__file__).parent / "scripts" / "durable_graph.py"


def launch(tmp_path: Path, mode: str, db: str) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        str(SCRIPT),
        db,
        "t-1",
        str(tmp_path / "tools.log"),
        mode,
    ]
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )


def tool_calls(tmp_path: Path) -> list[int]:
    log = tmp_path / "tools.log"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_completed_step(tmp_path: Path) -> None:
    kill_and_resume(tmp_path, str(tmp_path / "runs.sqlite"))


def test_a_run_killed_in_one_process_resumes_in_another_through_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    kill_and_resume(tmp_path, postgres_url)


def kill_and_resume(tmp_path: Path, db: str) -> None:
    """Kill a run inside its third tool call, resume it in a new process on ``db``."""
    first = launch(tmp_path, "start", db)
    deadline = time.monotonic() + 60
    while len(tool_calls(tmp_path)) < 3:  # steps 0 and 1 done, step 2 inside its tool
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "the graph never reached its third tool call"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)  # reap it and close its pipes
    before = tool_calls(tmp_path)

    second = launch(tmp_path, "resume", db)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])

    assert result["answer"] == "facts 0-3" and result["error"] is None
    steps = result["trace"]["steps"]
    assert [s["step"] for s in steps] == list(range(len(steps)))  # nothing lost, nothing doubled
    assert [s["action"].get("arguments") for s in steps[:4]] == ["0", "1", "2", "3"]
    calls = Counter(tool_calls(tmp_path))
    assert set(calls) == {0, 1, 2, 3}
    # Completed steps were not redone; only the step that was running when the process
    # died may have started its tool twice.
    assert all(calls[n] == 1 for n in before[:-1])
    assert calls[before[-1]] <= 2


def test_resume_needs_a_checkpointer_and_a_known_thread(tmp_path: Path) -> None:
    g = AgentGraph("g", model=ScriptedLLM(["Thought: x\nAction: finish[1]"]))
    g.add_agent(Agent(name="a")).set_entry("a").set_finish("a")
    with pytest.raises(ConfigError, match="needs a checkpointer"):
        g.compile().resume("t")
    with g.compile(checkpointer=tmp_path / "c.sqlite") as compiled:
        with pytest.raises(ConfigError, match="no run with thread id 'nope'"):
            compiled.resume("nope")
        done = compiled.invoke("q", thread_id="t")
        # Resuming a finished run returns its result without running anything.
        assert compiled.resume("t").trace == done.trace
        assert compiled.trace("t") == done.trace


def test_a_run_that_ends_in_error_leaves_its_checkpoint_intact(tmp_path: Path) -> None:
    g = AgentGraph("g", model=ScriptedLLM(lambda prompt: "no format at all"))
    g.add_agent(Agent(name="a", role="solver")).set_entry("a").set_finish("a")
    with g.compile(checkpointer=tmp_path / "c.sqlite") as compiled:
        failed = compiled.invoke("q", thread_id="bad")
        assert failed.error is not None and failed.error.kind == "parse"
    # A new process (here: a new compiled graph on the same file) sees the same end state.
    with g.compile(checkpointer=tmp_path / "c.sqlite") as reopened:
        assert reopened.trace("bad") == failed.trace
        assert reopened.resume("bad").error == failed.error


def test_an_unreachable_postgres_checkpointer_is_a_clear_error() -> None:
    g = AgentGraph("g", model=ScriptedLLM(["Thought: x\nAction: finish[1]"]))
    g.add_agent(Agent(name="a")).set_entry("a").set_finish("a")
    with pytest.raises(
        ConfigError, match=r"cannot connect to PostgreSQL at postgresql://me:\*\*\*@"
    ):
        g.compile(checkpointer="postgresql://me:secret@127.0.0.1:1/runs")
