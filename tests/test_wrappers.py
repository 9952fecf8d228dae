"""Cross-cutting plugins: ``wrapper=True`` hook implementations see every call's stages, results and errors,
whichever family and provider own the model (they register neither, so gesso does not route them away)."""

from __future__ import annotations

import time

import pytest

import gesso
from conftest import NOVA
from gesso import plugins
from gesso.errors import RateLimitError

STAGES = ("gesso_transform_request", "gesso_invoke", "gesso_parse_response", "gesso_calculate_cost")


class Recorder:
    """Records every provider call and its answer (a wrapper); in replay mode, answers from the record first
    (a ``tryfirst`` implementation: ``firstresult`` then stops before anything is sent)."""

    def __init__(self) -> None:
        self.calls: dict[bytes, object] = {}
        self.replay = False

    @gesso.hookimpl(wrapper=True)
    def gesso_invoke(self, request, invocation):
        response = yield
        self.calls[invocation.body] = response
        return response

    @gesso.hookimpl(tryfirst=True, specname="gesso_invoke")
    def replayed(self, request, invocation):
        return self.calls.get(invocation.body) if self.replay else None


class Timer:
    """Times every stage of every call, and sees the errors stages raise."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float, str | None]] = []

    def _time(self, stage):
        start = time.perf_counter()
        try:
            result = yield
        except Exception as exc:
            self.seen.append((stage, time.perf_counter() - start, type(exc).__name__))
            raise
        self.seen.append((stage, time.perf_counter() - start, None))
        return result

    @gesso.hookimpl(wrapper=True)
    def gesso_transform_request(self, request):
        return (yield from self._time("gesso_transform_request"))

    @gesso.hookimpl(wrapper=True)
    def gesso_invoke(self, request, invocation):
        return (yield from self._time("gesso_invoke"))

    @gesso.hookimpl(wrapper=True)
    def gesso_parse_response(self, request, prepared, response):
        return (yield from self._time("gesso_parse_response"))

    @gesso.hookimpl(wrapper=True)
    def gesso_calculate_cost(self, request, prepared, response):
        return (yield from self._time("gesso_calculate_cost"))


def test_a_timing_wrapper_sees_every_stage_of_every_family(aws):
    timer = Timer()
    plugins.register_plugin(timer, name="timer")
    gesso.image_generation(NOVA, "otter", **aws)
    gesso.image_generation("bedrock/stability.sd3-5-large-v1:0", "a lighthouse", n=2, **aws)
    stages = [stage for stage, _, _ in timer.seen]
    assert stages.count("gesso_transform_request") == 2 and stages.count("gesso_invoke") == 3
    assert stages.count("gesso_parse_response") == 3 and stages.count("gesso_calculate_cost") == 2
    assert all(seconds >= 0 and error is None for _, seconds, error in timer.seen)


def test_a_wrapper_sees_the_exceptions_of_a_stage(aws, emulator):
    timer = Timer()
    plugins.register_plugin(timer, name="timer")
    emulator.inject("throttle", count=1)
    with pytest.raises(RateLimitError):
        gesso.image_generation(NOVA, "otter", max_retries=0, **aws)
    assert ("gesso_invoke", "RateLimitError") in [(stage, error) for stage, _, error in timer.seen]
    with pytest.raises(gesso.errors.InvalidRequestError):
        gesso.image_generation(NOVA, "otter", cfgScale=99, **aws)
    assert timer.seen[-1][0] == "gesso_transform_request" and timer.seen[-1][2] == "InvalidRequestError"


def test_a_record_and_replay_wrapper_answers_without_sending(aws, emulator):
    recorder = Recorder()
    plugins.register_plugin(recorder, name="recorder")
    first = gesso.image_generation(NOVA, "otter", seed=3, **aws)
    assert len(emulator.requests) == 1 and len(recorder.calls) == 1
    recorder.replay = True
    emulator.inject("error")  # the emulator would now fail every call: the replay never reaches it
    again = gesso.image_generation(NOVA, "otter", seed=3, **aws)
    assert len(emulator.requests) == 1
    assert again.data[0].b64_json == first.data[0].b64_json and again.cost == first.cost
