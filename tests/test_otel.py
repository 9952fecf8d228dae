"""OpenTelemetry (gesso-core[otel], gesso.telemetry): a CLIENT span per provider call from the SDK, a SERVER span per
proxy request continuing the caller's W3C trace, the GenAI duration histogram, and ``gesso serve`` exporting over
OTLP/HTTP to a receiver on loopback, configured by ``OTEL_*`` variables alone."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
import test_proxy
from opentelemetry import metrics, trace
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from test_proxy import Served, deployment, serving

import gesso
from gesso import telemetry
from gesso.proxy import config as proxy_config
from gesso_bedrock.emulator import Emulator
from helpers import picture

NOVA = "bedrock/amazon.nova-canvas-v1:0"
MODEL = "amazon.nova-canvas-v1:0"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """A tracer provider exporting to memory and a meter provider read in memory, set as OpenTelemetry's global
    ones for the test, then unset (as OpenTelemetry's own test utilities do), so other tests run without."""
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    try:
        yield exporter, reader
    finally:
        tracer_provider.shutdown()
        trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
        trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
        from opentelemetry.metrics import _internal as metrics_internal

        metrics_internal._METER_PROVIDER_SET_ONCE = Once()
        metrics_internal._METER_PROVIDER = None


def aws(emulator: Emulator) -> dict:
    return {**test_proxy.aws(emulator), "max_retries": 0}


# the proxy's tests' fixtures: two emulators for the module, cleared between tests, no HTTP proxy
emulators, clean_emulators, no_http_proxy = test_proxy.emulators, test_proxy.clean_emulators, test_proxy.no_http_proxy


def durations(reader: InMemoryMetricReader) -> list:
    data = reader.get_metrics_data()
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "gen_ai.client.operation.duration" and metric.unit == "s"
        for point in metric.data.data_points
    ]


# -- the SDK alone ----------------------------------------------------------------------------------------------


def test_off_without_a_configured_provider_and_nothing_recorded(emulator):
    assert telemetry.installed() and not telemetry.enabled()
    response = gesso.image_generation(NOVA, "an otter", **aws(emulator))
    assert response.data  # and no span anywhere: no provider takes them


def test_an_sdk_call_is_one_client_span_with_the_genai_attributes_and_a_duration(otel, emulator):
    exporter, reader = otel
    response = gesso.image_generation(NOVA, "an otter", n=2, size="1024x1024", seed=42, **aws(emulator))
    (span,) = exporter.get_finished_spans()
    assert span.name == f"generate_content {MODEL}" and span.kind is trace.SpanKind.CLIENT
    assert span.parent is None and span.status.is_ok
    assert dict(span.attributes) == {
        "gen_ai.operation.name": "generate_content",
        "gen_ai.output.type": "image",
        "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.request.model": MODEL,
        "gen_ai.request.choice.count": 2,
        "gen_ai.request.seed": 42,
        "gesso.operation": "generate",
        "gesso.request.size": "1024x1024",
        "gesso.response.images": 2,
        "gesso.cost.usd": response.cost,
    }
    assert "an otter" not in repr(dict(span.attributes))
    (point,) = durations(reader)
    assert point.count == 1 and 0 < point.sum < 30
    assert dict(point.attributes) == {
        "gen_ai.operation.name": "generate_content",
        "gen_ai.output.type": "image",
        "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.request.model": MODEL,
    }


def test_a_failed_call_has_its_error_type_and_an_error_status(otel, emulator):
    exporter, reader = otel
    emulator.inject("throttle")
    with pytest.raises(gesso.errors.GessoError) as caught:
        gesso.image_generation(NOVA, "an otter", **aws(emulator))
    (span,) = exporter.get_finished_spans()
    assert span.attributes["error.type"] == telemetry.error_type(caught.value) != ""
    assert span.status.status_code is trace.StatusCode.ERROR
    assert "gesso.cost.usd" not in span.attributes
    (point,) = durations(reader)
    assert point.attributes["error.type"] == span.attributes["error.type"]


def test_an_async_call_inside_an_applications_span_is_its_child(otel, emulator):
    exporter, _ = otel

    async def handle() -> None:
        with trace.get_tracer("app").start_as_current_span("handle upload"):
            await gesso.aimage_generation(NOVA, "an otter", **aws(emulator))

    asyncio.run(handle())
    client, outer = exporter.get_finished_spans()
    assert outer.name == "handle upload" and client.name == f"generate_content {MODEL}"
    assert client.parent.span_id == outer.context.span_id and client.context.trace_id == outer.context.trace_id


# -- the proxy --------------------------------------------------------------------------------------------------


@pytest.fixture
def pair(emulators) -> Iterator[Served]:
    """A proxy with ``pair``: a deployment on each emulator, the first tried first."""
    first, second = emulators
    model_list = [deployment("pair", first, "first"), deployment("pair", second, "second")]
    with serving(proxy_config.parse({"model_list": model_list, "router_settings": {"cooldown_time": 30}})) as served:
        yield served


def test_a_proxied_edit_with_a_failover_is_two_client_spans_under_the_callers_trace(otel, pair, emulators):
    exporter, reader = otel
    first = emulators[0]
    first.inject("throttle")
    raw = pair.client().images.with_raw_response.edit(
        model="pair",
        image=("photo.png", picture(512, 512), "image/png"),
        prompt="a red door",
        extra_body={"seed": 7},
        extra_headers={"traceparent": TRACEPARENT},
    )
    assert raw.status_code == 200 and raw.headers["x-gesso-deployment"] == "second"
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is trace.SpanKind.SERVER]
    clients = [s for s in spans if s.kind is trace.SpanKind.CLIENT]
    assert server.name == "POST /v1/images/edits"
    assert f"{server.context.trace_id:032x}" == TRACE_ID and f"{server.parent.span_id:016x}" == PARENT_ID
    assert server.parent.is_remote
    assert dict(server.attributes) == {
        "http.request.method": "POST",
        "http.route": "/v1/images/edits",
        "url.path": "/v1/images/edits",
        "http.response.status_code": 200,
        "gesso.request_id": raw.headers["x-request-id"],
        "gesso.model_name": "pair",
        "gesso.deployment": "second",
        "gesso.attempts": 2,
        "gesso.response.images": 1,
        "gesso.cost.usd": float(raw.headers["x-gesso-response-cost"]),
    }
    assert len(clients) == 2 and sorted(clients, key=lambda s: s.start_time) == clients
    for span in clients:
        assert span.name == f"generate_content {MODEL}"
        assert span.parent.span_id == server.context.span_id and span.context.trace_id == server.context.trace_id
        assert span.attributes["gesso.operation"] == "edit" and span.attributes["gen_ai.request.seed"] == 7
        assert span.attributes["gen_ai.provider.name"] == "aws.bedrock"
        assert span.attributes["gesso.request.size"] == "512x512"
    failed, served = clients
    assert failed.attributes["error.type"] == "rate_limited"  # the error's code: the first was throttled
    assert failed.status.status_code is trace.StatusCode.ERROR and "gesso.cost.usd" not in failed.attributes
    assert served.status.is_ok and "error.type" not in served.attributes
    assert served.attributes["gesso.cost.usd"] == server.attributes["gesso.cost.usd"]
    assert "a red door" not in repr([dict(s.attributes) for s in spans])
    assert sorted("error.type" in p.attributes for p in durations(reader)) == [False, True]


# -- gesso serve, exporting over OTLP/HTTP ----------------------------------------------------------------------


class Receiver(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP receiver on loopback: every span of every ``POST /v1/traces`` (protobuf
    ExportTraceServiceRequest, decoded with opentelemetry-proto) and the names of the metrics sent to
    ``/v1/metrics``, with their resources' attributes."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[tuple[dict[str, Any], Any]] = []
        self.metrics: set[str] = set()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["Content-Type"] == "application/x-protobuf"
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            with self.server.lock:
                for resource_spans in request.resource_spans:
                    resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                    for scope_spans in resource_spans.scope_spans:
                        self.server.spans += [(resource, span) for span in scope_spans.spans]
        elif self.path == "/v1/metrics":
            metrics_request = ExportMetricsServiceRequest.FromString(body)
            with self.server.lock:
                self.server.metrics |= {
                    m.name for r in metrics_request.resource_metrics for s in r.scope_metrics for m in s.metrics
                }
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _post(url: str, traceparent: str) -> int:
    body = json.dumps({"model": "nova", "prompt": "a lighthouse", "size": "320x320"}).encode()
    request = urllib.request.Request(url + "/v1/images/generations", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("traceparent", traceparent)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")
def test_gesso_serve_with_two_workers_exports_spans_from_each_over_otlp_http(tmp_path, monkeypatch, receiver):
    from test_workers import serving as gesso_serve

    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)  # nothing else asks for export
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gesso-under-test")
    monkeypatch.setenv("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "process")  # process.pid: which worker sent it
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    with gesso_serve(tmp_path, {}, "--workers", "2", "--emulator", processes=3) as served:
        workers = set(served.children())
        parents = {f"{n:016x}": f"00-{TRACE_ID}-{n:016x}-01" for n in range(1, 41)}
        deadline = time.monotonic() + 30
        seen: set[int] = set()
        with ThreadPoolExecutor(8) as pool:
            for batch in range(5):  # until both workers have exported a server span (the kernel spreads calls)
                sent = list(parents.items())[batch * 8 : batch * 8 + 8]
                assert list(pool.map(lambda p: _post(served.url, p[1]), sent)) == [200] * 8
                while time.monotonic() < deadline:
                    with receiver.lock:
                        servers = [(r, s) for r, s in receiver.spans if s.kind == s.SPAN_KIND_SERVER]
                    if len(servers) == 8 * (batch + 1):
                        break
                    time.sleep(0.05)
                seen = {r["process.pid"] for r, _ in servers}
                if len(seen) == 2:
                    break
        assert seen == workers & seen and len(seen) == 2
        while "gen_ai.client.operation.duration" not in receiver.metrics:
            assert time.monotonic() < deadline, receiver.metrics
            time.sleep(0.05)
    with receiver.lock:
        spans = list(receiver.spans)
    servers = {s.span_id: (r, s) for r, s in spans if s.kind == s.SPAN_KIND_SERVER}
    clients = [(r, s) for r, s in spans if s.kind == s.SPAN_KIND_CLIENT]
    assert len(clients) == len(servers)
    for resource, span in servers.values():
        assert resource["service.name"] == "gesso-under-test" and span.name == "POST /v1/images/generations"
        assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() in parents
    for resource, span in clients:
        server_resource, server = servers[span.parent_span_id]
        assert span.trace_id == server.trace_id and resource["process.pid"] == server_resource["process.pid"]
        attributes = {a.key: _value(a.value) for a in span.attributes}
        assert span.name == f"generate_content {MODEL}"
        assert attributes["gen_ai.provider.name"] == "aws.bedrock" and attributes["gesso.request.size"] == "320x320"
        assert attributes["gesso.cost.usd"] > 0


def test_without_the_extra_telemetry_is_off_and_gesso_serve_sets_nothing_up(tmp_path):
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"  # as if gesso-core[otel] were not installed
        "from gesso import telemetry, api\n"
        "assert not telemetry.installed() and not telemetry.enabled()\n"
        "print(telemetry.configure_from_env(), type(telemetry.attempt(None)).__name__)\n"
    )
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "otlp"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "_NoRecord"]


def test_a_proxied_request_every_deployment_refuses_has_its_error_on_the_server_span(otel, pair, emulators):
    exporter, _ = otel
    first, second = emulators
    first.inject("error")  # a 5xx: on to the next deployment
    second.inject("timeout")  # the last deployment's error (not retried) is the answer
    with pytest.raises(openai.APIStatusError):
        pair.client().images.generate(model="pair", prompt="x", extra_headers={"traceparent": TRACEPARENT})
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is trace.SpanKind.SERVER]
    clients = [s for s in spans if s.kind is trace.SpanKind.CLIENT]
    assert server.attributes["http.response.status_code"] == 408 and server.attributes["gesso.attempts"] == 2
    assert server.attributes["error.type"] == "timeout_error"  # the OpenAI error type of the answer
    assert "gesso.deployment" not in server.attributes and "gesso.cost.usd" not in server.attributes
    assert [s.attributes["error.type"] for s in clients] == ["provider_error", "timeout"]
    assert all(s.parent.span_id == server.context.span_id for s in clients)
