"""Server metrics in the Prometheus text exposition format (version 0.0.4), for ``GET /metrics``.

Four families: ``pixelwise_requests_total`` and ``pixelwise_request_errors_total`` (by endpoint
and status), the ``pixelwise_request_duration_seconds`` histogram (by endpoint) and the
``pixelwise_batch_size`` histogram (images per model call). Written by hand: the format is a few
lines of text, and a dependency for it would be larger than this module.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Histogram:
    """Cumulative-bucket histogram as Prometheus defines it (``le`` upper bounds, ``+Inf``)."""

    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        counts = self.counts or [0] * len(self.bounds)
        sep = "," if labels else ""
        rows = [f'{name}_bucket{{{labels}{sep}le="{_number(b)}"}} {c}'
                for b, c in zip(self.bounds, counts, strict=True)]
        rows.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        return [*rows, f"{name}_sum{braces} {_number(self.total)}", f"{name}_count{braces} "
                f"{self.count}"]


class ServeMetrics:
    """Thread-safe counters and histograms of one server (see the module docs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batches = Histogram(BATCH_BUCKETS)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(path, status)] += 1
            self.latency.setdefault(path, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self.batches.observe(size)

    def render(self) -> str:
        """All metrics as Prometheus text, one sample a line."""
        with self._lock:
            lines = _family("pixelwise_requests_total", "counter",
                            "HTTP requests answered, by endpoint and status.")
            lines += [f'pixelwise_requests_total{{path="{p}",status="{s}"}} {n}'
                      for (p, s), n in sorted(self.requests.items())]
            lines += _family("pixelwise_request_errors_total", "counter",
                             "Requests answered with a 4xx or 5xx status.")
            lines += [f'pixelwise_request_errors_total{{path="{p}",status="{s}"}} {n}'
                      for (p, s), n in sorted(self.requests.items()) if s >= 400]
            lines += _family("pixelwise_request_duration_seconds", "histogram",
                             "Time from request to response, by endpoint.")
            for path, histogram in sorted(self.latency.items()):
                lines += histogram.lines("pixelwise_request_duration_seconds", f'path="{path}"')
            lines += _family("pixelwise_batch_size", "histogram",
                             "Images per model call (micro-batches).")
            lines += self.batches.lines("pixelwise_batch_size", "")
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))
