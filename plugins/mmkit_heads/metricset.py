"""Choosing a head's metrics by name, and computing them with torchmetrics.

A head takes ``metrics: list[str] | None`` (None = the task's defaults); :func:`choose_metrics`
checks the names against the head's catalogue before anything is built. :class:`TorchMetricSet` is
the :class:`~mmkit.Metrics` accumulator the engine drives: every rank updates its own
torchmetrics objects, the engine gathers the accumulators and ``merge`` folds each object's state
in with torchmetrics' ``merge_state`` (sums add, kept predictions concatenate). The objects never
synchronise by themselves (``sync_on_compute=False``): the engine's gather already did, and a second
sync would count every rank twice. torchmetrics is imported only when an accumulator is built.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from mmkit import Batch, Metrics, Output, ParameterError


def choose_metrics(head: str, requested: Sequence[str] | None, catalogue: Mapping[str, str],
                   defaults: Sequence[str], patterns: Mapping[str, str] | None = None) -> list[str]:
    """The metric names a head reports: ``requested`` (checked, duplicates dropped) or ``defaults``.

    ``catalogue`` maps each fixed name to ``"max"``/``"min"`` (its better direction); ``patterns`` maps
    a regular expression (``top([1-9]\\d*)_accuracy``) to its direction. An unknown name is a
    :class:`ParameterError` listing the valid ones.
    """
    if requested is None:
        return list(defaults)
    if isinstance(requested, str) or not all(isinstance(n, str) for n in requested):
        raise ParameterError(f"{head} head: metrics must be a list of names, got {requested!r}")
    names = list(dict.fromkeys(n.strip() for n in requested))
    if not names:
        raise ParameterError(f"{head} head: metrics is empty; leave it out for the defaults ({', '.join(defaults)})")
    for name in names:
        if metric_direction(name, catalogue, patterns) is None:
            shown = ", ".join([*catalogue, *(_pattern_hint(p) for p in (patterns or {}))])
            raise ParameterError(f"{head} head: unknown metric {name!r}; valid metrics: {shown}")
    return names


def _pattern_hint(pattern: str) -> str:
    return re.sub(r"\([^)]*\)", "<K>", pattern)


def metric_direction(name: str, catalogue: Mapping[str, str], patterns: Mapping[str, str] | None = None) -> str | None:
    """``"max"``/``"min"`` for a known metric name, None for an unknown one."""
    if name in catalogue:
        return catalogue[name]
    for pattern, direction in (patterns or {}).items():
        if re.fullmatch(pattern, name):
            return direction
    return None


def pick_monitor(default: str, chosen: Sequence[str], directions: Mapping[str, str]) -> tuple[str, str]:
    """``(monitor, mode)``: the head's usual monitor if it was chosen, else the first chosen metric."""
    name = default if default in chosen or not chosen else chosen[0]
    return name, directions[name]


def torchmetric(cls_name: str, module: str = "classification", **kwargs: Any) -> Any:
    """A torchmetrics metric that never synchronises by itself (the engine gathers and merges)."""
    import importlib

    cls = getattr(importlib.import_module(f"torchmetrics.{module}"), cls_name)
    return cls(sync_on_compute=False, **kwargs)


class TorchMetricSet(Metrics):
    """Named torchmetrics objects fed from each batch; subclasses say how to build, feed and read them.

    ``self.meters`` holds the objects by name (more than the reported names when one needs helpers,
    e.g. class counts). Subclasses implement ``build(name)``, ``prepare(output, batch)`` (the
    batch's tensors on the CPU, or None to skip it), ``feed(name, meter, prepared)`` and
    ``value(name)``. Methods, not stored callables: the object must pickle (the engine gathers it).
    """

    def __init__(self, names: Sequence[str], helpers: Sequence[str] = ()) -> None:
        super().__init__()
        self.names = list(names)
        self.samples = 0
        with warnings.catch_warnings():  # e.g. "SpearmanCorrcoef will save all targets": that is the point
            warnings.simplefilter("ignore", UserWarning)
            self.meters: dict[str, Any] = {n: self.build(n) for n in [*helpers, *self.names]}

    def build(self, name: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self, output: Output, batch: Batch) -> dict[str, Any] | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def feed(self, name: str, meter: Any, prepared: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def value(self, name: str) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, output: Output, batch: Batch) -> None:
        super().update(output, batch)
        prepared = self.prepare(output, batch)
        if prepared is None or not prepared["n"]:
            return
        self.samples += prepared["n"]
        for name, meter in self.meters.items():
            self.feed(name, meter, prepared)

    def merge(self, other: Metrics) -> None:
        super().merge(other)
        if not isinstance(other, type(self)) or other.names != self.names:
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__} with other metrics")
        self.samples += other.samples
        for name, meter in self.meters.items():
            meter.merge_state(other.meters[name])

    def compute(self) -> dict[str, float]:
        out = super().compute()
        if not self.samples:
            return out
        with warnings.catch_warnings():
            # torchmetrics warns when a merged-into object saw no batch itself, and about absent classes
            warnings.simplefilter("ignore", UserWarning)
            for name in self.names:
                out[name] = float(self.value(name))
        return out
