"""Counters, histograms and scrape-time gauges in Prometheus' text exposition format 0.0.4.

Written here rather than taken from prometheus_client: the server needs three metric types
and one output format, a few dozen lines, and no extra dependency. Every update takes the
registry's one lock, so the event loop, worker threads and the engine's decode thread may
all record; :meth:`Registry.render` reads under the same lock and is a copy of small dicts.

Gauges are not stored: the values they show (slots busy, queue depth, KV pool use) already
live in the engines, and are read when /metrics is scraped (:class:`ReadFamily`).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of the text exposition format, as Prometheus asks for it."""

Labels = tuple[str, ...]


def escape_label(value: str) -> str:
    """A label value as the text format quotes it: backslash, double quote and newline
    escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text as the format wants it: backslash and newline escaped (quotes stay)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a fraction, infinities as +Inf/-Inf."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _header(name: str, help_text: str, kind: str) -> list[str]:
    return [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}"]


@dataclass(eq=False)
class _Family:
    name: str
    help: str
    labelnames: Labels
    lock: threading.Lock

    def key(self, labels: Mapping[str, str]) -> Labels:
        """The label values in ``labelnames`` order; a missing or extra label is a bug."""
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, not {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)


@dataclass(eq=False)
class Counter(_Family):
    """A value that only goes up, one per label set."""

    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (not negative) to the series of ``labels``."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self.key(labels)
        with self.lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """The series' value (0 before its first increment)."""
        with self.lock:
            return self.values.get(self.key(labels), 0.0)

    def lines(self) -> list[str]:
        """The family's exposition lines (call with the lock held)."""
        out = _header(self.name, self.help, "counter")
        for key, value in sorted(self.values.items()):
            out.append(f"{self.name}{_label_text(self.labelnames, key)} {format_value(value)}")
        return out


@dataclass(eq=False)
class _Series:
    counts: list[int]
    """Observations per bucket (not cumulative), the last for those above every bound."""
    total: float = 0.0


@dataclass(eq=False)
class Histogram(_Family):
    """Observations counted into buckets with upper bounds ``buckets`` (and +Inf)."""

    buckets: tuple[float, ...] = ()
    series: dict[Labels, _Series] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if list(self.buckets) != sorted(set(self.buckets)) or not self.buckets:
            raise ValueError(f"{self.name}: buckets must be increasing and not empty")

    def observe(self, value: float, count: int = 1, **labels: str) -> None:
        """Count ``count`` observations of ``value`` (several at once: a mean over ``count``
        intervals stands for each of them, and the sum stays exact)."""
        if count <= 0:
            return
        key = self.key(labels)
        # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
        index = bisect_left(self.buckets, value)
        with self.lock:
            entry = self.series.get(key)
            if entry is None:
                entry = self.series[key] = _Series([0] * (len(self.buckets) + 1))
            entry.counts[index] += count
            entry.total += value * count

    def count(self, **labels: str) -> int:
        """Observations of the series so far."""
        with self.lock:
            entry = self.series.get(self.key(labels))
            return 0 if entry is None else sum(entry.counts)

    def lines(self) -> list[str]:
        """The family's exposition lines (call with the lock held)."""
        out = _header(self.name, self.help, "histogram")
        names = (*self.labelnames, "le")
        for key, entry in sorted(self.series.items()):
            running = 0
            bounds = [*(format_value(b) for b in self.buckets), "+Inf"]
            for bound, n in zip(bounds, entry.counts, strict=True):
                running += n
                out.append(f"{self.name}_bucket{_label_text(names, (*key, bound))} {running}")
            labels = _label_text(self.labelnames, key)
            out.append(f"{self.name}_sum{labels} {format_value(entry.total)}")
            out.append(f"{self.name}_count{labels} {running}")
        return out


@dataclass(frozen=True, slots=True)
class ReadFamily:
    """A family read at scrape time from figures kept elsewhere (an engine's): its samples
    as (label values, value) pairs. A gauge, or a counter the engine itself counts."""

    name: str
    help: str
    labelnames: Labels = ()
    samples: tuple[tuple[Labels, float], ...] = ()
    kind: Literal["gauge", "counter"] = "gauge"

    def lines(self) -> list[str]:
        """The family's exposition lines."""
        out = _header(self.name, self.help, self.kind)
        for key, value in self.samples:
            out.append(f"{self.name}{_label_text(self.labelnames, key)} {format_value(value)}")
        return out


F = TypeVar("F", Counter, Histogram)


class Registry:
    """The stored metric families, in the order they were made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, Counter | Histogram] = {}

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        """A new counter family; its name ends in ``_total``, as the format recommends."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        family = Counter(name, help_text, tuple(labelnames), self._lock)
        return self._add(family)

    def histogram(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
    ) -> Histogram:
        """A new histogram family with ``buckets`` as the upper bounds (+Inf is added)."""
        family = Histogram(name, help_text, tuple(labelnames), self._lock, tuple(buckets))
        return self._add(family)

    def _add(self, family: F) -> F:
        if family.name in self._families:
            raise ValueError(f"metric {family.name} exists already")
        self._families[family.name] = family
        return family

    def reset(self) -> None:
        """Forget every observation (tests)."""
        with self._lock:
            for family in self._families.values():
                if isinstance(family, Counter):
                    family.values.clear()
                else:
                    family.series.clear()

    def render(self, read: Iterable[ReadFamily] = ()) -> str:
        """The whole exposition: the stored families, then those ``read`` now."""
        with self._lock:
            lines = [line for family in self._families.values() for line in family.lines()]
        for family in read:
            lines += family.lines()
        return "\n".join(lines) + "\n"
