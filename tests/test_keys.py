"""Virtual keys, budgets and spend logs through the real proxy (uvicorn on a thread, the ``openai`` client and
urllib), on SQLite and PostgreSQL: the key API, the refusals (401, 403, 429 rpm and budget), one spend row per
request whatever happens, the spend endpoints, and ``gesso keys`` / ``gesso db upgrade``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import openai
import pytest
import uvicorn

from gesso.proxy import config as proxy_config
from gesso.proxy import keys, ledger, store
from gesso.proxy.app import build_app
from gesso_bedrock.emulator import BLOCK_SOME
from helpers import picture, uvicorn_running

NOVA = "bedrock/amazon.nova-canvas-v1:0"
MASTER = "sk-keys-test-master-key"
BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{100,}")  # a hash is 64 hex characters; an image is far longer


class Served:
    def __init__(self, url: str, database_url: str) -> None:
        self.url, self.database_url = url, database_url

    def call(
        self, method: str, path: str, key: str | None = MASTER, body=None, *, raw: bytes | None = None,
        headers: dict | None = None,
    ) -> tuple[int, dict, object]:  # fmt: skip
        """The status, headers (lower-cased) and JSON of one request (``raw``: the body as sent, not JSON-encoded)."""
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                return answer.status, {k.lower(): v for k, v in answer.headers.items()}, json.load(answer)
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.load(exc)

    def generate_key(self, **fields) -> dict:
        status, _, made = self.call("POST", "/key/generate", body=fields)
        assert status == 200, made
        return made

    def client(self, key: str, max_retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=max_retries, timeout=20)

    def logs(self, query: str = "") -> list[dict]:
        status, _, rows = self.call("GET", f"/spend/logs?limit=10000{query}")
        assert status == 200, rows
        return rows

    def store_call(self, scenario):
        """``scenario(Store)`` on the proxy's database, from the test (as another replica would)."""

        async def main():
            s = store.Store(self.database_url)
            try:
                return await scenario(s)
            finally:
                await s.close()

        return asyncio.run(main())


@contextlib.contextmanager
def serving(database_url: str, aws: dict, litellm: dict | None = None, **general):
    config = proxy_config.parse({
        "model_list": [
            {"model_name": name, "litellm_params": {"model": NOVA, **aws, "max_retries": 0},
             "model_info": {"id": f"{name}-a"}} for name in ("nova", "canvas")
        ],
        "general_settings": {"master_key": MASTER, "database_url": database_url, **general},
        "litellm_settings": litellm or {},
    })  # fmt: skip
    served = uvicorn.Config(build_app(config), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    for port in uvicorn_running(served):
        yield Served(f"http://127.0.0.1:{port}", database_url)


@pytest.fixture(autouse=True)
def no_http_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def proxy(database_url, aws):
    store.upgrade(database_url)
    with serving(database_url, aws) as served:
        yield served


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- the key API ------------------------------------------------------------------------------------------------


def test_the_key_api(proxy):
    made = proxy.generate_key(key_alias="team-a", models=["nova"], max_budget=1.0, budget_duration="30d",
                              duration="1h", rpm_limit=100, metadata={"team": "a"})  # fmt: skip
    plaintext, token = made["key"], made["token"]
    assert plaintext.startswith("sk-") and token == store.hash_key(plaintext)
    assert (made["key_alias"], made["models"], made["max_budget"], made["rpm_limit"]) == ("team-a", ["nova"], 1.0, 100)
    assert made["metadata"] == {"team": "a"} and made["spend"] == 0 and made["status"] == "active"
    expires = datetime.datetime.fromisoformat(made["expires"]) - datetime.datetime.now(datetime.timezone.utc)
    assert 3500 < expires.total_seconds() <= 3600
    for given in (plaintext, token, "team-a"):  # the admin names it any way; the plaintext never comes back
        status, _, answer = proxy.call("GET", "/key/info?" + urllib.parse.urlencode({"key": given}))
        assert status == 200 and answer["info"]["token"] == token and answer["key"] == token
        assert plaintext not in json.dumps(answer) and plaintext[3:] not in json.dumps(answer)
    status, _, own = proxy.call("GET", "/key/info", key=plaintext)  # a key reads its own info
    assert status == 200 and own["info"]["key_alias"] == "team-a" and plaintext not in json.dumps(own)

    other = proxy.generate_key(key_alias="team-b")
    status, _, answer = proxy.call("GET", f"/key/info?key={other['token']}", key=plaintext)
    assert status == 403 and answer["error"]["type"] == "permission_error"
    for key in (plaintext, None, "sk-wrong"):  # only the master key manages keys
        status, _, answer = proxy.call("POST", "/key/generate", key=key, body={})
        assert status == 401 and answer["error"]["type"] == "auth_error", key
    status, _, answer = proxy.call("POST", "/key/generate", body={"max_budgt": 1, "models": ["nova"]})
    assert status == 400 and answer["error"]["param"] == "max_budgt" and "max_budgt" in answer["error"]["message"]
    for body, param in (({"budget_duration": "soon"}, "budget_duration"), ({"key_alias": "team-a"}, "key_alias"),
                        ({"max_budget": -1}, "max_budget"), ({"models": "nova"}, "models")):  # fmt: skip
        status, _, answer = proxy.call("POST", "/key/generate", body=body)
        assert status == 400 and answer["error"]["param"] == param, body

    status, _, listed = proxy.call("GET", "/key/list")
    assert status == 200 and sorted(listed["keys"]) == sorted([token, other["token"]]) and listed["total_count"] == 2
    status, _, listed = proxy.call("GET", "/key/list?return_full_object=true&key_alias=team-a")
    assert [k["token"] for k in listed["keys"]] == [token] and plaintext not in json.dumps(listed)

    status, _, updated = proxy.call("POST", "/key/update", body={"key": "team-a", "max_budget": 2.5})
    assert status == 200 and updated["max_budget"] == 2.5 and updated["models"] == ["nova"]
    assert updated["rpm_limit"] == 100 and updated["metadata"] == {"team": "a"} and plaintext not in json.dumps(updated)
    status, _, answer = proxy.call("POST", "/key/update", body={"key": "team-a", "spend": 0})
    assert status == 400 and answer["error"]["param"] == "spend"

    status, _, answer = proxy.call("POST", "/key/delete", body={"key_aliases": ["team-a"]})
    assert status == 200 and answer == {"deleted_keys": ["team-a"]}
    assert proxy.call("GET", f"/key/info?key={token}")[0] == 404
    with pytest.raises(openai.AuthenticationError):
        proxy.client(plaintext).images.generate(model="nova", prompt="x")


def test_refusals(proxy, emulator):
    limited = proxy.generate_key(models=["nova"])["key"]
    assert proxy.client(limited).images.generate(model="nova", prompt="x").data
    with pytest.raises(openai.PermissionDeniedError) as caught:
        proxy.client(limited).images.generate(model="canvas", prompt="x")
    assert caught.value.status_code == 403 and caught.value.body["code"] == "key_model_access_denied"

    with pytest.raises(openai.AuthenticationError) as caught:
        proxy.client("sk-not-a-key-of-this-proxy").images.generate(model="nova", prompt="x")
    assert caught.value.body["code"] == "invalid_api_key"
    status, _, answer = proxy.call("POST", "/v1/images/generations", key=None, body={"model": "nova", "prompt": "x"})
    assert status == 401 and answer["error"]["code"] == "missing_key"

    expiring = proxy.generate_key(duration="1h")
    assert proxy.client(expiring["key"]).images.generate(model="nova", prompt="x").data
    past = store.now() - datetime.timedelta(seconds=1)
    proxy.store_call(lambda s: s.update_key(expiring["token"], {"expires": past}))
    time.sleep(ledger.KEY_TTL)  # changed as another replica would: seen once this replica's cached copy is stale
    with pytest.raises(openai.AuthenticationError) as caught:
        proxy.client(expiring["key"]).images.generate(model="nova", prompt="x")
    assert caught.value.body["code"] == "expired_key" and "expired" in caught.value.body["message"]

    rpm = proxy.generate_key(rpm_limit=1)["key"]
    for _ in range(3):  # three calls within a second: two of them share a minute, whatever the clock says
        try:
            proxy.client(rpm).images.generate(model="nova", prompt="x")
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "rpm_limit" and "1 requests per minute" in exc.body["message"]
            assert 1 <= int(exc.response.headers["retry-after"]) <= 60
            break
    else:
        pytest.fail("the rpm limit was never hit")

    budget = proxy.generate_key(key_alias="one-image", max_budget=0.04, budget_duration="1d")
    client = proxy.client(budget["key"], max_retries=3)
    assert client.images.generate(model="nova", prompt="x").data
    reached = len(emulator.requests)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model="nova", prompt="x")
    assert time.monotonic() - started < 0.5  # no backoff: not retried
    error, headers = caught.value.body, caught.value.response.headers
    assert caught.value.status_code == 429 and error["type"] == error["code"] == "budget_exceeded"
    assert headers["x-should-retry"] == "false" and "retry-after" not in headers
    reset = proxy.call("GET", "/key/info?key=one-image")[2]["info"]["budget_reset_at"]
    assert f"resets at {reset}" in error["message"] and "spent 0.0400 of 0.0400 USD" in error["message"]
    assert len(emulator.requests) == reached  # the refusal sent nothing...
    assert [r["status_code"] for r in proxy.logs(f"&api_key={budget['token']}")] == [429, 200]  # ...once


# -- blocking, the litellm key header, out-of-range input -------------------------------------------------------


def refused_within(replica, key: str) -> float:
    """Send image requests with ``key`` until one is refused as blocked; the seconds that took."""
    started = time.monotonic()
    while True:
        try:
            replica.client(key).images.generate(model="nova", prompt="x")
        except openai.AuthenticationError as exc:
            assert exc.body["code"] == "key_blocked"
            return time.monotonic() - started
        assert time.monotonic() - started < 5, "never refused"


def test_a_key_blocked_on_one_replica_is_refused_on_the_other_within_a_second(database_url, aws, emulator):
    store.upgrade(database_url)
    with serving(database_url, aws) as a, serving(database_url, aws) as b:  # two proxies, one database
        made = a.generate_key(key_alias="blockable")
        assert made["blocked"] is False
        assert b.client(made["key"]).images.generate(model="nova", prompt="x").data
        status, _, blocked = a.call("POST", "/key/block", body={"key": "blockable"})
        assert status == 200 and blocked["blocked"] is True and blocked["token"] == made["token"]
        assert made["key"] not in json.dumps(blocked)
        # the other replica's cached copy of the key lives at most ledger.KEY_TTL (0.5 s): the goal is 1 s
        assert refused_within(b, made["key"]) <= ledger.KEY_TTL + 0.5
        reached = len(emulator.requests)
        for replica in (b, a):  # and the replica that blocked it, at once
            with pytest.raises(openai.AuthenticationError) as caught:
                replica.client(made["key"]).images.generate(model="nova", prompt="x")
            error = caught.value.body
            assert caught.value.status_code == 401 and (error["type"], error["code"]) == ("auth_error", "key_blocked")
            assert "blocked" in error["message"]
        assert len(emulator.requests) == reached  # nothing was sent
        status, _, answer = b.call("GET", "/key/info", key=made["key"])  # refused everywhere, its own info too
        assert status == 401 and answer["error"]["code"] == "key_blocked"
        assert b.call("GET", "/key/info?key=blockable")[2]["info"]["blocked"] is True

        status, _, unblocked = b.call("POST", "/key/unblock", body={"key": made["token"]})  # by its hash
        assert status == 200 and unblocked["blocked"] is False
        time.sleep(ledger.KEY_TTL)
        assert a.client(made["key"]).images.generate(model="nova", prompt="x").data
        status, _, again = a.call("POST", "/key/block", body={"key": made["key"]})  # by its plaintext
        assert status == 200 and again["blocked"] is True
        assert refused_within(b, made["key"]) <= ledger.KEY_TTL + 0.5


def test_blocked_is_a_key_field_and_only_the_master_key_blocks(proxy, emulator):
    made = proxy.generate_key(key_alias="held", blocked=True)  # made blocked: refused from its first request
    assert made["blocked"] is True
    with pytest.raises(openai.AuthenticationError) as caught:
        proxy.client(made["key"]).images.generate(model="nova", prompt="x")
    assert caught.value.body["code"] == "key_blocked"
    other = proxy.generate_key()
    assert other["blocked"] is False
    for key in (other["key"], None, "sk-wrong"):  # only the master key blocks or unblocks
        for path in ("/key/block", "/key/unblock"):
            status, _, answer = proxy.call("POST", path, key=key, body={"key": "held"})
            assert status == 401 and answer["error"]["type"] == "auth_error", (path, key)
    for body, expected in (({}, 400), ({"key": 3}, 400), ({"key": "nobody"}, 404), ({"key": "held", "x": 1}, 400)):
        status, _, answer = proxy.call("POST", "/key/block", body=body)
        assert status == expected and answer["error"]["param"] in ("key", "x"), body

    for blocked, expected in ((False, False), (True, True), (None, False)):  # null clears it
        status, _, updated = proxy.call("POST", "/key/update", body={"key": "held", "blocked": blocked})
        assert status == 200 and updated["blocked"] is expected and updated["key_alias"] == "held"
    assert proxy.client(made["key"]).images.generate(model="nova", prompt="x").data
    status, _, listed = proxy.call("GET", "/key/list?return_full_object=true&key_alias=held")
    assert [k["blocked"] for k in listed["keys"]] == [False]
    for path, body in (("/key/generate", {"blocked": "yes"}), ("/key/update", {"key": "held", "blocked": 1})):
        status, _, answer = proxy.call("POST", path, body=body)
        assert status == 400 and answer["error"]["param"] == "blocked" and "true or false" in answer["error"]["message"]


def test_the_x_litellm_api_key_header_is_read_before_authorization(proxy, emulator):
    made = proxy.generate_key(key_alias="header")

    def client(api_key: str, header: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=api_key, max_retries=0, timeout=20,
                             default_headers={"x-litellm-api-key": header})  # fmt: skip

    for header in (made["key"], f"Bearer {made['key']}", f"bearer {made['key']}"):  # the key, bare or as a bearer
        assert client("another-service-token", header).images.generate(model="nova", prompt="x").data, header
    with pytest.raises(openai.AuthenticationError) as caught:  # it wins over a good Authorization
        client(made["key"], "sk-not-a-key-of-this-proxy").images.generate(model="nova", prompt="x")
    assert caught.value.body["code"] == "invalid_api_key"
    assert [r["status_code"] for r in proxy.logs("&api_key=header")] == [200, 200, 200]

    status, _, listed = proxy.call("GET", "/key/list", key=None, headers={"x-litellm-api-key": MASTER})  # the admin
    assert status == 200 and listed["keys"] == [made["token"]]
    status, _, _ = proxy.call("GET", "/key/list", key=made["key"], headers={"x-litellm-api-key": f"Bearer {MASTER}"})
    assert status == 200
    # (an admin-only route: /key/list now answers a virtual key too, with its own keys)
    status, _, answer = proxy.call("GET", "/user/list", key=MASTER, headers={"x-litellm-api-key": made["key"]})
    assert status == 401 and answer["error"]["type"] == "auth_error"  # the virtual key it names is no admin
    proxy.call("POST", "/key/block", body={"key": "header"})
    with pytest.raises(openai.AuthenticationError) as caught:
        client("another-service-token", made["key"]).images.generate(model="nova", prompt="x")
    assert caught.value.body["code"] == "key_blocked"


def nested(depth: int) -> dict:
    """An object ``depth`` levels deep."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


OUT_OF_RANGE = [  # (the body as sent, the field, what the message says)
    ('{"duration": "99999999999d"}', "duration", "at most 100 years"),
    ('{"duration": "36501d"}', "duration", "at most 100 years"),
    ('{"duration": "30d\\n"}', "duration", "30d"),
    ('{"budget_duration": "99999999999d"}', "budget_duration", "at most 100 years"),
    ('{"budget_duration": "0000000000000001d"}', "budget_duration", "30d"),
    (json.dumps({"rpm_limit": 10**20}), "rpm_limit", "from 0 to 2147483647"),
    (json.dumps({"rpm_limit": 2**31}), "rpm_limit", "from 0 to 2147483647"),
    ('{"max_budget": 1e400}', "max_budget", "from 0 to 1000000000"),
    (json.dumps({"max_budget": 10**400}), "max_budget", "from 0 to 1000000000"),
    ('{"max_budget": 1e10}', "max_budget", "from 0 to 1000000000"),
    (json.dumps({"metadata": nested(33)}), "metadata", "at most 32 levels"),
    (json.dumps({"metadata": {"notes": "x" * 70_000}}), "metadata", "at most 65536 bytes"),
    ('{"metadata": {"x": 1e400}}', "metadata", "finite"),
    ('{"max_budget": NaN}', None, "not valid JSON"),
    ('{"metadata": {"x": Infinity}}', None, "not valid JSON"),
]


@pytest.mark.parametrize("route", ["/key/generate", "/key/update"])
def test_out_of_range_key_fields_are_400s_naming_the_field(proxy, route):
    proxy.generate_key(key_alias="target", rpm_limit=5)
    for text, param, says in OUT_OF_RANGE:
        body = text if route == "/key/generate" else '{"key": "target", ' + text[1:]
        status, _, answer = proxy.call("POST", route, raw=body.encode())
        assert status == 400, (body[:80], answer)
        assert answer["error"]["param"] == param and says in answer["error"]["message"], (body[:80], answer)
        if param is not None:
            assert answer["error"]["message"].startswith(f"{param}: ")
    assert proxy.call("GET", "/key/info?key=target")[2]["info"]["rpm_limit"] == 5  # nothing was changed

    limits = {"duration": "36500d", "budget_duration": "36500d", "rpm_limit": 2**31 - 1, "max_budget": 1e9,
              "metadata": {"deep": nested(31), "notes": "x" * 60_000}}  # fmt: skip
    named = {"key": "target"} if route == "/key/update" else {}
    status, _, made = proxy.call("POST", route, body={**named, **limits})
    assert status == 200, made
    assert (made["rpm_limit"], made["max_budget"], made["metadata"]) == (2**31 - 1, 1e9, limits["metadata"])
    century = datetime.datetime.fromisoformat(made["expires"]) - datetime.datetime.now(datetime.timezone.utc)
    assert 36_499 < century.total_seconds() / 86_400 <= 36_500
    assert proxy.call("GET", f"/key/info?key={made['token']}")[2]["info"]["budget_reset_at"] == made["budget_reset_at"]


def test_chosen_keys_and_queries_out_of_range_are_400s(proxy):
    chosen = "sk-chosen-by-the-admin-0001"
    assert proxy.generate_key(key=chosen)["key"] == chosen
    for key, says in ((chosen, "exists already"), (MASTER, "master key"), ("sk-has a space in it", "visible ASCII"),
                      ("sk-" + "x" * 254, "16 to 256"), ("sk-short", "16 to 256")):  # fmt: skip
        status, _, answer = proxy.call("POST", "/key/generate", body={"key": key})
        assert status == 400 and answer["error"]["param"] == "key" and says in answer["error"]["message"], key
    assert proxy.generate_key(key="sk-" + "x" * 253)["key_name"] == "sk-...xxxx"

    for path, param in (("/key/list?page=99999999999999999999", "page"), ("/key/list?page=%C2%B2", "page"),
                        ("/key/list?size=0", "size"), ("/spend/logs?limit=" + "9" * 5000, "limit")):  # fmt: skip
        status, _, answer = proxy.call("GET", path)
        assert status == 400 and answer["error"]["param"] == param, path[:60]
        assert "from 1 to 1000000000" in answer["error"]["message"]
    for path in ("/spend/logs?end_date=9999-12-31", "/spend/logs?start_date=0001-01-01", "/spend/logs?model=%00",
                 "/spend/report?end_date=9999-12-31", "/key/list?key_alias=%00"):  # fmt: skip
        assert proxy.call("GET", path)[0] == 200, path  # the newest date, and text no row holds (a NUL)
    assert proxy.call("GET", "/key/info?key=%00")[0] == 404
    assert proxy.call("POST", "/key/update", body={"key": "\x00", "rpm_limit": 1})[0] == 404
    assert proxy.call("POST", "/key/block", body={"key": "a\x00"})[0] == 404

    port = int(proxy.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    connection.putrequest("POST", "/key/generate")
    connection.putheader("Authorization", f"Bearer {MASTER}")
    connection.putheader("Content-Length", str(keys.MAX_BODY + 1))
    connection.endheaders()  # the head only: the answer comes before any of the body
    answer = connection.getresponse()
    assert answer.status == 413 and json.load(answer)["error"]["code"] == "request_too_large"
    connection.close()


def test_a_key_or_alias_taken_in_a_race_is_a_400(proxy, monkeypatch):
    chosen = "sk-chosen-by-the-admin-0002"
    proxy.generate_key(key=chosen, key_alias="first")
    second = proxy.generate_key(key_alias="second")

    async def unchecked(self, value):  # as if another request wrote its row between the check and the insert
        return None

    monkeypatch.setattr(keys.KeyApi, "_unique_key", unchecked)
    monkeypatch.setattr(keys.KeyApi, "_unique_alias", unchecked)
    for path, body, param in (("/key/generate", {"key": chosen}, "key"),
                              ("/key/generate", {"key_alias": "first"}, "key_alias"),
                              ("/key/update", {"key": second["token"], "key_alias": "first"}, "key_alias")):  # fmt: skip
        status, _, answer = proxy.call("POST", path, body=body)
        says = {"key": "exists already", "key_alias": "is taken"}[param]
        assert status == 400 and answer["error"]["param"] == param and says in answer["error"]["message"], answer
    monkeypatch.undo()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # and a real race
        answers = list(pool.map(lambda _: proxy.call("POST", "/key/generate", body={"key_alias": "raced"}), range(8)))
    assert sorted(status for status, _, _ in answers) == [200] + [400] * 7
    assert all(answer["error"]["param"] == "key_alias" for status, _, answer in answers if status == 400)


# -- spend logs -------------------------------------------------------------------------------------------------


def send_and_hang_up(port: int, key: str, after: float) -> None:
    body = json.dumps({"model": "canvas", "prompt": "x"}).encode()
    head = (f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode() + body)
        time.sleep(after)


def test_one_spend_row_per_request_whatever_happens(proxy, emulator):
    made = proxy.generate_key(key_alias="spender", max_budget=0.2)
    client = proxy.client(made["key"])
    raw = client.images.with_raw_response.generate(model="nova", prompt="a lighthouse")  # success: 0.04
    assert raw.status_code == 200 and float(raw.headers["x-gesso-response-cost"]) == pytest.approx(0.04)
    filtered = client.images.generate(model="nova", prompt=f"a cat {BLOCK_SOME}", n=4)  # 0.16 held, 0.08 paid
    assert len(filtered.data) == 2
    edited = client.images.edit(model="canvas", image=("a.png", picture(512, 512), "image/png"), prompt="a door")
    assert len(edited.data) == 1  # 0.04: spent 0.16 of 0.2
    emulator.inject("error", count=1)
    with pytest.raises(openai.InternalServerError):  # a provider error: its hold released
        client.images.generate(model="nova", prompt="x")
    with pytest.raises(openai.BadRequestError):  # refused before any budget is touched
        client.images.generate(model="nova", prompt="x", extra_body={"cfgScale": 99})
    emulator.inject("latency", seconds=1, count=1)
    send_and_hang_up(int(proxy.url.rsplit(":", 1)[1]), made["key"], after=0.3)  # the client goes away
    with pytest.raises(openai.RateLimitError):  # 0.16 + 0.08 > 0.2
        client.images.generate(model="nova", prompt="x", n=2)
    with pytest.raises(openai.AuthenticationError):  # no key: a row too, with no key on it
        proxy.client("sk-wrong-key-entirely").images.generate(model="nova", prompt="x")

    wait_for(lambda: len(proxy.logs()) == 8, 5)
    rows = proxy.logs(f"&api_key={made['key']}")
    assert [(r["status"], r["status_code"], r["images"]) for r in reversed(rows)] == [
        ("success", 200, 1), ("success", 200, 2), ("success", 200, 1), ("failure", 502, 0),
        ("failure", 400, 0), ("cancelled", 499, 0), ("failure", 429, 0),
    ]  # fmt: skip
    assert [r["error_type"] for r in reversed(rows)][3:] == [
        "api_error",
        "invalid_request_error",
        "client_disconnected",
        "budget_exceeded",
    ]
    assert {r["token_hash"] for r in rows} == {made["token"]} and {r["key_alias"] for r in rows} == {"spender"}
    assert rows[-1]["deployment"] == "nova-a" and rows[-1]["model_id"] == NOVA and rows[-1]["latency_ms"] > 0
    # the call whose client hung up had reached the provider: priced as sent (0.04), so hanging up spends nothing
    assert sum(r["cost"] for r in rows) == pytest.approx(0.20)
    assert [r["cost"] for r in reversed(rows)][5] == pytest.approx(0.04)
    info = proxy.call("GET", "/key/info?key=spender")[2]["info"]
    assert info["spend"] == pytest.approx(0.20)
    # the replica's budget lease is given back once idle (ledger.LEASE_IDLE, checked every ledger.UPKEEP seconds)
    wait_for(lambda: proxy.store_call(lambda s: s.get_key(made["token"])).reserved < 1e-9, 3 * ledger.LEASE_IDLE)
    assert proxy.store_call(lambda s: s.get_key(made["token"])).reserved == pytest.approx(0.0, abs=1e-9)

    async def every_row(s):
        async with s.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(store.spend_logs.select())).all()]

    everything = proxy.store_call(every_row)
    assert len(everything) == 8
    for row in everything:
        for column, value in row.items():
            assert not BASE64_RUN.search(str(value)), (column, str(value)[:80])
        assert row["prompt"] is None  # store_prompts is off

    today = datetime.datetime.now(datetime.timezone.utc).date()
    assert [r["model_name"] for r in proxy.logs("&model=canvas")] == ["canvas", "canvas"]
    assert len(proxy.logs(f"&start_date={today}&end_date={today}")) == 8
    assert proxy.logs(f"&end_date={today - datetime.timedelta(days=1)}") == []
    assert proxy.logs(f"&start_date={today + datetime.timedelta(days=1)}") == []
    assert proxy.call("GET", "/spend/logs?start_date=yesterday")[0] == 400
    status, _, own = proxy.call("GET", "/spend/logs", key=made["key"])  # a virtual key sees only its own rows
    assert status == 200 and own and {r["token_hash"] for r in own} == {made["token"]}
    status, _, report = proxy.call("GET", f"/spend/report?start_date={today}")
    assert status == 200 and report["total"] == {"requests": 8, "images": 4, "cost": pytest.approx(0.20)}
    mine = {r["model_name"]: r for r in report["rows"] if r["key_alias"] == "spender"}
    assert (mine["nova"]["requests"], mine["nova"]["images"], mine["nova"]["cost"]) == (5, 3, pytest.approx(0.12))
    assert (mine["canvas"]["requests"], mine["canvas"]["images"], mine["canvas"]["day"]) == (2, 1, str(today))


def test_prompts_are_stored_only_with_store_prompts(database_url, aws):
    store.upgrade(database_url)
    for store_prompts in (False, True):
        with serving(database_url, aws, store_prompts=store_prompts) as served:
            served.client(MASTER).images.generate(model="nova", prompt=f"a lighthouse, stored={store_prompts}")
    with serving(database_url, aws) as served:
        prompts = [r["prompt"] for r in reversed(served.logs())]
    assert prompts == [None, "a lighthouse, stored=True"]


# -- the command line -------------------------------------------------------------------------------------------


def gesso(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gesso", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})  # fmt: skip


@pytest.mark.slow  # starts subprocesses
def test_gesso_db_upgrade_and_gesso_keys(database_url, aws):
    upgraded = gesso("db", "upgrade", "--database-url", database_url)
    assert upgraded.returncode == 0 and "newest schema" in upgraded.stdout, upgraded.stderr
    with serving(database_url, aws) as served:
        env = {"GESSO_MASTER_KEY": MASTER, "GESSO_PROXY_URL": served.url}
        made = gesso("keys", "generate", "--alias", "cli", "--models", "nova,canvas", "--max-budget", "1.5",
                     "--budget-duration", "30d", "--rpm-limit", "10", "--metadata", '{"team": "cli"}', env=env)  # fmt: skip
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)
        assert key["key"].startswith("sk-") and key["models"] == ["nova", "canvas"] and key["max_budget"] == 1.5
        assert served.client(key["key"]).images.generate(model="canvas", prompt="x").data
        listed = gesso("keys", "list", env=env)
        assert listed.returncode == 0 and [k["key_alias"] for k in json.loads(listed.stdout)["keys"]] == ["cli"]
        info = gesso("keys", "info", "cli", env=env)
        assert info.returncode == 0 and key["key"] not in info.stdout
        assert json.loads(info.stdout)["info"]["spend"] == pytest.approx(0.04)
        blocked = gesso("keys", "block", "cli", env=env)
        assert blocked.returncode == 0 and json.loads(blocked.stdout)["blocked"] is True, blocked.stderr
        with pytest.raises(openai.AuthenticationError):
            served.client(key["key"]).images.generate(model="canvas", prompt="x")
        unblocked = gesso("keys", "unblock", key["token"], env=env)
        assert unblocked.returncode == 0 and json.loads(unblocked.stdout)["blocked"] is False, unblocked.stderr
        assert served.client(key["key"]).images.generate(model="canvas", prompt="x").data
        deleted = gesso("keys", "delete", "cli", env=env)
        assert deleted.returncode == 0 and json.loads(deleted.stdout) == {"deleted_keys": ["cli"]}
        gone = gesso("keys", "info", "cli", env=env)
        assert gone.returncode == 1 and "404" in gone.stderr
        refused = gesso("keys", "list", env={**env, "GESSO_MASTER_KEY": "sk-not-the-master"})
        assert refused.returncode == 1 and "401" in refused.stderr
