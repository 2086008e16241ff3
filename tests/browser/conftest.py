"""The web console in a real browser: Debian's Chromium driven by Playwright.

No browser is downloaded: Playwright launches ``/usr/bin/chromium`` (``apt-get install
chromium``) with flags that keep it off the network. Without it, or without the
``playwright`` package, these tests skip, except under ``TOPICHUB_REQUIRE_BACKENDS=1`` (CI),
where they fail.

Screenshots go to ``test-artifacts/`` (ignored by git).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import PASSWORD, require_backends
from topichub.testing import timeout

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Locator, Page, WebSocket

CHROMIUM = os.environ.get("TOPICHUB_CHROMIUM", "/usr/bin/chromium")
# --headless, and no call to the internet: Chromium otherwise tries to reach Google's
# services at start and fails here.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 360, "height": 740}
WAIT_MS = timeout(30) * 1000


def _unavailable(reason: str) -> None:
    if require_backends():
        pytest.fail(f"{reason} (TOPICHUB_REQUIRE_BACKENDS=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module (module scope: Playwright's sync API runs an event loop
    of its own, which must be gone before the async tests of other modules run)."""
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing: pip install -e '.[dev]'")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=timeout(60) * 1000
        )
        yield launched
        launched.close()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


class Person:
    """One person at the console: a browser context of their own (own sessionStorage)."""

    def __init__(
        self, browser: Browser, base_url: str, username: str, viewport: dict[str, int]
    ) -> None:
        self.username = username
        self.password = PASSWORD
        self.base_url = base_url
        self.context: BrowserContext = browser.new_context(viewport=viewport)
        self.context.set_default_timeout(WAIT_MS)
        self.page_errors: list[str] = []
        self.page: Page = self.new_page()

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        if os.environ.get("TOPICHUB_TEST_WS_LOG") == "1":  # debugging: print every frame
            page.on("websocket", self._log_frames)
        page.goto(self.base_url)
        self.page = page
        return page

    def _log_frames(self, ws: WebSocket) -> None:
        ws.on("framesent", lambda frame: print(self.username, "sent", frame))
        ws.on("framereceived", lambda frame: print(self.username, "received", frame))

    # -- signing in ----------------------------------------------------------------------

    def fill_credentials(self, password: str | None = None) -> Locator:
        form = self.page.locator("#auth-form")
        form.get_by_label("Username").fill(self.username)
        form.get_by_label("Password").fill(password if password is not None else self.password)
        return form

    def sign_up(self) -> Person:
        self.fill_credentials().get_by_role("button", name="Create account").click()
        self.wait_connected()
        return self

    def sign_in(self, password: str | None = None) -> Person:
        self.fill_credentials(password).get_by_role("button", name="Sign in").click()
        if password is None:
            self.wait_connected()
        return self

    def wait_connected(self) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator("#link-text")).to_have_text("Connected")

    # -- the sidebar and dialogs ---------------------------------------------------------

    def create_topic(self, name: str, *, private: bool = False) -> None:
        from playwright.sync_api import expect

        self.page.get_by_role("button", name="New topic").click()
        dialog = self.page.locator("#new-topic-dialog")
        dialog.get_by_label("Topic name").fill(name)
        if private:
            dialog.get_by_label("Private").check()
        dialog.get_by_role("button", name="Create").click()
        expect(dialog).to_be_hidden()
        expect(self.page.locator("#conv-title")).to_have_text(f"#{name}")

    def invite(self, username: str) -> None:
        from playwright.sync_api import expect

        self.page.get_by_role("button", name="Invite…").click()
        dialog = self.page.locator("#invite-dialog")
        dialog.get_by_label("Username to invite").fill(username)
        dialog.get_by_role("button", name="Invite").click()
        expect(dialog).to_be_hidden()

    def conversation_button(self, name: str) -> Locator:
        return self.page.locator(f'#sidebar button.conv[data-name="{name}"]')

    def open_conversation(self, name: str) -> None:
        from playwright.sync_api import expect

        self.conversation_button(name).click()
        expect(self.page.locator("#conv-title")).to_have_text(re.compile(rf"^[#@]{name}$"))

    def message_direct(self, username: str) -> None:
        from playwright.sync_api import expect

        self.page.get_by_role("button", name="Message a user").click()
        dialog = self.page.locator("#direct-dialog")
        dialog.get_by_label("Username").fill(username)
        dialog.get_by_role("button", name="Open conversation").click()
        expect(dialog).to_be_hidden()
        expect(self.page.locator("#conv-title")).to_have_text(f"@{username}")

    # -- messages ------------------------------------------------------------------------

    def send(self, text: str) -> None:
        box = self.page.locator("#message-input")
        box.fill(text)
        box.press("Enter")

    def messages(self, text: str | None = None) -> Locator:
        found = self.page.locator("#messages li.msg")
        if text is not None:
            found = found.filter(has=self.page.locator(".body", has_text=text))
        return found

    def bodies(self) -> list[str]:
        return [b.strip() for b in self.page.locator("#messages li.msg .body").all_inner_texts()]

    def seqs(self) -> list[int]:
        values = self.page.locator("#messages li.msg").evaluate_all(
            "nodes => nodes.map(n => Number(n.dataset.seq))"
        )
        return [int(v) for v in values]

    def toasts(self) -> Locator:
        return self.page.locator("#toasts .toast")

    def screenshot(self, name: str, **kwargs: Any) -> Path:
        path = artifact(name)
        self.page.screenshot(path=str(path), **kwargs)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def people(browser: Browser) -> Iterator[list[Person]]:
    """Every Person a test made; their contexts are closed after it, and their pages must
    not have thrown."""
    made: list[Person] = []
    yield made
    errors = [f"{p.username}: {e}" for p in made for e in p.page_errors]
    for person in made:
        person.close()
    assert not errors, errors
