"""Prometheus metrics without a client library: counters, histograms, callback
gauges, and a ``Registry`` that renders the text exposition format 0.0.4.

A leaf module (it imports nothing from the gateway) so that every layer can
record into it. There is no default registry: each app makes one and keeps it
on ``app.state`` (DESIGN.md section 8: several apps live in one process).

Everything is updated and rendered on the event loop, so nothing is locked.
Label values are positional and kept as tuples; a child series is created on
its first update, so a metric without any update renders only its HELP and
TYPE lines.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds. QIDO and frames take milliseconds, a cold series retrieve minutes.
DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Labels = tuple[str, ...]
Sample = tuple[Labels, float]
MetricType = Literal["counter", "gauge", "histogram"]


def format_value(value: float) -> str:
    """A sample value as the text format wants it (``+Inf``, ``NaN``, integers bare)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(
        f'{name}="{escape_label_value(value)}"' for name, value in zip(names, values, strict=True)
    )
    return "{" + pairs + "}"


class _Metric:
    type: MetricType

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} in {name}")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"repeated label name in {name}")
        self.name = name
        self.help = help
        self.labelnames: Labels = tuple(labelnames)

    def _check(self, labels: Labels) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(
                f"{self.name} takes {len(self.labelnames)} label values, got {len(labels)}"
            )
        for value in labels:
            if not isinstance(value, str):
                raise TypeError(f"{self.name}: label values are strings, got {value!r}")

    def samples(self) -> Iterable[tuple[str, str, float]]:
        """(sample name, rendered labels, value) in exposition order."""
        raise NotImplementedError

    def render(self) -> str:
        lines = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.type}"]
        lines.extend(f"{name}{labels} {format_value(v)}" for name, labels, v in self.samples())
        return "\n".join(lines) + "\n"


class Counter(_Metric):
    """A value that only goes up: ``counter.inc("GET", "200")``."""

    type: MetricType = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[Labels, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot go down ({amount})")
        try:
            self._values[labels] += amount
        except KeyError:
            self._check(labels)
            self._values[labels] = amount

    def value(self, *labels: str) -> float:
        """The current value (0 for a label set never incremented)."""
        return self._values.get(labels, 0.0)

    def samples(self) -> Iterable[tuple[str, str, float]]:
        for labels, value in self._values.items():
            yield self.name, _label_text(self.labelnames, labels), value


class _Series:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self, n: int) -> None:
        self.buckets = [0] * n  # per bucket, not cumulative; the last one is +Inf
        self.count = 0
        self.sum = 0.0


class Histogram(_Metric):
    """Observations counted into buckets (``le`` upper bounds, +Inf added)."""

    type: MetricType = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        if "le" in labelnames:
            raise ValueError(f"{name}: 'le' is reserved for histogram buckets")
        super().__init__(name, help, labelnames)
        bounds = [float(b) for b in buckets if not math.isinf(b)]
        if not bounds or bounds != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be increasing and not empty")
        self.bounds: tuple[float, ...] = tuple(bounds)
        self._series: dict[Labels, _Series] = {}

    def observe(self, value: float, *labels: str) -> None:
        series = self._series.get(labels)
        if series is None:
            self._check(labels)
            series = self._series[labels] = _Series(len(self.bounds) + 1)
        # bisect_left: a value equal to a bound belongs to that bucket (le = "<=").
        series.buckets[bisect_left(self.bounds, value)] += 1
        series.count += 1
        series.sum += value

    def count(self, *labels: str) -> int:
        series = self._series.get(labels)
        return 0 if series is None else series.count

    def samples(self) -> Iterable[tuple[str, str, float]]:
        names = (*self.labelnames, "le")
        edges = [*(format_value(b) for b in self.bounds), "+Inf"]
        for labels, series in self._series.items():
            cumulative = 0
            for edge, n in zip(edges, series.buckets, strict=True):
                cumulative += n
                yield f"{self.name}_bucket", _label_text(names, (*labels, edge)), cumulative
            plain = _label_text(self.labelnames, labels)
            yield f"{self.name}_sum", plain, series.sum
            yield f"{self.name}_count", plain, series.count


class Callback(_Metric):
    """Values read when scraped (pool sizes, cache bytes): ``collect()`` returns
    (label values, value) pairs. ``kind`` may be ``counter`` for totals that
    another object keeps (the cache's eviction count)."""

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        collect: Callable[[], Iterable[Sample]],
        kind: MetricType = "gauge",
    ) -> None:
        if kind == "histogram":
            raise ValueError("a callback metric is a gauge or a counter")
        super().__init__(name, help, labelnames)
        self.type = kind
        self.collect = collect

    def samples(self) -> Iterable[tuple[str, str, float]]:
        for labels, value in self.collect():
            self._check(labels)
            yield self.name, _label_text(self.labelnames, labels), value


class Registry:
    """The metrics of one app, rendered in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        self._metrics[metric.name] = metric

    def _existing(
        self, name: str, kind: type[_Metric], labelnames: Sequence[str]
    ) -> _Metric | None:
        """The metric already registered under ``name`` (a second lifespan of the same
        app registers again); a different kind or label set is a programming error."""
        found = self._metrics.get(name)
        if found is None:
            return None
        if type(found) is not kind or found.labelnames != tuple(labelnames):
            raise ValueError(f"metric {name} is already registered differently")
        return found

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        found = self._existing(name, Counter, labelnames)
        if isinstance(found, Counter):
            return found
        metric = Counter(name, help, labelnames)
        self._add(metric)
        return metric

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> Histogram:
        found = self._existing(name, Histogram, labelnames)
        if isinstance(found, Histogram):
            return found
        metric = Histogram(name, help, labelnames, buckets)
        self._add(metric)
        return metric

    def callback(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        collect: Callable[[], Iterable[Sample]],
        kind: MetricType = "gauge",
    ) -> Callback:
        """Register (or replace: the objects it reads may be new) a scrape-time metric."""
        found = self._existing(name, Callback, labelnames)
        if found is not None and found.type != kind:
            raise ValueError(f"metric {name} is already registered as a {found.type}")
        metric = Callback(name, help, labelnames, collect, kind)
        self._add(metric)
        return metric

    def get(self, name: str) -> _Metric | None:
        return self._metrics.get(name)

    def render(self) -> str:
        return "".join(metric.render() for metric in self._metrics.values())


__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "Callback",
    "Counter",
    "Histogram",
    "Registry",
    "escape_help",
    "escape_label_value",
    "format_value",
]
