"""Callbacks: everything around the training loop that is not the loop (torch-free).

A callback subclasses :class:`Callback` and overrides the hooks it needs; each hook receives the
:class:`~mmkit._internal.trainer.Trainer`, whose ``state`` (a :class:`~mmkit._internal.trainer.TrainState`), ``recipe``,
``run`` (a :class:`~mmkit._internal.rundir.RunDir`) and methods ``save_checkpoint(name)``,
``request_stop(reason)`` and ``say(message)`` are what a callback works with::

    import mmkit

    class StopAt(mmkit.Callback):
        \"\"\"Stop training at an optimizer step.

        Args:
            step: the step to stop after.
        \"\"\"

        def __init__(self, step: int = 100) -> None:
            self.step = step

        def on_step_end(self, trainer) -> None:
            if trainer.state.step >= self.step:
                trainer.request_stop(f"reached step {self.step}")

A plugin registers callbacks through the ``register_callbacks`` hook; a recipe turns them on with
``[train] callbacks = ["stop-at", { type = "stop-at", step = 50 }]`` (a name, or a table of the
name and its parameters, checked against the constructor like any component). The built-in
callbacks (:data:`DEFAULT_CALLBACKS`: metrics.jsonl, TensorBoard, best checkpoint, early stopping,
progress, summary table) come from the built-in plugin ``callbacks`` and run in every training;
a recipe entry with one of their names replaces the default instance (e.g. to pass parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mmkit._internal.errors import MmkitError, ParameterError, RecipeError

if TYPE_CHECKING:  # pragma: no cover
    from mmkit._internal.registry import Registry

#: Built-in callbacks every training uses (resolved by name through the registry: a plugin may
#: replace one; one that is not registered, e.g. its plugin blocked, is left out with a note).
DEFAULT_CALLBACKS = ("metrics-log", "tensorboard", "best-checkpoint", "early-stopping", "progress",
                     "summary-table")

HOOKS = ("on_fit_start", "on_step_end", "on_eval_end", "on_epoch_end", "on_fit_end", "teardown")


class Callback:
    """Base class of training callbacks; every hook does nothing unless overridden.

    Hooks run on every process of a distributed run, unless ``rank_zero_only`` is True (writers and
    printers). A callback that requests a stop must do it on every rank (decide from values that
    agree across ranks, such as the gathered evaluation metrics) or the ranks diverge.
    """

    #: run only on the process of rank 0
    rank_zero_only: bool = False

    def check(self, recipe: Any) -> None:
        """Before training starts, and in ``mmkit check``: raise :class:`~mmkit.RecipeError` when
        this callback cannot run with ``recipe`` (e.g. an optional package it needs is missing), so
        the run fails before its run directory exists rather than at its first step."""

    def on_fit_start(self, trainer: Any) -> None:
        """After setup (model, data, optimizer, resumed state), before the first step."""

    def on_step_end(self, trainer: Any) -> None:
        """After each optimizer step; ``trainer.state.step`` is the step just taken and
        ``trainer.step_metrics`` its ``loss``, ``lr``, ``samples`` and auxiliary losses."""

    def on_eval_end(self, trainer: Any, metrics: Mapping[str, float], improved: bool) -> None:
        """After each evaluation on the validation split; ``improved`` when the monitored metric
        reached a new best (``trainer.state.best``)."""

    def on_epoch_end(self, trainer: Any, stats: Mapping[str, float]) -> None:
        """After the last step of an epoch (``stats``: its training ``seconds`` and ``samples_per_s``);
        ``trainer.state.epoch`` is still the epoch that ended."""

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        """When training ends: finished (``result.summary`` is the summary) or interrupted
        (``result.interrupted``; a ``last`` checkpoint was written)."""

    def teardown(self, trainer: Any) -> None:
        """Always, last, even after an error: release files and writers."""


class CallbackList:
    """Callbacks in order; :meth:`fire` calls one hook on each (rank-zero-only ones on rank 0 only)."""

    def __init__(self, callbacks: Iterable[Callback], main: bool = True) -> None:
        self.items = [c for c in callbacks if main or not getattr(c, "rank_zero_only", False)]

    def fire(self, hook: str, *args: Any) -> None:
        for cb in self.items:
            method = getattr(cb, hook, None)
            if method is not None:
                method(*args)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def parse_entry(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    """A ``[train] callbacks`` entry: ``"name"`` or ``{ type = "name", param = value }``."""
    if isinstance(entry, str) and entry:
        return entry, {}
    if isinstance(entry, Mapping):
        params = dict(entry)
        name = params.pop("type", None)
        if isinstance(name, str) and name:
            return name, params
        raise RecipeError(f"{where}: a callback table needs type = \"NAME\" (mmkit list callback)")
    raise RecipeError(f"{where}: expected a callback name or a table with type = \"NAME\", got {entry!r}")


def check_entries(entries: Sequence[Any], registry: Registry, source: str) -> None:
    """Validate a recipe's ``[train] callbacks``: registered names, parameters of their constructors."""
    if not isinstance(entries, (list, tuple)):
        raise RecipeError(f"{source}: train.callbacks: expected a list of callback names or tables")
    for i, entry in enumerate(entries):
        where = f"{source}: train.callbacks[{i}]"
        name, params = parse_entry(entry, where)
        try:
            registry.validate("callback", name, params, where)
        except ParameterError as exc:
            raise RecipeError(str(exc)) from None
        except MmkitError as exc:
            raise RecipeError(f"{where}: {exc}") from None


def build_callbacks(entries: Sequence[Any], registry: Registry, source: str = "<recipe>",
                    extra: Iterable[Callback] = (), note: Callable[[str], None] = lambda _m: None) -> list[Callback]:
    """The defaults, then the recipe's entries (one with a default's name replaces it), then ``extra``
    (instances passed in Python)."""
    chosen = dict(parse_entry(entry, f"{source}: train.callbacks[{i}]") for i, entry in enumerate(entries))
    out: list[Callback] = []
    for name in DEFAULT_CALLBACKS:
        if name in chosen:
            out.append(registry.create("callback", name, **chosen.pop(name)))
        elif registry.list("callback", name):
            out.append(registry.create("callback", name))
        else:
            note(f"callback {name!r} is not registered (its plugin blocked?); training without it")
    out.extend(registry.create("callback", name, **params) for name, params in chosen.items())
    out.extend(extra)
    return out
