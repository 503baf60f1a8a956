"""From rows to batches: loads cells through modalities, preprocesses through encoders and the head,
collates into :class:`~mmkit.Batch`. Knows nothing of images or tokenizers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from mmkit._internal.errors import DataError
from mmkit._internal.manifest import data_context, load_cell
from mmkit._internal.interfaces import Batch, Embedding, Encoder, Head
from mmkit._internal.modality import Modality


@dataclass
class Field:
    """An input field: its column(s), the modality that loads it and the encoder that preprocesses it."""

    name: str
    columns: str | list[str]
    modality: Modality
    encoder: Encoder

    def cell(self, row: Mapping[str, Any]) -> Any:
        if isinstance(self.columns, str):
            return row.get(self.columns)
        return {c: row.get(c) for c in self.columns}

    def is_absent(self, cell: Any) -> bool:
        if isinstance(self.columns, list):
            return all(self.modality.is_absent(v) for v in cell.values())
        return self.modality.is_absent(cell)

    def column_label(self) -> str:
        return self.columns if isinstance(self.columns, str) else ",".join(self.columns)


def load_field(fld: Field, row: Mapping[str, Any], base_dir: Path | None, source: str, index: int,
               label: int | str | None = None) -> Any:
    """The loaded raw value of a field for a row, or None when absent; errors name file/row/column
    (the row shown as ``label``, by default ``index + 1``)."""
    cell = fld.cell(row)
    if fld.is_absent(cell):
        return None
    return load_cell(fld.modality, cell, base_dir, source, index + 1 if label is None else label, fld.columns)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class MultimodalDataset(torch.utils.data.Dataset):
    """Rows -> ``(index, {field: item or None}, target or None)``.

    Training-time randomness (augmentation) is seeded per sample from ``(seed, epoch, index)``, so a
    sample is augmented the same way whatever worker or resume point handles it.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], fields: Sequence[Field], head: Head | None,
                 target_columns: Mapping[str, str] | None, *, base_dir: Path | None, source: str,
                 train: bool = False, seed: int = 0, cached: Sequence[str] = ()) -> None:
        self.rows = rows
        self.fields = list(fields)
        self.head = head
        self.target_columns = dict(target_columns or {})
        self.base_dir = base_dir
        self.source = source
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.cached = set(cached)

    def __len__(self) -> int:
        return len(self.rows)

    def field_item(self, fld: Field, row: Mapping[str, Any], index: int, source: str, label: int | str) -> Any:
        """One field's preprocessed item for a row (None when absent); a cache overrides this."""
        raw = load_field(fld, row, self.base_dir, source, index, label)
        if raw is None:
            return None
        return self.seeded(fld, index, source, label, lambda: fld.encoder.preprocess(raw, train=self.train))

    def seeded(self, fld: Field, index: int, source: str, label: int | str, fn: Callable[[], Any]) -> Any:
        """``fn()`` (a field's preprocessing) with errors naming ``source`` and row ``label``, under
        the sample's own torch seed when training preprocessing is random."""
        with data_context(source, label, fld.columns):
            if self.train and not fld.encoder.deterministic_train:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(_sample_seed(self.seed, self.epoch, index))
                    return fn()
            return fn()

    def raw_targets(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {f: row.get(c) for f, c in self.target_columns.items()}

    def __getitem__(self, index: int) -> tuple[int, dict[str, Any], Any]:
        return self.sample(self.rows[index], index, self.source, index + 1)

    def sample(self, row: Mapping[str, Any], index: int, source: str,
               label: int | str) -> tuple[int, dict[str, Any], Any]:
        """One row -> ``(index, items, target)``; errors name ``source`` and row ``label`` (a streamed
        sample's shard and key)."""
        items: dict[str, Any] = {}
        for fld in self.fields:
            if fld.name in self.cached:
                items[fld.name] = not fld.is_absent(fld.cell(row))
                continue
            items[fld.name] = self.field_item(fld, row, index, source, label)
        target = None
        if self.head is not None:
            raw_t = {f: row.get(c) for f, c in self.target_columns.items()}
            try:
                target = self.head.preprocess_target(raw_t)
            except DataError as exc:
                raise DataError(f"{source} row {label}: {exc}") from None
        return index, items, target


class EmbeddingCache:
    """Precomputed outputs of a frozen encoder for every row of a split (absent rows are zeros)."""

    def __init__(self, pooled: torch.Tensor, present: torch.Tensor, tokens: torch.Tensor | None,
                 token_mask: torch.Tensor | None) -> None:
        self.pooled, self.present, self.tokens, self.token_mask = pooled, present, tokens, token_mask

    def lookup(self, index: torch.Tensor) -> Embedding:
        return Embedding(self.pooled[index], self.present[index],
                         None if self.tokens is None else self.tokens[index],
                         None if self.token_mask is None else self.token_mask[index])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.pooled, self.tokens) if t is not None)


class Collator:
    """Collates ``(index, items, target)`` samples into a :class:`Batch`; present samples only are
    passed to each encoder's ``collate``; cached fields are looked up by row index."""

    def __init__(self, fields: Sequence[Field], head: Head | None, caches: Mapping[str, EmbeddingCache] | None = None):
        self.fields = list(fields)
        self.head = head
        self.caches = dict(caches or {})

    def __call__(self, samples: list[tuple[int, dict[str, Any], Any]]) -> Batch:
        index = torch.tensor([s[0] for s in samples], dtype=torch.long)
        inputs: dict[str, Any] = {}
        present: dict[str, torch.Tensor] = {}
        for fld in self.fields:
            if fld.name in self.caches:
                emb = self.caches[fld.name].lookup(index)
                inputs[fld.name] = emb
                present[fld.name] = emb.present
                continue
            items = [s[1][fld.name] for s in samples]
            mask = torch.tensor([it is not None for it in items], dtype=torch.bool)
            present[fld.name] = mask
            kept = [it for it in items if it is not None]
            inputs[fld.name] = fld.encoder.collate(kept) if kept else None
        targets = None
        if self.head is not None and samples and samples[0][2] is not None:
            targets = self.head.collate_targets([s[2] for s in samples])
        return Batch(inputs, present, targets, index)


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffled (or ordered) indices for one epoch, seeded by ``(seed, epoch)``, sharded across
    ``world`` ranks, starting after ``skip`` samples of this rank (to resume mid-epoch).

    With ``drop_last=False`` and sharding, the shards are padded by repeating indices so every rank
    has the same count (eval uses ``pad=False``: ranks then get unequal shards and nothing repeats).
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1,
                 pad: bool = True) -> None:
        self.n, self.shuffle, self.seed, self.rank, self.world, self.pad = n, shuffle, seed, rank, world, pad
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.world > 1:
            if self.pad and self.n % self.world:
                order += order[: self.world - self.n % self.world]
            order = order[self.rank :: self.world]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self.skip)
