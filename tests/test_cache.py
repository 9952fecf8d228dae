"""The proxy's exact cache through real ``gesso serve`` replicas on the Bedrock emulator: on SQLite (one replica)
and on PostgreSQL (two, sharing the database and the result store), 1,000 requests over 100 distinct seeded
bodies make 100 provider calls; scopes, Cache-Control, expiry, purging, a blocked key and a revoked model each do
what the docs say; and which calls each family lets a cache answer (a body that fixes its seed)."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import attrs
import pytest
from test_replicas import MASTER, PRICE, call, started

from gesso import api

NOVA = "bedrock/amazon.nova-canvas-v1:0"


def post(url: str, key: str, prompt: str, headers: dict[str, str] | None = None, model: str = "nova"):
    body = {"model": model, "prompt": prompt, "size": "320x320"}
    request = urllib.request.Request(url + "/v1/images/generations", data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.load(exc)


def new_key(url: str, alias: str, **fields) -> str:
    status, _, made = call(url, "POST", "/key/generate", body={"key_alias": alias, "max_budget": 100, **fields})
    assert status == 200, made
    return made["key"]


def lookups(urls: list[str]) -> collections.Counter:
    """gesso_cache_lookups_total by result, over the replicas."""
    counted: collections.Counter = collections.Counter()
    for url in urls:
        raw = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        for result, value in re.findall(r'^gesso_cache_lookups_total\{model_name="nova",result="(\w+)"\} (\S+)$',
                                        raw, re.MULTILINE):  # fmt: skip
            counted[result] += int(float(value))
    return counted


@pytest.mark.slow  # starts subprocesses
@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_thousand_requests_over_a_hundred_seeded_bodies_make_a_hundred_calls(database_url, aws, emulator, tmp_path):
    postgres = database_url.startswith("postgresql")
    names = ("a", "b") if postgres else ("a",)
    with started(database_url, aws, tmp_path, names, model_info={"cache": {"ttl": "1h"}}) as replicas:
        urls = list(replicas)
        key = new_key(urls[0], "cached")
        prompts = [f"a lighthouse, number {i}" for i in range(100)]
        with ThreadPoolExecutor(32) as pool:
            # the first of each body, then 900 repeats (a cache does not merge identical calls in flight: an
            # Idempotency-Key does)
            first = list(pool.map(lambda i: post(urls[i % len(urls)], key, prompts[i]), range(100)))
            again = list(pool.map(lambda i: post(urls[i % len(urls)], key, prompts[i % 100]), range(100, 1000)))
        assert [status for status, _, _ in first + again] == [200] * 1000
        assert emulator.stats()["requests"] == 100
        assert collections.Counter(h["x-gesso-cache"] for _, h, _ in first) == {"miss": 100}
        assert collections.Counter(h["x-gesso-cache"] for _, h, _ in again) == {"hit": 900}
        images = {prompts[i]: answer["data"][0]["b64_json"] for i, (_, _, answer) in enumerate(first)}
        for i, (_, headers, answer) in enumerate(again, start=100):  # each hit is its body's stored answer
            assert answer["data"][0]["b64_json"] == images[prompts[i % 100]]
            assert headers["x-gesso-response-cost"] == f"{PRICE:.6f}" and "x-gesso-replay-of" in headers
        rows = call(urls[-1], "GET", "/spend/logs?limit=10000", key=MASTER)[2]
        assert collections.Counter((row["served_from"], row["cost"]) for row in rows) == {
            (None, PRICE): 100, ("cache", 0.0): 900,
        }  # fmt: skip
        first_ids = {h["x-request-id"] for _, h, _ in first}
        assert {row["replay_of"] for row in rows if row["served_from"] == "cache"} <= first_ids
        assert call(urls[0], "GET", "/key/info?key=cached", key=MASTER)[2]["info"]["spend"] == pytest.approx(4.0)
        assert lookups(urls) == {"miss": 100, "hit": 900}


@pytest.mark.slow  # starts subprocesses
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_scopes_cache_control_expiry_purge_and_refusals(database_url, aws, emulator, tmp_path):
    for scope in ("key", "team", "global"):
        (tmp_path / scope).mkdir()
        with started(database_url, aws, tmp_path / scope, model_info={"cache": {"scope": scope, "ttl": "2s"}}) as reps:
            url, team = reps[0], f"studio-{scope}"
            status, _, _ = call(url, "POST", "/team/new", key=MASTER, body={"team_id": team, "max_budget": 50})
            assert status == 200
            mine, teammate = new_key(url, f"mine-{scope}", team_id=team), new_key(url, f"mate-{scope}", team_id=team)
            stranger = new_key(url, f"stranger-{scope}")
            calls = emulator.stats()["requests"]
            assert post(url, mine, "a harbour")[1]["x-gesso-cache"] == "miss"
            assert post(url, mine, "a harbour")[1]["x-gesso-cache"] == "hit"
            expected = {"key": ("miss", "miss"), "team": ("hit", "miss"), "global": ("hit", "hit")}[scope]
            seen = (post(url, teammate, "a harbour")[1]["x-gesso-cache"],
                    post(url, stranger, "a harbour")[1]["x-gesso-cache"])  # fmt: skip
            assert seen == expected, scope
            assert emulator.stats()["requests"] - calls == 1 + seen.count("miss")
    (tmp_path / "more").mkdir()
    with started(database_url, aws, tmp_path / "more", model_info={"cache": {"ttl": "2s"}}) as reps:
        url = reps[0]
        key = new_key(url, "k")
        assert post(url, key, "a quay", {"Cache-Control": "no-store"})[1]["x-gesso-cache"] == "miss"
        assert post(url, key, "a quay")[1]["x-gesso-cache"] == "miss"  # the first was not kept
        assert post(url, key, "a quay", {"Cache-Control": "no-cache"})[1]["x-gesso-cache"] == "bypass"
        assert post(url, key, "a quay")[1]["x-gesso-cache"] == "hit"
        time.sleep(2.1)
        assert post(url, key, "a quay")[1]["x-gesso-cache"] == "miss"  # expired
        assert post(url, key, "a quay")[1]["x-gesso-cache"] == "hit"

        # a blocked key, and a key no longer allowed the model, are refused before any lookup
        assert call(url, "POST", "/key/block", key=MASTER, body={"key": key})[0] == 200
        assert post(url, key, "a quay")[0] == 401
        assert call(url, "POST", "/key/unblock", key=MASTER, body={"key": key})[0] == 200
        assert call(url, "POST", "/key/update", key=MASTER, body={"key": key, "models": ["other"]})[0] == 200
        time.sleep(0.6)  # a key is read again at most every 0.5 s
        assert post(url, key, "a quay")[0] == 403
        assert call(url, "POST", "/key/update", key=MASTER, body={"key": key, "models": []})[0] == 200
        time.sleep(0.6)
        assert post(url, key, "a quay")[1]["x-gesso-cache"] == "hit"

        # purging: only the master key, by model name; never a listing of what is kept
        assert call(url, "POST", "/cache/purge", key=key, body={})[0] == 401
        assert call(url, "POST", "/cache/purge", key=MASTER, body={"older_than": "soon"})[0] == 400
        swept = call(url, "POST", "/cache/purge", key=MASTER, body={"model": "other"})[2]
        assert swept["deleted"] == 6  # no entry of "other": the six expired ones of the proxies above, swept
        assert post(url, key, "a quay")[1]["x-gesso-cache"] == "hit"  # nova's live entry stays
        purged = subprocess.run([sys.executable, "-m", "gesso", "cache", "--url", url, "--master-key", MASTER,
                                 "purge", "--model", "nova"], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert purged.returncode == 0 and json.loads(purged.stdout) == {"deleted": 1}, purged.stderr
        assert post(url, key, "a quay")[1]["x-gesso-cache"] == "miss"


def test_which_calls_a_cache_may_answer(aws):
    """A call is cached only when every body fixes its seed: Nova Canvas's documented default (12) fixes it;
    Titan only with a seed given (gesso holds no AWS text for its default); Stability only with a seed other than
    0 (0 means random, AWS's Stability pages); never images written to a store (their URLs expire)."""

    def key(model: str, **kwargs) -> str | None:
        return api.cache_key(api.prepare(model, kwargs.pop("prompt", "a lighthouse"), **aws, **kwargs))

    nova = key(NOVA, size="320x320")
    assert nova is not None and nova == key(NOVA, size="320x320")
    assert nova != key(NOVA, size="320x320", seed=13)  # every parameter counts
    assert nova != key(NOVA, size="320x320", n=2) and nova != key(NOVA, size="512x512")
    assert api.cache_key(api.prepare(NOVA, "a lighthouse", size="320x320", **aws), "key:other") != nova  # scope
    assert key(NOVA, size="320x320", response_format="url", image_store="file:///tmp/gesso-cache-test") is None
    assert key(NOVA, prompt=None, taskType="BACKGROUND_REMOVAL", image=_png()) is None  # no seed to fix
    titan = "bedrock/amazon.titan-image-generator-v2:0"
    assert key(titan, size="512x512") is None and key(titan, size="512x512", seed=42) is not None
    core = "bedrock/stability.stable-image-core-v1:1"
    assert key(core) is None and key(core, seed=0) is None and key(core, seed=7) is not None


def _png() -> bytes:
    from gesso_bedrock.emulator.images import synth_png

    return synth_png(320, 320, "input")


@pytest.mark.slow  # starts a subprocess
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_hits_and_replays_count_against_the_request_rate_limit(database_url, aws, emulator, tmp_path):
    """A hit or an idempotency key's replay makes no image, but it is a request: rpm_limit counts it."""
    with started(database_url, aws, tmp_path, model_info={"cache": True}) as replicas:
        url = replicas[0]
        key = new_key(url, "limited", rpm_limit=3)
        assert [post(url, key, "a mill")[1]["x-gesso-cache"] for _ in range(3)] == ["miss", "hit", "hit"]
        status, headers, answer = post(url, key, "a mill")
        assert status == 429 and answer["error"]["code"] == "rpm_limit" and "retry-after" in headers
        assert emulator.stats()["requests"] == 1


@pytest.mark.slow  # starts a subprocess
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_stored_answers_stay_apart_and_a_failing_store_costs_no_second_call(database_url, aws, emulator, tmp_path):
    """The model name asked for is part of a cache key (a caller allowed one name never gets another's entries);
    a team made again under a deleted team's id does not see its entries; an idempotency key's answer that is
    gone is an error, not a second paid call; a result store that fails is a cache miss; a caller's input never
    makes a 500 of the key's fingerprint or of a purge."""
    with started(database_url, aws, tmp_path, names=("a",), model_info={"cache": {"scope": "team"}},
                 aliases=("nova-b",)) as replicas:  # fmt: skip
        url, results = replicas[0], tmp_path / "gesso-results"
        assert call(url, "POST", "/team/new", key=MASTER, body={"team_id": "studio", "max_budget": 50})[0] == 200
        first = new_key(url, "first", team_id="studio")

        def ask(key: str, model: str, prompt: str = "a dock", headers: dict[str, str] | None = None):
            return post(url, key, prompt, headers, model)

        assert ask(first, "nova")[1]["x-gesso-cache"] == "miss"
        assert ask(first, "nova")[1]["x-gesso-cache"] == "hit"
        assert ask(first, "nova-b")[1]["x-gesso-cache"] == "miss"  # the same model, another name: its own entries
        calls = emulator.stats()["requests"]
        assert calls == 2

        # the team deleted and made again under the same id: a new team, none of the old one's entries
        assert call(url, "POST", "/team/delete", key=MASTER, body={"team_ids": ["studio"]})[0] == 200
        assert call(url, "POST", "/team/new", key=MASTER, body={"team_id": "studio", "max_budget": 50})[0] == 200
        second = new_key(url, "second", team_id="studio")
        assert ask(second, "nova")[1]["x-gesso-cache"] == "miss"

        # an idempotency key's answer whose bytes are gone: a 409 the openai client does not retry, no new call
        status, headers, _ = ask(second, "nova", "a pier", {"Idempotency-Key": "pier-1"})
        assert status == 200 and "idempotent-replayed" not in headers
        kept = [path for path in (results / "keys").rglob("*") if path.is_file()]
        assert len(kept) == 1
        kept[0].unlink()
        calls = emulator.stats()["requests"]
        status, headers, answer = ask(second, "nova", "a pier", {"Idempotency-Key": "pier-1"})
        assert status == 409 and answer["error"]["code"] == "idempotency_answer_lost", answer
        assert headers["x-should-retry"] == "false" and emulator.stats()["requests"] == calls

        # the keys' store cannot be written: the answer stands, and its repeat is refused rather than paid again
        (results / "keys").rename(results / "keys-gone")
        (results / "keys").write_text("not a directory")
        calls = emulator.stats()["requests"]
        assert ask(second, "nova", "a jetty", {"Idempotency-Key": "jetty-1"})[0] == 200
        status, _, answer = ask(second, "nova", "a jetty", {"Idempotency-Key": "jetty-1"})  # the store fails
        assert status == 503 and answer["error"]["code"] == "idempotency_answer_unavailable"
        (results / "keys").unlink()
        (results / "keys-gone").rename(results / "keys")  # the store is back, without the answer it never got
        status, _, answer = ask(second, "nova", "a jetty", {"Idempotency-Key": "jetty-1"})
        assert status == 409 and answer["error"]["code"] == "idempotency_answer_lost"
        assert emulator.stats()["requests"] == calls + 1

        # the cache's store fails (its directory is a file now): a miss, the call made and answered
        calls = emulator.stats()["requests"]
        (results / "cache").rename(results / "cache-gone")
        (results / "cache").write_text("not a directory")
        status, headers, answer = ask(second, "nova")
        assert status == 200 and headers["x-gesso-cache"] == "miss" and answer["data"]
        assert emulator.stats()["requests"] == calls + 1

        # an integer of 5,000 digits beside an Idempotency-Key, and a NUL in a purge: each a 400
        huge = b'{"model": "nova", "prompt": "a dock", "seed": ' + b"9" * 5000 + b"}"
        request = urllib.request.Request(url + "/v1/images/generations", data=huge)
        for name, value in {"Content-Type": "application/json", "Authorization": f"Bearer {second}",
                            "Idempotency-Key": "huge-1"}.items():  # fmt: skip
            request.add_header(name, value)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=60)
        assert caught.value.code == 400, caught.value.read()
        deep = {"model": "nova", "prompt": "a dock", "style": json.loads("[" * 700 + "]" * 700)}
        status, _, answer = call(url, "POST", "/v1/images/generations", key=second, body=deep)
        assert status == 400  # (without a key)
        request = urllib.request.Request(url + "/v1/images/generations", data=json.dumps(deep).encode())
        for name, value in {"Content-Type": "application/json", "Authorization": f"Bearer {second}",
                            "Idempotency-Key": "deep-1"}.items():  # fmt: skip
            request.add_header(name, value)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=60)
        assert caught.value.code == 400, caught.value.read()  # the same refusal, with a key: the key is not claimed
        status, _, answer = call(url, "POST", "/cache/purge", key=MASTER, body={"model": "nova\x00"})
        assert status == 400 and answer["error"]["param"] == "model"


@pytest.mark.slow  # starts a subprocess
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_repeat_is_rate_limited_before_it_waits(database_url, aws, emulator, tmp_path):
    """rpm_limit counts a repeat before it waits for the request that runs its key: over the limit, its 429 comes
    at once, not after the first call's answer."""
    with started(database_url, aws, tmp_path, names=("a",)) as replicas:
        url = replicas[0]
        key = new_key(url, "limited", rpm_limit=2)
        for _ in range(2):  # refused before they are admitted: they do not count
            status, _, _ = post(url, key, "a lock", {"Idempotency-Key": "bad-size"}, model="no-such-model")
            assert status in (400, 404)
        emulator.inject("latency", seconds=3.0)
        repeat = {"Idempotency-Key": "slow-1"}
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, url, key, "a lock", repeat)
            deadline = time.monotonic() + 10
            while emulator.stats()["requests"] < 1:  # the first is counted and at the model
                assert time.monotonic() < deadline
                time.sleep(0.02)
            waiting = pool.submit(post, url, key, "a lock", repeat)  # the second request: it waits
            time.sleep(0.8)
            began = time.monotonic()
            status, _, answer = post(url, key, "a lock", repeat)  # the third: over the limit
            assert status == 429 and answer["error"]["code"] == "rpm_limit"
            assert time.monotonic() - began < 1.0  # refused before waiting for the first
            assert first.result()[0] == 200 and waiting.result()[1].get("idempotent-replayed") == "true"
        assert emulator.stats()["requests"] == 1


def test_answers_are_kept_apart_by_where_a_call_goes_and_as_whom(aws):
    """The SDK's and the proxy's cache keys and idempotency entries name the endpoint, the Region and who signs:
    an answer of the emulator is never served to a call to AWS (or to another account), whatever port the
    emulator listened on."""
    from gesso.api import _entry

    def prepared(**options):
        return api.prepare(NOVA, "a lighthouse", size="320x320", **{**aws, **options})

    here = api.cache_key(prepared())
    port = aws["aws_bedrock_runtime_endpoint"].rsplit(":", 1)[1]
    moved = aws["aws_bedrock_runtime_endpoint"].replace(f":{port}", f":{int(port) + 1}")
    assert here == api.cache_key(prepared(aws_bedrock_runtime_endpoint=moved))  # the emulator, on another port
    assert here != api.cache_key(
        prepared(aws_bedrock_runtime_endpoint="https://bedrock-runtime.us-east-1.amazonaws.com")
    )
    assert here != api.cache_key(prepared(aws_access_key_id="AKIAOTHERACCOUNT0000"))
    assert here != api.cache_key(prepared(aws_region_name="us-west-2"))
    assert here == api.cache_key(prepared(timeout=30))  # how long to wait is not where the call goes

    # what the call leaves to boto3's environment counts too: the Region, the endpoint, the default credentials
    def bare(**environment):
        with pytest.MonkeyPatch.context() as patch:
            for name, value in environment.items():
                patch.setenv(name, value)
            return api.cache_key(api.prepare(NOVA, "a lighthouse", size="320x320"))

    base = {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "AKIAONEACCOUNT000000"}
    assert bare(**base) == bare(**base)
    assert bare(**base) != bare(**{**base, "AWS_REGION": "eu-west-1"})
    assert bare(**base) != bare(**{**base, "AWS_ACCESS_KEY_ID": "AKIAOTHERACCOUNT0000"})
    assert bare(**base) != bare(**base, AWS_ENDPOINT_URL_BEDROCK_RUNTIME="http://127.0.0.1:9")

    def keyed(**options):
        call = prepared(**options)
        return _entry(attrs.evolve(call, results=object(), idempotency_key="order-1"))[0]

    assert keyed() != keyed(aws_access_key_id="AKIAOTHERACCOUNT0000")
