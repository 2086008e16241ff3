"""The web console (issue 5) in Chromium: two people sign up, talk in a private topic and
in direct messages, one comes back to pending messages; content never runs as HTML; errors
are put in words; the connection survives a server restart with no gap and no duplicate;
the admin view; the README screenshot.

Every test but the restart and the screenshot runs against the session's server, on SQLite
and on PostgreSQL + Redis (see tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_backends

if importlib.util.find_spec("playwright") is None:
    if require_backends():
        raise ImportError("the playwright package is missing (TOPICHUB_REQUIRE_BACKENDS=1)")
    pytest.skip("the playwright package is missing", allow_module_level=True)

from playwright.sync_api import Browser, expect

from tests.browser.conftest import DESKTOP, PHONE, ROOT, Person, artifact
from tests.conftest import ADMIN_PASSWORD, Account, Backend, Harness, start_server, unique
from topichub.testing import ServerProcess

pytestmark = pytest.mark.timeout(600)


def person(
    people: list[Person], browser: Browser, hub: Harness, prefix: str, viewport=DESKTOP
) -> Person:
    made = Person(browser, hub.server.api_url + "/", unique(prefix), viewport)
    people.append(made)
    return made


def person_for(
    people: list[Person], browser: Browser, base_url: str, account: Account, viewport=DESKTOP
) -> Person:
    """A Person for an account made over REST (then signed in through the page)."""
    made = Person(browser, base_url, account.username, viewport)
    made.password = account.password
    people.append(made)
    return made


def publish(hub: Harness, account: Account, topic: str, content: object) -> int:
    r = hub.http.post(
        f"/api/v1/topics/{topic}/messages", json={"content": content}, headers=hub.auth(account)
    )
    assert r.status_code == 201, r.text
    return int(r.json()["seq"])


def no_horizontal_scroll(page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


# -- two people, a private topic, pending messages, a direct message -----------------------


def test_private_topic_live_pending_and_direct_messages(
    browser: Browser, hub: Harness, people: list[Person]
) -> None:
    ana = person(people, browser, hub, "ana").sign_up()
    bob = person(people, browser, hub, "bob", PHONE).sign_up()
    topic = unique("plans")

    ana.create_topic(topic, private=True)
    ana.invite(bob.username)
    # Bob is told, and the topic shows among his private topics.
    expect(bob.toasts().filter(has_text=f"{ana.username} invited you")).to_be_visible()
    expect(bob.page.locator("#private-list").locator(f'[data-name="{topic}"]')).to_be_visible()
    bob.open_conversation(topic)

    # Live, both ways. Ana's send box does not move when a message arrives.
    composer = ana.page.locator("#composer").bounding_box()
    ana.send("hola bob")
    expect(bob.messages("hola bob")).to_have_count(1)
    bob.send("hola ana")
    expect(ana.messages("hola ana")).to_have_count(1)
    assert ana.page.locator("#composer").bounding_box() == composer
    expect(ana.messages("hola bob")).to_have_class("msg mine")  # my own message, marked
    expect(bob.messages("hola bob")).not_to_have_class("msg mine")
    assert no_horizontal_scroll(bob.page)

    # Bob closes the page; Ana writes three more; Bob comes back and sees each once, pending.
    bob.page.close()
    away = [f"while you were away {n}" for n in range(3)]
    for text in away:
        ana.send(text)
    expect(ana.messages()).to_have_count(5)
    bob.new_page()
    bob.sign_in()
    expect(bob.toasts().filter(has_text="3 messages arrived while you were away")).to_be_visible()
    expect(bob.conversation_button(topic).locator(".unread")).to_have_text("3")
    bob.open_conversation(topic)
    expect(bob.messages()).to_have_count(5)
    assert bob.bodies() == ["hola bob", "hola ana", *away]
    assert bob.seqs() == [1, 2, 3, 4, 5]
    for text in away:
        expect(bob.messages(text)).to_have_count(1)
        expect(bob.messages(text).locator(".pending-badge")).to_have_text(
            "arrived while you were away"
        )
    expect(bob.page.locator("#messages .pending-badge")).to_have_count(3)
    bob.screenshot("private-topic-pending-phone.png")

    # A direct message, by username, both ways.
    ana.message_direct(bob.username)
    ana.send("a direct hello")
    expect(ana.messages("a direct hello")).to_have_count(1)
    bob.page.get_by_role("button", name="Back to conversations").click()
    expect(
        bob.page.locator("#direct-list").locator(f'[data-name="{ana.username}"]')
    ).to_be_visible()
    expect(bob.conversation_button(ana.username).locator(".unread")).to_have_text("1")
    bob.open_conversation(ana.username)
    expect(bob.messages("a direct hello")).to_have_count(1)
    bob.send("a direct reply")
    expect(ana.messages("a direct reply")).to_have_count(1)
    assert ana.bodies() == ["a direct hello", "a direct reply"]
    ana.screenshot("direct-desktop.png")
    bob.screenshot("direct-phone.png")


# -- content is text, never HTML ------------------------------------------------------------

XSS = '<img src=x onerror="window.__xss = 1">'


def test_message_content_shows_as_text_and_never_runs(
    browser: Browser, hub: Harness, people: list[Person]
) -> None:
    author = hub.account("xa")
    topic = hub.topic(author)
    reader = person_for(people, browser, hub.server.api_url + "/", author, PHONE).sign_in()
    reader.open_conversation(topic)

    reader.send(XSS)
    # Shown (so stored first) before the REST publishes below: send() does not wait, and a
    # REST publish racing the browser's frame could take seq 1.
    expect(reader.messages(XSS)).to_have_count(1)
    publish(hub, author, topic, {"html": "<script>window.__xss = 2</script>", "n": [1, 2]})
    long_text = "long " * 2000
    publish(hub, author, topic, long_text)
    publish(hub, author, topic, "x" * 3000)  # one unbreakable word

    expect(reader.messages()).to_have_count(4)
    expect(reader.messages(XSS)).to_have_count(1)
    assert reader.bodies()[0] == XSS
    assert reader.page.locator("#messages img, #messages script").count() == 0
    json_body = reader.page.locator("#messages pre.body.json")
    expect(json_body).to_have_count(1)
    expect(json_body).to_contain_text('"html": "<script>window.__xss = 2</script>"')
    assert reader.page.evaluate("window.__xss") is None
    # Long messages are folded and never widen the page, even at 360 px.
    expect(reader.page.locator("#messages .more")).to_have_count(2)
    assert no_horizontal_scroll(reader.page)
    reader.page.locator("#messages .more").first.click()
    expect(reader.page.locator("#messages .more").first).to_have_text("Show less")
    assert no_horizontal_scroll(reader.page)
    reader.screenshot("content-as-text-phone.png")


# -- history paging, and no jump when a message arrives -------------------------------------


def test_load_older_pages_through_history_and_keeps_the_view_still(
    browser: Browser, hub: Harness, people: list[Person]
) -> None:
    author, member = hub.account("ha"), hub.account("hm")
    topic = hub.topic(author)
    for n in range(1, 61):
        publish(hub, author, topic, f"message {n}")
    # Joined afterwards: the 60 are history, not pending.
    r = hub.http.put(f"/api/v1/topics/{topic}/members/{member.username}", headers=hub.auth(member))
    assert r.status_code == 200, r.text
    reader = person_for(people, browser, hub.server.api_url + "/", member).sign_in()
    reader.open_conversation(topic)

    expect(reader.messages()).to_have_count(50)  # the newest page
    assert reader.seqs() == list(range(11, 61))
    older = reader.page.get_by_role("button", name="Load older messages")
    expect(older).to_be_visible()
    first_shown = reader.messages("message 11").first
    older.click()
    expect(reader.messages()).to_have_count(60)
    assert reader.seqs() == list(range(1, 61))
    expect(reader.page.get_by_text("Start of the conversation")).to_be_visible()
    expect(older).to_be_hidden()
    expect(first_shown).to_be_in_viewport()  # what was on screen stayed on screen

    # Scrolled up in the middle: a new message does not move what is being read.
    scroller = reader.page.locator("#scroller")
    scroller.evaluate("s => { s.scrollTop = s.scrollHeight / 3; }")
    top = scroller.evaluate("s => s.scrollTop")
    reader_box = reader.messages("message 20").bounding_box()
    publish(hub, author, topic, "a new one")
    expect(reader.messages("a new one")).to_have_count(1)
    expect(reader.page.get_by_role("button", name="New messages ↓")).to_be_visible()
    assert scroller.evaluate("s => s.scrollTop") == top
    assert reader.messages("message 20").bounding_box() == reader_box


# -- errors in words ------------------------------------------------------------------------


def test_errors_are_shown_in_words(browser: Browser, hub: Harness, people: list[Person]) -> None:
    existing = hub.account("er")
    private = hub.topic(existing, private=True)
    public = hub.topic(existing)

    visitor = person(people, browser, hub, "ev")
    page = visitor.page
    error = page.locator("#auth-error")
    # Wrong password (for an account that exists), and a name already taken.
    visitor.username = existing.username
    visitor.sign_in(password="not-the-password")
    expect(error).to_have_text("Wrong username or password.")
    visitor.fill_credentials().get_by_role("button", name="Create account").click()
    expect(error).to_have_text(
        f"The name “{existing.username}” is already taken. Choose another name."
    )
    visitor.username = unique("ev")
    visitor.fill_credentials(password="short").get_by_role("button", name="Create account").click()
    expect(error).to_have_text("Choose a password of at least 8 characters.")
    visitor.sign_up()

    # A private topic cannot be joined.
    page.get_by_role("button", name="Join topic").click()
    dialog = page.locator("#join-dialog")
    dialog.get_by_label("Topic name").fill(private)
    dialog.get_by_role("button", name="Join").click()
    expect(dialog.locator(".form-error")).to_have_text(
        f"“{private}” is a private topic: ask one of its members to invite you."
    )
    dialog.get_by_role("button", name="Cancel").click()

    # Writing to a public topic one has not joined.
    visitor.open_conversation(public)
    visitor.send("hello?")
    expect(visitor.toasts().filter(has_text="You are not a member of")).to_have_text(
        re.compile(rf"Not sent to “{public}”: You are not a member of “{public}”")
    )

    # A direct message to nobody.
    page.get_by_role("button", name="Message a user").click()
    dialog = page.locator("#direct-dialog")
    dialog.get_by_label("Username").fill("nobody-at-all")
    dialog.get_by_role("button", name="Open conversation").click()
    expect(dialog.locator(".form-error")).to_have_text("There is no user called “nobody-at-all”.")
    dialog.get_by_role("button", name="Cancel").click()

    # Admins only: the admin view's button is not there for others.
    expect(page.locator("#admin-toggle")).to_be_hidden()
    # Never a raw JSON error on the page.
    assert '{"error"' not in page.locator("body").inner_text()
    visitor.screenshot("errors-desktop.png")


# -- server restart: reconnect, resume with no gap and no duplicate --------------------------


def free_port() -> int:
    """A free port below the kernel's ephemeral range: a port the kernel hands out could
    be taken by some other outgoing connection while the server is down for its restart,
    and the restart would then fail with "address already in use"."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(low // 2, low), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@pytest.fixture
def fixed_port_server(tmp_path: Path, backend: Backend) -> Iterator[ServerProcess]:
    """A server of its own on fixed ports, so that it can restart where the page expects it."""
    server = start_server(
        tmp_path,
        *backend.args,
        "--ws-port",
        str(free_port()),
        "--api-port",
        str(free_port()),
    )
    yield server
    server.stop()


def test_reconnects_after_a_restart_with_no_gap_and_no_duplicate(
    browser: Browser, fixed_port_server: ServerProcess, people: list[Person]
) -> None:
    server = fixed_port_server
    hub = Harness(server)
    try:
        writer, reader_account = hub.account("rw"), hub.account("rr")
        topic = hub.topic(writer)
        r = hub.http.put(
            f"/api/v1/topics/{topic}/members/{reader_account.username}",
            headers=hub.auth(reader_account),
        )
        assert r.status_code == 200, r.text
        reader = person_for(people, browser, server.api_url + "/", reader_account).sign_in()
        reader.open_conversation(topic)
        publish(hub, writer, topic, "before 1")
        publish(hub, writer, topic, "before 2")
        expect(reader.messages()).to_have_count(2)

        assert server.stop() == 0, server.text()
        status = reader.page.locator("#link-text")
        expect(status).to_contain_text("Server restarting")
        expect(reader.toasts().filter(has_text="The server is restarting")).to_be_visible()
        # Written while disconnected: kept, and sent once the connection is back.
        reader.send("typed while the server was down")
        expect(reader.page.locator("#composer-status")).to_contain_text(
            "1 message will be sent when the connection is back"
        )
        reader.screenshot("restarting-desktop.png")

        server.start()
        hub.refresh()
        publish(hub, writer, topic, "after restart")
        expect(status).to_have_text("Connected")
        publish(hub, writer, topic, "live again")
        expect(reader.messages()).to_have_count(5)
        # Each once, none missing; the typed one whenever its turn came after reconnecting.
        bodies = reader.bodies()
        assert bodies[:2] == ["before 1", "before 2"]
        assert sorted(bodies[2:]) == sorted(
            ["after restart", "typed while the server was down", "live again"]
        )
        assert bodies.index("after restart") < bodies.index("live again")
        assert reader.seqs() == [1, 2, 3, 4, 5]
        r = hub.http.get(f"/api/v1/topics/{topic}/messages", headers=hub.auth(writer))
        stored = [m["content"] for m in r.json()["messages"]]
        assert stored == reader.bodies()  # the typed message was stored once
    finally:
        hub.http.close()


# -- the admin view -------------------------------------------------------------------------


def test_admin_view_shows_nodes_topics_backlog_and_errors(
    browser: Browser, hub: Harness, people: list[Person]
) -> None:
    owner, away = hub.account("ao"), hub.account("aa")
    topic = hub.topic(owner)
    r = hub.http.put(f"/api/v1/topics/{topic}/members/{away.username}", headers=hub.auth(away))
    assert r.status_code == 200
    # Big enough to be among the 100 largest backlogs of the shared test server.
    for n in range(150):
        publish(hub, owner, topic, n)
    bad = hub.http.post("/api/v1/token", json={"username": away.username, "password": "wrong-pw"})
    assert bad.status_code == 401

    admin = person_for(people, browser, hub.server.api_url + "/", hub.admin)
    admin.password = ADMIN_PASSWORD
    admin.sign_in()
    toggle = admin.page.get_by_role("button", name="Admin")
    expect(toggle).to_be_visible()
    toggle.click()
    view = admin.page.locator("#admin-view")
    expect(view).to_be_visible()
    port = f":{hub.server.ws_port}"
    expect(view.locator("#nodes-table tbody tr").filter(has_text=port)).to_have_count(1)
    row = view.locator("#topics-table tbody tr").filter(has_text=topic)
    expect(row).to_contain_text("150/min")
    expect(row.locator("td").nth(2)).to_have_text("2")  # members
    backlog = view.locator("#backlog-table tbody tr").filter(has_text=away.username)
    expect(backlog.locator("td").first).to_have_text("150")
    errors = view.locator("#errors-table tbody tr").filter(has_text="wrong username or password")
    expect(errors.first).to_contain_text("unauthorized")
    expect(view.locator("#metrics-table")).to_contain_text("Open connections")
    expect(view.locator("#admin-connections")).to_contain_text("open connection")
    # Refreshed live: a new topic shows up without reloading.
    later = hub.topic(owner)
    expect(view.locator("#topics-table tbody tr").filter(has_text=later)).to_have_count(1)
    admin.screenshot("admin-desktop.png", full_page=True)
    admin.page.set_viewport_size(PHONE)
    assert no_horizontal_scroll(admin.page)
    admin.screenshot("admin-phone.png")

    toggle = admin.page.get_by_role("button", name="Back to chat")
    toggle.click()
    expect(admin.page.locator("#chat-view")).to_be_visible()


# -- the README's screenshot ------------------------------------------------------------------


def test_readme_screenshot(browser: Browser, tmp_path: Path, people: list[Person]) -> None:
    """A tidy scene on a server of its own (SQLite), saved to test-artifacts/. It replaces
    docs/console.png only when that file is missing or TOPICHUB_UPDATE_SCREENSHOTS=1."""
    server = start_server(tmp_path)
    hub = Harness(server)
    try:
        base = server.api_url + "/"
        accounts = {}
        for name in ("ana", "omar", "satoshi"):
            r = hub.http.post("/api/v1/users", json={"username": name, "password": "password-123"})
            assert r.status_code == 201
            accounts[name] = hub.login(name, "password-123")
        ana, omar, satoshi = accounts["ana"], accounts["omar"], accounts["satoshi"]
        for name, private in (("general", False), ("noticias", False), ("release", True)):
            r = hub.http.post(
                "/api/v1/topics",
                json={"topic_name": name, "is_private": private},
                headers=hub.auth(ana),
            )
            assert r.status_code == 201
        for name in ("omar", "satoshi"):
            hub.http.put(f"/api/v1/topics/release/members/{name}", headers=hub.auth(ana))
        hub.http.put("/api/v1/topics/general/members/omar", headers=hub.auth(omar))
        publish(hub, ana, "release", "Release 0.2 goes out on Friday. Anything blocking?")
        publish(hub, satoshi, "release", "The migration for the nodes table is merged.")
        r = hub.http.post(
            "/api/v1/users/omar/messages",
            json={"content": "Can you look at the console screenshots?"},
            headers=hub.auth(satoshi),
        )
        assert r.status_code == 201

        viewer = person_for(people, browser, base, omar).sign_in()
        viewer.open_conversation("release")
        viewer.send("Checked on SQLite and PostgreSQL: all green.")
        expect(viewer.messages()).to_have_count(3)
        viewer.page.close()
        # While omar is away: these come back marked as pending.
        publish(hub, ana, "release", "Great, thanks! Tagging it now.")
        publish(
            hub,
            satoshi,
            "release",
            {"build": "0.2.0", "checks": {"sqlite": "passed", "postgres": "passed"}},
        )
        viewer.new_page()
        viewer.sign_in()
        viewer.open_conversation("release")
        expect(viewer.messages()).to_have_count(5)
        expect(viewer.page.locator("#messages .pending-badge")).to_have_count(2)
        while viewer.toasts().count():
            viewer.toasts().first.get_by_role("button", name="Dismiss").click()
        viewer.page.locator("#message-input").fill("")
        desktop = viewer.screenshot("console-desktop.png")
        viewer.page.set_viewport_size(PHONE)
        assert no_horizontal_scroll(viewer.page)
        viewer.screenshot("console-phone.png")
        readme_image = ROOT / "docs" / "console.png"
        if not readme_image.exists() or os.environ.get("TOPICHUB_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(desktop, readme_image)
        assert artifact("console-desktop.png").stat().st_size > 10_000
    finally:
        hub.http.close()
        server.stop()
