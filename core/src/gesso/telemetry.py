"""OpenTelemetry spans and metrics for gesso calls, when ``gesso-core[otel]`` is installed.

Every SDK call that is sent (:func:`gesso.image_generation`, ``image_edit``, ``image_variation``, their async
forms and :func:`gesso.api.asend`) is one CLIENT span, named ``"{gen_ai.operation.name} {gen_ai.request.model}"``
as OpenTelemetry's GenAI semantic conventions name it, and one measurement of the
``gen_ai.client.operation.duration`` histogram (seconds); a model that counts tokens (its answer's ``usage``)
also sets ``gen_ai.usage.input_tokens``/``output_tokens`` on the span and records ``gen_ai.client.token.usage``
(one measurement per ``gen_ai.token.type``, ``input`` and ``output``). In the proxy each deployment it tries is one
such call, so a failover is two client spans under the request's SERVER span (:func:`start_server`).

Without the extra, or with no tracer or meter provider configured beyond OpenTelemetry's default proxies, nothing
is recorded and a call pays one cheap check (:func:`enabled`). Attributes never hold a prompt, an image, a key or
a credential: only the model, the provider's GenAI name (:attr:`gesso.provider.Provider.genai_name`), the seed,
the image count, the size, the operation, the images returned, the tokens counted, the cost and the error type.

:func:`configure_from_env` sets up the OpenTelemetry SDK from the standard ``OTEL_*`` variables (``gesso serve``
calls it in each worker).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

try:  # the otel extra
    from opentelemetry import metrics as _metrics
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace

    _INSTALLED = True
except ImportError:  # pragma: no cover - exercised where the extra is absent
    _trace = None  # type: ignore[assignment]
    _metrics = None  # type: ignore[assignment]
    _propagate = None  # type: ignore[assignment]
    _INSTALLED = False

SCOPE = "gesso"
OPERATION = "generate_content"
OUTPUT = "image"
#: the buckets the GenAI conventions advise for ``gen_ai.client.operation.duration``
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: and for ``gen_ai.client.token.usage``
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)

#: gesso's own attributes (the GenAI conventions have none for an image's size or a call's price)
SIZE = "gesso.request.size"
COST = "gesso.cost.usd"
GESSO_OPERATION = "gesso.operation"
IMAGES = "gesso.response.images"


def installed() -> bool:
    """Whether the OpenTelemetry API is importable (the ``otel`` extra)."""
    return _INSTALLED


def enabled() -> bool:
    """Whether a tracer or meter provider other than OpenTelemetry's default is set: the cheap check every call
    makes before it records anything."""
    if not installed():
        return False
    tracing = not isinstance(_trace.get_tracer_provider(), (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider))
    if tracing:
        return True
    meter_provider = _metrics.get_meter_provider()
    return type(meter_provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")


class _NoRecord:
    """The recorder when telemetry is off: takes the response and drops it."""

    def __enter__(self) -> _NoRecord:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def done(self, response: Any) -> None:
        return None


_NO_RECORD = _NoRecord()


class _Attempt:
    """One client span and one duration measurement around a sent call."""

    def __init__(self, call: Any) -> None:
        request, prepared = call.request, call.prepared
        self.attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.output.type": OUTPUT,
            "gen_ai.provider.name": _provider_name(request.model),
            "gen_ai.request.model": request.model.id,
        }
        self.span_attributes: dict[str, Any] = {
            "gen_ai.request.choice.count": prepared.requested,
            GESSO_OPERATION: request.operation,
        }
        seed = _seed(prepared.bodies[0]) if prepared.bodies else None
        if seed is not None:
            self.span_attributes["gen_ai.request.seed"] = seed
        if prepared.size is not None:
            self.span_attributes[SIZE] = str(prepared.size)
        self.span: Any = None
        self.started = 0.0

    def __enter__(self) -> _Attempt:
        assert _trace is not None
        tracer = _trace.get_tracer(SCOPE)
        name = f"{OPERATION} {self.attributes['gen_ai.request.model']}"
        self.span = tracer.start_span(
            name, kind=_trace.SpanKind.CLIENT, attributes={**self.attributes, **self.span_attributes}
        )
        self._token = _trace.use_span(self.span, end_on_exit=False)
        self._token.__enter__()
        self.started = time.perf_counter()
        return self

    def done(self, response: Any) -> None:
        self.span.set_attribute(IMAGES, len(response.data))
        if response.cost is not None:
            self.span.set_attribute(COST, float(response.cost))
        usage = response.usage
        if usage:
            for kind in ("input", "output"):
                self.span.set_attribute(f"gen_ai.usage.{kind}_tokens", usage[f"{kind}_tokens"])
                _tokens().record(usage[f"{kind}_tokens"], {**self.attributes, "gen_ai.token.type": kind})

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        seconds = time.perf_counter() - self.started
        attributes = dict(self.attributes)
        if exc is not None:
            attributes["error.type"] = error_type(exc)
            self.span.set_attribute("error.type", attributes["error.type"])
            self.span.set_status(_trace.Status(_trace.StatusCode.ERROR, type(exc).__name__))
        self._token.__exit__(exc_type, exc, tb)
        self.span.end()
        _duration().record(seconds, attributes)


def attempt(call: Any) -> _Attempt | _NoRecord:
    """The recorder of one sent call (``with attempt(call) as record: ...; record.done(response)``)."""
    return _Attempt(call) if enabled() else _NO_RECORD


def error_type(exc: BaseException) -> str:
    """``error.type`` for a failure: the error's code when gesso gave it one, else its class's name."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


#: each histogram made, by name, with the meter provider it was made from (made again when that changes)
_histograms: dict[str, tuple[Any, Any]] = {}
#: name -> (unit, description, the conventions' advisory buckets)
_HISTOGRAMS = {
    "gen_ai.client.operation.duration": ("s", "GenAI operation duration", DURATION_BUCKETS),
    "gen_ai.client.token.usage": ("{token}", "Number of input and output tokens used", TOKEN_BUCKETS),
}


def _histogram(name: str) -> Any:
    assert _metrics is not None
    meter_provider = _metrics.get_meter_provider()
    made = _histograms.get(name)
    if made is None or made[0] is not meter_provider:
        unit, description, buckets = _HISTOGRAMS[name]
        histogram = _metrics.get_meter(SCOPE).create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=list(buckets)
        )
        made = _histograms[name] = (meter_provider, histogram)
    return made[1]


def _duration() -> Any:
    return _histogram("gen_ai.client.operation.duration")


def _tokens() -> Any:
    return _histogram("gen_ai.client.token.usage")


def _provider_name(model: Any) -> str:
    from gesso import plugins

    provider = plugins.get_registry().providers.get(model.provider or "")
    if provider is None:
        return model.provider or ""
    return provider.genai_name or provider.name


def _seed(body: Mapping[str, Any]) -> int | None:
    """The seed a family put in its request body, at the top or one object down."""
    for value in (body, *(v for v in body.values() if isinstance(v, Mapping))):
        seed = value.get("seed")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
    return None


# -- the proxy's server span --------------------------------------------------------------------------------


class ServerSpan:
    """The SERVER span of one proxy request, current (so its calls' client spans are its children) from
    :func:`start_server` to :meth:`end`."""

    def __init__(self, span: Any, token: object) -> None:
        self.span, self.token = span, token

    def end(self, status: int, attributes: Mapping[str, Any]) -> None:
        """Set the response's status code and gesso's attributes of the request (``None`` values left out),
        make the span no longer current and end it."""
        assert _trace is not None
        from opentelemetry import context

        self.span.set_attribute("http.response.status_code", status)
        self.span.set_attributes({key: value for key, value in attributes.items() if value is not None})
        if status >= 500:
            self.span.set_status(_trace.Status(_trace.StatusCode.ERROR))
        context.detach(self.token)  # type: ignore[arg-type]
        self.span.end()


def start_server(method: str, path: str, headers: Mapping[str, str]) -> ServerSpan | None:
    """Start the SERVER span of a proxy request, ``"{method} {path}"``, continuing the caller's trace when it
    sent a W3C ``traceparent`` (``None`` when telemetry is off)."""
    if not enabled():
        return None
    assert _trace is not None and _propagate is not None
    from opentelemetry import context

    tracer = _trace.get_tracer(SCOPE)
    attributes = {"http.request.method": method, "http.route": path, "url.path": path}
    span = tracer.start_span(
        f"{method} {path}", context=_propagate.extract(headers), kind=_trace.SpanKind.SERVER, attributes=attributes
    )
    return ServerSpan(span, context.attach(_trace.set_span_in_context(span)))


# -- configuration from OTEL_* ------------------------------------------------------------------------------

_configured: list[Any] = []


def _exporter(kind: str) -> str | None:
    """What ``OTEL_{kind}_EXPORTER`` asks for: its value, or ``otlp`` when unset and an OTLP endpoint is given."""
    asked = os.environ.get(f"OTEL_{kind}_EXPORTER", "").strip().lower()
    if asked:
        return None if asked == "none" else asked
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{kind}_ENDPOINT")
    return "otlp" if any(os.environ.get(name, "").strip() for name in endpoints) else None


def configure_from_env(default_service: str = "gesso-proxy") -> list[str]:
    """Set up OpenTelemetry's SDK from the standard ``OTEL_*`` variables when it is installed and they ask for
    export; returns what was set up (``["traces", "metrics"]``, or less).

    Traces are exported when ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``, or is unset and
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set; metrics likewise with
    ``OTEL_METRICS_EXPORTER``. OTLP is OTLP/HTTP (protobuf); the endpoint, headers, timeouts, the batch
    processor's delays and the export interval are the SDK's own ``OTEL_*`` variables. ``OTEL_SDK_DISABLED=true``
    turns it all off; a tracer or meter provider set already (by the application) is kept."""
    if _configured or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    traces, metrics = _exporter("TRACES"), _exporter("METRICS")
    if traces is None and metrics is None:
        return []
    try:
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        return []
    assert _trace is not None and _metrics is not None
    given = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": default_service}
    resource = Resource.create(given)
    done: list[str] = []
    if traces is not None and isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider):
        done += _set_traces(traces, resource)
    if metrics is not None and type(_metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        done += _set_metrics(metrics, resource)
    return done


def _set_traces(exporter_name: str, resource: Any) -> list[str]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    assert _trace is not None
    _trace.set_tracer_provider(provider)
    _configured.append(provider)
    return ["traces"]


def _set_metrics(exporter_name: str, resource: Any) -> list[str]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter, PeriodicExportingMetricReader

    exporter: MetricExporter
    if exporter_name == "console":
        exporter = ConsoleMetricExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter()
    provider = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(exporter)])
    assert _metrics is not None
    _metrics.set_meter_provider(provider)
    _configured.append(provider)
    return ["metrics"]


def shutdown() -> None:
    """Flush and stop what :func:`configure_from_env` set up (the proxy calls it as it stops)."""
    while _configured:
        _configured.pop().shutdown()
