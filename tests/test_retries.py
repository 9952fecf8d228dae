"""Retries (what is retried, how often, within what budget), timeouts, fault injection, and concurrency:
all against the emulator's injected faults over real HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading

import pytest

import gesso
from gesso import errors
from gesso.types import GeneratedImage, ParsedResponse, PreparedRequest
from gesso_bedrock import transport
from gesso_bedrock.emulator.faults import parse_spec

NOVA = "bedrock/amazon.nova-canvas-v1:0"


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    # keep the jittered waits short; the policy under test is unchanged
    monkeypatch.setattr(transport, "BACKOFF_BASE", 0.001)


def attempts(emulator) -> int:
    return emulator.stats()["requests"]


@pytest.mark.parametrize("kind", ["throttle", "not_ready", "error", "unavailable"])
def test_transient_failures_are_retried_until_success(aws, emulator, kind):
    emulator.inject(kind, count=2)
    resp = gesso.image_generation(NOVA, "x", **aws)
    assert len(resp.data) == 1
    assert attempts(emulator) == 3


def test_throttling_that_never_ends_says_how_many_attempts(aws, emulator):
    emulator.inject("throttle")
    with pytest.raises(errors.RateLimitError) as info:
        gesso.image_generation(NOVA, "x", **aws)
    assert info.value.attempts == 5 == attempts(emulator)
    assert info.value.status_code == 429
    assert str(info.value).endswith("Too many requests, please wait before trying again. (gave up after 5 attempts)")


def test_max_retries_bounds_the_attempts(aws, emulator):
    emulator.inject("error")
    with pytest.raises(errors.ProviderError, match=r"\(gave up after 3 attempts\)"):
        gesso.image_generation(NOVA, "x", max_retries=2, **aws)
    assert attempts(emulator) == 3
    with pytest.raises(errors.ProviderError) as info:
        gesso.image_generation(NOVA, "x", max_retries=0, **aws)
    assert "gave up" not in str(info.value)
    assert attempts(emulator) == 4


def test_the_retry_budget_bounds_the_waiting(aws, emulator, monkeypatch):
    monkeypatch.setattr(transport, "BACKOFF_BASE", 5.0)
    monkeypatch.setattr(transport, "backoff", lambda attempt: 5.0)
    emulator.inject("throttle")
    with pytest.raises(errors.RateLimitError):
        gesso.image_generation(NOVA, "x", retry_budget=1, **aws)
    assert attempts(emulator) == 1, "the first wait would overrun the budget, so no retry is made"


@pytest.mark.parametrize("kind", ["timeout", "model_error", "eol"])
def test_failures_that_would_fail_again_are_not_retried(aws, emulator, kind):
    emulator.inject(kind)
    with pytest.raises(errors.GessoError):
        gesso.image_generation(NOVA, "x", **aws)
    assert attempts(emulator) == 1


def test_end_of_life_answer_is_model_retired(aws, emulator):
    emulator.inject("eol", model="amazon.nova-canvas-v1:0")
    with pytest.raises(errors.ModelRetiredError, match="reached the end of its life"):
        gesso.image_generation(NOVA, "x", **aws)


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (
            {
                "status": 403,
                "code": "AccessDeniedException",
                "message": "You don't have access to the model with the specified model ID.",
            },
            errors.PermissionDeniedError,
        ),
        ({"status": 400, "code": "ServiceQuotaExceededException", "message": "quota"}, errors.RateLimitError),
        (
            {"status": 400, "code": "ValidationException", "message": "The provided model identifier is invalid."},
            errors.InvalidRequestError,
        ),
    ],
)
def test_client_errors_are_not_retried(aws, emulator, fault, cls):
    emulator.inject("error", **fault)
    with pytest.raises(cls):
        gesso.image_generation(NOVA, "x", **aws)
    assert attempts(emulator) == 1


def test_validation_errors_never_reach_the_wire(aws, emulator):
    with pytest.raises(errors.InvalidRequestError):
        gesso.image_generation(NOVA, "x", cfgScale=50, **aws)
    assert attempts(emulator) == 0


def test_connection_failures_are_retried(aws):
    aws["aws_bedrock_runtime_endpoint"] = "http://127.0.0.1:9"
    with pytest.raises(errors.ProviderError, match=r"Could not reach Bedrock.*\(gave up after 3 attempts\)"):
        gesso.image_generation(NOVA, "x", max_retries=2, **aws)


def test_read_timeout_per_call_and_not_retried(aws, emulator):
    emulator.inject("latency", seconds=1.0)
    with pytest.raises(errors.RequestTimeoutError, match="Bedrock did not answer in time"):
        gesso.image_generation(NOVA, "x", timeout=0.2, **aws)
    assert attempts(emulator) == 1


def test_per_model_faults_leave_other_models_alone(aws, emulator):
    emulator.inject("throttle", model="some.other-model-v1")
    gesso.image_generation(NOVA, "x", max_retries=0, **aws)
    emulator.inject("throttle", model="us.amazon.nova-canvas-v1:0", count=1)
    gesso.image_generation(NOVA, "x", max_retries=0, **aws)  # base id invoked: not matched
    with pytest.raises(errors.RateLimitError):
        gesso.image_generation("bedrock/us.amazon.nova-canvas-v1:0", "x", max_retries=0, **aws)


def test_rate_faults_are_reproducible_with_a_seed():
    from gesso_bedrock.emulator.faults import FaultPlan

    def run(seed):
        plan = FaultPlan(seed)
        plan.add(parse_spec("error:rate=0.5"))
        return [plan.apply(("m",)) is not None for _ in range(40)]

    assert run(7) == run(7)
    assert 5 < sum(run(7)) < 35


def test_backoff_is_full_jitter_within_the_cap():
    waits = [transport.backoff(attempt) for attempt in range(1, 12) for _ in range(20)]
    assert all(0 <= w <= transport.BACKOFF_CAP for w in waits)
    assert max(transport.backoff(1) for _ in range(50)) <= transport.BACKOFF_BASE


def test_control_endpoint(emulator):
    def call(method, path, body=None):
        conn = http.client.HTTPConnection(emulator.host, emulator.port, timeout=10)
        conn.request(method, path, body=json.dumps(body) if body is not None else None)
        response = conn.getresponse()
        return response.status, json.loads(response.read())

    status, added = call("POST", "/_gesso/faults", {"kind": "throttle", "count": 2, "model": "amazon.nova-canvas-v1:0"})
    assert status == 200 and added["kind"] == "throttle" and added["count"] == 2
    assert [f["kind"] for f in call("GET", "/_gesso/faults")[1]] == ["throttle"]
    status, error = call("POST", "/_gesso/faults", {"kind": "explode"})
    assert status == 400 and "fault kind must be one of" in error["message"]
    assert call("DELETE", "/_gesso/faults") == (200, [])
    assert call("GET", "/_gesso/stats")[1] == {"requests": 0, "in_flight": 0, "max_in_flight": 0}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("throttle:count=2", {"kind": "throttle", "count": 2}),
        ("error:rate=0.1,status=503", {"kind": "error", "rate": 0.1, "status": 503}),
        ("eol:model=amazon.nova-canvas-v1:0", {"kind": "eol", "model": "amazon.nova-canvas-v1:0"}),
        ("latency:seconds=1.5", {"kind": "latency", "seconds": 1.5}),
    ],
)
def test_fault_specs(spec, expected):
    fault = parse_spec(spec).to_dict()
    assert {k: fault[k] for k in expected} == expected


@pytest.mark.parametrize("spec", ["boom", "throttle:count", "throttle:rate=2", "throttle:colour=red"])
def test_bad_fault_specs(spec):
    with pytest.raises((ValueError, TypeError)):
        parse_spec(spec)


class Gate:
    """A test model whose emulation waits until ``parties`` calls are inside it at once: it only answers
    if nothing on the client side (executor, connection pool, lock) caps concurrency below that."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=30)

    def emulate(self, call):
        self.barrier.wait()
        return {"ok": True}

    @gesso.hookimpl
    def gesso_register_models(self):
        return [gesso.Model(id="test.gate-v1", family="test.gate", emulator=self.emulate)]

    @gesso.hookimpl
    def gesso_transform_request(self, request):
        return PreparedRequest(bodies=[{}]) if request.model.family == "test.gate" else None

    @gesso.hookimpl
    def gesso_parse_response(self, request):
        return ParsedResponse(images=[GeneratedImage(b64="")]) if request.model.family == "test.gate" else None


def test_async_calls_are_all_in_flight_at_once(aws, emulator):
    gesso.register_plugin(Gate(200), name="gate")

    async def many():
        return await asyncio.gather(*(gesso.aimage_generation("bedrock/test.gate-v1", "x", **aws) for _ in range(200)))

    results = asyncio.run(many())
    assert len(results) == 200
    assert emulator.stats()["max_in_flight"] == 200, "no executor or pool limit serialised the calls"


def test_sync_threads_share_one_client_without_serialising(aws, emulator):
    gesso.register_plugin(Gate(40), name="gate")
    out = []
    threads = [
        threading.Thread(target=lambda: out.append(gesso.image_generation("bedrock/test.gate-v1", "x", **aws)))
        for _ in range(40)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 40
    assert emulator.stats()["max_in_flight"] == 40
    assert len(transport._clients) == 1
