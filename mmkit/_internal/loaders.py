"""The DataLoaders of a training run: train (sharded, seeded per epoch, resumable mid-epoch), val, test.

:class:`TrainData` is the one place the training loop gets batches from: :meth:`TrainData.batches`
yields micro-batches epoch after epoch, starting at the position a :class:`~mmkit._internal.trainer.TrainState`
holds. A streamed training split (:mod:`mmkit._internal.streaming`) resumes from the same position (its batch
sequence does not depend on the number of workers); its ``state_dict()`` records the stream's size,
so a resume on changed shards is refused, and the bad samples skipped.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from mmkit._internal.assembly import DataPlan
from mmkit._internal.data import Collator, EmbeddingCache, EpochSampler, Field, MultimodalDataset
from mmkit._internal.distributed import Dist
from mmkit._internal.errors import DataError
from mmkit._internal.interfaces import Batch, Head
from mmkit._internal.rundir import RunDir
from mmkit._internal.sample_cache import Budget, CachedDataset, SampleStore, memory_budget
from mmkit._internal.streaming import BadSamples, StreamBatches, StreamDataset, batches_of, stream_loader
from mmkit._internal.threads import local_world_size

#: splits the decoded-sample cache covers (read every epoch; test is read once; streams never)
CACHED_SPLITS = ("train", "val")


def _first(ds: StreamDataset) -> list[Any]:
    """The first few samples of the split's first shard: the same on every rank, so a bad column
    fails on all of them alike, before training."""
    return list(itertools.islice(iter(ds.source), min(ds.batch_size, 4)))


def num_workers(setting: int | str, device: torch.device) -> int:
    """``auto``: no worker processes on the CPU (they compete with the model for the same cores, and
    with the decoded-sample cache there is little left for them to do after the first epoch), up
    to 8 on a GPU."""
    if setting != "auto":
        return int(setting)
    return 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)


class TrainData:
    """Train/val/test loaders over a :class:`~mmkit._internal.assembly.DataPlan` (``val``/``test`` None when empty)."""

    def __init__(self, plan: DataPlan, fields: Sequence[Field], head: Head,
                 caches: Mapping[str, Mapping[str, EmbeddingCache]], *, batch_size: int, workers: int | str,
                 seed: int, dist: Dist, device: torch.device, log: Callable[[str], None] | None = None,
                 data_cache: str = "off", run: RunDir | None = None) -> None:
        self.plan, self.fields, self.head, self.caches = plan, list(fields), head, caches
        self.batch_size, self.seed, self.dist, self.device = batch_size, seed, dist, device
        self.workers = num_workers(workers, device)
        self.log = log or (lambda message: None)
        self.stores = self._stores(data_cache, run)
        self.stream: StreamDataset | None = None
        self.bad = BadSamples()
        if plan.stream("train") is not None:
            self._stream_setup()
            return
        train = self.loader("train", train=True)
        if train is None:
            raise DataError(f"{plan.splits.name}: the training split is empty")
        self.train, self.sampler, self.dataset = train
        self.val = self._plain("val")
        self.test = self._plain("test")
        self.samples_per_epoch = len(self.sampler)  # this rank's, padded to equal shards
        self.batches_per_epoch = math.ceil(self.samples_per_epoch / batch_size)

    def loader(self, split: str, train: bool) -> tuple[torch.utils.data.DataLoader, EpochSampler,
                                                       MultimodalDataset] | None:
        rows = self.plan.rows(split)
        if not rows:
            return None
        caches = dict(self.caches.get(split, {}))
        kwargs: dict[str, Any] = dict(base_dir=self.plan.splits.base_dir, source=self.plan.source(split), train=train,
                      seed=self.seed, cached=list(caches))
        store = self.stores.get(split)
        ds = (MultimodalDataset(rows, self.fields, self.head, self.plan.target_columns, **kwargs) if store is None
              else CachedDataset(rows, self.fields, self.head, self.plan.target_columns, store=store, **kwargs))
        if isinstance(ds, CachedDataset) and self.workers:
            ds.prefill(range(len(rows)), self.workers)  # a worker's cache would die with it
        sampler = EpochSampler(len(rows), shuffle=train, seed=self.seed, rank=self.dist.rank, world=self.dist.world,
                               pad=train)
        dl = torch.utils.data.DataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.workers,
                                         collate_fn=Collator(self.fields, self.head, caches),
                                         pin_memory=self.device.type == "cuda", persistent_workers=False,
                                         generator=torch.Generator().manual_seed(self.seed))
        return dl, sampler, ds

    def _stores(self, mode: str, run: RunDir | None) -> dict[str, SampleStore]:
        """One decoded-sample store per cached split, sharing this process's memory budget."""
        self.cache_mode = mode
        if mode == "off":
            return {}
        self.cache_budget = float(memory_budget(local_world_size())) if mode == "auto" else float("inf")
        budget = Budget(self.cache_budget)
        return {split: SampleStore(mode, budget, run.sample_cache_file(split, self.dist.rank) if run else None)
                for split in CACHED_SPLITS if self.plan.stream(split) is None}

    def describe_cache(self) -> str:
        """The run header's line about the decoded-sample cache."""
        if not self.stores:
            return "data cache: " + ("off (samples are decoded every epoch)" if self.cache_mode == "off" else
                                     "not used (streamed splits are read once per epoch)")
        store = next(iter(self.stores.values()))
        where = {"memory": "in memory", "disk": "in a memory-mapped file in the run directory",
                 "auto": f"in memory up to {self.cache_budget / 2**30:.1f} GiB, the rest in a memory-mapped file"}
        when = "prefilled by the loader workers" if self.workers else "filled during the first epoch"
        return f"data cache: {store.mode}: decoded {'/'.join(self.stores)} samples kept {where[store.mode]} ({when})"

    def cache_summary(self) -> dict[str, Any]:
        """What the decoded-sample cache holds per split (empty when off), for summary.json."""
        return {split: store.summary() for split, store in self.stores.items()}

    def close(self) -> None:
        """Release the decoded-sample cache (memory and spill files)."""
        for store in self.stores.values():
            store.close()

    def _plain(self, split: str) -> Any:
        if self.plan.stream(split) is not None:
            ds = self._stream_dataset(split, train=False)
            return StreamBatches(stream_loader(ds, self.workers, self.device), ds)
        found = self.loader(split, train=False)
        return None if found is None else found[0]

    # ------------------------------------------------------------------------------ streamed splits
    def _stream_dataset(self, split: str, train: bool) -> StreamDataset:
        splits = self.plan.splits
        return StreamDataset(self.plan.stream(split), self.fields, self.head, self.plan.target_columns,
                             batch_size=self.batch_size, seed=self.seed, rank=self.dist.rank, world=self.dist.world,
                             train=train, shuffle_buffer=getattr(splits, "shuffle_buffer", 0),
                             skip_bad=getattr(splits, "skip_bad_rows", False))

    def _stream_setup(self) -> None:
        """The training split is streamed: an IterableDataset, its loader, and a first-batch check (every
        rank reads the same first samples, so a bad column fails on all of them, before training)."""
        self.stream = ds = self._stream_dataset("train", train=True)
        ds.make_batch(_first(ds))
        self.train = stream_loader(ds, self.workers, self.device)
        self.sampler, self.dataset = None, None  # type: ignore[assignment]
        self.val, self.test = self._plain("val"), self._plain("test")
        self.samples_per_epoch = ds.samples
        self.batches_per_epoch = len(ds)
        src = ds.source
        self.log(f"data: streaming {src.total:,} samples from {len(src.shards)} {src.kind} shard(s); "
                 f"{self.samples_per_epoch:,} per process per epoch")

    def _stream_batches(self, state: Any) -> Iterator[Batch]:
        assert self.stream is not None
        while True:
            epoch = state.epoch
            self.stream.set_epoch(epoch, state.batch_in_epoch)
            before = self.bad.count
            empty = True
            for batch, bad in batches_of(self.train):
                empty = False
                if bad.count:
                    for message in bad.first[: max(0, 5 - len(self.bad.first))]:
                        self.bad.first.append(message)
                    self.bad.count += bad.count
                yield batch
            if self.bad.count > before:
                self.log(f"data: skipped {self.bad.count - before} bad sample(s) in epoch {epoch} "
                         f"(skip_bad_rows); first: {self.bad.first[0]}")
            if empty and state.epoch == epoch:
                raise DataError(f"{self.plan.source('train')}: epoch {epoch} has no batches left to train "
                                f"(position {state.batch_in_epoch} of {self.batches_per_epoch})")

    def batches(self, state: Any) -> Iterator[Batch]:
        """Training micro-batches, endlessly: each epoch from ``state.epoch``/``state.batch_in_epoch``
        as they stand when it starts (the loop advances them)."""
        if self.stream is not None:
            yield from self._stream_batches(state)
            return
        while True:
            epoch = state.epoch
            self.sampler.set_epoch(epoch, skip=state.batch_in_epoch * self.batch_size)
            self.dataset.epoch = epoch
            self.train.generator.manual_seed(self.seed * 7919 + epoch)
            empty = True
            for batch in self.train:
                empty = False
                yield batch
            if empty and state.epoch == epoch:
                raise DataError(f"{self.plan.source('train')}: epoch {epoch} has no batches left to train "
                                f"(position {state.batch_in_epoch} of {self.batches_per_epoch})")

    def state_dict(self) -> dict[str, Any]:
        """A data source's own position (nothing for map-style datasets: the TrainState's epoch and
        ``batch_in_epoch`` say where they are). A stream records its size and the bad samples
        skipped, so a resumed run can tell that its shards changed."""
        if self.stream is None:
            return {}
        return {"stream": {**self.stream.source.describe(), "skipped": self.bad.count}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("stream")
        if self.stream is None or not saved:
            return
        now = self.stream.source.describe()
        if (saved.get("samples"), saved.get("shards")) != (now["samples"], now["shards"]):
            raise DataError(f"{self.plan.source('train')}: the checkpoint was trained on {saved.get('samples')} "
                            f"samples in {saved.get('shards')} shards, the shards now hold {now['samples']} in "
                            f"{now['shards']}; resume needs the same data")
        self.bad.count = int(saved.get("skipped", 0))
