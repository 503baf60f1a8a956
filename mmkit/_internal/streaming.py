"""Streaming splits as a torch ``IterableDataset``: sharded across ranks and DataLoader workers, seeded
per epoch, resumable mid-epoch, never holding the split in memory.

One epoch, for a seed: the shard order is shuffled by ``(seed, epoch)``; the samples, in that order,
form one sequence that is cut into ``world`` contiguous, equal parts (the last part wraps around to
the first samples when the count does not divide, as :class:`~mmkit._internal.data.EpochSampler` pads, so
every rank trains the same number of batches and no rank waits for another); an optional shuffle
buffer mixes a rank's part; the part is cut into batches of ``batch_size``, and batch ``j`` is
loaded, preprocessed and collated by worker ``j % workers``. The DataLoader hands the workers'
batches out round-robin, so a rank's batch sequence is the same whatever ``num_workers`` is, and the
position to resume from is just the number of batches the rank has trained in the epoch
(``TrainState.batch_in_epoch``): a resumed epoch skips that many batches deterministically.

Each worker reads (but does not decode) the whole of its rank's part; only its own batches are
loaded and preprocessed. Bad samples are DataErrors naming the shard and key; with
``[data] skip_bad_rows = true`` they are dropped from their batch (the batch count, and so every
rank's step count, stays the same) and counted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mmkit._internal.data import Collator, Field, MultimodalDataset
from mmkit._internal.errors import DataError
from mmkit._internal.interfaces import Batch, Head
from mmkit._internal.shards import Sample, Source


# ------------------------------------------------------------------------------------------ the plan
def shard_order(n_shards: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The epoch's shard order: a permutation seeded by ``(seed, epoch)``, or the natural order."""
    if not shuffle:
        return list(range(n_shards))
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_shards, generator=g).tolist()


def rank_segments(counts: Sequence[int], order: Sequence[int], rank: int, world: int,
                  pad: bool) -> list[tuple[int, int, int]]:
    """``(shard, start, stop)`` pieces of this rank's contiguous part of the epoch's sequence.

    With ``pad``, every rank gets ``ceil(total / world)`` samples (wrapping around to the start);
    without, the parts are as equal as possible and nothing repeats (evaluation)."""
    total = sum(counts)
    if pad:
        per = -(-total // world)
        lo, hi = rank * per, (rank + 1) * per
    else:
        lo, hi = rank * total // world, (rank + 1) * total // world
    pieces: list[tuple[int, int, int]] = []
    pos = lo
    while pos < hi:
        wrapped = pos % total
        base = 0
        for shard in order:
            n = counts[shard]
            if base <= wrapped < base + n:
                take = min(base + n - wrapped, hi - pos)
                pieces.append((shard, wrapped - base, wrapped - base + take))
                pos += take
                break
            base += n
    return pieces


def part_size(total: int, rank: int, world: int, pad: bool) -> int:
    if pad:
        return -(-total // world)
    return (rank + 1) * total // world - rank * total // world


# ------------------------------------------------------------------------------------------ dataset
@dataclass
class StreamPosition:
    """What one iteration of a :class:`StreamDataset` covers (set before each epoch)."""

    epoch: int = 0
    skip_batches: int = 0


@dataclass
class BadSamples:
    """Samples dropped with ``skip_bad_rows``: how many, and the first messages."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.first) < 5:
            self.first.append(message)


@dataclass
class StreamError:
    """A DataError raised in a DataLoader worker, carried to the main process as a value."""

    message: str


def batches_of(loader: Any) -> Iterator[tuple[Batch, BadSamples]]:
    """The ``(batch, bad)`` pairs of a stream loader; a worker's :class:`StreamError` is raised here."""
    for item in loader:
        if isinstance(item, StreamError):
            raise DataError(item.message)
        yield item


class StreamDataset(torch.utils.data.IterableDataset):
    """Yields ``(batch, bad)`` pairs for one rank (``bad``: the :class:`BadSamples` of that batch)."""

    def __init__(self, source: Source, fields: Sequence[Field], head: Head | None,
                 target_columns: Mapping[str, str] | None, *, batch_size: int, seed: int, rank: int, world: int,
                 train: bool, shuffle_buffer: int = 0, skip_bad: bool = False) -> None:
        super().__init__()
        self.source, self.batch_size, self.seed, self.rank, self.world = source, batch_size, seed, rank, world
        self.train, self.shuffle_buffer, self.skip_bad = train, shuffle_buffer, skip_bad
        self.items = MultimodalDataset([], fields, head, target_columns, base_dir=source.base_dir,
                                       source=source.spec, train=train, seed=seed)
        self.collate = Collator(fields, head)
        self.needed = _needed_columns(fields, target_columns or {})
        self.position = StreamPosition()

    # -------------------------------------------------------------------- sizes
    @property
    def samples(self) -> int:
        """This rank's samples per epoch."""
        return part_size(self.source.total, self.rank, self.world, pad=self.train)

    def __len__(self) -> int:
        return -(-self.samples // self.batch_size)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.position = StreamPosition(epoch, skip_batches)

    # -------------------------------------------------------------------- iteration
    def raw(self, epoch: int, start: int = 0) -> Iterator[Sample]:
        """This rank's undecoded samples of ``epoch`` in order, from position ``start``."""
        order = shard_order(len(self.source.counts), self.seed, epoch, shuffle=self.train)
        pieces = rank_segments(self.source.counts, order, self.rank, self.world, pad=self.train)
        if self.shuffle_buffer > 1 and self.train:
            stream = _shuffled(self._read(pieces, 0), self.shuffle_buffer,
                               random.Random(f"{self.seed}/{epoch}/{self.rank}"))
            for i, sample in enumerate(stream):
                if i >= start:
                    yield sample
            return
        yield from self._read(pieces, start)

    def _read(self, pieces: Sequence[tuple[int, int, int]], start: int) -> Iterator[Sample]:
        for shard, lo, hi in pieces:
            if start >= hi - lo:
                start -= hi - lo
                continue
            n = hi - lo - start
            for i, sample in enumerate(self.source.read(shard, lo + start)):
                if i >= n:
                    break
                yield sample
            start = 0

    def __iter__(self) -> Iterator[Any]:
        """``(batch, bad)`` pairs; a DataError ends the iteration with a :class:`StreamError` (so the
        main process raises it with its own message, not a worker's traceback)."""
        try:
            yield from self._batches()
        except DataError as exc:
            yield StreamError(str(exc))

    def _batches(self) -> Iterator[tuple[Batch, BadSamples]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        epoch, skip = self.position.epoch, self.position.skip_batches
        self.items.epoch = epoch
        chunk: list[Sample] = []
        j = skip
        for sample in self.raw(epoch, skip * self.batch_size):
            chunk.append(sample)
            if len(chunk) == self.batch_size:
                if (j - skip) % workers == worker:
                    yield self.make_batch(chunk)
                chunk, j = [], j + 1
        if chunk and (j - skip) % workers == worker:
            yield self.make_batch(chunk)

    def make_batch(self, samples: Sequence[Sample]) -> tuple[Batch, BadSamples]:
        """Load, preprocess and collate ``samples``; bad ones raise, or with ``skip_bad`` are dropped."""
        bad = BadSamples()
        loaded = []
        for sample in samples:
            try:
                loaded.append(self.load(sample))
            except DataError as exc:
                if not self.skip_bad:
                    raise
                bad.add(str(exc))
        if not loaded:
            raise DataError(f"{self.source.spec}: every sample of a batch is bad ({bad.count}); first: {bad.first[0]}")
        return self.collate(loaded), bad

    def load(self, sample: Sample) -> tuple[int, dict[str, Any], Any]:
        missing = [c for c in self.needed if c not in sample.row]
        if missing:
            have = ", ".join(sorted(sample.row)) or "nothing"
            raise DataError(f"{sample.shard} row {sample.where}: no {' or '.join(map(repr, missing))} in this sample "
                            f"(it has {have}); a missing member is an error, an empty one is an absent value")
        return self.items.sample(sample.row, sample.index, sample.shard, sample.where)


def _needed_columns(fields: Sequence[Field], targets: Mapping[str, str]) -> list[str]:
    cols: list[str] = []
    for fld in fields:
        cols += [fld.columns] if isinstance(fld.columns, str) else list(fld.columns)
    return cols + [c for c in targets.values() if c not in cols]


def _shuffled(stream: Iterator[Sample], size: int, rng: random.Random) -> Iterator[Sample]:
    """A reservoir-style shuffle buffer of ``size`` samples (deterministic for ``rng``)."""
    buf: list[Sample] = []
    for sample in stream:
        if len(buf) < size:
            buf.append(sample)
            continue
        i = rng.randrange(size)
        buf[i], sample = sample, buf[i]
        yield sample
    rng.shuffle(buf)
    yield from buf


def stream_loader(dataset: StreamDataset, workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset``'s ready batches (``batch_size=None``: the workers collate)."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       pin_memory=device.type == "cuda", persistent_workers=False)


class StreamBatches:
    """An evaluation loader: the stream's batches without the bad-sample counts."""

    def __init__(self, loader: torch.utils.data.DataLoader, dataset: StreamDataset) -> None:
        self.loader, self.dataset = loader, dataset

    def __iter__(self) -> Iterator[Batch]:
        self.dataset.set_epoch(0, 0)
        for batch, _ in batches_of(self.loader):
            yield batch

    def __len__(self) -> int:
        return len(self.dataset)


def check_stream(source: Source, model: Any, fields: Sequence[Field], target_columns: Mapping[str, str],
                 errors: list[str], limit: int) -> int:
    """Load and preprocess every sample of a streamed split (``mmkit check``), appending errors (at most
    ``limit`` in all) to ``errors``; returns the samples read. A shard that cannot be read ends it."""
    ds = StreamDataset(source, fields, model.head, target_columns, batch_size=1, seed=0, rank=0, world=1,
                       train=False)
    n = 0
    try:
        for sample in source:
            n += 1
            try:
                ds.load(sample)
            except DataError as exc:
                errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - a component's own failure, located here
                errors.append(f"{sample.shard} row {sample.where}: {type(exc).__name__}: {exc}")
            if len(errors) >= limit:
                break
    except DataError as exc:
        errors.append(str(exc))
    return n


# ------------------------------------------------------------------------------------------ fitting
class StreamValues(Sequence[Any]):
    """A streamed split's values for ``fit``: read in one pass per iteration, never all in memory.

    ``values[i]`` works but reads from the start: encoders should iterate."""

    def __init__(self, source: Source, get: Any) -> None:
        self.source, self.get = source, get  # get(sample) -> value, or a _SKIP for absent
        self._len: int | None = None

    def __iter__(self) -> Iterator[Any]:
        for sample in self.source:
            value = self.get(sample)
            if value is not _SKIP:
                yield value

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        for j, value in enumerate(self):
            if j == i:
                return value
        raise IndexError(i)


_SKIP = object()


def field_values(source: Source, fld: Field) -> StreamValues:
    """The present values of ``fld`` over a streamed split (loaded by its modality), for ``fit``."""
    from mmkit._internal.data import load_field

    def get(sample: Sample) -> Any:
        if fld.is_absent(fld.cell(sample.row)):
            return _SKIP
        return load_field(fld, sample.row, source.base_dir, sample.shard, sample.index, sample.where)

    return StreamValues(source, get)


def target_values(source: Source, columns: Mapping[str, str]) -> StreamValues:
    return StreamValues(source, lambda s: {f: s.row.get(c) for f, c in columns.items()})


__all__ = ["BadSamples", "StreamBatches", "StreamDataset", "StreamError", "StreamValues", "batches_of",
           "check_stream", "field_values", "rank_segments", "shard_order", "stream_loader", "target_values"]
