"""The viewer in a real browser: headless Chromium from Debian's packages, driven by
Selenium through the system's chromedriver (scripts/install_browser.sh installs both;
nothing is downloaded). Each page opens on run directories made by the test, the test
checks what a person sees, and screenshots go to the test's temporary folder (and, with
RELAYGRAPH_UI_SCREENSHOTS=<folder>, there too: docs/images holds the README's).

Without the browser these tests skip and say how to install it, except in CI (CI=true),
where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ui_runs import ITEMS, make_runs

from relaygraph.agents import Agent
from relaygraph.graph import AgentGraph
from relaygraph.graph.trace import Trace
from relaygraph.llm.scripted import ScriptedLLM
from relaygraph.serving.server import BackgroundServer
from relaygraph.ui import create_ui_app

pytestmark = [pytest.mark.browser, pytest.mark.server]

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SHOTS = os.environ.get("RELAYGRAPH_UI_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        reason = "headless Chromium is not installed: run scripts/install_browser.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--window-size=1360,1000",
        "--disable-gpu",
    ):
        options.add_argument(flag)
    # The system driver, named explicitly: Selenium Manager then fetches nothing.
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(5)  # find_element waits for a page that a click is loading
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_runs(tmp_path_factory.mktemp("runs"))


def _live_graph() -> AgentGraph:
    llm = ScriptedLLM(lambda prompt: "Thought: known\nAction: finish[Paris <b>bold</b>]")
    graph = AgentGraph("live-team", model=llm)
    graph.add_agent(Agent(name="solver", role="solver"))
    return graph.set_entry("solver").set_finish("solver")


@pytest.fixture(scope="module")
def api() -> Iterator[BackgroundServer]:
    """A relaygraph server with a scripted graph, whose traces the live page shows."""
    with BackgroundServer({"live-team": _live_graph().compile()}) as server:
        yield server


@pytest.fixture(scope="module")
def viewer(runs: dict[str, Path], api: BackgroundServer) -> Iterator[str]:
    app = create_ui_app([runs["team"].parent], server=api.base_url)
    with BackgroundServer(app=app) as server:
        yield f"http://{server.host}:{server.port}"


def shoot(driver: webdriver.Chrome, folder: Path, name: str) -> Path:
    """A full-page screenshot (the window grows to the page's height first)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1360, min(max(int(height), 700), 4000))
    path = folder / f"ui-{name}.png"
    assert driver.save_screenshot(str(path))
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SHOTS) / path.name)
    driver.set_window_size(1360, 1000)
    return path


def test_a_person_clicks_from_the_runs_to_an_item_to_a_step(
    browser: webdriver.Chrome, viewer: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    browser.get(viewer + "/")
    assert browser.title.startswith("runs")
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert len(rows) == 2
    assert "EM 100.0%" in browser.find_element(By.ID, "runs").text
    assert shoot(browser, tmp_path, "runs").stat().st_size > 10_000

    browser.find_element(By.LINK_TEXT, "0/team").click()
    WebDriverWait(browser, 10).until(lambda d: "/run?" in d.current_url)
    items = browser.find_elements(By.CSS_SELECTOR, "#items tbody tr.item")
    assert len(items) == ITEMS
    assert all("correct" in row.text for row in items)
    plots = browser.find_elements(By.CSS_SELECTOR, ".plots img")
    assert len(plots) == 3
    assert all(browser.execute_script("return arguments[0].naturalWidth", p) > 100 for p in plots)
    shoot(browser, tmp_path, "run")

    # The filter: only items of one question type stay.
    select = browser.find_element(By.NAME, "g.type")
    value = select.find_elements(By.TAG_NAME, "option")[1].get_attribute("value")
    select.find_element(By.CSS_SELECTOR, f'option[value="{value}"]').click()
    browser.find_element(By.CSS_SELECTOR, "#filters button").click()
    WebDriverWait(browser, 10).until(lambda d: "g.type=" in d.current_url)
    shown = browser.find_elements(By.CSS_SELECTOR, "#items tbody tr.item")
    assert 0 < len(shown) <= ITEMS and all(value in row.text for row in shown)

    shown[0].find_element(By.CLASS_NAME, "trace-link").click()
    WebDriverWait(browser, 10).until(lambda d: "/trace?" in d.current_url)
    bars = browser.find_elements(By.CSS_SELECTOR, "#timeline rect.bar")
    assert len(bars) == 3  # reader, reader, writer
    labels = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#timeline .agent-label")]
    assert labels == ["reader", "writer"]
    assert all(b.size["width"] > 0 for b in bars)
    shoot(browser, tmp_path, "trace")

    # A click on the writer's bar goes to its step; its context shows each item's tokens.
    browser.execute_script(
        "arguments[0].parentNode.dispatchEvent(new MouseEvent('click'))", bars[2]
    )
    WebDriverWait(browser, 5).until(lambda d: d.current_url.endswith("#step-2"))
    step = browser.find_element(By.ID, "step-2")
    assert "by topk" in step.text.lower() and "tokens left" in step.text
    shown = {
        row.find_element(By.TAG_NAME, "code").text: row.find_element(
            By.CLASS_NAME, "token-cost"
        ).text
        for row in step.find_elements(By.CSS_SELECTOR, ".context-items tbody tr")
    }
    task = browser.find_element(By.ID, "task").text
    traces = [Trace.load(f) for f in (runs["team"] / "traces").glob("*.json")]
    recorded = next(t for t in traces if t.task == task).steps[2].context
    assert shown and shown == {i: str(recorded.costs[i]) for i in recorded.items}


def test_a_trace_file_shows_the_cascade_rounds_and_answer_scores(
    browser: webdriver.Chrome, viewer: str, tmp_path: Path
) -> None:
    browser.get(viewer + "/")
    browser.find_element(By.LINK_TEXT, "0/traces/cascade.json").click()
    WebDriverWait(browser, 10).until(lambda d: "/trace?" in d.current_url)
    step = browser.find_element(By.ID, "step-0")
    cascade = step.find_element(By.CSS_SELECTOR, "table.cascade").text
    assert "escalate" in cascade and "0.710" in cascade
    context = step.find_element(By.CSS_SELECTOR, ".context-items").text
    assert "0.1 45 0.620" in context  # item, its tokens, its routing score
    assert len(step.find_elements(By.CSS_SELECTOR, "table.rounds tbody tr")) == 2
    assert "2000 before → 1910 after" in step.text
    scores = browser.find_element(By.CSS_SELECTOR, "#step-1 table.answer-scores").text
    assert scores.splitlines()[1].startswith("Paris")
    shoot(browser, tmp_path, "trace-decisions")


def test_an_injected_script_shows_as_text_and_never_runs(
    browser: webdriver.Chrome, viewer: str, tmp_path: Path
) -> None:
    browser.get(viewer + "/run?r=0/hostile")
    predictions = browser.find_elements(By.CSS_SELECTOR, "#items td.prediction")
    assert predictions and all("<script>window.pwned = 1</script>" in p.text for p in predictions)
    browser.find_element(By.CLASS_NAME, "trace-link").click()
    WebDriverWait(browser, 10).until(lambda d: "/trace?" in d.current_url)
    answer = browser.find_element(By.ID, "answer").text
    assert answer.startswith("<script>window.pwned = 1</script><img src=x")
    browser.get(viewer + "/compare?a=0/team&b=0/hostile")
    browser.get(viewer + "/trace?file=0/traces/cascade.json")
    assert "<script>window.pwned = 3</script>" in browser.find_element(By.ID, "task").text
    for page in ("/run?r=0/hostile", "/compare?a=0/team&b=0/hostile"):
        browser.get(viewer + page)
        assert browser.execute_script("return typeof window.pwned") == "undefined"
        assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img[src=x]")
    assert browser.execute_script("return typeof window.pwned") == "undefined"


def test_two_runs_compare_item_by_item(
    browser: webdriver.Chrome, viewer: str, tmp_path: Path
) -> None:
    browser.get(viewer + "/")
    browser.find_element(By.CSS_SELECTOR, "#compare-form button").click()
    WebDriverWait(browser, 10).until(lambda d: "/compare?" in d.current_url)
    summary = browser.find_element(By.ID, "summary").text
    assert "success" in summary and "-1.000" in summary
    assert len(browser.find_elements(By.CSS_SELECTOR, "#differing tbody tr")) == ITEMS
    shoot(browser, tmp_path, "compare")


def test_live_traces_appear_as_requests_finish(
    browser: webdriver.Chrome, viewer: str, api: BackgroundServer, tmp_path: Path
) -> None:
    browser.get(viewer + "/live")
    rows = "#live-rows tr.live-trace"
    before = len(browser.find_elements(By.CSS_SELECTOR, rows))
    for question in ("Where is the Louvre?", "And the Prado?"):
        reply = httpx.post(
            api.base_url + "/chat/completions",
            json={"model": "live-team", "messages": [{"role": "user", "content": question}]},
            timeout=30,
        )
        assert reply.status_code == 200
    WebDriverWait(browser, 15).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) >= before + 2
    )
    newest = browser.find_elements(By.CSS_SELECTOR, rows)[0].text
    assert "And the Prado?" in newest and "Paris <b>bold</b>" in newest
    shoot(browser, tmp_path, "live")
    browser.find_elements(By.CSS_SELECTOR, f"{rows} a")[0].click()
    WebDriverWait(browser, 10).until(lambda d: "/live/trace?" in d.current_url)
    assert browser.find_element(By.ID, "answer").text == "Paris <b>bold</b>"


def test_the_live_page_says_when_the_server_is_gone(
    browser: webdriver.Chrome, runs: dict[str, Path]
) -> None:
    from relaygraph.serving.server import free_port

    gone = f"http://127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens there
    with BackgroundServer(app=create_ui_app([runs["team"].parent], server=gone)) as viewer:
        browser.get(f"http://{viewer.host}:{viewer.port}/live")
        WebDriverWait(browser, 10).until(
            lambda d: "cannot read the server's traces" in d.find_element(By.ID, "live-status").text
        )
