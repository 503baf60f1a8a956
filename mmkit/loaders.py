"""The DataLoaders of a training run: train (sharded, seeded per epoch, resumable mid-epoch), val, test.

:class:`TrainData` is the one place the training loop gets batches from: :meth:`TrainData.batches`
yields micro-batches epoch after epoch, starting at the position a :class:`~mmkit.trainer.TrainState`
holds. A data source with a position of its own (a stream) keeps it in ``state_dict()``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from mmkit.assembly import DataPlan
from mmkit.data import Collator, EmbeddingCache, EpochSampler, Field, MultimodalDataset
from mmkit.distributed import Dist
from mmkit.errors import DataError
from mmkit.interfaces import Batch, Head


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
                 seed: int, dist: Dist, device: torch.device) -> None:
        self.plan, self.fields, self.head, self.caches = plan, list(fields), head, caches
        self.batch_size, self.seed, self.dist, self.device = batch_size, seed, dist, device
        self.workers = num_workers(workers, device)
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

    def _plain(self, split: str) -> torch.utils.data.DataLoader | None:
        found = self.loader(split, train=False)
        return None if found is None else found[0]

    def batches(self, state: Any) -> Iterator[Batch]:
        """Training micro-batches, endlessly: each epoch from ``state.epoch``/``state.batch_in_epoch``
        as they stand when it starts (the loop advances them)."""
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
        ``batch_in_epoch`` say where they are)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None
