"""The DataLoaders of a training run: train (sharded, seeded per epoch, resumable mid-epoch), val, test.

:class:`TrainData` is the one place the training loop gets batches from: :meth:`TrainData.batches`
yields micro-batches epoch after epoch, starting at the position a :class:`~mmkit.trainer.TrainState`
holds. A streamed training split (:mod:`mmkit.streaming`) resumes from the same position (its batch
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

from mmkit.assembly import DataPlan
from mmkit.data import Collator, EmbeddingCache, EpochSampler, Field, MultimodalDataset
from mmkit.distributed import Dist
from mmkit.errors import DataError
from mmkit.interfaces import Batch, Head
from mmkit.streaming import BadSamples, StreamBatches, StreamDataset, batches_of, stream_loader


def _first(ds: StreamDataset) -> list[Any]:
    """The first few samples of the split's first shard: the same on every rank, so a bad column
    fails on all of them alike, before training."""
    return list(itertools.islice(iter(ds.source), min(ds.batch_size, 4)))


def num_workers(setting: int | str, device: torch.device) -> int:
    """``auto``: no worker processes on the CPU (they would compete with the model for cores), up
    to 8 on a GPU."""
    if setting != "auto":
        return int(setting)
    return 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)


class TrainData:
    """Train/val/test loaders over a :class:`~mmkit.assembly.DataPlan` (``val``/``test`` None when empty)."""

    def __init__(self, plan: DataPlan, fields: Sequence[Field], head: Head,
                 caches: Mapping[str, Mapping[str, EmbeddingCache]], *, batch_size: int, workers: int | str,
                 seed: int, dist: Dist, device: torch.device, log: Callable[[str], None] | None = None) -> None:
        self.plan, self.fields, self.head, self.caches = plan, list(fields), head, caches
        self.batch_size, self.seed, self.dist, self.device = batch_size, seed, dist, device
        self.workers = num_workers(workers, device)
        self.log = log or (lambda message: None)
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
        ds = MultimodalDataset(rows, self.fields, self.head, self.plan.target_columns,
                               base_dir=self.plan.splits.base_dir, source=self.plan.source(split), train=train,
                               seed=self.seed, cached=list(caches))
        sampler = EpochSampler(len(rows), shuffle=train, seed=self.seed, rank=self.dist.rank, world=self.dist.world,
                               pad=train)
        dl = torch.utils.data.DataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.workers,
                                         collate_fn=Collator(self.fields, self.head, caches),
                                         pin_memory=self.device.type == "cuda", persistent_workers=False,
                                         generator=torch.Generator().manual_seed(self.seed))
        return dl, sampler, ds

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
