"""The viewer over HTTP (FastAPI's TestClient): every page on real run directories,
untrusted text escaped, no file outside the given folders, and the viewer behind a
server's keys. The same pages in a real browser: test_ui_browser.py."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ui_runs import ITEMS, SCRIPT, make_runs

from relaygraph.graph.runs import read_items
from relaygraph.graph.trace import Trace
from relaygraph.serving.app import create_app
from relaygraph.serving.config import SecurityConfig, ServeConfig
from relaygraph.ui import create_ui_app, mount_viewer

INJECTED_RUN = "<script>window.pwned = 1</script>"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def client(runs: dict[str, Path]) -> TestClient:
    return TestClient(create_ui_app([runs["team"].parent]))


def links(html: str, page: str) -> list[str]:
    """The page's links to ``page``, as paths with their query."""
    found = re.findall(rf'href="http://testserver(/{page}\?[^"]*)"', html)
    return [link.replace("&amp;", "&") for link in found]


def test_runs_page_lists_each_run_with_its_figures(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert set(links(page.text, "run")) == {"/run?r=0%2Fhostile", "/run?r=0%2Fteam"}
    assert "hotpotqa" in page.text and "scripted" in page.text and "EM 100.0%" in page.text
    assert "cascade-team" in page.text  # the loose trace file is listed too
    assert 'action="http://testserver/compare"' in page.text


def test_a_run_shows_its_items_filters_and_plots(client: TestClient, runs: dict[str, Path]) -> None:
    page = client.get("/run", params={"r": "0/team"})
    assert page.status_code == 200
    assert page.text.count('<tr class="item correct">') == ITEMS
    assert len(links(page.text, "trace")) == ITEMS
    for plot in ("by_group.png", "tokens_by_role.png", "latency.png"):
        image = client.get("/plot", params={"r": "0/team", "name": plot})
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

    wrong = client.get("/run", params={"r": "0/hostile", "show": "wrong"})
    assert wrong.text.count('<tr class="item wrong">') == ITEMS
    assert (
        client.get("/run", params={"r": "0/team", "show": "wrong"}).text.count('<tr class="item')
        == 0
    )
    types = {i.groups["type"] for i in read_items(runs["team"]).values()}
    for value in types:
        expected = sum(i.groups["type"] == value for i in read_items(runs["team"]).values())
        shown = client.get("/run", params={"r": "0/team", "g.type": value})
        assert shown.text.count('<tr class="item correct">') == expected


def test_a_trace_shows_timeline_steps_and_each_decision(client: TestClient) -> None:
    run = client.get("/run", params={"r": "0/team"})
    page = client.get(links(run.text, "trace")[0])
    assert page.status_code == 200
    assert page.text.count('<rect class="bar') == 3  # reader twice, then the writer
    assert ">reader</text>" in page.text and ">writer</text>" in page.text
    assert "by topk" in page.text and 'class="num token-cost"' in page.text
    assert "tokens left: <span" in page.text  # the budget before and after each step

    rich = client.get("/trace", params={"file": "0/traces/cascade.json"}).text
    assert "mean_entropy" in rich and "escalate" in rich  # the cascade's rungs
    assert '<table class="rounds">' in rich  # the speculative rounds
    # The report's acceptance rate as recorded (none), not one the viewer computed.
    assert "acceptance_rate <code>None</code>" in rich and "0.75" not in rich
    assert '<td class="num token-cost">45</td>' in rich  # a context item's token cost
    assert '<td class="num">0.620</td>' in rich  # and its routing score
    assert "Lyon" in rich and "2.500" in rich  # extracted answers' scores
    assert "1910" in rich and "58.80 s" in rich


def test_two_runs_compare_item_by_item(client: TestClient) -> None:
    page = client.get("/compare", params={"a": "0/team", "b": "0/hostile"})
    assert page.status_code == 200
    assert f"{ITEMS} items differ" in page.text
    assert "<th>success</th>" in page.text and "-1.000" in page.text


def test_untrusted_text_is_escaped_everywhere(client: TestClient) -> None:
    run = client.get("/run", params={"r": "0/hostile"})
    trace = client.get(links(run.text, "trace")[0])
    compared = client.get("/compare", params={"a": "0/team", "b": "0/hostile"})
    rich = client.get("/trace", params={"file": "0/traces/cascade.json"})
    for page in (run, trace, compared):
        assert INJECTED_RUN not in page.text and "<img src=x" not in page.text
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page.text
    assert SCRIPT not in rich.text
    assert rich.text.count("&lt;script&gt;window.pwned = 3&lt;/script&gt;") >= 6
    assert "<script" not in rich.text  # the trace page loads no script at all


@pytest.mark.parametrize(
    "params",
    [
        {"r": "0/.."},
        {"r": "0/../.."},
        {"r": "0//etc"},
        {"r": "/etc"},
        {"r": "1/team"},
        {"r": "x/team"},
        {"r": "0/team/../../../"},
    ],
)
def test_a_run_key_cannot_leave_the_roots(client: TestClient, params: dict[str, str]) -> None:
    page = client.get("/run", params=params)
    assert page.status_code == 404 and "<h1>Cannot show this</h1>" in page.text


def test_no_file_outside_the_roots_is_read(runs: dict[str, Path], tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    Trace(run_id="f" * 32, thread_id="t", graph="secret-graph", task="secret").save(secret)
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.json").symlink_to(secret)  # a symlink pointing out is refused too
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret-graph")
    run = root / "run"
    run.mkdir()
    for name in ("run.json", "by_group.png"):
        (run / name).write_bytes((runs["team"] / name).read_bytes())
    (run / "leak.png").symlink_to(tmp_path / "secret.png")
    items = (runs["team"] / "items.jsonl").read_text().splitlines()
    forged = json.loads(items[0]) | {"trace": "../../secret.json"}
    (run / "items.jsonl").write_text(json.dumps(forged) + "\n")
    client = TestClient(create_ui_app([root]))

    for path, params in [
        ("/trace", {"file": "0/../secret.json"}),
        ("/trace", {"file": "0/link.json"}),
        ("/trace", {"file": f"0/{secret}"}),
        ("/trace", {"r": "0/run", "item": forged["id"]}),
        ("/plot", {"r": "0/run", "name": "../run/run.json"}),
        ("/plot", {"r": "0/run", "name": "run.json"}),
        ("/plot", {"r": "0/..", "name": "secret.json"}),
        ("/plot", {"r": "0/run", "name": "leak.png"}),
    ]:
        page = client.get(path, params=params)
        assert page.status_code == 404, (path, params)
        assert "secret-graph" not in page.text
    assert "secret-graph" not in client.get("/").text
    assert client.get("/plot", params={"r": "0/run", "name": "by_group.png"}).status_code == 200


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no such file or folder"):
        create_ui_app([tmp_path / "nowhere"])


def test_the_server_lists_its_traces_newest_first() -> None:
    from relaygraph.graph.trace import Trace
    from relaygraph.serving.traces import TraceStore

    store = TraceStore()
    for i in range(3):
        store.add(Trace(run_id=f"{i:032x}", thread_id="t", graph="g", task=f"task {i}"))
    app = create_app({}, traces=store)
    listed = TestClient(app).get("/v1/traces").json()
    assert [row["id"] for row in listed["data"]] == [f"{i:032x}" for i in (2, 1, 0)]
    assert listed["data"][0]["task"] == "task 2"


def test_serve_mounts_the_viewer_behind_its_keys(runs: dict[str, Path]) -> None:
    config = ServeConfig(
        models={"m": {"llm": "scripted"}},  # never loaded: only the config is read here
        security=SecurityConfig(api_keys=["sk-ui"]),
        ui=[runs["team"].parent],
    )
    app = create_app({}, security=config.security)
    mount_viewer(app, config)
    client = TestClient(app)

    refused = client.get("/ui/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    basic = "Basic " + base64.b64encode(b"me:sk-ui").decode()
    wrong = "Basic " + base64.b64encode(b"me:sk-other").decode()
    assert client.get("/ui/", headers={"Authorization": wrong}).status_code == 401
    page = client.get("/ui/", headers={"Authorization": basic})
    assert page.status_code == 200 and 'href="http://testserver/ui/run?r=0%2Fteam"' in page.text
    assert 'href="http://testserver/ui/static/style.css"' in page.text
    bearer = {"Authorization": "Bearer sk-ui"}
    assert client.get("/ui/static/style.css", headers=bearer).status_code == 200
    # Basic is for people at /ui; the API keeps to Bearer.
    assert client.get("/v1/models", headers={"Authorization": basic}).status_code == 401
    assert "www-authenticate" not in client.get("/v1/models").headers


@pytest.mark.slow
@pytest.mark.server
def test_the_command_serves_the_viewer_on_loopback(runs: dict[str, Path]) -> None:
    import os
    import subprocess
    import sys
    import time

    import httpx
    from commands import relaygraph_cli

    from relaygraph.serving.server import free_port

    missing = relaygraph_cli("ui", "no/such/folder")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr

    port = free_port("127.0.0.1")
    command = [sys.executable, "-m", "relaygraph.cli", "ui", str(runs["team"].parent)]
    child = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert child.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert page.status_code == 200 and "0/team" in page.text
    finally:
        child.terminate()
        child.wait(timeout=30)


def test_the_timeline_places_steps_at_their_start() -> None:
    from relaygraph.agents.record import StepRecord
    from relaygraph.ui.views import LABEL_WIDTH, TIMELINE_WIDTH, timeline

    def step(n: int, agent: str, latency: float, start: float | None) -> StepRecord:
        return StepRecord(
            step=n, agent=agent, role="r", turn_step=0, latency_s=latency, started_at=start
        )

    # Two branches in parallel: b and c both start when a ends, c runs longer.
    parallel = Trace(
        run_id="r", thread_id="t", graph="g", task="q",
        steps=[step(0, "a", 1.0, 100.0), step(1, "b", 1.0, 101.0), step(2, "c", 3.0, 101.0)],
    )  # fmt: skip
    drawn = timeline(parallel)
    assert drawn.total_s == 4.0 and [b.start_s for b in drawn.bars] == [0.0, 1.0, 1.0]
    assert drawn.bars[2].x == LABEL_WIDTH + TIMELINE_WIDTH / 4
    assert drawn.bars[2].width == TIMELINE_WIDTH * 3 / 4 and drawn.agents == ["a", "b", "c"]
    # A trace from before steps recorded their start: end to end.
    old = parallel.model_copy(
        update={"steps": [s.model_copy(update={"started_at": None}) for s in parallel.steps]}
    )
    assert [b.start_s for b in timeline(old).bars] == [0.0, 1.0, 2.0]


def test_a_root_may_be_one_run_or_one_trace_file(runs: dict[str, Path]) -> None:
    client = TestClient(create_ui_app([runs["team"], runs["trace"]]))
    page = client.get("/")
    assert set(links(page.text, "run")) == {"/run?r=0%2F"}
    assert links(page.text, "trace") == ["/trace?file=1%2F"]
    assert client.get("/run", params={"r": "0/"}).text.count('<tr class="item correct">') == ITEMS
    assert "cascade-team" in client.get("/trace", params={"file": "1/"}).text
    assert client.get("/trace", params={"file": "1/../team/run.json"}).status_code == 404
