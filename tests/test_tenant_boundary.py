"""The proxy's tenant boundary: a caller's request is data, never configuration.

Each example of the issue that found it is a test here, through a real proxy (uvicorn on a thread, a SQLite
store, the master key and the deployment's secret read from the environment) driven by the real ``openai``
client and raw HTTP: a tenant holding a virtual key cannot read the proxy's environment, write files, make a
paid call leave no spend row, or forge a log line; and ``os.environ/<every variable the proxy has>`` in every
field of every route shows no environment value in any answer, log line, spend row or metric.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import uvicorn

from gesso.proxy import config as proxy_config
from gesso.proxy import store
from gesso.proxy.app import build_app
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator
from helpers import multipart, picture, proxy_environment, uvicorn_running

NOVA = "bedrock/amazon.nova-canvas-v1:0"
TITAN = "bedrock/amazon.titan-image-generator-v2:0"
#: the proxy's secrets, as a platform team sets them: in its environment, named by the config
SECRETS = {
    "GESSO_TB_MASTER_KEY": "sk-boundary-master-" + uuid.uuid4().hex,
    "GESSO_TB_AWS_SECRET": EMULATOR_SECRET_KEY,
    "GESSO_TB_DB_PASSWORD": "db-password-" + uuid.uuid4().hex,
}


class Proxy:
    def __init__(self, url: str, database_url: str, emulator: Emulator, records: list[str], root: Path) -> None:
        self.url, self.database_url, self.emulator, self.records, self.root = url, database_url, emulator, records, root
        self.master = SECRETS["GESSO_TB_MASTER_KEY"]
        self.key = ""

    def send(self, path: str, *, body=None, data: bytes | None = None, content_type="application/json",
             key: str | None = None) -> tuple[int, str]:  # fmt: skip
        """(status, body text) of one request; ``body`` is sent as JSON with ASCII escapes (so a lone surrogate
        travels as JSON carries it, ``\\ud800``)."""
        payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=payload, method="POST" if payload else "GET")
        request.add_header("Content-Type", content_type)
        request.add_header("Authorization", f"Bearer {key or self.key}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def generate(self, **fields) -> tuple[int, dict]:
        status, text = self.send("/v1/images/generations", body={"model": "nova", "prompt": "an otter", **fields})
        return status, json.loads(text)

    def rows(self) -> list[dict]:
        async def read():
            s = store.Store(self.database_url)
            try:
                return await s.spend_logs(limit=100_000)
            finally:
                await s.close()

        return asyncio.run(read())

    def key_info(self) -> dict:
        status, text = self.send(f"/key/info?key={self.key}", key=self.master)
        assert status == 200, text
        return json.loads(text)["info"]


class Records(logging.Handler):
    """Every log line the proxy's loggers write, formatted as a log file would hold it."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    root = tmp_path_factory.mktemp("boundary")
    database_url = f"sqlite:///{root / 'gesso.db'}"
    records: list[str] = []
    handler = Records(records)
    loggers = [logging.getLogger(name) for name in ("gesso", "uvicorn", "sqlalchemy")]
    levels = [logger.level for logger in loggers]
    with contextlib.ExitStack() as stack:
        proxy_environment(stack, SECRETS)
        emulator = stack.enter_context(Emulator(port=0))
        aws = {
            "aws_bedrock_runtime_endpoint": emulator.url, "aws_access_key_id": EMULATOR_ACCESS_KEY,
            "aws_secret_access_key": "os.environ/GESSO_TB_AWS_SECRET", "aws_region_name": "us-east-1",
            "max_retries": 0,
        }  # fmt: skip
        config = proxy_config.parse({
            "model_list": [
                {"model_name": "nova", "litellm_params": {"model": NOVA, **aws}, "model_info": {"id": "nova-a"}},
                {"model_name": "titan", "litellm_params": {"model": TITAN, **aws}, "model_info": {"id": "titan-a"}},
            ],
            "general_settings": {"master_key": "os.environ/GESSO_TB_MASTER_KEY", "database_url": database_url},
        })  # fmt: skip
        store.upgrade(database_url)
        for logger in loggers:
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
        stack.callback(lambda: [(lg.removeHandler(handler), lg.setLevel(lv)) for lg, lv in zip(loggers, levels)])
        served = uvicorn.Config(build_app(config), host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                log_config=None)  # fmt: skip
        app = served.app
        for port in uvicorn_running(served):
            proxy = Proxy(f"http://127.0.0.1:{port}", database_url, emulator, records, root)
            proxy.state = app.state.proxy
            status, text = proxy.send("/key/generate", body={"key_alias": "tenant", "max_budget": 100},
                                      key=proxy.master)  # fmt: skip
            assert status == 200, text
            proxy.key = json.loads(text)["key"]
            yield proxy


@pytest.fixture(autouse=True)
def fresh(proxy):
    proxy.emulator.requests.clear()
    yield


def assert_refused(status: int, answer: dict, param: str, code: str = "not_allowed") -> str:
    assert status == 400, answer
    error = answer["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code and error["param"] == param, error
    return error["message"]


# -- the examples of the issue, each a test ---------------------------------------------------------------------


@pytest.mark.parametrize("field", ["size", "quality", "style", "n", "user", "output_format", "negativeText"])
def test_a_caller_cannot_read_the_proxys_environment(proxy, field):
    for name, value in SECRETS.items():
        status, answer = proxy.generate(**{field: f"os.environ/{name}"})
        text = json.dumps(answer)
        assert value not in text, f"{field}=os.environ/{name} answered the secret"
        if status == 200:  # taken as the text it is (a user id, a negative prompt), never the variable
            assert field in ("user", "negativeText")
        else:
            assert status == 400 and f"os.environ/{name}" in answer["error"]["message"]
    assert not any(v in line for line in proxy.records for v in SECRETS.values())


def test_edit_form_fields_do_not_read_the_environment(proxy):
    for field in ("size", "quality", "n", "response_format", "user", "output_format", "maskPrompt"):
        data, content_type = multipart({
            "model": "nova", "prompt": "a hat", "image": picture(512, 512), field: "os.environ/GESSO_TB_MASTER_KEY",
        })  # fmt: skip
        status, text = proxy.send("/v1/images/edits", data=data, content_type=content_type)
        assert SECRETS["GESSO_TB_MASTER_KEY"] not in text, field
        assert status in (200, 400), text


@pytest.mark.parametrize(
    "store_url", ["file:///{root}/written-by-a-caller", "s3://any-bucket/prefix", "file:///etc/passwd"]
)
def test_a_caller_cannot_choose_where_images_are_written(proxy, store_url):
    target = store_url.format(root=proxy.root)
    status, answer = proxy.generate(response_format="url", image_store=target)
    message = assert_refused(status, answer, "image_store")
    assert "set by the proxy's deployment" in message
    assert not (proxy.root / "written-by-a-caller").exists() and len(proxy.emulator.requests) == 0
    status, answer = proxy.generate(response_format="url", image_url_expiry=60)
    assert_refused(status, answer, "image_url_expiry")


@pytest.mark.parametrize(
    "field, value",
    [
        ("timeout", 600), ("max_retries", 10), ("retry_budget", 1), ("connect_timeout", 1), ("model_id", "x"),
        ("aws_region_name", "us-west-2"), ("aws_profile_name", "admin"), ("aws_role_name", "arn:aws:iam::1:role/x"),
        ("aws_web_identity_token", "os.environ/GESSO_TB_AWS_SECRET"), ("api_key", "x"), ("ssl_verify", False),
        ("extra_headers", {"x": "y"}), ("base_model", "amazon.titan-image-generator-v2:0"),
        ("guardrailIdentifier", "g"), ("max_fanout", 10),
    ],
)  # fmt: skip
def test_every_sdk_and_provider_option_is_not_allowed(proxy, field, value):
    status, answer = proxy.generate(**{field: value})
    assert_refused(status, answer, field)
    assert len(proxy.emulator.requests) == 0


def test_an_unknown_field_is_not_allowed_naming_the_allowed_ones(proxy):
    status, answer = proxy.generate(cfgScal=7)
    message = assert_refused(status, answer, "cfgScal")
    assert "did you mean cfgScale?" in message and "amazon.nova-canvas-v1:0" in message
    assert "size" in message and "negativeText" in message
    # what the model's schema declares, flat or nested, and a family's request option, are taken
    assert proxy.generate(cfgScale=7, imageGenerationConfig={"seed": 3})[0] == 200
    status, answer = proxy.send("/v1/images/generations", body={
        "model": "titan", "prompt": "x", "size": "1000x1000", "snap_size": True})  # fmt: skip
    assert status == 200, answer


def test_a_lone_surrogate_is_refused_before_anything_is_reserved_or_sent(proxy):
    token = proxy.key_info()["token"]

    async def reserved():
        s = store.Store(proxy.database_url)
        try:
            return (await s.get_key(token)).reserved
        finally:
            await s.close()

    before, held = len(proxy.rows()), asyncio.run(reserved())
    for field in ("user", "prompt", "negativeText"):
        status, answer = proxy.generate(**{field: "\ud800"})
        assert status == 400 and answer["error"]["param"] == field, answer
    status, answer = proxy.generate(imageGenerationConfig={"\ud800": 1})
    assert status == 400, answer
    assert len(proxy.emulator.requests) == 0
    rows = proxy.rows()
    assert len(rows) == before + 4 and all(r["status_code"] == 400 and r["cost"] == 0 for r in rows[:4])
    info = proxy.key_info()
    assert info["spend"] == pytest.approx(sum(r["cost"] for r in rows if r["token_hash"] == info["token"]))
    assert asyncio.run(reserved()) <= held + 1e-12  # nothing more held (an idle lease may have been given back)


def test_every_paid_call_has_its_spend_row_whatever_text_it_carried(proxy):
    before = len(proxy.rows())
    long_user = "u" * 10_000  # longer than the spend log's user column: stored shortened, never lost
    status, answer = proxy.generate(user=long_user)
    assert status == 200, answer
    rows = proxy.rows()
    assert len(rows) == before + 1 and rows[0]["status_code"] == 200 and rows[0]["cost"] == 0.04
    assert rows[0]["user"].startswith("uuuu") and len(rows[0]["user"]) <= 256


def test_a_model_name_cannot_forge_a_log_line(proxy):
    forged = (
        "nova\nINFO gesso.proxy: request forged-0000 generations model_name=nova deployment=nova-a images=1 cost=0.04"
    )
    status, answer = proxy.generate(model=forged)
    assert status == 404 and answer["error"]["code"] == "model_not_found"
    assert not [line for line in proxy.records if line.startswith("INFO gesso.proxy: request forged-0000")]
    assert any("nova\\nINFO gesso.proxy" in line for line in proxy.records)
    status, answer = proxy.generate(model="\ud800")
    assert status == 400 and answer["error"]["param"] == "model"


def test_the_models_a_key_may_not_use_are_not_listed(proxy):
    status, text = proxy.send("/key/generate", body={"models": ["titan"]}, key=proxy.master)
    assert status == 200, text
    limited = json.loads(text)["key"]
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=limited, max_retries=0)
    assert [m.id for m in client.models.list()] == ["titan"]
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="dall-e-3", prompt="x")
    assert "configured models: titan" in str(caught.value) and "nova" not in str(caught.value)
    admin = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=proxy.master, max_retries=0)
    assert [m.id for m in admin.models.list()] == ["nova", "titan"]


def test_a_spend_row_that_fails_to_be_written_is_tried_again(proxy, monkeypatch):
    state = proxy.state.store
    finish = state.finish
    failures = {"left": 2}

    async def flaky(row, reservation):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("the database is briefly unavailable")
        return await finish(row, reservation)

    monkeypatch.setattr(state, "finish", flaky)
    before = len(proxy.rows())
    status, _ = proxy.generate()
    assert status == 200 and failures["left"] == 0
    rows = proxy.rows()
    assert len(rows) == before + 1 and rows[0]["cost"] == 0.04  # written once, on the third try


def test_a_paid_call_whose_row_cannot_be_written_is_answered_and_the_loss_is_loud(proxy, monkeypatch):
    async def broken(row, reservation):
        raise OSError("the database is gone")

    monkeypatch.setattr(proxy.state.store, "finish", broken)
    lines = len(proxy.records)
    status, answer = proxy.generate()
    assert status == 200 and len(answer["data"]) == 1  # its image is paid for: it is returned
    status, _ = proxy.generate(size="1x1")
    assert status == 400  # nothing was paid: its own error, as always
    logged = proxy.records[lines:]
    assert sum("its images were paid for and are returned" in line for line in logged) == 1
    assert sum("could not be written (nothing was paid)" in line for line in logged) == 1
    metrics = proxy.send("/metrics")[1]
    assert re.search(r"gesso_errors_total\{type=\"spend_log_failed\"\} 2(\.0)?\n", metrics)


def test_a_deployment_may_let_its_callers_set_an_option(proxy, tmp_path):
    aws = {"aws_bedrock_runtime_endpoint": proxy.emulator.url, "aws_access_key_id": "x", "aws_secret_access_key": "y",
           "aws_region_name": "us-east-1"}  # fmt: skip
    entry = {"model_name": "sd", "litellm_params": {"model": "bedrock/stability.sd3-5-large-v1:0", **aws},
             "model_info": {"id": "sd-a", "caller_params": ["max_fanout", "max_retries"]}}  # fmt: skip
    config = proxy_config.parse({"model_list": [entry]})
    assert config.deployments[0].caller_params == {"max_fanout", "max_retries"}
    served = uvicorn.Config(build_app(config), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    for port in uvicorn_running(served):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        images = client.images.generate(model="sd", prompt="x", n=5, extra_body={"max_fanout": 5, "max_retries": 1})
        assert len(images.data) == 5
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(model="sd", prompt="x", extra_body={"retry_budget": 5})
        assert caught.value.body["code"] == "not_allowed"
    for name in ("aws_access_key_id", "aws_region_name", "aws_bedrock_runtime_endpoint", "model_id", "image_store"):
        bad = {**entry, "model_info": {"id": "sd-a", "caller_params": [name]}}
        with pytest.raises(proxy_config.ConfigError, match=f"caller_params: {name} is the deployment's configuration"):
            proxy_config.parse({"model_list": [bad]})


def test_the_sdk_takes_a_request_as_untrusted_data(aws, emulator, monkeypatch):
    import gesso
    from gesso.errors import InvalidRequestError

    monkeypatch.setenv("GESSO_TB_SDK_SECRET", "a-secret-of-the-application")
    untrusted = gesso.Untrusted({"size": "os.environ/GESSO_TB_SDK_SECRET"})
    with pytest.raises(InvalidRequestError) as caught:
        gesso.image_generation(NOVA, "x", untrusted=untrusted, **aws)
    assert "a-secret-of-the-application" not in str(caught.value) and "os.environ/GESSO_TB" in str(caught.value)
    with pytest.raises(InvalidRequestError) as caught:
        gesso.image_generation(NOVA, "x", untrusted=gesso.Untrusted({"image_store": "file:///tmp"}), **aws)
    assert caught.value.code == "not_allowed" and caught.value.param == "image_store"
    # a program's own kwargs are configuration: os.environ/ is read there, as litellm reads it
    monkeypatch.setenv("GESSO_TB_SIZE", "512x512")
    response = gesso.image_generation(NOVA, "x", size="os.environ/GESSO_TB_SIZE", untrusted=gesso.Untrusted({"seed": 4}),
                                      **aws)  # fmt: skip
    assert response.size == "512x512" and json.loads(emulator.requests[-1].body)["imageGenerationConfig"]["seed"] == 4


# -- os.environ/<every variable the proxy has>, in every field of every route --------------------------------------


def leaks(text: str, values: set[str], baseline: str) -> list[str]:
    return [v for v in values if v in text and v not in baseline]


def test_no_environment_value_reaches_an_answer_a_log_line_a_spend_row_or_a_metric(proxy):
    names = sorted(os.environ)
    # values long enough to be told apart from ordinary words (a "1" or "/root" appears in answers anyway)
    values = {v for v in os.environ.values() if len(v) >= 8}
    assert set(SECRETS.values()) <= values
    # the fields a caller may send are checked together (every problem is reported at once); the model, and the
    # options no caller may set (refused by name before any value is looked at), on their own
    allowed = ["n", "size", "quality", "response_format", "style", "user", "output_format", "output_compression",
               "negativeText", "seed"]  # fmt: skip
    form_allowed = ["n", "size", "quality", "response_format", "user", "output_format", "maskPrompt"]
    groups = [allowed, ["model"], ["prompt"], ["image_store"], ["timeout"], ["aws_region_name"], ["model_id"]]
    form_groups = [form_allowed, ["model"], ["prompt"], ["image_store"], ["aws_access_key_id"]]
    records_before = len(proxy.records)
    image = picture(320, 320)

    def bodies(name: str, fields: list[str]) -> dict:
        return {"model": "nova", "prompt": "an otter", **{field: f"os.environ/{name}" for field in fields}}

    # what a variable that is not set gets: what every answer of that shape may contain
    references = [proxy.send("/v1/images/generations", body=bodies("GESSO_TB_NOT_SET", g))[1] for g in groups]
    found = []

    def sweep(name: str) -> list:
        found = []
        for group, reference in zip(groups, references):
            text = proxy.send("/v1/images/generations", body=bodies(name, group))[1]
            found += [(name, group, leak) for leak in leaks(text, values, reference)]
        for path in ("/v1/images/edits", "/v1/images/variations"):
            for group in form_groups:
                fields = {**bodies(name, group), "image": image}
                data, content_type = multipart(
                    {k: str(v) if not isinstance(v, bytes) else v for k, v in fields.items()}
                )
                text = proxy.send(path, data=data, content_type=content_type)[1]
                found += [(name, group, leak) for leak in leaks(text, values, "")]
        return found

    with ThreadPoolExecutor(8) as pool:  # the variables side by side, as tenants send them
        found = [leak for leaks_of_one in pool.map(sweep, names) for leak in leaks_of_one]
    assert not found, "an environment value reached an answer"
    logged = "\n".join(proxy.records[records_before:])
    assert not leaks(logged, values, ""), "an environment value reached a log line"
    rows = json.dumps(proxy.rows())
    assert not leaks(rows, values, ""), "an environment value reached a spend row"
    status, metrics = proxy.send("/metrics")
    assert status == 200 and not leaks(metrics, values, "")


def test_an_error_about_a_value_from_the_environment_names_the_field_not_the_value(proxy, monkeypatch):
    """A deployment's parameter read from the environment that contradicts the caller's: the answer says which
    field, and never shows the value (it could be anything the operator keeps in the environment)."""
    monkeypatch.setenv("GESSO_TB_NEGATIVE", "an-operator-value-" + uuid.uuid4().hex)
    aws = {"aws_bedrock_runtime_endpoint": proxy.emulator.url, "aws_access_key_id": "x", "aws_secret_access_key": "y",
           "aws_region_name": "us-east-1"}  # fmt: skip
    entry = {
        "model_name": "nova",
        "litellm_params": {"model": NOVA, **aws, "negativeText": "os.environ/GESSO_TB_NEGATIVE"},
    }
    config = proxy_config.parse({"model_list": [entry]})
    proxy_config.check(config)
    served = uvicorn.Config(build_app(config), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    for port in uvicorn_running(served):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(model="nova", prompt="x", extra_body={"textToImageParams": {"negativeText": "dogs"}})
        message = caught.value.body["message"]
        assert "negativeText" in message and "dogs" in message
        assert os.environ["GESSO_TB_NEGATIVE"] not in message and "<redacted>" in message


def test_spend_rows_hold_any_text_on_both_databases(database_url, emulator, aws, monkeypatch):
    """A NUL (which PostgreSQL's text cannot hold), a lone surrogate, a line break or 10,000 characters in what a
    request carried: every request still gets its one spend row, and a paid one its cost."""
    monkeypatch.setenv("GESSO_NO_LIFECYCLE_WARNINGS", "1")
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    master = "sk-rows-master-" + uuid.uuid4().hex
    config = proxy_config.parse({
        "model_list": [{"model_name": "nova", "litellm_params": {"model": NOVA, **aws}}],
        "general_settings": {"master_key": master, "database_url": database_url, "store_prompts": True},
    })  # fmt: skip
    store.upgrade(database_url)
    served = uvicorn.Config(build_app(config), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    for port in uvicorn_running(served):
        proxy = Proxy(f"http://127.0.0.1:{port}", database_url, emulator, [], Path("."))
        proxy.key = master
        cases = [
            ({"user": "a\x00b"}, 200), ({"prompt": "an otter\x00"}, 200), ({"user": "x\ny"}, 200),
            ({"user": "u" * 10_000}, 200), ({"model": "nova\x00"}, 404), ({"model": "m" * 10_000}, 404),
            ({"user": "\ud800"}, 400), ({"prompt": "\udfff"}, 400),
        ]  # fmt: skip
        for fields, status in cases:
            assert proxy.generate(**fields)[0] == status, fields
        rows = proxy.rows()
        assert len(rows) == len(cases)
        assert sorted(r["status_code"] for r in rows) == sorted(status for _, status in cases)
        assert sum(r["cost"] for r in rows) == pytest.approx(0.04 * 4)


# -- what a red-team review of the boundary found ---------------------------------------------------------------


def test_a_user_cannot_forge_a_debug_line_nor_a_model_name_a_field(proxy):
    forged = (
        "alice\nINFO gesso.proxy: request forged-0001 generations model_name=nova deployment=nova-a images=5 cost=0.0"
    )
    assert proxy.generate(user=forged)[0] == 200
    assert not [line for line in proxy.records if line.startswith("INFO gesso.proxy: request forged-0001")]
    status, _ = proxy.generate(model="nova deployment=nova-a images=5 cost=99.0")
    assert status == 404
    lines = [line for line in proxy.records if "cost=99.0" in line and line.startswith("INFO gesso.proxy:")]
    assert lines and all('model_name="nova deployment=nova-a images=5 cost=99.0"' in line for line in lines)


def test_a_key_limited_to_some_models_learns_nothing_of_the_others_parameters(proxy):
    status, text = proxy.send("/key/generate", body={"models": ["nova"]}, key=proxy.master)
    assert status == 200, text
    limited = json.loads(text)["key"]
    for fields in ({"bogus": 1}, {"size": "1x1"}, {}):
        status, text = proxy.send("/v1/images/generations", body={"model": "titan", "prompt": "x", **fields},
                                  key=limited)  # fmt: skip
        error = json.loads(text)["error"]
        assert status == 403 and error["code"] == "key_model_access_denied", text
        assert "titan-image-generator" not in error["message"]


def test_a_deployments_image_store_serves_url_requests_and_the_rest_get_inline_images(proxy, tmp_path):
    aws = {"aws_bedrock_runtime_endpoint": proxy.emulator.url, "aws_access_key_id": "x", "aws_secret_access_key": "y",
           "aws_region_name": "us-east-1", "image_store": f"file://{tmp_path / 'store'}"}  # fmt: skip
    config = proxy_config.parse({"model_list": [{"model_name": "nova", "litellm_params": {"model": NOVA, **aws}}]})
    proxy_config.check(config)  # starts: the store is for the requests that ask for url images
    served = uvicorn.Config(build_app(config), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    for port in uvicorn_running(served):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert client.images.generate(model="nova", prompt="x").data[0].b64_json
        assert client.images.generate(model="nova", prompt="x", response_format="b64_json").data[0].b64_json
        url = client.images.generate(model="nova", prompt="x", response_format="url").data[0].url
        assert url.startswith(f"file://{tmp_path / 'store'}/") and len(list((tmp_path / "store").iterdir())) == 1


def test_an_edit_image_may_come_as_base64_text(proxy):
    data, content_type = multipart(
        {"model": "nova", "prompt": "a hat", "image": base64.b64encode(picture(512, 512)).decode()}
    )
    status, text = proxy.send("/v1/images/edits", data=data, content_type=content_type)
    assert status == 200, text


def test_the_sdk_refuses_to_grant_configuration_and_takes_only_json_data(aws, tmp_path):
    import gesso
    from gesso.errors import InvalidRequestError

    for name, value in (("aws_region_name", "us-west-2"), ("image_store", f"file://{tmp_path}"),
                        ("aws_bedrock_runtime_endpoint", "http://127.0.0.1:1")):  # fmt: skip
        with pytest.raises(InvalidRequestError) as caught:
            gesso.image_generation(NOVA, "x", untrusted=gesso.Untrusted({name: value}, granted={name}), **aws)
        assert caught.value.param == name and "cannot be granted" in str(caught.value)
    granted = gesso.Untrusted({"max_retries": 1}, granted={"max_retries"})
    assert gesso.image_generation(NOVA, "x", untrusted=granted, **aws).data
    secret = tmp_path / "secret.png"
    secret.write_bytes(picture(512, 512))
    with pytest.raises(InvalidRequestError) as caught:
        gesso.image_generation(NOVA, "x", untrusted=gesso.Untrusted({"conditionImage": secret}), **aws)
    assert "must be JSON data (got PosixPath)" in str(caught.value)
    assert not list(tmp_path.glob("*.png"))[1:]  # nothing written
