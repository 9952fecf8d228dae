"""The admin UI in a real browser: Debian's Chromium, headless, driven by Selenium through Debian's chromedriver
(.ci/run installs both). The test signs in, makes a key and copies it, sends a request with it through the
``openai`` client, sees its spend on the page, blocks it there and sees the next request refused, and checks that
script payloads put into every field the keys page shows never run. Without /usr/bin/chromium it is skipped
(outside CI only: under CI=true it fails)."""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest
from test_keys import MASTER, no_http_proxy, serving  # noqa: F401 (no_http_proxy: an autouse fixture)

from gesso.proxy import store
from helpers import bench_module

UI_PAGES = bench_module("ui_pages")  # the page-time benchmark: Chromium's paths and set-up, shared
#: what each payload sets if it runs
PAYLOADS = ('<script>window.__xss=1</script>', '"><img src=x onerror="window.__xss=2">',
            "<svg onload=window.__xss=3>")  # fmt: skip


@pytest.fixture
def browser():
    if not UI_PAGES.installed():
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("CI must run the browser tests: apt-get install chromium chromium-driver", pytrace=False)
        pytest.skip("no Chromium here (apt-get install chromium chromium-driver)")
    with UI_PAGES.chromium() as driver:
        yield driver


@pytest.fixture
def proxy(aws, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'ui.db'}"
    store.upgrade(database_url)
    with serving(database_url, aws) as served:
        yield served


@pytest.mark.slow  # starts a browser
def test_sign_in_make_a_key_use_it_block_it_and_no_payload_runs(browser, proxy, emulator, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def submit(button) -> None:
        """Click a form's button and wait for the page it loads."""
        old = browser.find_element(By.TAG_NAME, "html")
        button.click()
        WebDriverWait(browser, 10).until(lambda _: old.id != browser.find_element(By.TAG_NAME, "html").id)

    # screenshots: into the test's directory, or (GESSO_UI_SCREENSHOTS=docs/img) the docs' own
    shots = Path(os.environ.get("GESSO_UI_SCREENSHOTS") or tmp_path)

    def shot(name: str) -> None:
        browser.save_screenshot(str(shots / f"ui-{name}.png"))

    def row_of(alias: str):
        return next(tr for tr in browser.find_elements(By.CSS_SELECTOR, "tbody tr")
                    if tr.find_element(By.CSS_SELECTOR, "td.alias").text == alias)  # fmt: skip

    def fill(field: str, text: str) -> None:
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(text)

    browser.get(proxy.url + "/ui")
    assert browser.current_url.endswith("/ui/login")
    fill("key", MASTER)
    submit(browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
    assert browser.current_url.endswith("/ui/overview") and "admin (master key)" in browser.page_source
    browser.get(proxy.url + "/ui/keys")

    # payloads in every field the page shows: the alias, the models, the team and the owner
    proxy.call("POST", "/team/new", body={"team_id": PAYLOADS[2], "members_with_roles": [{"user_id": PAYLOADS[1]}]})
    made = proxy.generate_key(key_alias=PAYLOADS[1], models=[PAYLOADS[0]], team_id=PAYLOADS[2], user_id=PAYLOADS[1])
    assert made["team_id"] == PAYLOADS[2]
    fill("key_alias", PAYLOADS[0])
    fill("max_budget", "1")
    submit(browser.find_element(By.CSS_SELECTOR, "form.create button[type=submit]"))
    plaintext = browser.find_element(By.ID, "made-key").text
    assert plaintext.startswith("sk-")
    browser.find_element(By.CSS_SELECTOR, "button.copy").click()  # the copy button answers (clipboard or not)
    browser.get(proxy.url + "/ui/keys")
    assert browser.execute_script("return window.__xss === undefined")
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "td.alias")]
    assert set(cells) == {PAYLOADS[0], PAYLOADS[1]}  # shown as text, exactly as given
    assert plaintext not in browser.page_source

    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=plaintext, max_retries=0, timeout=20)
    assert client.images.generate(model="nova", prompt="a lighthouse", size="320x320").data
    # the overview's plots, drawn from the new request (uPlot, served from /ui/static)
    browser.get(proxy.url + "/ui/overview?range=hour")
    WebDriverWait(browser, 10).until(lambda _: browser.execute_script(
        "return document.getElementById('overview').dataset.loaded === 'true'"))  # fmt: skip
    assert len(browser.find_elements(By.CSS_SELECTOR, "#overview div.chart canvas")) == 5
    assert browser.execute_script("return window.__xss === undefined")
    shot("overview")
    browser.get(proxy.url + "/ui/keys")
    row = row_of(PAYLOADS[0])
    assert "0.0400" in row.text
    submit(row.find_element(By.XPATH, ".//button[starts-with(@aria-label, 'Block')]"))
    assert "blocked" in row_of(PAYLOADS[0]).text
    with pytest.raises(openai.AuthenticationError) as refused:
        client.images.generate(model="nova", prompt="a lighthouse", size="320x320")
    assert refused.value.body["code"] == "key_blocked"
    assert browser.execute_script("return window.__xss === undefined")
    shot("keys")
    assert (shots / "ui-keys.png").stat().st_size > 1000
    # the logs: filtered to failures, the blocked key's refused request is there (a request refused before it was
    # authenticated carries no key); it opens to its detail
    browser.get(proxy.url + "/ui/logs")
    browser.find_element(By.CSS_SELECTOR, "#f-status option[value=failure]").click()
    submit(browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == 1 and "failure 401" in rows[0].text
    submit(rows[0].find_element(By.TAG_NAME, "a"))
    assert "auth_error" in browser.page_source and "store_prompts is off" in browser.page_source
    browser.get(proxy.url + "/ui/logs")
    shot("logs")
    browser.get(proxy.url + "/ui/models")
    assert "nova-a" in browser.page_source and "ready" in browser.page_source
    shot("models")
    assert browser.execute_script("return window.__xss === undefined")
    submit(browser.find_element(By.CSS_SELECTOR, "header .signout button"))
    assert browser.current_url.endswith("/ui/login")


AXE_VERSION = "4.14.1"


@pytest.fixture(scope="module")
def axe_source(tmp_path_factory) -> str:
    """axe-core's ``axe.min.js``, from the npm registry (``npm pack axe-core@AXE_VERSION``)."""
    import subprocess
    import tarfile

    into = tmp_path_factory.mktemp("axe")
    try:
        subprocess.run(["npm", "pack", f"axe-core@{AXE_VERSION}", "--pack-destination", str(into)], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the accessibility check: npm pack axe-core failed ({exc})", pytrace=False)
        pytest.skip(f"npm pack axe-core failed ({exc})")
    with tarfile.open(next(into.glob("axe-core-*.tgz"))) as archive:
        member = archive.extractfile("package/axe.min.js")
        assert member is not None
        return member.read().decode()


@pytest.mark.slow  # starts a browser
def test_every_page_passes_axe_cores_default_rules(browser, proxy, emulator, axe_source):
    from selenium.webdriver.common.by import By

    made = proxy.generate_key(key_alias="audited", max_budget=1.0)
    assert proxy.client(made["key"]).images.generate(model="nova", prompt="x", size="320x320").data
    browser.get(proxy.url + "/ui/login")
    checked = {}

    def audit(path: str, broken: bool = False) -> None:
        browser.get(proxy.url + path)
        if broken:  # the harness's own check: an image without a text alternative is a violation axe reports
            browser.execute_script("document.querySelector('main').appendChild(document.createElement('img'))")
        browser.execute_script(axe_source)
        result = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document).then((r) => done(r.violations.map((v) => [v.id, v.help, v.nodes.length])),"
            " (e) => done([['error', String(e), 0]]));"
        )  # fmt: skip
        checked[path] = result

    audit("/ui/login")
    browser.find_element(By.ID, "key").send_keys(MASTER)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    proxy.call("POST", "/team/new", body={"team_id": "audited", "members_with_roles": [{"user_id": "ana"}]})
    proxy.call("POST", "/customer/new", body={"user_id": "acme", "max_budget": 1})
    pages = ("/ui/overview", "/ui/keys", f"/ui/keys/{made['token']}", "/ui/teams", "/ui/users", "/ui/customers",
             "/ui/logs", "/ui/models")  # fmt: skip
    for path in pages:
        audit(path)
    audit("/ui/models?broken", broken=True)
    assert [v[0] for v in checked.pop("/ui/models?broken")] == ["image-alt"]
    assert set(checked) == {"/ui/login", *pages}
    assert all(not violations for violations in checked.values()), checked


@pytest.fixture
def prompts_kept(aws, tmp_path):
    """A proxy that keeps prompts (general_settings.store_prompts), so the log detail shows them."""
    database_url = f"sqlite:///{tmp_path / 'prompts.db'}"
    store.upgrade(database_url)
    with serving(database_url, aws, store_prompts=True) as served:
        yield served


#: the tenant-supplied fields the UI shows, where the test puts each payload
FIELDS = ("key alias", "key models", "team id", "team alias", "owner (user id)", "user email", "customer id",
          "customer alias", "requested model name", "request user", "prompt")  # fmt: skip


@pytest.mark.slow  # starts a browser
def test_no_payload_runs_in_any_field_on_any_page(browser, prompts_kept, emulator):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    proxy = prompts_kept
    for n, payload in enumerate(PAYLOADS):
        team = f"t{n}{payload}"
        proxy.call("POST", "/team/new", body={"team_id": team, "team_alias": f"a{n}{payload}",
                                              "members_with_roles": [{"user_id": f"u{n}{payload}",
                                                                      "user_email": f"e{n}{payload}"}]})  # fmt: skip
        made = proxy.generate_key(key_alias=f"k{n}{payload}", models=["nova", f"m{n}{payload}"], team_id=team,
                                  user_id=f"u{n}{payload}")  # fmt: skip
        proxy.call("POST", "/customer/new", body={"user_id": f"c{n}{payload}", "alias": f"ca{n}{payload}"})
        body = {"model": "nova", "prompt": f"p{n}{payload}", "size": "320x320", "user": f"c{n}{payload}"}
        assert proxy.call("POST", "/v1/images/generations", key=made["key"], body=body)[0] == 200
        proxy.call("POST", "/v1/images/generations", key=made["key"], body={**body, "model": f"x{n}{payload}"})
    browser.get(proxy.url + "/ui/login")
    browser.find_element(By.ID, "key").send_keys(MASTER)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda _: browser.current_url.endswith("/ui/overview"))

    def links(page: str) -> list[str]:
        browser.get(proxy.url + page)
        return [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "tbody a")]

    details, keys = links("/ui/logs"), links("/ui/keys")
    assert len(details) == 2 * len(PAYLOADS) and len(keys) == len(PAYLOADS)
    pages = ["/ui/overview", "/ui/keys", "/ui/teams", "/ui/users", "/ui/customers", "/ui/logs", "/ui/models",
             *details, *keys]  # fmt: skip
    seen = set()
    for page in pages:
        browser.get(page if page.startswith("http") else proxy.url + page)
        assert browser.execute_script("return window.__xss === undefined"), page
        assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img, main svg"), page  # none parsed
        seen.update(payload for payload in PAYLOADS if payload in browser.find_element(By.TAG_NAME, "main").text)
    assert seen == set(PAYLOADS)  # every payload was on a page, as text
    print(f"\nno payload ran: {len(PAYLOADS)} payloads {PAYLOADS} in {len(FIELDS)} fields {FIELDS}, "
          f"{len(pages)} pages")  # fmt: skip


@pytest.mark.slow  # starts a browser
def test_signing_in_and_blocking_a_key_by_keyboard_alone(browser, proxy, emulator):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    leaked = proxy.generate_key(key_alias="leaked")

    def tab_to(found) -> None:
        """Press Tab until the focused element is the one ``found`` accepts."""
        for _ in range(60):
            if found(browser.switch_to.active_element):
                return
            ActionChains(browser).send_keys(Keys.TAB).perform()
        pytest.fail("not reached with Tab")

    browser.get(proxy.url + "/ui/login")
    tab_to(lambda element: element.get_attribute("id") == "key")
    ActionChains(browser).send_keys(MASTER + Keys.ENTER).perform()
    WebDriverWait(browser, 10).until(lambda _: browser.current_url.endswith("/ui/overview"))
    browser.get(proxy.url + "/ui/keys")
    tab_to(lambda element: element.get_attribute("aria-label") == "Block key leaked")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    WebDriverWait(browser, 10).until(
        lambda _: proxy.call("GET", f"/key/info?key={leaked['token']}")[2]["info"]["blocked"]
    )
