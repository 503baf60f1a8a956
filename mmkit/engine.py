"""The training engine: data, model, optimizer, loop, evaluation, checkpoints, resume, summary.

One function, :func:`train`, runs a validated :class:`~mmkit.recipe.Recipe` on CPU, one GPU or many
processes (torchrun). Only rank 0 writes files and progress.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from mmkit import checkpoint as ckpt
from mmkit.data import Collator, EmbeddingCache, EpochSampler, Field, MultimodalDataset, load_field
from mmkit.manifest import check_columns
from mmkit.datasets import DataSplits
from mmkit.errors import DataError, MmkitError, RecipeError
from mmkit.interfaces import Batch, Metrics, scatter_embedding
from mmkit.model import LazyValues, MultimodalModel, build_model, count_parameters
from mmkit.recipe import Recipe, dump_toml
from mmkit.registry import Registry, get_registry
from mmkit.rundir import RunLock, prepare_run_dir


class TrainingError(MmkitError):
    """Training cannot go on (e.g. a non-finite loss)."""


# ------------------------------------------------------------------------------------------ setup
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # mmkit created the process group (and so tears it down)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the process group torchrun set up (env RANK/WORLD_SIZE); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned)


def choose_device(setting: str, local_rank: int = 0) -> torch.device:
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RecipeError("train.device = 'cuda' but no CUDA device is available; use device = 'auto' or 'cpu'")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def choose_precision(setting: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None for fp32, whether a grad scaler is needed)."""
    if setting == "fp32" or (setting == "auto" and device.type != "cuda"):
        return None, False
    if setting in ("auto", "bf16"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            if setting == "bf16":
                raise RecipeError("train.precision = 'bf16' but this GPU does not support bf16; use fp16 or fp32")
            return torch.float16, True
        return torch.bfloat16, False
    if device.type != "cuda":
        raise RecipeError("train.precision = 'fp16' needs a CUDA device; use bf16 or fp32 on CPU")
    return torch.float16, True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


# ------------------------------------------------------------------------------------------- data
def load_splits(recipe: Recipe, registry: Registry) -> DataSplits:
    data = recipe.data
    if data["dataset"]:
        return registry.create("dataset", data["dataset"], **data["options"])
    from mmkit.manifest import load_manifest_splits

    paths = {s: (str((recipe.base_dir / data[s]).resolve()) if data[s] else None) for s in ("train", "val", "test")}
    return load_manifest_splits(train=paths["train"], val=paths["val"], test=paths["test"],
                                split_column=data["split_column"], columns=data["columns"])


@dataclass
class DataPlan:
    """Which column feeds each field, and the split rows."""

    splits: DataSplits
    field_columns: dict[str, str | list[str]]
    target_columns: dict[str, str] = field(default_factory=dict)

    def source(self, split: str) -> str:
        files = getattr(self.splits, "files", None) or {}
        if split in files:
            return f"{files[split]} ({split})"
        return f"{self.splits.name}:{split}" if self.splits.base_dir is None else f"{self.splits.name} ({split})"


def plan_data(recipe: Recipe, splits: DataSplits) -> DataPlan:
    columns = {**splits.columns, **recipe.data["columns"]}
    field_columns = {f: columns.get(f, f) for f in recipe.encoders}
    if not splits.splits.get("train"):
        raise DataError(f"{splits.name}: the training split is empty")
    return DataPlan(splits, field_columns)


class FitData:
    """Lazy training-split values handed to ``fit`` (an encoder that ignores them loads nothing)."""

    def __init__(self, plan: DataPlan, registry: Registry) -> None:
        self.plan, self.registry = plan, registry

    def values(self, name: str, encoder: Any) -> Sequence[Any]:
        fld = make_field(name, self.plan.field_columns[name], encoder, self.registry)
        rows = self.plan.splits.splits["train"]
        src = self.plan.source("train")
        present = [i for i, r in enumerate(rows) if not fld.is_absent(fld.cell(r))]
        return LazyValues(len(present), lambda j: load_field(fld, rows[present[j]], self.plan.splits.base_dir, src,
                                                             present[j]))

    def targets(self, fields: Sequence[str]) -> Sequence[Mapping[str, Any]]:
        cols = {f: self.plan.target_columns[f] for f in fields}
        rows = self.plan.splits.splits["train"]
        return [{f: r.get(c) for f, c in cols.items()} for r in rows]


def make_field(name: str, columns: str | list[str], encoder: Any, registry: Registry) -> Field:
    if not encoder.modality:
        raise MmkitError(f"encoder {type(encoder).__name__} for field {name!r} declares no modality")
    modality = registry.get("modality", encoder.modality).load()()
    return Field(name, columns, modality, encoder)


def assemble(recipe: Recipe, registry: Registry, plan: DataPlan | None = None,
             fit_state: Mapping[str, Any] | None = None) -> MultimodalModel:
    """Build the model, then fit its components on the training split (or restore ``fit_state``)."""
    model = build_model(recipe, fit_state=fit_state, registry=registry)
    if plan is None:
        model.apply_freeze()
        return model
    columns = {**plan.splits.columns, **recipe.data["columns"]}
    plan.target_columns = {f: columns.get(f, f) for f in model.head.fields}
    for split, rows in plan.splits.splits.items():
        if rows:
            check_columns(rows, {**plan.field_columns, **plan.target_columns}, plan.source(split))
    if fit_state is None:
        fit = FitData(plan, registry)
        src = plan.source("train")
        for name, enc in model.encoders.items():
            cols = plan.field_columns[name]
            with _fitting(src, f"field {name!r} (column {cols if isinstance(cols, str) else ', '.join(cols)})",
                          recipe.encoders[name].type):
                enc.fit(fit.values(name, enc))
        targets = ", ".join(f"{f!r} (column {plan.target_columns[f]!r})" for f in model.head.fields)
        with _fitting(src, f"target {targets}", recipe.head.type):
            model.head.fit(fit.targets(model.head.fields))
    model.apply_freeze()  # again: fit may have created parameters (vocabulary-sized tables)
    return model


@contextmanager
def _fitting(source: str, what: str, component: str) -> Iterator[None]:
    """Errors of a component's ``fit`` name the training file and the field they come from."""
    try:
        yield
    except DataError as exc:
        if str(exc).startswith(source):  # a value that failed to load: already located
            raise
        raise DataError(f"{source}: {what}: {exc}") from exc
    except MmkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an OverflowError on extreme values
        raise DataError(f"{source}: {what}: {component} could not fit the training data: "
                        f"{type(exc).__name__}: {exc}") from exc


def make_fields(model: MultimodalModel, plan: DataPlan, registry: Registry) -> list[Field]:
    return [make_field(n, plan.field_columns[n], e, registry) for n, e in model.encoders.items()]


def build_caches(model: MultimodalModel, fields: Sequence[Field], plan: DataPlan, device: torch.device,
                 batch_size: int, enabled: bool, log: Callable[[str], None]) -> dict[str, dict[str, EmbeddingCache]]:
    """``{split: {field: cache}}`` for frozen encoders with deterministic preprocessing."""
    caches: dict[str, dict[str, EmbeddingCache]] = {}
    if not enabled:
        return caches
    for fld in fields:
        if fld.name not in model.frozen:
            continue
        if not fld.encoder.deterministic_train:
            log(f"cache: {fld.name} not cached (its training preprocessing is random)")
            continue
        for split, rows in plan.splits.splits.items():
            if not rows:
                continue
            ds = MultimodalDataset(rows, [fld], None, None, base_dir=plan.splits.base_dir,
                                   source=plan.source(split), train=False)
            loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                                 collate_fn=Collator([fld], None))
            caches.setdefault(split, {})[fld.name] = _encode_split(model, fld, loader, len(rows), device)
    return caches


@torch.no_grad()
def _encode_split(model: MultimodalModel, fld: Field, loader: Iterable[Batch], n: int,
                  device: torch.device) -> EmbeddingCache:
    encoder = model.encoders[fld.name]
    pooled = torch.zeros(n, encoder.dim)
    present = torch.zeros(n, dtype=torch.bool)
    chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for batch in loader:
        batch = batch.to(device)
        value = batch.inputs[fld.name]
        mask = batch.present[fld.name]
        idx = batch.index.cpu()
        present[idx] = mask.cpu()
        if value is None:
            continue
        emb = scatter_embedding(encoder(value), mask)
        pooled[idx] = emb.pooled.float().cpu()
        if emb.tokens is not None:
            chunks.append((idx, emb.tokens.float().cpu(), emb.token_mask.cpu()))
    tokens = token_mask = None
    if chunks:
        t_max = max(c[1].shape[1] for c in chunks)
        tokens = torch.zeros(n, t_max, encoder.dim)
        token_mask = torch.zeros(n, t_max, dtype=torch.bool)
        for idx, tok, msk in chunks:
            tokens[idx, : tok.shape[1]] = tok
            token_mask[idx, : msk.shape[1]] = msk
    elif encoder.has_tokens:
        tokens, token_mask = torch.zeros(n, 1, encoder.dim), torch.zeros(n, 1, dtype=torch.bool)
    return EmbeddingCache(pooled, present, tokens, token_mask)


def param_groups(model: MultimodalModel, recipe: Recipe) -> list[dict[str, Any]]:
    """AdamW/SGD groups: no weight decay on norms and biases; per-encoder lr multipliers;
    frozen parameters excluded."""
    lr, wd = recipe.train["lr"], recipe.train["weight_decay"]
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    mults = {f"encoders.{k}.": s.lr_mult for k, s in recipe.encoders.items()}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = next((m for prefix, m in mults.items() if name.startswith(prefix)), 1.0)
        no_decay = p.ndim <= 1 or name.endswith(".bias")
        groups.setdefault((mult, no_decay), []).append(p)
    return [{"params": ps, "lr": lr * mult, "base_lr": lr * mult, "weight_decay": 0.0 if nd else wd}
            for (mult, nd), ps in groups.items()]


def make_optimizer(groups: list[dict[str, Any]], recipe: Recipe) -> torch.optim.Optimizer:
    t = recipe.train
    if not groups:
        raise RecipeError(f"{recipe.source}: nothing to train: every parameter is frozen")
    if t["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=t["lr"], momentum=t["momentum"], foreach=True)
    return torch.optim.AdamW(groups, lr=t["lr"], foreach=True)  # one kernel per op for all tensors


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _rng_snapshot() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _py_rng_state() -> dict[str, Any]:
    py = random.getstate()
    out: dict[str, Any] = {"python": [py[0], list(py[1]), py[2]]}
    try:
        import numpy as np

        np_state = np.random.get_state()
        out["numpy"] = [np_state[0], np_state[1].tolist(), *np_state[2:]]
    except ImportError:  # pragma: no cover
        pass
    return out


def _restore_py_rng(state: Mapping[str, Any]) -> None:
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _unwrap(model: nn.Module) -> MultimodalModel:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _gather_metrics(metrics: Metrics, dist: Dist) -> Metrics:
    if not dist.enabled:
        return metrics
    import torch.distributed as tdist

    parts: list[Any] = [None] * dist.world
    tdist.all_gather_object(parts, metrics)
    merged = parts[0]
    for other in parts[1:]:
        merged.merge(other)
    return merged


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Batch], device: torch.device, amp_dtype: torch.dtype | None,
             dist: Dist = Dist()) -> dict[str, float]:
    """The head's metrics (and the mean loss) over a whole split."""
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    metrics = net.head.new_metrics()
    loss_meter = Metrics()
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            out = net(batch)
        metrics.update(out, batch)
        loss_meter.update(out, batch)
    metrics = _gather_metrics(metrics, dist)
    loss_meter = _gather_metrics(loss_meter, dist)
    net.train(was_training)
    return {**loss_meter.compute(), **{k: float(v) for k, v in metrics.compute().items()}}


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _is_tty() -> bool:
    import sys

    return sys.stderr.isatty()


# ------------------------------------------------------------------------------------------- train
@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    renamed: bool = False
    interrupted: bool = False


class _Printer:
    """Messages for humans: rank 0 only, silent with ``quiet``."""

    def __init__(self, dist: Dist, quiet: bool) -> None:
        self.on = dist.main and not quiet
        self.console = None
        if self.on:
            from rich.console import Console

            self.console = Console(stderr=True, highlight=False)

    def __call__(self, message: str) -> None:
        if self.on:
            self.console.print(message, markup=False)


def train(recipe: Recipe, *, mode: str = "new", quiet: bool = False, registry: Registry | None = None,
          stop_after_steps: int | None = None) -> RunResult:
    """Train what ``recipe`` names. ``mode``: new | resume | overwrite (see :func:`prepare_run_dir`).

    ``stop_after_steps`` simulates an interruption after that many optimizer steps (for tests): a
    last checkpoint is written and the run returns with ``interrupted=True``.
    """
    registry = registry or get_registry()
    t = recipe.train
    t0 = time.perf_counter()
    device_kind = "cuda" if (t["device"] == "cuda" or (t["device"] == "auto" and torch.cuda.is_available())) else "cpu"
    dist = init_distributed(device_kind)
    device = choose_device(t["device"], dist.local_rank)
    amp_dtype, use_scaler = choose_precision(t["precision"], device)
    say = _Printer(dist, quiet)
    seed = int(recipe.run["seed"])
    seed_everything(seed)

    # run directory (rank 0 decides; others follow)
    run_dir, renamed = _run_dir_for(recipe, mode, dist)
    lock = RunLock(run_dir) if dist.main else nullcontext()
    with lock:
        return _train_in(recipe, registry, run_dir, renamed, mode, dist, device, amp_dtype, use_scaler, say, seed,
                         t0, stop_after_steps)


def _run_dir_for(recipe: Recipe, mode: str, dist: Dist) -> tuple[Path, bool]:
    out = Path(recipe.run["output_dir"])
    if not dist.enabled:
        return prepare_run_dir(out, recipe.run["name"], mode)
    import torch.distributed as tdist

    box: list[Any] = [None]
    if dist.main:
        path, renamed = prepare_run_dir(out, recipe.run["name"], mode)
        box = [(str(path), renamed)]
    tdist.broadcast_object_list(box, src=0)
    return Path(box[0][0]), bool(box[0][1])


def _train_in(recipe: Recipe, registry: Registry, run_dir: Path, renamed: bool, mode: str, dist: Dist,
              device: torch.device, amp_dtype: torch.dtype | None, use_scaler: bool, say: _Printer, seed: int,
              t0: float, stop_after_steps: int | None) -> RunResult:
    t = recipe.train
    ckpt_dir = run_dir / "checkpoints"
    resume_from = ckpt.find_checkpoint(ckpt_dir, "last") if mode == "resume" else None
    resume_state = ckpt.read_state(resume_from) if resume_from else None
    if resume_state is not None:
        _refuse_different_model(recipe, resume_state, resume_from)
    if dist.main:
        (run_dir / "recipe.resolved.toml").write_text(dump_toml(recipe.to_dict()), encoding="utf-8")

    splits = load_splits(recipe, registry)
    plan = plan_data(recipe, splits)
    model = assemble(recipe, registry, plan, fit_state=resume_state["fit_state"] if resume_state else None)
    fields = make_fields(model, plan, registry)
    model.to(device)
    trainable, frozen = count_parameters(model)
    say(f"model: {trainable:,} trainable + {frozen:,} frozen parameters on {device}"
        f"{' with ' + str(amp_dtype).replace('torch.', '') + ' autocast' if amp_dtype else ''}")

    # frozen-encoder caches
    t_cache = time.perf_counter()
    caches = build_caches(model, fields, plan, device, max(64, t["batch_size"]), t["cache"], say)
    cache_info = {f: {"samples": sum(len(plan.splits.splits[s]) for s in caches if f in caches[s]),
                      "mb": round(sum(caches[s][f].nbytes for s in caches if f in caches[s]) / 2**20, 1)}
                  for f in {f for s in caches.values() for f in s}}
    if cache_info:
        cache_info["seconds"] = round(time.perf_counter() - t_cache, 2)  # type: ignore[assignment]
        say(f"cache: frozen encoder outputs computed once for {', '.join(sorted(caches.get('train', {})))}")

    workers = t["num_workers"] if t["num_workers"] != "auto" else (0 if device.type == "cpu" else min(8, os.cpu_count() or 1))
    bs = t["batch_size"]

    def loader(split: str, train_mode: bool) -> tuple[torch.utils.data.DataLoader, EpochSampler, MultimodalDataset] | None:
        rows = plan.splits.splits.get(split) or []
        if not rows:
            return None
        split_caches = caches.get(split, {})
        ds = MultimodalDataset(rows, fields, model.head, plan.target_columns, base_dir=plan.splits.base_dir,
                               source=plan.source(split), train=train_mode, seed=seed, cached=list(split_caches))
        sampler = EpochSampler(len(rows), shuffle=train_mode, seed=seed, rank=dist.rank, world=dist.world,
                               pad=train_mode)
        dl = torch.utils.data.DataLoader(ds, batch_size=bs, sampler=sampler, num_workers=workers,
                                         collate_fn=Collator(fields, model.head, split_caches),
                                         pin_memory=device.type == "cuda", persistent_workers=False,
                                         generator=torch.Generator().manual_seed(seed))
        return dl, sampler, ds

    train_l = loader("train", True)
    val_l = loader("val", False)
    test_l = loader("test", False)
    assert train_l is not None
    train_loader, train_sampler, train_ds = train_l

    micro_per_epoch = math.ceil(len(train_sampler) / bs)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / t["grad_accum"]))
    total_steps = t["max_steps"] if t["max_steps"] > 0 else t["epochs"] * steps_per_epoch
    warmup = min(100, total_steps // 10) if t["warmup_steps"] == "auto" else int(t["warmup_steps"])

    net: nn.Module = model
    if t["strategy"] == "fsdp":
        raise RecipeError(f"{recipe.source}: train.strategy = 'fsdp' is not implemented yet; use 'ddp' (or 'auto')")
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=True)
    if t["compile"]:
        net = torch.compile(net)
    optimizer = make_optimizer(param_groups(model, recipe), recipe)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    monitor = t["monitor"] if t["monitor"] != "auto" else model.head.monitor
    monitor = monitor.removeprefix("val.")
    mode_ = t["monitor_mode"] if t["monitor_mode"] != "auto" else (
        model.head.monitor_mode if monitor == model.head.monitor else ("min" if "loss" in monitor else "max"))

    # state
    step = epoch = micro_in_epoch = 0
    best: dict[str, Any] = {}
    bad_evals = 0
    samples_seen = 0
    train_time = 0.0
    if resume_from is not None:
        ckpt.load_weights(model, resume_from / ckpt.WEIGHTS)
        ts = ckpt.read_training_state(resume_from)
        if ts is not None:
            optimizer.load_state_dict(ts["optimizer"])
            if scaler is not None and ts.get("scaler"):
                scaler.load_state_dict(ts["scaler"])
            torch.set_rng_state(ts["rng"]["torch"])
            if "cuda" in ts["rng"] and device.type == "cuda":
                torch.cuda.set_rng_state_all(ts["rng"]["cuda"])
        s = resume_state
        step, epoch, micro_in_epoch = s["step"], s["epoch"], s["micro_in_epoch"]
        best, bad_evals, samples_seen, train_time = s["best"], s["bad_evals"], s["samples_seen"], s["train_time"]
        _restore_py_rng(s.get("py_rng", {}))
        if s.get("world", 1) != dist.world:
            micro_in_epoch = 0  # data shards differ across world sizes: restart the epoch's data order
            say(f"resume: world size changed {s.get('world', 1)} -> {dist.world}; epoch {epoch} restarts its data")
        say(f"resume: continuing {run_dir} from step {step} (epoch {epoch})")

    metrics_path = run_dir / "metrics.jsonl"
    tb = _tensorboard(run_dir, t["tensorboard"], dist, say)

    def log(record: dict[str, Any]) -> None:
        if not dist.main:
            return
        with open(metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if tb is not None:
            for k, v in record["metrics"].items():
                tb.add_scalar(f"{record['split']}/{k}", v, record["step"])

    rng_after_step = _rng_snapshot()

    def save(name: str) -> None:
        if not dist.main:
            return
        state = {"step": step, "epoch": epoch, "micro_in_epoch": micro_in_epoch, "best": best,
                 "bad_evals": bad_evals, "samples_seen": samples_seen, "train_time": train_time,
                 "world": dist.world, "fit_state": model.fit_state(), "model": recipe.model_signature(),
                 "columns": {**plan.field_columns, **plan.target_columns},
                 "py_rng": _py_rng_state(), "seed": seed}
        training_state = {"optimizer": optimizer.state_dict(), "rng": rng_after_step,
                          "scaler": scaler.state_dict() if scaler is not None else {}}
        ckpt.save_checkpoint(ckpt_dir, name, model, state, training_state)

    last_eval: dict[str, Any] = {}

    def run_eval() -> dict[str, float] | None:
        nonlocal best, bad_evals
        if val_l is None:
            return None
        values = evaluate(net, val_l[0], device, amp_dtype, dist)
        last_eval.update(step=step, values=values)
        log({"step": step, "epoch": epoch, "split": "val", "metrics": values})
        say(f"[step {step}/{total_steps} epoch {epoch}] val " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()))
        if monitor not in values:
            raise RecipeError(f"{recipe.source}: train.monitor {monitor!r} is not a metric of this head; "
                              f"available: {', '.join(sorted(values))}")
        current = values[monitor]
        prev = best.get("value")
        improved = prev is None or (current < prev if mode_ == "min" else current > prev)
        if improved:
            best = {"value": current, "metric": monitor, "step": step, "epoch": epoch, "val": values}
            bad_evals = 0
            save("best")
        else:
            bad_evals += 1
        return values

    progress = _progress(total_steps, step, say.on and _is_tty())
    interrupted = False
    stopped_early = False
    window_loss, window_n, window_t, window_samples = 0.0, 0, time.perf_counter(), 0
    window_aux: dict[str, float] = {}
    epoch_time = 0.0
    net.train()
    try:
        with progress:
            while step < total_steps and not stopped_early:
                train_sampler.set_epoch(epoch, skip=micro_in_epoch * bs)
                train_ds.epoch = epoch
                train_loader.generator.manual_seed(seed * 7919 + epoch)
                accum = 0
                optimizer.zero_grad(set_to_none=True)
                t_epoch = time.perf_counter()
                for batch in train_loader:
                    batch = batch.to(device, non_blocking=True)
                    sync = (accum + 1) == t["grad_accum"] or micro_in_epoch + 1 == micro_per_epoch
                    ctx = net.no_sync() if dist.enabled and not sync and hasattr(net, "no_sync") else nullcontext()
                    with ctx, _autocast(device, amp_dtype):
                        out = net(batch)
                        loss = out.loss
                    if loss is None:
                        raise TrainingError("the head returned no loss for a training batch (are targets missing?)")
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"non-finite loss ({float(loss.detach())}) at step {step + 1} (epoch {epoch}); "
                            f"try a lower train.lr (now {t['lr']}), train.precision = 'fp32', or a grad_clip")
                    scaled = loss / t["grad_accum"]
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    accum += 1
                    micro_in_epoch += 1
                    samples_seen += batch.size * dist.world
                    window_loss += float(loss.detach())
                    for key, value in out.aux.items():
                        window_aux[key] = window_aux.get(key, 0.0) + float(value.detach())
                    window_n += 1
                    window_samples += batch.size * dist.world
                    if not sync:
                        continue
                    factor = lr_factor(step, total_steps, warmup, t["schedule"])
                    for g in optimizer.param_groups:
                        g["lr"] = g["base_lr"] * factor
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                    if t["grad_clip"] > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    accum = 0
                    step += 1
                    rng_after_step = _rng_snapshot()
                    now = time.perf_counter()
                    rate = window_samples / max(now - window_t, 1e-9)
                    progress.update(step, loss=window_loss / max(window_n, 1), lr=optimizer.param_groups[0]["lr"],
                                    rate=rate)
                    if step % t["log_every"] == 0:
                        log({"step": step, "epoch": epoch, "split": "train",
                             "metrics": {"loss": window_loss / max(window_n, 1), "lr": optimizer.param_groups[0]["lr"],
                                         "samples_per_s": rate,
                                         **{k: v / max(window_n, 1) for k, v in window_aux.items()}}})
                        window_loss, window_n, window_t, window_samples = 0.0, 0, now, 0
                        window_aux = {}
                    evaluated = False
                    if t["eval_every"] and step % t["eval_every"] == 0:
                        train_time += time.perf_counter() - t_epoch
                        epoch_time += time.perf_counter() - t_epoch
                        run_eval()
                        save("last")
                        evaluated = True
                        t_epoch = time.perf_counter()
                        window_t = time.perf_counter()
                        if t["early_stopping"] and bad_evals >= t["early_stopping"]:
                            stopped_early = True
                    if not evaluated and t["checkpoint_every"] and step % t["checkpoint_every"] == 0:
                        save("last")
                    if stop_after_steps is not None and step >= stop_after_steps:
                        raise KeyboardInterrupt
                    if step >= total_steps or stopped_early:
                        break
                train_time += time.perf_counter() - t_epoch
                epoch_time += time.perf_counter() - t_epoch
                if micro_in_epoch >= micro_per_epoch:
                    # training seconds of the epoch (evaluation excluded), e.g. to see the frozen-encoder cache pay off
                    log({"step": step, "epoch": epoch, "split": "epoch", "metrics": {
                        "seconds": epoch_time, "samples_per_s": len(train_sampler) * dist.world / max(epoch_time, 1e-9)}})
                    epoch_time = 0.0
                    epoch += 1
                    micro_in_epoch = 0
                    if not t["eval_every"]:
                        run_eval()
                        save("last")
                        window_t = time.perf_counter()
                        if t["early_stopping"] and bad_evals >= t["early_stopping"]:
                            stopped_early = True
    except KeyboardInterrupt:
        interrupted = True
        save("last")
        say(f"interrupted at step {step}; checkpoint written. Resume with: mmkit run {recipe.source} --resume "
            f"--set run.name={run_dir.name}")
        _finish_dist(dist)
        return RunResult(run_dir, {"interrupted": True, "steps": step}, renamed, True)

    save("last")
    final: dict[str, Any] = {}
    if val_l is not None:
        # a run that stops mid-epoch (max_steps) is evaluated once more, so "best" covers its end too
        final["val"] = last_eval["values"] if last_eval.get("step") == step else run_eval()
    if test_l is not None:
        final["test"] = evaluate(net, test_l[0], device, amp_dtype, dist)
    summary = {
        "run_dir": str(run_dir),
        "best": best,
        "final": final,
        "steps": step,
        "epochs": epoch,
        "samples_seen": samples_seen,
        "samples_per_s": samples_seen / max(train_time, 1e-9),
        "train_seconds": round(train_time, 2),
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "stopped_early": stopped_early,
        "params": {"trainable": trainable, "frozen": frozen},
        "cache": cache_info,
        "device": str(device),
        "precision": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
        "world_size": dist.world,
    }
    if dist.main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        log({"step": step, "epoch": epoch, "split": "final", "metrics": {
            f"{split}.{k}": v for split, vals in final.items() for k, v in vals.items()}})
    if tb is not None:
        tb.close()
    _finish_dist(dist)
    return RunResult(run_dir, summary, renamed)


def _finish_dist(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()  # every rank is done before any tears the group down
        if dist.owned:
            tdist.destroy_process_group()


def _tensorboard(run_dir: Path, enabled: bool, dist: Dist, say: _Printer) -> Any:
    if not enabled or not dist.main:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise RecipeError("train.tensorboard = true needs TensorBoard: pip install 'mmkit[tb]'") from exc
    return SummaryWriter(str(run_dir / "tensorboard"))


def _refuse_different_model(recipe: Recipe, state: Mapping[str, Any], where: Path) -> None:
    old, new = state.get("model", {}), recipe.model_signature()
    if old == new:
        return
    diffs = _diff(old, new)
    raise RecipeError(f"{where}: cannot resume: the recipe's model differs from the checkpoint's:\n  "
                      + "\n  ".join(diffs[:20]))


def _diff(a: Any, b: Any, prefix: str = "model") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{prefix}.{k}: added ({b[k]!r})")
            elif k not in b:
                out.append(f"{prefix}.{k}: removed (was {a[k]!r})")
            else:
                out += _diff(a[k], b[k], f"{prefix}.{k}")
        return out
    return [] if a == b else [f"{prefix}: {a!r} -> {b!r}"]


class _NoProgress:
    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, step: int, **fields: Any) -> None:
        return None


class _RichProgress:
    def __init__(self, total: int, start: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  "
                                            "{task.fields[rate]:.0f} samples/s"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self.task = self.progress.add_task("train", total=total, completed=start, loss=float("nan"), lr=0.0, rate=0.0)

    def __enter__(self) -> "_RichProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, step: int, **fields: Any) -> None:
        self.progress.update(self.task, completed=step, **fields)


def _progress(total: int, start: int, enabled: bool) -> Any:
    return _RichProgress(total, start) if enabled else _NoProgress()
