"""The OpenAI-compatible proxy (``gesso.proxy``), served by a real uvicorn on loopback and driven by the real
``openai`` client (sync and async) and the ``curl`` binary, with deployments on in-process Bedrock emulators.

The config and ``gesso serve`` itself (the seed's curls, the bind rules) are in ``test_proxy_config.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import io
import json
import logging
import re
import socket
import subprocess
import time
from pathlib import Path

import openai
import pytest
import uvicorn
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from gesso.proxy import config as proxy_config
from gesso.proxy import metrics as proxy_metrics
from gesso.proxy import store
from gesso.proxy.app import build_app
from gesso_bedrock import transport
from gesso_bedrock.emulator import BLOCK_INPUT, EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator
from helpers import picture, uvicorn_running

NOVA = "bedrock/amazon.nova-canvas-v1:0"
MASTER_KEY = "sk-proxy-test-master"


class Served:
    """A proxy running on a uvicorn thread: its port, its app state and clients for it."""

    def __init__(self, app, port: int) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.state = app.state.proxy

    def client(self, api_key: str = "sk-anything", max_retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=max_retries, timeout=20)

    def aclient(self, api_key: str = "sk-anything") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=20)

    def curl(self, *args: str) -> tuple[int, dict[str, str], str]:
        """``curl -i`` with ``args``; the status, the headers (lower-cased names) and the body."""
        out = subprocess.run(["curl", "-sS", "-i", *args], capture_output=True, text=True, timeout=20, check=True)
        head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
        status_line, *lines = head.splitlines()
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return int(status_line.split()[1]), headers, body

    def metrics(self) -> str:
        """``GET /metrics``: its text, which prometheus_client's parser reads."""
        return scraped(self.curl(f"{self.url}/metrics")[2])


def scraped(text: str) -> str:
    """``text``, once prometheus_client's parser has read all of it (it raises on anything malformed)."""
    list(text_string_to_metric_families(text))
    return text


@contextlib.contextmanager
def serving(config: proxy_config.ProxyConfig, overrides=None, lifespan: str = "off"):
    """The app of ``config`` on uvicorn, on a free loopback port, until the block ends (``lifespan="on"``
    opens and closes its database)."""
    app = build_app(config, overrides)
    # log_config=None: uvicorn's loggers propagate, so a test can see what it logs (caplog)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", log_config=None, lifespan=lifespan)
    for port in uvicorn_running(config):
        yield Served(app, port)


def aws(emulator: Emulator) -> dict:
    return {
        "aws_bedrock_runtime_endpoint": emulator.url,
        "aws_access_key_id": EMULATOR_ACCESS_KEY,
        "aws_secret_access_key": EMULATOR_SECRET_KEY,
        "aws_region_name": "us-east-1",
    }


def deployment(name: str, emulator: Emulator, ident: str, **params) -> dict:
    return {
        "model_name": name,
        "litellm_params": {"model": NOVA, **aws(emulator), **params},
        "model_info": {"id": ident},
    }


@pytest.fixture(scope="module")
def emulators():
    with (
        Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}) as first,
        Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}) as second,
    ):
        yield first, second


@pytest.fixture(autouse=True)
def no_http_proxy(monkeypatch):
    """curl and the openai client reach loopback directly, whatever proxy the environment names."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def clean_emulators(emulators):
    for emulator in emulators:
        emulator.faults.clear()
        emulator.requests.clear()
    yield
    for emulator in emulators:
        emulator.faults.clear()
        # a call the proxy gave up on (a timeout) may still be in the emulator: let it finish here, so it is not
        # recorded during the next test
        wait_for(lambda emulator=emulator: emulator.stats()["in_flight"] == 0, 3.0)


@pytest.fixture(scope="module")
def proxy(emulators):
    """One proxy for the module: ``nova`` (no SDK retries) and ``slow`` (a 0.3 s read timeout), both on the
    first emulator."""
    first, _ = emulators
    config = proxy_config.parse(
        {
            "model_list": [
                deployment("nova", first, "nova-a", max_retries=0),
                deployment("slow", first, "slow-a", max_retries=0, timeout=0.3),
            ]
        }
    )
    proxy_config.check(config)
    with serving(config) as served:
        yield served


@pytest.fixture
def emu(emulators) -> Emulator:
    return emulators[0]


def sent(emulator: Emulator, index: int = -1) -> dict:
    """The JSON body of a request the emulator received."""
    return json.loads(emulator.requests[index].body)


def decoded(b64: str) -> Image.Image:
    raw = base64.b64decode(b64)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(raw))


def assert_error(exc: openai.APIStatusError, status: int, type_: str, code: str | None = None) -> dict:
    """The answer is OpenAI's error shape with this status, type and code, and carries no traceback."""
    assert exc.status_code == status
    text = exc.response.text
    assert "Traceback" not in text and 'File "' not in text
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == type_
    if code is not None:
        assert body["error"]["code"] == code
    assert exc.response.headers["x-request-id"]
    return body["error"]


# -- generations --------------------------------------------------------------------------------------------


def test_generation_answers_an_images_response_with_cost_request_id_and_deployment(proxy, emu):
    raw = proxy.client().images.with_raw_response.generate(model="nova", prompt="a lighthouse", size="512x512")
    assert raw.status_code == 200
    assert raw.headers["x-gesso-deployment"] == "nova-a"
    assert float(raw.headers["x-gesso-response-cost"]) == pytest.approx(0.04)
    request_id = raw.headers["x-request-id"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    images = raw.parse()
    assert isinstance(images, openai.types.ImagesResponse)
    assert abs(images.created - time.time()) < 60 and len(images.data) == 1
    assert decoded(images.data[0].b64_json).size == (512, 512)
    body = sent(emu)
    assert body["taskType"] == "TEXT_IMAGE" and body["textToImageParams"]["text"] == "a lighthouse"
    assert (body["imageGenerationConfig"]["width"], body["imageGenerationConfig"]["height"]) == (512, 512)


def test_generation_with_extra_body_task_params(proxy, emu):
    images = proxy.client().images.generate(
        model="nova",
        prompt="a dog",
        n=2,
        size="512x512",
        extra_body={"taskType": "COLOR_GUIDED_GENERATION", "colorGuidedGenerationParams": {"colors": ["#FFFFFF"]}},
    )
    assert len(images.data) == 2
    for image in images.data:
        decoded(image.b64_json)
    body = sent(emu)
    assert body["taskType"] == "COLOR_GUIDED_GENERATION"
    assert body["colorGuidedGenerationParams"] == {"text": "a dog", "colors": ["#FFFFFF"]}
    assert body["imageGenerationConfig"]["numberOfImages"] == 2


def test_async_client_and_the_route_without_v1(proxy, emu):
    async def generate():
        async with proxy.aclient() as client:
            return await client.images.generate(model="nova", prompt="an owl", extra_body={"seed": 7})

    images = asyncio.run(generate())
    assert len(images.data) == 1 and sent(emu)["imageGenerationConfig"]["seed"] == 7
    status, headers, body = proxy.curl(
        "-X", "POST", f"{proxy.url}/images/generations", "-H", "Content-Type: application/json",
        "-d", '{"model": "nova", "prompt": "an owl", "response_format": "url"}',
    )  # fmt: skip
    assert status == 200 and headers["x-gesso-deployment"] == "nova-a"
    assert json.loads(body)["data"][0]["url"].startswith("data:image/png;base64,")


# -- edits and variations -----------------------------------------------------------------------------------


def rgba_mask(size: int, box: tuple[int, int, int, int]) -> bytes:
    """OpenAI's mask convention: an RGBA PNG, fully transparent where the image is to be edited."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), box)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_edit_with_an_image_list_and_an_rgba_mask_inpaints(proxy, emu):
    photo = picture(512, 512)
    raw = proxy.client().images.with_raw_response.edit(
        model="nova",
        image=[("photo.png", photo, "image/png")],
        mask=("mask.png", rgba_mask(512, (128, 128, 256, 256)), "image/png"),
        prompt="a red door",
    )
    assert raw.status_code == 200 and raw.headers["x-gesso-deployment"] == "nova-a"
    decoded(raw.parse().data[0].b64_json)
    body = sent(emu)
    assert body["taskType"] == "INPAINTING"
    params = body["inPaintingParams"]
    assert params["text"] == "a red door" and base64.b64decode(params["image"]) == photo
    mask = decoded(params["maskImage"]).convert("L")
    assert mask.size == (512, 512)
    assert mask.getpixel((200, 200)) == 0  # transparent in the RGBA mask: black, the area Nova edits
    assert mask.getpixel((10, 10)) == 255  # opaque: white, kept


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # openai marks create_variation deprecated
def test_variation_with_provider_fields_as_form_fields(proxy, emu):
    images = proxy.client().images.create_variation(
        model="nova", image=("photo.png", picture(512, 512), "image/png"), n=1, extra_body={"similarityStrength": 0.7}
    )
    assert len(images.data) == 1
    decoded(images.data[0].b64_json)
    body = sent(emu)
    assert body["taskType"] == "IMAGE_VARIATION"
    assert body["imageVariationParams"]["similarityStrength"] == 0.7
    assert len(body["imageVariationParams"]["images"]) == 1


def test_malformed_multipart_is_a_400(proxy):
    status, _, body = proxy.curl(
        "-X", "POST", f"{proxy.url}/v1/images/edits", "-H", "Content-Type: multipart/form-data; boundary=zzz",
        "--data-binary", 'garbage--zzz\r\nContent-Disposition: form-data; name="model"\r\n\r\nnova\r\n--zzz',
    )  # fmt: skip
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_multipart"
    status, _, body = proxy.curl("-X", "POST", f"{proxy.url}/v1/images/edits", "-d", "model=nova")
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_content_type"


# -- errors, each as the openai exception it should raise -----------------------------------------------------


def test_a_parameter_out_of_range_is_a_bad_request(proxy, emu):
    with pytest.raises(openai.BadRequestError) as caught:
        proxy.client().images.generate(model="nova", prompt="x", extra_body={"cfgScale": 99})
    error = assert_error(caught.value, 400, "invalid_request_error")
    assert error["param"] == "imageGenerationConfig.cfgScale" and "99" in error["message"]
    assert len(emu.requests) == 0  # validated before anything is sent


def test_malformed_json_is_a_bad_request(proxy):
    for data, code in (("{bad", "invalid_json"), ("[1, 2]", "invalid_json"), ('{"prompt": "x"}', "missing_model")):
        status, headers, body = proxy.curl(
            "-X", "POST", f"{proxy.url}/v1/images/generations", "-H", "Content-Type: application/json", "-d", data
        )
        assert status == 400 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == code and "Traceback" not in body


@pytest.mark.parametrize(
    "field, value",
    [
        ("aws_region_name", "us-west-2"),  # litellm lets this retarget the call
        ("aws_bedrock_runtime_endpoint", "http://attacker.example"),
        ("aws_access_key_id", "AKIAOTHER"),
        ("model_id", "arn:aws:bedrock:us-west-2::foundation-model/amazon.nova-canvas-v1:0"),
        ("max_retries", 10),
        ("timeout", 600),
    ],
)
def test_a_caller_cannot_set_a_deployment_option(proxy, emu, field, value):
    with pytest.raises(openai.BadRequestError) as caught:
        proxy.client().images.generate(model="nova", prompt="x", extra_body={field: value})
    error = assert_error(caught.value, 400, "invalid_request_error", "not_allowed")
    assert error["param"] == field and "set by the proxy's deployment" in error["message"]
    assert len(emu.requests) == 0


def test_an_unknown_model_is_not_found_and_lists_the_configured_names(proxy):
    with pytest.raises(openai.NotFoundError) as caught:
        proxy.client().images.generate(model="dall-e-3", prompt="x")
    error = assert_error(caught.value, 404, "invalid_request_error", "model_not_found")
    assert "'dall-e-3'" in error["message"] and "configured models: nova, slow" in error["message"]
    status, _, body = proxy.curl(f"{proxy.url}/v1/nothing")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


def test_throttling_is_a_429_with_retry_after_that_the_openai_client_honours(proxy, emu):
    emu.inject("throttle")
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        proxy.client(max_retries=1).images.generate(model="nova", prompt="x")
    elapsed = time.monotonic() - started
    assert_error(caught.value, 429, "rate_limit_error")
    assert caught.value.response.headers["retry-after"] == "1"
    # the client retried once (two requests reached the proxy, each one Bedrock call: the deployment sets
    # max_retries 0), waiting the 1 s Retry-After asked for rather than its own 0.375-0.5 s first backoff
    assert len(emu.requests) == 2
    assert 0.95 <= elapsed < 5


def test_a_provider_5xx_is_a_502(proxy, emu):
    emu.inject("error")
    with pytest.raises(openai.InternalServerError) as caught:
        proxy.client().images.generate(model="nova", prompt="x")
    error = assert_error(caught.value, 502, "api_error", "provider_error")
    assert "InternalServerException" in error["message"]


def test_timeouts_are_408(proxy, emu):
    emu.inject("timeout", count=1)  # Bedrock's ModelTimeoutException
    with pytest.raises(openai.APIStatusError) as caught:
        proxy.client().images.generate(model="nova", prompt="x")
    assert_error(caught.value, 408, "timeout_error", "timeout")
    emu.inject("latency", seconds=0.6)  # no answer within the deployment's 0.3 s
    with pytest.raises(openai.APIStatusError) as caught:
        proxy.client().images.generate(model="slow", prompt="x")
    error = assert_error(caught.value, 408, "timeout_error", "timeout")
    assert "0.3 s" in error["message"]


def test_the_content_filter_is_a_400(proxy):
    with pytest.raises(openai.BadRequestError) as caught:
        proxy.client().images.generate(model="nova", prompt=f"{BLOCK_INPUT} a cat")
    assert_error(caught.value, 400, "invalid_request_error", "content_policy_violation")


def test_a_body_over_max_request_size_is_a_413(emulators):
    config = proxy_config.parse(
        {"model_list": [deployment("nova", emulators[0], "nova-a")], "general_settings": {"max_request_size_mb": 0.001}}
    )
    with serving(config) as small:
        with pytest.raises(openai.APIStatusError) as caught:
            small.client().images.generate(model="nova", prompt="x" * 2000)
        error = assert_error(caught.value, 413, "invalid_request_error", "request_too_large")
        assert "1048 bytes" in error["message"]
        with pytest.raises(openai.APIStatusError) as caught:  # multipart: the same limit
            small.client().images.edit(model="nova", image=("a.png", picture(256, 256), "image/png"), prompt="x")
        assert caught.value.status_code == 413
        status, _, _ = small.curl(  # no Content-Length: counted as it streams in
            "-X", "POST", f"{small.url}/v1/images/generations", "-H", "Transfer-Encoding: chunked",
            "-H", "Content-Type: application/json", "--data-binary", json.dumps({"model": "nova", "prompt": "x" * 3000}),
        )  # fmt: skip
        assert status == 413
        assert small.client().images.generate(model="nova", prompt="small enough").data
    assert len(emulators[0].requests) == 1


def test_a_deployment_whose_credentials_bedrock_refuses_is_a_502_not_the_callers_401(emulators):
    entry = deployment("nova", emulators[0], "nova-bad-keys", aws_secret_access_key="not-the-emulators-secret")
    with serving(proxy_config.parse({"model_list": [entry]})) as bad, pytest.raises(openai.APIStatusError) as caught:
        bad.client().images.generate(model="nova", prompt="x")
    error = assert_error(caught.value, 502, "api_error")
    assert "nova-bad-keys" in error["message"] and "credentials" in error["message"]


def test_master_key_is_required(emulators, monkeypatch):
    monkeypatch.setenv("PROXY_TEST_MASTER_KEY", MASTER_KEY)  # read through os.environ/NAME
    config = proxy_config.parse(
        {
            "model_list": [deployment("nova", emulators[0], "nova-a")],
            "general_settings": {"master_key": "os.environ/PROXY_TEST_MASTER_KEY"},
        }
    )
    with serving(config) as keyed:
        with pytest.raises(openai.AuthenticationError) as caught:
            keyed.client(api_key="sk-wrong").images.generate(model="nova", prompt="x")
        assert_error(caught.value, 401, "auth_error", "invalid_api_key")
        with pytest.raises(openai.AuthenticationError):
            keyed.client(api_key="sk-wrong").models.list()
        status, _, body = keyed.curl("-X", "POST", f"{keyed.url}/v1/images/generations", "-d", '{"model": "nova"}')
        assert status == 401 and json.loads(body)["error"]["code"] == "missing_key"
        assert len(emulators[0].requests) == 0
        assert keyed.client(api_key=MASTER_KEY).images.generate(model="nova", prompt="x").data
        assert [m.id for m in keyed.client(api_key=MASTER_KEY).models.list()] == ["nova"]


# -- failover and load balancing ------------------------------------------------------------------------------


@pytest.fixture
def pair(emulators):
    """``pair``: two deployments, on two emulators; a fresh router (and cooldowns) for each test."""
    first, second = emulators
    config = proxy_config.parse(
        {
            "model_list": [deployment("pair", first, "first"), deployment("pair", second, "second")],
            "router_settings": {"cooldown_time": 30},
        }
    )
    with serving(config) as served:
        yield served


def test_failover_to_the_second_deployment_when_the_first_throttles(pair, emulators):
    first, second = emulators
    first.inject("throttle")
    raw = pair.client().images.with_raw_response.generate(model="pair", prompt="x")
    assert raw.status_code == 200 and raw.headers["x-gesso-deployment"] == "second"
    assert raw.parse().data
    # the first was tried once (no SDK retries before a failover), then the second answered
    assert [r.status for r in first.requests] == [429] and [r.status for r in second.requests] == [200]
    assert pair.state.router.resting_until["first"] > time.monotonic()
    first.faults.clear()
    # the first is cooling down: the next call goes straight to the second
    raw = pair.client().images.with_raw_response.generate(model="pair", prompt="y")
    assert raw.headers["x-gesso-deployment"] == "second"
    assert len(first.requests) == 1 and len(second.requests) == 2


def test_every_deployment_failing_answers_the_last_error(pair, emulators):
    first, second = emulators
    first.inject("error")  # a 5xx: on to the next deployment, without the SDK's retries
    second.inject("timeout")  # the last deployment's error (a timeout is not retried) is the answer
    with pytest.raises(openai.APIStatusError) as caught:
        pair.client().images.generate(model="pair", prompt="x")
    assert_error(caught.value, 408, "timeout_error")
    assert [r.status for r in first.requests] == [500] and [r.status for r in second.requests] == [408]


def test_load_is_balanced_over_both_deployments_under_concurrency(pair, emulators):
    for emulator in emulators:
        emulator.inject("latency", seconds=0.2)

    async def burst():
        async with pair.aclient() as client:
            calls = [client.images.with_raw_response.generate(model="pair", prompt=f"p{i}") for i in range(8)]
            return await asyncio.gather(*calls)

    answers = asyncio.run(burst())
    served_by = [a.headers["x-gesso-deployment"] for a in answers]
    assert served_by.count("first") == 4 and served_by.count("second") == 4
    assert len(emulators[0].requests) == 4 and len(emulators[1].requests) == 4


# -- the other routes -----------------------------------------------------------------------------------------


def test_models_list(proxy):
    assert [m.id for m in proxy.client().models.list()] == ["nova", "slow"]
    status, _, body = proxy.curl(f"{proxy.url}/models")
    listed = json.loads(body)
    assert status == 200 and listed["object"] == "list"
    assert all(m["object"] == "model" and m["owned_by"] == "gesso" for m in listed["data"])


def test_health_makes_no_paid_call(proxy, emu):
    status, _, body = proxy.curl(f"{proxy.url}/health/liveliness")
    assert status == 200 and json.loads(body) == "I'm alive!"
    status, _, body = proxy.curl(f"{proxy.url}/health/readiness")
    assert status == 200 and json.loads(body) == {"status": "healthy", "models": 2, "deployments": 2}
    assert len(emu.requests) == 0


def test_metrics_are_prometheus_text(proxy):
    proxy.client().images.generate(model="nova", prompt="x")
    with pytest.raises(openai.NotFoundError):
        proxy.client().images.generate(model="unknown", prompt="x")
    status, headers, text = proxy.curl(f"{proxy.url}/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert "# TYPE gesso_requests_total counter" in text
    assert 'gesso_requests_total{model_name="nova",route="generations",status="200"} ' in text
    assert 'gesso_requests_total{model_name="-",route="generations",status="404"} ' in text
    assert "# TYPE gesso_request_duration_seconds histogram" in text
    assert 'gesso_request_duration_seconds_bucket{le="+Inf",route="generations"} ' in text
    assert 'gesso_request_duration_seconds_count{route="generations"} ' in text
    assert 'gesso_images_total{model_name="nova"} ' in text and 'gesso_cost_usd_total{model_name="nova"} ' in text
    assert 'gesso_errors_total{type="invalid_request_error"} ' in text
    assert "gesso_requests_in_flight 0.0\n" in text
    for line in text.splitlines():  # every sample line is "name{labels} number"
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def requests_series(text: str) -> dict[tuple[str, str, str], float]:
    """``gesso_requests_total``'s series, by (route, model_name, status), as prometheus_client's parser reads them."""
    return {
        (sample.labels["route"], sample.labels["model_name"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gesso_requests_total"
    }


def post_json(connection: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` (raw bytes: JSON the openai client would never send) to /v1/images/generations."""
    connection.request("POST", "/v1/images/generations", body, {"Content-Type": "application/json"})
    answer = connection.getresponse()
    return answer.status, answer.read()


def test_a_lone_surrogate_model_name_leaves_metrics_readable(proxy):
    """``"\\ud800"`` is valid JSON for a string no UTF-8 can hold: recorded as ``-``, it never reaches the
    exposition, and every later scrape answers."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=20)
    try:
        status, body = post_json(connection, b'{"model": "\\ud800", "prompt": "x"}')
        form = (
            '--b\r\nContent-Disposition: form-data; name="model"\r\n\r\n\xed\xa0\x80\r\n'  # UTF-8'd U+D800
            '--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\nx\r\n--b--\r\n'
        )
        connection.request("POST", "/v1/images/variations", form.encode("latin-1"),
                           {"Content-Type": "multipart/form-data; boundary=b"})  # fmt: skip
        form_status = connection.getresponse().status
    finally:
        connection.close()
    assert status in (400, 404) and json.loads(body)["error"]["type"] == "invalid_request_error"
    assert 400 <= form_status < 500
    for _ in range(2):
        scrape_status, headers, text = proxy.curl(f"{proxy.url}/metrics")
        assert scrape_status == 200 and headers["content-type"] == proxy_metrics.CONTENT_TYPE
        scraped(text)
    assert requests_series(text)[("generations", "-", str(status))] >= 1
    assert "\\ud800" not in text and "\ufffd" not in text


def test_invented_model_names_add_no_series(proxy):
    """150 model names no config serves, and one of 1 MB: recorded as ``-``, they add at most one series (the
    ``-`` one for their status), and the exposition stays small."""
    before = requests_series(proxy.metrics())
    names = [f"invented-{i}" for i in range(150)] + ["m" * (1024 * 1024)]
    statuses = set()
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        for name in names:
            status, body = post_json(connection, json.dumps({"model": name, "prompt": "x"}).encode())
            statuses.add(status)
            assert json.loads(body)["error"]["param"] == "model"
    finally:
        connection.close()
    assert statuses <= {400, 404}
    text = proxy.metrics()
    after = requests_series(text)
    assert {model_name for _, model_name, _ in after} <= {"nova", "slow", "-"}
    assert len(after) - len(before) <= len(statuses)
    unserved = [key for key in after if key[1] == "-"]
    assert sum(after[key] - before.get(key, 0) for key in unserved) == len(names)
    assert len(text) < 20_000 and "invented-" not in text


def test_the_metrics_label_sets_cover_what_the_proxy_answers():
    """Every error type and HTTP status the proxy answers with is a label value of its own, not ``other``: the
    error classes' and the proxy's literal ones (app.py, keys.py) are all in metrics' fixed sets."""
    from gesso import errors

    classes, stack = [], [errors.GessoError]
    while stack:
        cls = stack.pop()
        classes.append(cls)
        stack += cls.__subclasses__()
    ours = [cls for cls in classes if cls.__module__ == "gesso.errors"]
    proxy_dir = Path(__file__).resolve().parent.parent / "core" / "src" / "gesso" / "proxy"
    source = "".join((proxy_dir / name).read_text() for name in ("app.py", "keys.py"))
    types = {cls.type for cls in ours} | set(re.findall(r'type="(\w+)"', source))
    types |= set(re.findall(r'metrics\.error\("(\w+)"\)', source))
    assert types <= proxy_metrics.ERROR_TYPES, types - proxy_metrics.ERROR_TYPES
    statuses = {cls.status_code for cls in ours} | {
        int(s) for s in re.findall(r"(?:ProxyError|_error)\(\s*(\d{3})", source)
    }
    assert statuses <= proxy_metrics.STATUSES, statuses - proxy_metrics.STATUSES
    assert {"client_disconnected", "spend_log_failed", "internal_error"} <= types  # the regexes found something


def test_metrics_require_auth_takes_the_master_key_only(emulators, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'gesso.db'}"
    store.upgrade(database_url)
    general = {"master_key": MASTER_KEY, "database_url": database_url, "metrics_require_auth": True}
    config = proxy_config.parse(
        {"model_list": [deployment("nova", emulators[0], "nova-a")], "general_settings": general}
    )
    with serving(config, lifespan="on") as keyed:
        url = f"{keyed.url}/metrics"
        status, _, body = keyed.curl("-X", "POST", f"{keyed.url}/key/generate", "-H", f"Authorization: Bearer {MASTER_KEY}",
                                     "-H", "Content-Type: application/json", "-d", "{}")  # fmt: skip
        assert status == 200, body
        virtual = json.loads(body)["key"]
        for headers, code in (((), "missing_key"), (("-H", "Authorization: Bearer sk-wrong"), "invalid_api_key"),
                              (("-H", f"Authorization: Bearer {virtual}"), "not_admin")):  # fmt: skip
            status, answer_headers, body = keyed.curl(*headers, url)
            error = json.loads(body)
            assert status == 401 and set(error) == {"error"}, body
            assert set(error["error"]) == {"message", "type", "param", "code"}
            assert error["error"]["type"] == "auth_error" and error["error"]["code"] == code
            assert answer_headers["x-request-id"] and "gesso_" not in body
        status, headers, text = keyed.curl("-H", f"Authorization: Bearer {MASTER_KEY}", url)
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert "# TYPE gesso_requests_total counter" in scraped(text)
    # without it, /metrics is open (as litellm's is), master key or not
    open_config = proxy_config.parse(
        {"model_list": [deployment("nova", emulators[0], "nova-a")], "general_settings": {"master_key": MASTER_KEY}}
    )
    with serving(open_config) as served:
        status, _, text = served.curl(f"{served.url}/metrics")
        assert status == 200 and "# TYPE gesso_requests_in_flight gauge" in scraped(text)


def test_openapi_document(proxy):
    status, _, body = proxy.curl(f"{proxy.url}/openapi.json")
    spec = json.loads(body)
    assert status == 200 and spec["openapi"].startswith("3.")
    for path in ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations", "/v1/models",
                 "/images/generations", "/health/liveliness", "/health/readiness", "/metrics"):  # fmt: skip
        assert path in spec["paths"], path
    generation = spec["paths"]["/v1/images/generations"]["post"]
    schema = generation["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["model"]["enum"] == ["nova", "slow"]
    assert {"200", "400", "401", "404", "408", "413", "429", "502"} <= set(generation["responses"])


# -- a client that disconnects cancels its call -----------------------------------------------------------------


def send_and_hang_up(port: int, model: str, after: float, until=None) -> None:
    """Send a request and hang up ``after`` seconds (or once ``until()`` holds, within 10 s)."""
    body = json.dumps({"model": model, "prompt": "x"}).encode()
    head = "POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        if until is not None:
            wait_for(until, 10)
        else:
            time.sleep(after)


def wait_for(condition, seconds: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "timed out"
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def hung(emulator, aws):
    """A proxy on the test's own emulator (a latency left in it ends with it): ``nova`` without SDK retries and
    ``retrying`` with many."""
    config = proxy_config.parse(
        {
            "model_list": [
                {
                    "model_name": "nova",
                    "litellm_params": {"model": NOVA, **aws, "max_retries": 0},
                    "model_info": {"id": "nova-a"},
                },
                {
                    "model_name": "retrying",
                    "litellm_params": {"model": NOVA, **aws, "max_retries": 20},
                    "model_info": {"id": "retrying-a"},
                },
            ]
        }
    )
    with serving(config) as served:
        yield served


def test_client_disconnect_cancels_the_call(hung, emulator, caplog):
    proxy, router, metrics = hung, hung.state.router, hung.state.metrics
    proxy.client().images.generate(model="nova", prompt="warm")  # the client and connection made, not timed
    emulator.inject("latency", seconds=5)
    with caplog.at_level(logging.INFO):
        at_bedrock = []  # (seen before the hang-up: a loaded machine may take longer than 0.3 s to get there)
        send_and_hang_up(proxy.port, "nova", after=0.3, until=lambda: at_bedrock.append(
            (router.in_flight["nova-a"], emulator.stats()["in_flight"])) or at_bedrock[-1] == (1, 1))  # fmt: skip
        assert at_bedrock[-1] == (1, 1)  # the call is at Bedrock
        # the proxy's call ends at once, not when the emulator answers (the emulator itself only notices
        # that the connection went when its latency is over, so its own in-flight count stays 1 until then)
        assert wait_for(lambda: router.in_flight["nova-a"] == 0 and metrics.in_flight == 0, 0.5) < 0.5
    text = proxy.metrics()
    assert 'gesso_errors_total{type="client_disconnected"} 1' in text
    assert 'gesso_requests_total{model_name="nova",route="generations",status="499"} 1' in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a disconnect is no server error"
    assert any("the client went away" in r.getMessage() for r in caplog.records)


def test_client_disconnect_cancels_the_retries(hung, emulator, monkeypatch):
    """``retrying`` retries a throttled call; a client that hangs up during the retries stops them."""
    monkeypatch.setattr(transport, "backoff", lambda attempt: 0.25)  # an attempt every 0.2 + 0.25 s
    proxy = hung
    proxy.client().images.generate(model="retrying", prompt="warm")
    emulator.inject("throttle")
    emulator.inject("latency", seconds=0.2)
    before = emulator.stats()["requests"]
    send_and_hang_up(proxy.port, "retrying", after=0.6)
    wait_for(lambda: proxy.state.router.in_flight["retrying-a"] == 0, 0.5)
    time.sleep(0.05)
    reached = emulator.stats()["requests"] - before
    assert reached >= 2  # it was retrying
    time.sleep(0.6)  # another attempt would have started by now
    assert emulator.stats()["requests"] - before == reached


def test_client_disconnect_during_the_first_call_cancels_its_retries(hung, emulator, monkeypatch):
    """Hung up before the call reached Bedrock, while the proxy made its client and its first connection:
    the call ends all the same (a cancellation lost at that moment would leave it retrying)."""
    monkeypatch.setattr(transport, "backoff", lambda attempt: 0.25)
    emulator.inject("throttle")
    emulator.inject("latency", seconds=0.2)
    send_and_hang_up(hung.port, "retrying", after=0.02)
    wait_for(lambda: hung.state.router.in_flight["retrying-a"] == 0, 0.5)
    time.sleep(0.05)
    reached = emulator.stats()["requests"]
    time.sleep(0.6)
    assert emulator.stats()["requests"] == reached <= 1
