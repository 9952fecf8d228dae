"""The admin UI at /ui through the real proxy (uvicorn on a thread), as a browser's HTTP exchanges are: signing in
(and who may), the session cookie (its flags, its signature, its expiry, the key read again on every page), CSRF
on every form, the security headers, escaping of a tenant's text, and the keys page's actions. The same pages in
a real browser: tests/test_ui_browser.py."""

from __future__ import annotations

import re
import time

import pytest
import requests
from test_keys import MASTER, Served, no_http_proxy, serving  # noqa: F401 (no_http_proxy: an autouse fixture)

from gesso.proxy import store, ui


@pytest.fixture
def proxy(database_url, aws):
    store.upgrade(database_url)
    with serving(database_url, aws) as served:
        yield served


PAYLOADS = ("<script>window.__xss=1</script>", '"><img src=x onerror="window.__xss=1">')


def signed_in(proxy: Served, key: str = MASTER) -> requests.Session:
    browser = requests.Session()
    page = browser.get(proxy.url + "/ui/login", timeout=10)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = browser.post(proxy.url + "/ui/login", data={"csrf": csrf, "key": key}, timeout=10, allow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/overview", answer.text
    return browser


def csrf_of(page: requests.Response) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_signing_in_the_cookie_and_the_headers(proxy, emulator):
    fresh = requests.Session()
    answer = fresh.get(proxy.url + "/ui", timeout=10, allow_redirects=False)
    assert answer.status_code == 303
    assert fresh.get(proxy.url + "/ui/keys", timeout=10, allow_redirects=False).headers["location"] == "/ui/login"
    login = fresh.get(proxy.url + "/ui/login", timeout=10)
    assert login.status_code == 200 and 'type="password"' in login.text
    for name, value in ui.HEADERS.items():
        assert login.headers[name] == value
    assert "unsafe-inline" not in login.headers["content-security-policy"]
    assert "<script>" not in login.text and "style=" not in login.text  # nothing inline for the policy to block
    # a sign-in needs the form's token (a page elsewhere cannot sign a browser in to this proxy)
    refused = fresh.post(proxy.url + "/ui/login", data={"key": MASTER}, timeout=10, allow_redirects=False)
    assert refused.status_code == 403
    wrong = fresh.post(proxy.url + "/ui/login", data={"key": "sk-nope", "csrf": csrf_of(fresh.get(proxy.url + "/ui/login"))},
                       timeout=10)  # fmt: skip
    assert wrong.status_code == 401 and "not one this proxy accepts" in wrong.text

    browser = signed_in(proxy)
    cookie = next(c for c in browser.cookies if c.name == ui.COOKIE)
    assert cookie.path == "/ui" and not cookie.secure  # (Secure over TLS: this is plain HTTP on loopback)
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.get_nonstandard_attr("SameSite") == "strict"
    assert MASTER not in cookie.value and MASTER[3:] not in cookie.value  # the key's hash or "admin", signed
    keys_page = browser.get(proxy.url + "/ui/keys", timeout=10)
    assert keys_page.status_code == 200 and "admin (master key)" in keys_page.text

    # a cookie changed by a byte, or from another master key, or past its expiry, is no session
    body, mac = cookie.value.split(".")
    for forged in (body + "." + mac[:-1] + ("0" if mac[-1] != "0" else "1"), body[:-2] + "xx." + mac, "junk"):
        stranger = requests.Session()
        stranger.cookies.set(ui.COOKIE, forged, path="/ui")
        assert stranger.get(proxy.url + "/ui/keys", timeout=10, allow_redirects=False).status_code == 303
    app_ui = ui.Ui(type("Host", (), {"config": type("C", (), {"master_key": MASTER})()})())
    expired = app_ui._sign({"h": "admin", "exp": int(time.time()) - 1, "c": "x"})
    stale = requests.Session()
    stale.cookies.set(ui.COOKIE, expired, path="/ui")
    assert stale.get(proxy.url + "/ui/keys", timeout=10, allow_redirects=False).status_code == 303
    # signing out needs the session's token too
    browser.post(proxy.url + "/ui/logout", data={"csrf": "wrong"}, timeout=10)
    assert browser.get(proxy.url + "/ui/keys", timeout=10, allow_redirects=False).status_code == 200
    browser.post(proxy.url + "/ui/logout", data={"csrf": csrf_of(keys_page)}, timeout=10)
    assert browser.get(proxy.url + "/ui/keys", timeout=10, allow_redirects=False).status_code == 303
    copied = requests.Session()  # a copy of the signed-out cookie (stolen, say) is refused too
    copied.cookies.set(ui.COOKIE, cookie.value, path="/ui")
    assert copied.get(proxy.url + "/ui/keys", timeout=10, allow_redirects=False).status_code == 303


def test_the_keys_page_makes_blocks_and_deletes_keys_and_escapes_a_tenants_text(proxy, emulator):
    browser = signed_in(proxy)
    page = browser.get(proxy.url + "/ui/keys", timeout=10)
    csrf = csrf_of(page)
    # every form needs the session's token
    assert browser.post(proxy.url + "/ui/keys", data={"action": "create"}, timeout=10).status_code == 403
    made = browser.post(proxy.url + "/ui/keys", timeout=10, data={
        "csrf": csrf, "action": "create", "key_alias": PAYLOADS[0], "max_budget": "1", "models": "nova"})  # fmt: skip
    assert made.status_code == 200, made.text
    plaintext = re.search(r'<code id="made-key">(sk-[^<]+)</code>', made.text).group(1)
    # the alias is shown escaped, never as markup
    assert PAYLOADS[0] not in made.text and "&lt;script&gt;window.__xss=1&lt;/script&gt;" in made.text
    proxy.generate_key(key_alias=PAYLOADS[1], metadata={"note": PAYLOADS[0]})
    listed = browser.get(proxy.url + "/ui/keys", timeout=10).text
    assert PAYLOADS[1] not in listed and "&#34;&gt;&lt;img src=x onerror=&#34;window.__xss=1&#34;&gt;" in listed
    assert plaintext not in listed  # shown once
    # the key works; blocked from the page, it is refused; unblocked, it works again
    assert proxy.client(plaintext).images.generate(model="nova", prompt="x", size="320x320").data
    token = next(k["token"] for k in proxy.call("GET", "/key/list?return_full_object=true")[2]["keys"]
                 if k["key_alias"] == PAYLOADS[0])  # fmt: skip
    assert "0.0400" in browser.get(proxy.url + "/ui/keys", timeout=10).text  # its spend
    browser.post(proxy.url + "/ui/keys", data={"csrf": csrf, "action": "block", "key": token}, timeout=10)
    status, _, answer = proxy.call(
        "POST", "/v1/images/generations", key=plaintext, body={"model": "nova", "prompt": "x"}
    )
    assert status == 401 and answer["error"]["code"] == "key_blocked"
    browser.post(proxy.url + "/ui/keys", data={"csrf": csrf, "action": "unblock", "key": token}, timeout=10)
    assert proxy.call("POST", "/v1/images/generations", key=plaintext, body={"model": "nova", "prompt": "x",
                                                                           "size": "320x320"})[0] == 200  # fmt: skip
    # a bad field is the key API's 400, shown on the page
    bad = browser.post(
        proxy.url + "/ui/keys", data={"csrf": csrf, "action": "create", "max_budget": "lots"}, timeout=10
    )
    assert bad.status_code == 400 and "max_budget: a number" in bad.text
    # search, then delete
    found = browser.get(proxy.url + "/ui/keys", params={"q": PAYLOADS[0]}, timeout=10).text
    assert "1 key" in found
    browser.post(proxy.url + "/ui/keys", data={"csrf": csrf, "action": "delete", "key": token}, timeout=10)
    assert proxy.call("GET", f"/key/info?key={token}")[0] == 404


def test_a_virtual_key_signs_in_to_its_own_usage_and_loses_its_session_when_blocked(proxy, emulator):
    own = proxy.generate_key(key_alias="mine")
    other = proxy.generate_key(key_alias="theirs")
    browser = signed_in(proxy, own["key"])
    page = browser.get(proxy.url + "/ui/keys", timeout=10).text
    assert "mine" in page and "theirs" not in page and "Make a key" not in page and "Block" not in page
    # not its to block or delete
    answer = browser.post(proxy.url + "/ui/keys", data={"csrf": csrf_of(browser.get(proxy.url + "/ui/keys")),
                                                         "action": "block", "key": other["token"]}, timeout=10)  # fmt: skip
    assert (
        answer.status_code == 403
        and proxy.call("GET", f"/key/info?key={other['token']}")[2]["info"]["blocked"] is False
    )
    proxy.call("POST", "/key/block", body={"key": own["token"]})
    assert browser.get(proxy.url + "/ui/keys", timeout=10, allow_redirects=False).status_code == 303  # signed out


def test_the_logs_filter_page_and_open_a_row_and_the_models_page(proxy, emulator, monkeypatch):
    monkeypatch.setattr(ui, "LOG_PAGE", 2)
    mine = proxy.generate_key(key_alias="logged")
    body = {"model": "nova", "prompt": "a secret prompt", "size": "320x320"}
    for _ in range(3):
        assert proxy.call("POST", "/v1/images/generations", key=mine["key"], body=body)[0] == 200
    assert proxy.call("POST", "/v1/images/generations", key=mine["key"], body={**body, "model": PAYLOADS[1]})[0] == 404
    assert proxy.call("POST", "/v1/images/generations", body={**body, "model": "canvas"})[0] == 200
    browser = signed_in(proxy)
    page = browser.get(proxy.url + "/ui/logs", timeout=10)
    assert page.status_code == 200 and page.text.count("<tr>") == 1 + 2  # the head and a page of two
    assert "Older" in page.text and "Newer" not in page.text
    older = browser.get(proxy.url + "/ui/logs", params={"page": 2}, timeout=10).text
    assert "Newer" in older and "Older" in older
    failures = browser.get(proxy.url + "/ui/logs", params={"status": "failure"}, timeout=10).text
    assert failures.count("<tr>") == 2 and "failure 404" in failures
    assert PAYLOADS[1] not in failures and "&lt;img src=x onerror=" in failures  # the model name as asked, escaped
    by_model = browser.get(proxy.url + "/ui/logs", params={"model": "canvas"}, timeout=10).text
    assert by_model.count("<tr>") == 2 and "canvas" in by_model
    bad = browser.get(proxy.url + "/ui/logs", params={"start_date": "yesterday"}, timeout=10)
    assert bad.status_code == 400 and "start_date" in bad.text
    # a row's detail: every column, never an image, and the prompt only when the proxy keeps prompts
    request_id = re.search(r'href="/ui/logs/([0-9a-f]{32})"', page.text).group(1)
    detail = browser.get(proxy.url + f"/ui/logs/{request_id}", timeout=10).text
    assert request_id in detail and "store_prompts is off" in detail and "a secret prompt" not in detail
    assert not re.search(r"[A-Za-z0-9+/=]{200,}", detail)
    assert browser.get(proxy.url + "/ui/logs/" + "0" * 32, timeout=10).status_code == 404
    # a virtual key sees its own rows only
    own = signed_in(proxy, mine["key"]).get(proxy.url + "/ui/logs", params={"model": "canvas"}, timeout=10).text
    assert "No request matches." in own
    # the models page: each model name's deployments and their state
    models = browser.get(proxy.url + "/ui/models", timeout=10).text
    assert (
        "nova-a" in models
        and "canvas-a" in models
        and "ready" in models
        and "bedrock/amazon.nova-canvas-v1:0" in models
    )
    assert "0.04-0.08" in models and "end of life 2026-09-30 (passed: calls may fail)" in models  # price, lifecycle


def test_the_overviews_series_and_budget_burn(proxy, emulator):
    burner = proxy.generate_key(key_alias="burner", max_budget=0.2)
    body = {"model": "nova", "prompt": "x", "size": "320x320"}
    for model in ("nova", "nova", "canvas"):
        assert proxy.call("POST", "/v1/images/generations", key=burner["key"], body={**body, "model": model})[0] == 200
    assert proxy.call("POST", "/v1/images/generations", key=burner["key"], body={**body, "size": "7x7"})[0] == 400
    browser = signed_in(proxy)
    assert requests.get(proxy.url + "/ui/api/overview", timeout=10).status_code == 401  # the session's only
    for span, buckets in (("hour", 60), ("day", 48), ("month", 30)):
        data = browser.get(proxy.url + "/ui/api/overview", params={"range": span}, timeout=10).json()
        assert len(data["times"]) == buckets and data["models"] == ["canvas", "nova"]
        assert sum(data["requests"]["nova"]) == 3 and sum(data["images"]["nova"]) == 2  # the 400 is nova's too
        assert sum(data["cost"]["canvas"]) == pytest.approx(0.04)
        # one failure of four, in the newest bucket (or the newest two: the four may straddle a bucket's start)
        last = [i for i, r in enumerate(data["error_rate"]) if r is not None]
        assert len(last) in (1, 2) and last == list(range(last[0], last[0] + len(last)))
        sent = [sum(data["requests"][model][i] for model in data["models"]) for i in last]
        assert sum(sent) == 4 and sum(data["error_rate"][i] * n for i, n in zip(last, sent)) == pytest.approx(1)
        assert data["p50_ms"][last[0]] is not None and data["p99_ms"][last[0]] >= data["p50_ms"][last[0]]
    page = browser.get(proxy.url + "/ui/overview", timeout=10).text
    assert "burner" in page and "60%" in page  # 0.12 of 0.20 USD
    assert '<script src="/ui/static/vendor/uplot/uPlot.iife.min.js" defer></script>' in page
    assert browser.get(proxy.url + "/ui/static/vendor/uplot/uPlot.iife.min.js", timeout=10).status_code == 200


def test_the_teams_users_and_customers_pages(proxy, emulator):
    browser = signed_in(proxy)
    csrf = csrf_of(browser.get(proxy.url + "/ui/teams", timeout=10))
    for kind, fields in (("teams", {"team_id": PAYLOADS[0], "team_alias": "Studio", "max_budget": "2", "models": "nova"}),
                         ("users", {"user_id": "ana", "user_role": "internal_user", "max_budget": "1"}),
                         ("customers", {"user_id": "acme", "alias": PAYLOADS[1], "max_budget": "0.5"})):  # fmt: skip
        made = browser.post(proxy.url + f"/ui/{kind}", data={"csrf": csrf, "action": "create", **fields}, timeout=10)
        assert made.status_code == 200 and "None yet." not in made.text, made.text
        assert PAYLOADS[0] not in made.text and PAYLOADS[1] not in made.text  # escaped
    assert proxy.call("GET", "/team/info?team_id=Studio")[2]["team_info"]["max_budget"] == 2.0
    assert proxy.call("GET", "/customer/info?end_user_id=acme")[2]["alias"] == PAYLOADS[1]
    # the make forms check as the routes do; a taken id is a 400 shown on the page
    bad = browser.post(proxy.url + "/ui/users", data={"csrf": csrf, "action": "create", "user_id": "ana"}, timeout=10)
    assert bad.status_code == 400 and "taken" in bad.text
    bad = browser.post(proxy.url + "/ui/teams", data={"csrf": csrf, "action": "create", "rpm_limit": "-3"}, timeout=10)
    assert bad.status_code == 400 and "rpm_limit" in bad.text
    # block a customer from the page: its requests are refused; delete it
    browser.post(proxy.url + "/ui/customers", data={"csrf": csrf, "action": "block", "id": "acme"}, timeout=10)
    status, _, answer = proxy.call("POST", "/v1/images/generations", body={"model": "nova", "prompt": "x",
                                                                           "user": "acme"})  # fmt: skip
    assert status == 403 and answer["error"]["code"] == "customer_blocked"
    browser.post(proxy.url + "/ui/customers", data={"csrf": csrf, "action": "delete", "id": "acme"}, timeout=10)
    assert proxy.call("GET", "/customer/info?end_user_id=acme")[0] == 404
    gone = browser.post(proxy.url + "/ui/customers", data={"csrf": csrf, "action": "delete", "id": "acme"}, timeout=10)
    assert gone.status_code == 404
    # a virtual key sees none of it; an internal user sees their own teams, read-only
    plain = signed_in(proxy, proxy.generate_key(key_alias="plain")["key"])
    assert plain.get(proxy.url + "/ui/users", timeout=10).status_code == 403
    member = proxy.generate_key(user_id="ana")
    proxy.call("POST", "/team/member_add", body={"team_id": PAYLOADS[0], "member": {"user_id": "ana"}})
    page = signed_in(proxy, member["key"]).get(proxy.url + "/ui/teams", timeout=10).text
    assert "Studio" in page and "Make one" not in page and "Delete" not in page


def test_a_keys_page_shows_its_spend_over_time_and_changes_its_limits(proxy, emulator):
    made = proxy.generate_key(key_alias="edited", max_budget=1.0, rpm_limit=5)
    assert proxy.client(made["key"]).images.generate(model="nova", prompt="x", size="320x320").data
    browser = signed_in(proxy)
    page = browser.get(proxy.url + f"/ui/keys/{made['token']}", timeout=10)
    assert page.status_code == 200 and 'data-key="' + made["token"] in page.text and "0.0400" in page.text
    series = browser.get(proxy.url + "/ui/api/overview", params={"range": "month", "key": made["token"]}, timeout=10)
    assert sum(series.json()["cost"]["nova"]) == pytest.approx(0.04)
    other = proxy.generate_key(key_alias="other")
    empty = browser.get(proxy.url + "/ui/api/overview", params={"range": "month", "key": other["token"]}, timeout=10)
    assert empty.json()["models"] == []
    saved = browser.post(proxy.url + f"/ui/keys/{made['token']}", timeout=10, data={
        "csrf": csrf_of(page), "models": "nova", "max_budget": "2.5", "rpm_limit": "", "ipm_limit": "7"})  # fmt: skip
    assert saved.status_code == 200
    info = proxy.call("GET", f"/key/info?key={made['token']}")[2]["info"]
    assert (info["models"], info["max_budget"], info["rpm_limit"], info["ipm_limit"]) == (["nova"], 2.5, None, 7)
    bad = browser.post(proxy.url + f"/ui/keys/{made['token']}", data={"csrf": csrf_of(page), "ipm_limit": "many"},
                       timeout=10)  # fmt: skip
    assert bad.status_code == 400 and "ipm_limit" in bad.text
    # a key signed in sees its own page, not another's, and cannot change its limits
    own = signed_in(proxy, made["key"])
    assert own.get(proxy.url + f"/ui/keys/{other['token']}", timeout=10).status_code == 404
    assert own.get(proxy.url + "/ui/api/overview", params={"key": other["token"]}, timeout=10).status_code == 404
    mine = own.get(proxy.url + f"/ui/keys/{made['token']}", timeout=10)
    assert mine.status_code == 200 and "Save" not in mine.text
    refused = own.post(proxy.url + f"/ui/keys/{made['token']}", data={"csrf": csrf_of(mine), "max_budget": "99"},
                       timeout=10)  # fmt: skip
    assert refused.status_code == 403


def test_what_the_review_found_stays_fixed(proxy, emulator):
    import http.client
    from urllib.parse import urlsplit

    # non-ASCII in a cookie or a token is refused as any bad token is, never a 500
    where = urlsplit(proxy.url)
    for method, path, headers, body in (
        ("GET", "/ui/keys", {"Cookie": "gesso_ui=abc.\xe9"}, None),
        ("GET", "/ui/api/overview", {"Cookie": "gesso_ui=abc.\xe9"}, None),
        ("POST", "/ui/login", {"Cookie": "gesso_ui_login=x", "Content-Type": "application/x-www-form-urlencoded"},
         "csrf=%C3%A9&key=k"),
        ("POST", "/ui/logout", {"Content-Type": "application/x-www-form-urlencoded"}, "csrf=x&x=" + "a" * 70_000),
    ):  # fmt: skip
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
        conn.putrequest(method, path)
        for name, value in headers.items():
            conn.putheader(name, value.encode("latin-1"))
        data = body.encode() if body else b""
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        status = conn.getresponse().status
        conn.close()
        assert status < 500, (method, path, status)
    browser = signed_in(proxy)
    page = browser.get(proxy.url + "/ui/keys", timeout=10)
    assert (
        browser.post(proxy.url + "/ui/keys", data={"csrf": "\u00e9", "action": "create"}, timeout=10).status_code == 403
    )
    # a sign-in form's token of another site's making (a planted cookie) is refused
    planted = requests.Session()
    planted.cookies.set(ui.LOGIN_COOKIE, "chosen.0", path="/ui")
    answer = planted.post(proxy.url + "/ui/login", data={"csrf": "chosen.0", "key": MASTER}, timeout=10,
                          allow_redirects=False)  # fmt: skip
    assert answer.status_code == 403
    # saving a key's limits does not restart its budget period
    made = proxy.generate_key(key_alias="periodic", max_budget=1.0, budget_duration="30d")
    before = proxy.call("GET", f"/key/info?key={made['token']}")[2]["info"]["budget_reset_at"]
    time.sleep(1.1)
    form = browser.get(proxy.url + f"/ui/keys/{made['token']}", timeout=10)
    browser.post(proxy.url + f"/ui/keys/{made['token']}", timeout=10, data={
        "csrf": csrf_of(form), "max_budget": "1", "budget_duration": "30d", "rpm_limit": "9"})  # fmt: skip
    after = proxy.call("GET", f"/key/info?key={made['token']}")[2]["info"]
    assert after["rpm_limit"] == 9 and after["budget_reset_at"] == before
    # the budget burn is the database's top, not the oldest keys'
    for n in range(3):
        proxy.generate_key(key_alias=f"idle-{n}", max_budget=1.0)
    burner = proxy.generate_key(key_alias="newest-burner", max_budget=0.05)
    assert proxy.client(burner["key"]).images.generate(model="nova", prompt="x", size="320x320").data
    overview = browser.get(proxy.url + "/ui/overview", timeout=10).text
    assert overview.index("newest-burner") < overview.index("periodic")
    # every /ui answer carries the security headers: static files, 404s and 405s too
    for path, method in (("/ui/static/ui.js", "GET"), ("/ui/nope", "GET"), ("/ui/logout", "GET")):
        answer = requests.request(method, proxy.url + path, timeout=10)
        assert answer.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in answer.headers[
            "content-security-policy"], path  # fmt: skip
    # a tenant cannot tell another tenant's key alias from one that does not exist
    own = signed_in(proxy, burner["key"])
    theirs = own.get(proxy.url + "/ui/logs", params={"key": "periodic"}, timeout=10)
    nobody = own.get(proxy.url + "/ui/logs", params={"key": "nobody-has-this"}, timeout=10)
    assert theirs.status_code == nobody.status_code == 404 and "no such key you may see" in theirs.text
    # the search finds aliases that contain the text
    assert "3 keys" in browser.get(proxy.url + "/ui/keys", params={"q": "idle"}, timeout=10).text
    assert page.status_code == 200
