"""A failing third-party hook: a plugin whose stage hook raises, answers with the wrong type, or hangs past the
call's deadline fails that call with a ``PluginHookError`` (a ``ProviderError``, 502) naming the plugin, never a
bare traceback; the host process and the proxy keep serving the next call, with the plugin still installed.

The broken plugins break only calls whose prompt is ``break``, and register no models, so they see every call
(as wrappers that record, replay or time calls do) and answer first (``tryfirst``)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import types

import openai
import pytest
import uvicorn

import gesso
from gesso.errors import PluginHookError, ProviderError
from gesso.proxy import config as proxy_config
from gesso.proxy.app import build_app
from helpers import uvicorn_running

NOVA = "bedrock/amazon.nova-canvas-v1:0"
NAME = "gesso-acme-broken"
#: with these, the call's deadline (Bedrock's: its timeouts and retries, one attempt of slack) is 2 s
QUICK = {"timeout": 0.5, "max_retries": 0}


def broken(hook: str, function, **marks) -> types.ModuleType:
    """A plugin (a module, as an installed one is) with one implementation of ``hook``."""
    plugin = types.ModuleType("gesso_acme_broken")
    setattr(plugin, hook, gesso.hookimpl(**(marks or {"tryfirst": True}))(function))
    return plugin


def boom(*_: object) -> None:
    raise RuntimeError("boom: the plugin has a bug")


# what each hook does on a "break" call (None otherwise: the owner answers as usual), by its arguments
RAISES = {
    "gesso_transform_request": lambda request: boom() if request.prompt == "break" else None,
    "gesso_invoke": lambda request, invocation: boom() if request.prompt == "break" else None,
    "gesso_parse_response": lambda request, prepared, response: boom() if request.prompt == "break" else None,
    "gesso_calculate_cost": lambda request, prepared, response: boom() if request.prompt == "break" else None,
}
GARBAGE = {
    "gesso_transform_request": lambda request: {"bodies": []} if request.prompt == "break" else None,
    "gesso_invoke": lambda request, invocation: b'{"images": []}' if request.prompt == "break" else None,
    "gesso_parse_response": lambda request, prepared, response: "an image" if request.prompt == "break" else None,
    "gesso_calculate_cost": lambda request, prepared, response: "cheap" if request.prompt == "break" else None,
}


def assert_names_the_plugin(error: PluginHookError, hook: str) -> None:
    assert isinstance(error, ProviderError) and error.status_code == 502 and error.code == "plugin_failed"
    assert error.plugin == NAME and error.hook == hook
    assert f"'{NAME}'" in error.message and hook in error.message
    assert "Traceback" not in error.message and 'File "' not in error.message


@pytest.mark.parametrize("hook", list(RAISES))
@pytest.mark.parametrize("behaviour", ["raises", "garbage"])
def test_a_hook_that_raises_or_answers_garbage_is_a_provider_error_naming_the_plugin(aws, emulator, hook, behaviour):
    gesso.register_plugin(broken(hook, (RAISES if behaviour == "raises" else GARBAGE)[hook]), name=NAME)
    with pytest.raises(PluginHookError) as caught:
        gesso.image_generation(NOVA, "break", **aws)
    assert_names_the_plugin(caught.value, hook)
    if behaviour == "raises":
        assert "it raised RuntimeError: boom: the plugin has a bug" in caught.value.message
        assert isinstance(caught.value.__cause__, RuntimeError)  # chained, for the host's own logs
    else:
        assert "it answered a " in caught.value.message
    # the host keeps serving, the plugin still installed
    assert gesso.image_generation(NOVA, "a fox", **aws).data


@pytest.mark.parametrize("cost", [float("nan"), -1.0, True, [0.04]])
def test_a_cost_that_is_no_price_is_refused(aws, emulator, cost):
    gesso.register_plugin(broken("gesso_calculate_cost", lambda request, prepared, response: cost), name=NAME)
    with pytest.raises(PluginHookError, match="not a cost in USD") as caught:
        gesso.image_generation(NOVA, "a fox", **aws)
    assert_names_the_plugin(caught.value, "gesso_calculate_cost")


@pytest.mark.filterwarnings("ignore:A plugin raised an exception during an old-style hookwrapper teardown")
@pytest.mark.parametrize("style", ["wrapper", "hookwrapper"])  # hookwrapper: pluggy's old style (a Result is sent)
def test_a_wrapper_that_raises_is_named(aws, emulator, style):
    def gesso_parse_response(request, prepared, response):
        parsed = yield
        if request.prompt == "break":
            raise KeyError("images")
        return parsed

    gesso.register_plugin(broken("gesso_parse_response", gesso_parse_response, **{style: True}), name=NAME)
    with pytest.raises(PluginHookError) as caught:
        gesso.image_generation(NOVA, "break", **aws)
    assert_names_the_plugin(caught.value, "gesso_parse_response")
    assert "KeyError" in caught.value.message
    assert gesso.image_generation(NOVA, "a fox", **aws).data


def ainvoke(behaviour: str):
    async def raising():
        boom()

    async def garbage():
        return {"body": "not a RawResponse"}

    def gesso_ainvoke(request, invocation):
        if request.prompt != "break":
            return None
        return {"raises": raising, "garbage": garbage}.get(behaviour, lambda: "not awaitable")()

    return gesso_ainvoke


@pytest.mark.parametrize("behaviour", ["raises", "garbage", "not awaitable"])
def test_an_async_invoke_that_fails_is_named(aws, emulator, behaviour):
    gesso.register_plugin(broken("gesso_ainvoke", ainvoke(behaviour)), name=NAME)

    async def calls():
        with pytest.raises(PluginHookError) as caught:
            await gesso.aimage_generation(NOVA, "break", **aws)
        assert_names_the_plugin(caught.value, "gesso_ainvoke")
        return await gesso.aimage_generation(NOVA, "a fox", **aws)

    assert asyncio.run(calls()).data


@pytest.fixture
def release():
    """Set at the end of the test: what a hanging hook waits for (so its abandoned thread ends)."""
    event = threading.Event()
    yield event
    event.set()


def test_an_invoke_that_hangs_is_abandoned_at_the_deadline(aws, emulator, release):
    def gesso_invoke(request, invocation):
        if request.prompt == "break":
            release.wait(60)
        return None

    gesso.register_plugin(broken("gesso_invoke", gesso_invoke), name=NAME)
    started = time.monotonic()
    with pytest.raises(PluginHookError) as caught:
        gesso.image_generation(NOVA, "break", **aws, **QUICK)
    elapsed = time.monotonic() - started
    assert_names_the_plugin(caught.value, "gesso_invoke")  # its guard noted it on the hung thread
    assert "hangs in gesso_invoke" in caught.value.message and "2 s" in caught.value.message
    assert 1.9 < elapsed < 6
    assert gesso.image_generation(NOVA, "a fox", **aws, **QUICK).data


def test_an_async_invoke_that_hangs_is_cancelled_at_the_deadline(aws, emulator):
    cancelled = []

    async def hang():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    def gesso_ainvoke(request, invocation):
        return hang() if request.prompt == "break" else None

    gesso.register_plugin(broken("gesso_ainvoke", gesso_ainvoke), name=NAME)

    async def calls():
        started = time.monotonic()
        with pytest.raises(PluginHookError) as caught:
            await gesso.aimage_generation(NOVA, "break", **aws, **QUICK)
        elapsed = time.monotonic() - started
        assert_names_the_plugin(caught.value, "gesso_ainvoke")  # its guard noted the cancellation
        assert 1.9 < elapsed < 6 and cancelled == [True]
        return await gesso.aimage_generation(NOVA, "a fox", **aws, **QUICK)

    assert asyncio.run(calls()).data


def test_a_wrapper_that_hangs_in_invoke_is_named(aws, emulator, release):
    def gesso_invoke(request, invocation):
        if request.prompt == "break":
            release.wait(60)
        return (yield)

    gesso.register_plugin(broken("gesso_invoke", gesso_invoke, wrapper=True), name=NAME)
    with pytest.raises(PluginHookError) as caught:
        gesso.image_generation(NOVA, "break", **aws, **QUICK)
    assert_names_the_plugin(caught.value, "gesso_invoke")
    assert "hangs in gesso_invoke" in caught.value.message
    assert gesso.image_generation(NOVA, "a fox", **aws, **QUICK).data


def test_a_wrapper_that_lets_an_implementations_error_through_does_not_take_the_blame(aws, emulator):
    seen = []

    def gesso_invoke(request, invocation):
        try:
            return (yield)
        except Exception as exc:
            seen.append(type(exc).__name__)
            raise

    class Inner:
        @gesso.hookimpl(tryfirst=True)
        def gesso_invoke(self, request, invocation):
            return boom() if request.prompt == "break" else None

    gesso.register_plugin(broken("gesso_invoke", gesso_invoke, wrapper=True), name="gesso-acme-wrapper")
    gesso.register_plugin(Inner(), name=NAME)
    with pytest.raises(PluginHookError) as caught:
        gesso.image_generation(NOVA, "break", **aws)
    assert_names_the_plugin(caught.value, "gesso_invoke")  # the implementation, not the wrapper around it
    assert seen == ["PluginHookError"]


@pytest.mark.parametrize("shape", ["ends without yielding", "yields twice"])
def test_a_wrapper_that_does_not_yield_once_is_named(aws, emulator, shape):
    def gesso_calculate_cost(request, prepared, response):
        if request.prompt == "break" and shape == "ends without yielding":
            return None
        cost = yield
        if request.prompt == "break":
            yield
        return cost

    gesso.register_plugin(broken("gesso_calculate_cost", gesso_calculate_cost, wrapper=True), name=NAME)
    with pytest.raises(PluginHookError) as caught:
        gesso.image_generation(NOVA, "break", **aws)
    assert_names_the_plugin(caught.value, "gesso_calculate_cost")
    assert {"ends without yielding": "ended without yielding", "yields twice": "yielded twice"}[shape] in str(
        caught.value
    )
    assert gesso.image_generation(NOVA, "a fox", **aws).cost


@pytest.mark.parametrize("behaviour", ["raises", "hangs"])
def test_an_async_wrappers_awaitable_that_fails_is_named(aws, emulator, behaviour):
    async def instead(pending):
        answer = await pending
        if behaviour == "raises":
            raise KeyError("images")
        await asyncio.sleep(60)
        return answer

    def gesso_ainvoke(request, invocation):
        pending = yield
        return instead(pending) if request.prompt == "break" else pending

    gesso.register_plugin(broken("gesso_ainvoke", gesso_ainvoke, wrapper=True), name=NAME)

    async def calls():
        with pytest.raises(PluginHookError) as caught:
            await gesso.aimage_generation(NOVA, "break", **aws, **QUICK)
        assert_names_the_plugin(caught.value, "gesso_ainvoke")
        assert ("it raised KeyError" if behaviour == "raises" else "hangs in gesso_ainvoke") in caught.value.message
        return await gesso.aimage_generation(NOVA, "a fox", **aws, **QUICK)

    assert asyncio.run(calls()).data


# -- through the proxy -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(config):
    served = uvicorn.Config(build_app(config), host="127.0.0.1", port=0, log_level="warning", log_config=None,
                            lifespan="off")  # fmt: skip
    for port in uvicorn_running(served):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def proxy(aws, monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    entry = {"model_name": "nova", "litellm_params": {"model": NOVA, **aws, **QUICK}, "model_info": {"id": "nova-a"}}
    with serving(proxy_config.parse({"model_list": [entry]})) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="sk-anything", max_retries=0, timeout=20)


@pytest.mark.parametrize(
    "hook, function",
    [
        ("gesso_transform_request", RAISES["gesso_transform_request"]),
        ("gesso_parse_response", GARBAGE["gesso_parse_response"]),
        ("gesso_calculate_cost", GARBAGE["gesso_calculate_cost"]),
        ("gesso_ainvoke", ainvoke("raises")),
        ("gesso_ainvoke", lambda request, invocation: asyncio.sleep(60) if request.prompt == "break" else None),
    ],
    ids=["transform-raises", "parse-garbage", "cost-garbage", "ainvoke-raises", "ainvoke-hangs"],
)
def test_the_proxy_answers_a_502_naming_the_plugin_and_keeps_serving(proxy, hook, function):
    gesso.register_plugin(broken(hook, function), name=NAME)
    with pytest.raises(openai.APIStatusError) as caught:
        proxy.images.generate(model="nova", prompt="break")
    assert caught.value.status_code == 502
    text = caught.value.response.text
    assert "Traceback" not in text and 'File "' not in text
    error = caught.value.response.json()["error"]
    assert error["type"] == "api_error" and error["code"] == "plugin_failed"
    assert f"'{NAME}'" in error["message"] and hook in error["message"]
    assert proxy.images.generate(model="nova", prompt="a fox").data
