"""The decoded-sample cache (``[train] data_cache``): decode every sample once, reuse it every epoch.

A user's manifest of PNG files is decoded again in every epoch unless something keeps the decoded
pixels; this cache keeps, per split and per row, what an encoder's ``to_cache`` returns -- the
deterministic, costly part of preprocessing (decoding, resizing; uint8 for images) -- and runs the
encoder's ``from_cache`` (augmentation, normalisation) on it every epoch, under the same per-sample
seed as uncached preprocessing. So a cached epoch feeds the model exactly the tensors an uncached
one would, and resuming needs nothing saved: the cache is a pure function of the rows.

Where samples go: ``memory`` keeps them all in RAM; ``disk`` appends them to a memory-mapped spill
file under the run directory (:meth:`mmkit._internal.rundir.RunDir.sample_cache_file`, one per split and
rank, unlinked as soon as it is open so that nothing is left behind, even after a crash); ``auto``
keeps samples in RAM while a budget lasts (half the available memory, shared by the local ranks)
and spills the rest. Under DDP each rank only ever reads its own shard, so it caches only that.

It fills lazily in the process that decodes: in the main process (``num_workers = 0``, the CPU
default) during the first epoch; with DataLoader workers, by a parallel pass over the split before
training (:meth:`CachedDataset.prefill`), because what a worker caches dies with it.

This is beside the frozen-encoder cache (:class:`mmkit._internal.data.EmbeddingCache`), which keeps encoder
*outputs*; fields covered by that one are not decoded at all.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mmkit._internal.data import Field, MultimodalDataset, load_field
from mmkit._internal.sysmem import CGROUP, MEMINFO, available_bytes

MODES = ("auto", "memory", "disk", "off")
#: fraction of the available memory the ``auto`` budget may take (divided among the local ranks)
MEMORY_FRACTION = 0.5


def memory_budget(local_world: int = 1, *, meminfo: Path = MEMINFO, cgroup: Path = CGROUP) -> int:
    """The ``auto`` budget in bytes: ``MEMORY_FRACTION`` of the memory available to the process (the
    smaller of the kernel's MemAvailable and the cgroup limit's headroom), divided among the local ranks."""
    return int(available_bytes(meminfo, cgroup) * MEMORY_FRACTION) // max(1, local_world)


@dataclass
class Budget:
    """Bytes of RAM the caches of one process may still take (shared by its splits)."""

    left: float

    def take(self, nbytes: int) -> bool:
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


@dataclass(frozen=True)
class _Spilled:
    offset: int
    shape: tuple[int, ...]
    dtype: torch.dtype


class SpillFile:
    """An append-only file of tensors, read back through a memory map (remapped as it grows).

    The file is unlinked once open: it lives as long as the process (and forked DataLoader workers,
    which inherit the descriptor) holds it, and nothing is left in the run directory afterwards.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.unlink(path)
        self.size = 0
        self.map: mmap.mmap | None = None

    def put(self, tensor: torch.Tensor) -> _Spilled:
        data = tensor.contiguous().numpy().tobytes()
        os.pwrite(self.fd, data, self.size)
        slot = _Spilled(self.size, tuple(tensor.shape), tensor.dtype)
        self.size += len(data)
        return slot

    def get(self, slot: _Spilled) -> torch.Tensor:
        count = 1
        for d in slot.shape:
            count *= d
        nbytes = count * torch.empty((), dtype=slot.dtype).element_size()
        if self.map is None or len(self.map) < slot.offset + nbytes:
            if self.map is not None:
                self.map.close()
            self.map = mmap.mmap(self.fd, self.size, prot=mmap.PROT_READ)
        buffer = bytearray(self.map[slot.offset: slot.offset + nbytes])  # a copy: the tensor outlives remaps
        return torch.frombuffer(buffer, dtype=slot.dtype).reshape(slot.shape) if nbytes else \
            torch.empty(slot.shape, dtype=slot.dtype)

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_ABSENT = object()


@dataclass
class SampleStore:
    """The cached items of one split: ``(row, field) -> tensor | spilled slot | absent``."""

    mode: str
    budget: Budget
    spill_path: Path | None
    items: dict[tuple[int, str], Any] = field(default_factory=dict)
    uncacheable: set[str] = field(default_factory=set)
    memory_bytes: int = 0
    disk_bytes: int = 0
    hits: int = 0
    misses: int = 0
    full: bool = False
    owner: int = field(default_factory=os.getpid)
    _spill: SpillFile | None = None

    def get(self, index: int, name: str) -> tuple[bool, torch.Tensor | None]:
        """``(found, item)``; ``item`` None means the field is absent in that row."""
        slot = self.items.get((index, name))
        if slot is None:
            self.misses += 1
            return False, None
        self.hits += 1
        if slot is _ABSENT:
            return True, None
        if isinstance(slot, _Spilled):
            assert self._spill is not None
            return True, self._spill.get(slot)
        return True, slot

    def put(self, index: int, name: str, item: torch.Tensor | None) -> None:
        """Keep ``item`` (None: absent) in memory while the budget lasts, else in the spill file.
        Only the process that owns the store caches (a worker's copy would die with it)."""
        if self.full or os.getpid() != self.owner:
            return
        if item is None:
            self.items[(index, name)] = _ABSENT
            return
        item = item.detach()
        nbytes = item.numel() * item.element_size()
        if self.mode != "disk" and (self.mode == "memory" or self.budget.take(nbytes)):
            self.items[(index, name)] = item.clone() if item.storage_offset() or not item.is_contiguous() else item
            self.memory_bytes += nbytes
            return
        try:
            if self._spill is None:
                if self.spill_path is None:
                    self.full = True
                    return
                self._spill = SpillFile(self.spill_path)
            self.items[(index, name)] = self._spill.put(item)
            self.disk_bytes += nbytes
        except OSError:  # no room on disk: keep what is cached, decode the rest every epoch
            self.full = True

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self.items.clear()

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "rows": len({k[0] for k in self.items}),
                "memory_mb": round(self.memory_bytes / 2**20, 2), "disk_mb": round(self.disk_bytes / 2**20, 2),
                "hits": self.hits, "misses": self.misses, "uncacheable": sorted(self.uncacheable), "full": self.full}


class CachedDataset(MultimodalDataset):
    """A :class:`~mmkit._internal.data.MultimodalDataset` whose fields go through a :class:`SampleStore`."""

    def __init__(self, *args: Any, store: SampleStore, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = store

    def field_item(self, fld: Field, row: Mapping[str, Any], index: int, source: str, label: int | str) -> Any:
        store = self.store
        if fld.name in store.uncacheable:
            return super().field_item(fld, row, index, source, label)
        found, item = store.get(index, fld.name)
        if not found:
            item = self._decode(fld, row, index, source, label)
            if fld.name in store.uncacheable:  # the encoder declined: preprocess as usual
                return super().field_item(fld, row, index, source, label)
            store.put(index, fld.name, item)
        if item is None:
            return None
        cached = item
        return self.seeded(fld, index, source, label, lambda: fld.encoder.from_cache(cached, train=self.train))

    def _decode(self, fld: Field, row: Mapping[str, Any], index: int, source: str,
                label: int | str) -> torch.Tensor | None:
        """The encoder's cacheable form of a row's field (None when absent or not cacheable)."""
        raw = load_field(fld, row, self.base_dir, source, index, label)
        if raw is None:
            return None
        item = self.seeded(fld, index, source, label, lambda: fld.encoder.to_cache(raw, train=self.train))
        if item is None:
            self.store.uncacheable.add(fld.name)
        return item

    def prefill(self, indices: Sequence[int], workers: int) -> None:
        """Decode ``indices`` with ``workers`` DataLoader processes into the store (before training:
        the training loader's workers then find everything, in memory inherited at fork or in the
        spill file)."""
        loader = torch.utils.data.DataLoader(_Decoder(self), batch_size=16, sampler=list(dict.fromkeys(indices)),
                                             num_workers=workers, collate_fn=_concat)
        for chunk in loader:
            for index, name, item in chunk:
                if isinstance(item, str) and item == _UNCACHEABLE:  # (pickled: not the same object)
                    self.store.uncacheable.add(name)
                else:
                    self.store.put(index, name, item)


_UNCACHEABLE = "uncacheable"


class _Decoder(torch.utils.data.Dataset):
    """Rows -> their fields' cacheable forms (run by the prefill pass's workers)."""

    def __init__(self, ds: CachedDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> list[tuple[int, str, Any]]:
        ds, out = self.ds, []
        row = ds.rows[index]
        for fld in ds.fields:
            if fld.name in ds.cached:
                continue
            before = fld.name in ds.store.uncacheable
            item = None if before else ds._decode(fld, row, index, ds.source, index + 1)
            declined = before or fld.name in ds.store.uncacheable
            out.append((index, fld.name, _UNCACHEABLE if declined else item))
        return out


def _concat(chunks: list[list[Any]]) -> list[Any]:
    return [x for chunk in chunks for x in chunk]


__all__ = ["Budget", "CachedDataset", "MODES", "SampleStore", "SpillFile", "memory_budget"]
