"""The pages of `arbe serve` in headless Chromium, driven by Playwright.

Each test runs the real `arbe serve` command on 127.0.0.1 and Debian's
`/usr/bin/chromium`; the bots' replies come from detached `arbe worker`
processes, as for a user. Screenshots of every page go to `tmp_path/screens`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.daytona import FakeDaytona
from tests.serve.conftest import ServeProcess, chromium_path

#: Set to 1 (as CI does) to fail, not skip, the browser tests without Chromium.
REQUIRE_VARIABLE = "ARBE_REQUIRE_CHROMIUM"

#: The launch flags for a closed network: no background traffic to Google.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Milliseconds a page may take to show a bot's reply (a worker process starts).
REPLY_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Launch Debian's Chromium once for the module, or skip without it."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        reason = (
            "Chromium not found at /usr/bin/chromium or on PATH; install it "
            "with `apt-get install -y chromium`"
        )
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{reason} ({REQUIRE_VARIABLE}=1 requires the browser tests).")
        pytest.skip(reason)

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def screens(tmp_path: Path) -> Path:
    folder = tmp_path / "screens"
    folder.mkdir()
    return folder


def _create_env(
    page: Any, name: str, runtime: str, repo: str = "", more: str = ""
) -> None:
    """Fill in and submit the "+ Create env" form of the new-thread page."""
    page.click("text=+ Create env")
    form = page.locator("#env-form")
    form.locator("input[name=name]").fill(name)
    form.locator("select[name=runtime]").select_option(runtime)
    form.locator("input[name=repo]").fill(repo)
    form.locator("input[name=more_secrets]").fill(more)
    form.locator("#create-env-button").click()


def _start_thread(page: Any, text: str) -> None:
    page.fill("input[name=model]", "builtin/shell")
    page.fill("textarea[name=text]", text)
    page.click("#start-thread")
    page.wait_for_url(re.compile(r"/threads/thr_\w+$"))


def test_local_env_thread_live(
    page: Any,
    serve_process: Callable[..., ServeProcess],
    local_repo: Path,
    screens: Path,
) -> None:
    """Create an env with "+ Create env", start a thread, watch the reply arrive."""
    from playwright.sync_api import expect

    server = serve_process()
    page.goto(server.url + "/threads/new")
    page.screenshot(path=screens / "new-thread.png", full_page=True)

    _create_env(page, "dev", "local", repo=str(local_repo))
    page.wait_for_url(re.compile(r"/threads/new\?env=dev"))
    expect(page.locator("#env-select")).to_have_value("dev")
    expect(page.locator(".notice")).to_contain_text("Created environment dev")
    page.screenshot(path=screens / "new-thread-env-created.png", full_page=True)

    _start_thread(page, "sleep 2; echo hello-from-sandbox; cat README.md")
    page.evaluate("window.arbeTestMarker = 'same page'")
    rendered_after = int(page.locator("#entries").get_attribute("data-after"))
    reply = page.locator("#entries .kind-tool_result", has_text="hello-from-sandbox")
    expect(reply).to_be_visible(timeout=REPLY_TIMEOUT_MS)
    expect(page.locator("#dispatch-state")).to_have_text(
        "completed", timeout=REPLY_TIMEOUT_MS
    )
    page.screenshot(path=screens / "thread-completed.png", full_page=True)

    assert int(reply.get_attribute("data-seq")) > rendered_after
    assert page.evaluate("window.arbeTestMarker") == "same page"
    expect(page.locator("#entries")).to_contain_text("readme-of-the-test-repo")
    expect(page.locator("#dispatch-error")).to_be_hidden()

    page.goto(server.url + "/environments/dev")
    expect(page.locator("#checks")).to_contain_text("sandbox")
    sandbox_row = page.locator("#checks tr", has_text="is started")
    expect(sandbox_row).to_contain_text("ok")
    page.screenshot(path=screens / "environment.png", full_page=True)

    page.goto(server.url + "/threads")
    expect(page.locator("#threads tbody tr")).to_have_count(1)
    expect(page.locator("#threads")).to_contain_text("completed")
    page.screenshot(path=screens / "threads.png", full_page=True)

    page.goto(server.url + "/environments")
    expect(page.locator("#environments")).to_contain_text("dev")
    page.screenshot(path=screens / "environments.png", full_page=True)


def test_failed_dispatch_shown_failed(
    page: Any,
    serve_process: Callable[..., ServeProcess],
    screens: Path,
) -> None:
    """A required secret that is not set fails the dispatch, shown as failed."""
    from playwright.sync_api import expect

    server = serve_process()
    page.goto(server.url + "/threads/new")
    _create_env(page, "broken", "local", more="MISSING_TOKEN")
    page.wait_for_url(re.compile(r"/threads/new\?env=broken"))
    expect(page.locator("#env-select")).to_have_value("broken")

    _start_thread(page, "echo never-runs")

    state = page.locator("#dispatch-state")
    expect(state).to_have_text("failed", timeout=REPLY_TIMEOUT_MS)
    expect(state).to_have_attribute("data-state", "failed")
    expect(page.locator("#dispatch-error")).to_contain_text("MISSING_TOKEN")
    expect(page.locator("#entries .kind-tool_call")).to_have_count(0)
    page.screenshot(path=screens / "thread-failed.png", full_page=True)

    page.goto(server.url + "/environments/broken")
    expect(page.locator("#diagnose-result")).to_have_text("failed")
    expect(page.locator("#checks tr", has_text="secret MISSING_TOKEN")).to_contain_text(
        "failed"
    )
    page.screenshot(path=screens / "environment-failed.png", full_page=True)


def test_daytona_env_thread_live(
    page: Any,
    serve_process: Callable[..., ServeProcess],
    fake_daytona: FakeDaytona,
    local_repo: Path,
    screens: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against the fake Daytona API: a clear error without the key, then success."""
    from playwright.sync_api import expect

    monkeypatch.setenv("DAYTONA_API_URL", fake_daytona.api_url)
    fake_daytona.create_polls = 1
    fake_daytona.map_url("https://github.com/arbe-test/demo", str(local_repo))
    server = serve_process()
    page.goto(server.url + "/threads/new")

    _create_env(page, "cloud", "daytona", repo="https://github.com/arbe-test/demo")
    expect(page.locator("#env-error")).to_contain_text("DAYTONA_API_KEY")
    expect(page.locator("#create-env")).to_have_attribute("open", "")
    expect(page.locator("#env-form input[name=name]")).to_have_value("cloud")
    page.screenshot(path=screens / "daytona-key-missing.png", full_page=True)
    assert fake_daytona.calls("POST", "/api/sandbox") == []

    stored = httpx.put(
        server.url + "/api/secrets/DAYTONA_API_KEY",
        json={"value": fake_daytona.api_key, "audience": "capability"},
    )
    assert stored.status_code == 201
    page.locator("#env-form #create-env-button").click()
    page.wait_for_url(re.compile(r"/threads/new\?env=cloud"), timeout=REPLY_TIMEOUT_MS)
    expect(page.locator("#env-select")).to_have_value("cloud")
    assert len(fake_daytona.calls("POST", "/api/sandbox")) == 1

    _start_thread(page, "sleep 1; cat README.md")
    expect(page.locator("#entries")).to_contain_text(
        "readme-of-the-test-repo", timeout=REPLY_TIMEOUT_MS
    )
    expect(page.locator("#dispatch-state")).to_have_text(
        "completed", timeout=REPLY_TIMEOUT_MS
    )
    page.screenshot(path=screens / "daytona-thread.png", full_page=True)


def test_login_page_then_threads(
    page: Any,
    serve_process: Callable[..., ServeProcess],
    screens: Path,
) -> None:
    """With --require-token, the browser logs in with the token and gets the pages."""
    from playwright.sync_api import expect

    from tests.helpers import run_arbe

    token = run_arbe("house", "token", "create").stdout.strip()
    server = serve_process("--require-token")

    page.goto(server.url + "/threads/new")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.screenshot(path=screens / "login.png", full_page=True)
    page.fill("input[name=token]", "arbe_wrong")
    page.click("#login-button")
    expect(page.locator(".error")).to_contain_text("not valid")
    page.fill("input[name=token]", token)
    page.click("#login-button")

    page.wait_for_url(re.compile(r"/threads/new$"))
    expect(page.locator("#create-env summary")).to_have_text("+ Create env")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    page.screenshot(path=screens / "signed-in.png", full_page=True)

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(server.url + "/threads")
    page.wait_for_url(re.compile(r"/login\?next=%2Fthreads$"))
