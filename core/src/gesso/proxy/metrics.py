"""The proxy's Prometheus metrics, kept in plain dicts (one event loop writes them) and rendered as the text
exposition format on ``GET /metrics``."""

from __future__ import annotations

from collections import defaultdict

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.errors: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.images: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.cost: dict[tuple[tuple[str, str], ...], float] = defaultdict(float)
        self.latency_counts: dict[str, list[int]] = {}
        self.latency_sums: dict[str, float] = defaultdict(float)
        self.in_flight = 0

    def observe(self, route: str, model_name: str, status: int, seconds: float) -> None:
        self.requests[(("route", route), ("model_name", model_name), ("status", str(status)))] += 1
        counts = self.latency_counts.setdefault(route, [0] * (len(BUCKETS) + 1))
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[index] += 1
                break
        else:
            counts[-1] += 1
        self.latency_sums[route] += seconds

    def error(self, kind: str) -> None:
        self.errors[(("type", kind),)] += 1

    def paid(self, model_name: str, images: int, cost: float | None) -> None:
        self.images[(("model_name", model_name),)] += images
        if cost:
            self.cost[(("model_name", model_name),)] += cost

    def render(self) -> str:
        lines = [
            "# HELP gesso_requests_total Requests answered, by route, model_name and HTTP status.",
            "# TYPE gesso_requests_total counter",
        ]
        lines += [f"gesso_requests_total{_labels(k)} {v}" for k, v in sorted(self.requests.items())]
        lines += [
            "# HELP gesso_request_duration_seconds Time to answer a request.",
            "# TYPE gesso_request_duration_seconds histogram",
        ]
        for route, counts in sorted(self.latency_counts.items()):
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), counts):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'gesso_request_duration_seconds_bucket{{route="{route}",le="{le}"}} {running}')
            lines.append(f'gesso_request_duration_seconds_sum{{route="{route}"}} {self.latency_sums[route]:.6f}')
            lines.append(f'gesso_request_duration_seconds_count{{route="{route}"}} {running}')
        lines += ["# HELP gesso_images_total Images returned.", "# TYPE gesso_images_total counter"]
        lines += [f"gesso_images_total{_labels(k)} {v}" for k, v in sorted(self.images.items())]
        lines += [
            "# HELP gesso_cost_usd_total Cost of the images returned, USD.",
            "# TYPE gesso_cost_usd_total counter",
        ]
        lines += [f"gesso_cost_usd_total{_labels(k)} {v:.6f}" for k, v in sorted(self.cost.items())]
        lines += ["# HELP gesso_errors_total Error answers, by error type.", "# TYPE gesso_errors_total counter"]
        lines += [f"gesso_errors_total{_labels(k)} {v}" for k, v in sorted(self.errors.items())]
        lines += [
            "# HELP gesso_requests_in_flight Requests being answered now.",
            "# TYPE gesso_requests_in_flight gauge",
            f"gesso_requests_in_flight {self.in_flight}",
        ]
        return "\n".join(lines) + "\n"
