"""The proxy's Prometheus metrics: prometheus_client's counters, histogram and gauges in a registry of each proxy's
own (never the process-wide one), rendered by prometheus_client on ``GET /metrics``.

With several worker processes (``gesso serve --workers N``, which sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh
directory of its own) the values are prometheus_client's multiprocess ones: each process writes its own file
there, and every scrape, whichever worker takes it, sums all of them (:class:`MultiProcessCollector`). A worker
that stopped keeps its counts (the counters never go backwards), and its gauges are dropped (``livesum``: the
requests in flight are those of the workers alive).

Every label value comes from a fixed set, so what a caller sends can neither add a series nor break the
exposition: a model name the config does not serve is recorded as ``-``, a status the proxy does not answer
and an error type it does not know as ``other``.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import re
from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: the media type of :meth:`Metrics.render`'s text (prometheus_client's text exposition format)
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: the image routes, as ``observe`` names them
ROUTES = ("generations", "edits", "variations")
#: the HTTP statuses the proxy answers (499: the client went away); any other is recorded as ``other``
STATUSES = frozenset(
    (200, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 431, 499, 500, 501, 502, 503, 504)
)  # fmt: skip
#: the error types the proxy reports: gesso.errors' classes, the proxy's own (app.py, keys.py) and the failures
#: it counts without answering them (a client gone, a spend-log row lost); any other is recorded as ``other``
ERROR_TYPES = frozenset(
    (
        "invalid_request_error", "authentication_error", "permission_error", "rate_limit_error", "timeout_error",
        "api_error", "auth_error", "not_found_error", "budget_exceeded", "internal_error", "client_disconnected",
        "server_shutdown",
        "spend_log_failed",
    )
)  # fmt: skip
UNKNOWN_MODEL = "-"
OTHER = "other"
#: where prometheus_client's multiprocess mode keeps every process's values (set: the values are shared)
ENV_SHARED = "PROMETHEUS_MULTIPROC_DIR"
#: a live gauge's file in that directory, and the process that writes it
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def _text(value: object) -> bool:
    """``value`` is a string that can be written as UTF-8 (a lone surrogate cannot)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Metrics:
    """One proxy's metrics; ``model_names`` (the configured ones) and ``routes`` are the label values taken."""

    content_type = CONTENT_TYPE

    def __init__(
        self, model_names: Iterable[str] = (), routes: Iterable[str] = ROUTES, max_concurrency: int | None = None
    ) -> None:
        #: the directory every worker's values are in (prometheus_client's multiprocess mode), or None
        self.shared = os.environ.get(ENV_SHARED) or None
        self.name_models(model_names)
        self.routes = frozenset(route for route in routes if _text(route))
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "gesso_requests", "Requests answered, by route, model_name and HTTP status.",
            ("route", "model_name", "status"), registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "gesso_request_duration_seconds", "Time to answer a request.", ("route",), buckets=BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.images = Counter("gesso_images", "Images returned.", ("model_name",), registry=self.registry)
        self.cost = Counter("gesso_cost_usd", "Cost of the images returned, USD.", ("model_name",),
                            registry=self.registry)  # fmt: skip
        self.errors = Counter("gesso_errors", "Error answers, by error type.", ("type",), registry=self.registry)
        self.cache = Counter(
            "gesso_cache_lookups", "Exact-cache lookups of the model names that cache, by result: hit, miss, or "
            "bypass (the call does not fix its seed, or the request said Cache-Control: no-cache).",
            ("model_name", "result"), registry=self.registry,
        )  # fmt: skip
        self._in_flight = 0
        self._in_flight_gauge = Gauge("gesso_requests_in_flight", "Requests being answered now.",
                                      registry=self.registry, multiprocess_mode="livesum")  # fmt: skip
        self.max_concurrency = Gauge(
            "gesso_max_concurrency", "Calls in flight each process allows (--max-concurrency); more wait.",
            registry=self.registry, multiprocess_mode="livemax",
        )  # fmt: skip
        if max_concurrency is not None:
            self.max_concurrency.set(max_concurrency)

    def name_models(self, model_names: Iterable[str]) -> None:
        """The configured model names: the ``model_name`` label values taken (others count as one)."""
        self.model_names = frozenset(name for name in model_names if _text(name))

    @property
    def in_flight(self) -> int:
        """Requests this process is answering now (the app counts them with ``+= 1`` and ``-= 1``)."""
        return self._in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self._in_flight = value
        self._in_flight_gauge.set(value)

    # -- bounded label values ---------------------------------------------------------------------------------

    def _model(self, model_name: object) -> str:
        return model_name if isinstance(model_name, str) and model_name in self.model_names else UNKNOWN_MODEL

    def _route(self, route: object) -> str:
        return route if isinstance(route, str) and route in self.routes else OTHER

    # -- what the app records ---------------------------------------------------------------------------------

    def observe(self, route: str, model_name: str, status: int, seconds: float) -> None:
        route = self._route(route)
        code = str(status) if type(status) is int and status in STATUSES else OTHER
        self.requests.labels(route, self._model(model_name), code).inc()
        self.latency.labels(route).observe(seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(kind if isinstance(kind, str) and kind in ERROR_TYPES else OTHER).inc()

    def paid(self, model_name: str, images: int, cost: float | None) -> None:
        name = self._model(model_name)
        if images > 0:
            self.images.labels(name).inc(images)
        if cost and math.isfinite(cost) and cost > 0:
            self.cost.labels(name).inc(cost)

    def cached(self, model_name: str, result: str) -> None:
        self.cache.labels(self._model(model_name), result).inc()

    def render(self) -> str:
        """The text exposition format (:data:`CONTENT_TYPE`), by prometheus_client: this proxy's values, or with
        worker processes the sum of all of theirs."""
        if self.shared is None:
            return generate_latest(_WithoutCreated(self.registry)).decode("utf-8")
        with contextlib.suppress(FileNotFoundError):  # another worker's scrape removed a stopped worker's file
            return _every_process(self.shared)
        return _every_process(self.shared)


#: the most teams ``/metrics`` shows (the oldest first): each is three series
MAX_TEAMS = 1000


def teams_text(teams: Iterable[tuple[str, str | None, float, float | None]]) -> str:
    """The teams' spend, budget and what remains of it (``(team_id, team_alias, spend, max_budget)`` each, read
    from the database at the scrape: every replica shows the same figures), in the text exposition format. Only
    teams the admin made are labels (at most :data:`MAX_TEAMS`), never a value a caller sent."""
    labels = ("team_id", "team_alias")
    spend = GaugeMetricFamily("gesso_team_spend_usd", "A team's spend in its current budget period, USD.",
                              labels=labels)  # fmt: skip
    budget = GaugeMetricFamily("gesso_team_max_budget_usd", "A team's max_budget, USD (teams that have one).",
                               labels=labels)  # fmt: skip
    remaining = GaugeMetricFamily("gesso_team_budget_remaining_usd", "What remains of a team's max_budget, USD.",
                                  labels=labels)  # fmt: skip
    for team_id, alias, spent, max_budget in list(teams)[:MAX_TEAMS]:
        names = [team_id, alias or ""]
        spend.add_metric(names, spent)
        if max_budget is not None:
            budget.add_metric(names, max_budget)
            remaining.add_metric(names, max(0.0, max_budget - spent))

    class Teams:
        def collect(self) -> Iterator[Metric]:
            yield from (spend, budget, remaining)

    return generate_latest(Teams()).decode("utf-8")


def _every_process(path: str) -> str:
    forget_stopped(path)
    every = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(every, path)  # type: ignore[no-untyped-call]
    return generate_latest(_WithoutCreated(every)).decode("utf-8")


def forget_stopped(path: str) -> None:
    """Drop the live gauges of the processes that stopped (prometheus_client's ``mark_process_dead``); done at
    each scrape, so a worker that crashed, or that uvicorn replaced, stops counting without a hook."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        found = _LIVE_GAUGE_FILE.fullmatch(os.path.basename(name))
        if found is not None and not _alive(int(found.group(1))):
            mark_process_dead(int(found.group(1)), path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (a pid reused)
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has ended but its parent has not collected it yet (a killed worker stays so until
    uvicorn's supervisor next looks, up to half a second later); Linux's ``/proc`` only, else False."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split(maxsplit=1)[:1]
    except OSError:
        return False
    return state in ([b"Z"], [b"X"])


class _WithoutCreated:
    """The registry without the ``_created`` samples prometheus_client adds to counters and histograms (the
    time each series began: a second series per series, which the proxy never exposed). Filtered here, for
    this registry only: ``prometheus_client.disable_created_metrics()`` would switch them off for every
    registry in the process, other libraries' included."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            kept.samples = [s for s in metric.samples if s.name != metric.name + "_created"]
            yield kept
