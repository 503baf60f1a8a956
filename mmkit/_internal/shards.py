"""Streamed data sources: WebDataset tar shards and Parquet files, read sample by sample.

A split is *streamed* (never held in memory as a list of rows) when ``[data] train/val/test`` is a
shard pattern: a brace pattern (``shards/train-{000000..000031}.tar``), a glob (``parts/*.parquet``),
a ``.tar`` file or a folder of ``.parquet``/``.tar`` files; a single ``.parquet`` file streams only
with ``[data] stream = true``. :func:`open_source` expands the pattern and counts each shard's
samples up front (tar headers, Parquet metadata), so every rank knows the epoch's length before
training, and a pattern matching nothing, a missing shard, a truncated tar or Parquet files whose
columns disagree in type fail at once, with the same message on every rank.

A sample of a tar shard is the group of members sharing a key (``000042.png``, ``000042.json``): its
row has one column per extension (``png``: the bytes, ``txt``: text, ``cls``: an integer) and the
fields of its ``.json`` member as columns of their own. A member of zero bytes is an absent value.
Parquet rows are read in row groups. Nothing here imports torch.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmkit._internal.datasets import DataSplits
from mmkit._internal.errors import DataError

TAR_SUFFIXES = (".tar",)
PARQUET_SUFFIXES = (".parquet", ".pq")
_BRACE = re.compile(r"\{[^{}]*\}")
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: members it never reads
_TEXT_EXT = {"txt", "text", "caption"}
_INT_EXT = {"cls", "cls2", "index", "label"}


def is_stream(spec: str | None, stream: bool | str = "auto") -> bool:
    """Whether ``[data] train/val/test`` names a streamed source (see the module docstring)."""
    if not spec or stream is False:
        return False
    text = str(spec)
    if stream is True:
        return True
    if os.path.isfile(text):  # an existing file is what it names, even with [ or { in its name
        return text.lower().endswith(TAR_SUFFIXES)
    if _BRACE.search(text) or any(c in text for c in "*?["):
        return True
    if text.lower().endswith(TAR_SUFFIXES):
        return True
    return os.path.isdir(text)


def expand(spec: str, where: str) -> list[Path]:
    """The shard files of a pattern, in order; every brace-expanded name must exist, a glob or a folder
    must match at least one shard (DataError naming ``where``, e.g. ``recipe.toml: data.train``)."""
    text = os.path.expanduser(spec)
    if os.path.isdir(text):
        found = sorted(p for p in Path(text).iterdir() if p.suffix.lower() in TAR_SUFFIXES + PARQUET_SUFFIXES)
        if not found:
            raise DataError(f"{where}: folder {text} holds no .tar or .parquet shards")
        return found
    names: list[str] = []
    if _BRACE.search(text):
        import braceexpand

        names = list(braceexpand.braceexpand(text))
        missing = [n for n in names if not any(c in n for c in "*?[") and not os.path.isfile(n)]
        if len(missing) == len(names):
            raise DataError(f"{where}: the pattern {spec!r} matches no files (first expected: {missing[0]})")
        if missing:
            raise DataError(f"{where}: {len(missing)} of the {len(names)} shards of {spec!r} are missing, "
                            f"e.g. {', '.join(missing[:3])}")
    else:
        names = [text]
    files: list[Path] = []
    for name in names:
        if any(c in name for c in "*?["):
            files += [Path(p) for p in sorted(glob.glob(name)) if os.path.isfile(p)]
        elif os.path.isfile(name):
            files.append(Path(name))
    if not files:
        raise DataError(f"{where}: the pattern {spec!r} matches no files")
    kinds = {_kind(p) for p in files}
    if len(kinds) != 1 or None in kinds:
        raise DataError(f"{where}: {spec!r} must match only .tar shards or only .parquet files, got "
                        f"{', '.join(sorted({p.suffix or p.name for p in files}))}")
    return files


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "tar" if suffix in TAR_SUFFIXES else "parquet" if suffix in PARQUET_SUFFIXES else None


# ------------------------------------------------------------------------------------------ sources
@dataclass
class Sample:
    """One raw sample: its row (column -> undecoded cell), where it lives, and its global index."""

    index: int
    row: dict[str, Any]
    shard: str
    key: str
    number: int  # 1-based position inside its shard

    @property
    def where(self) -> str:
        """The row as data errors show it after ``SHARD row``: ``N (key K)``, or ``N`` when the key is
        the row number (Parquet)."""
        return str(self.number) if self.key == str(self.number) else f"{self.number} (key {self.key})"


class Source:
    """Shards with known sample counts; :meth:`read` yields the samples of one shard from ``start``."""

    kind = ""

    def __init__(self, spec: str, shards: Sequence[Path], counts: Sequence[int]) -> None:
        self.spec = spec
        self.shards = [str(p) for p in shards]
        self.counts = list(counts)
        self.offsets = [sum(self.counts[:i]) for i in range(len(self.counts))]
        self.total = sum(self.counts)
        self.base_dir = Path(self.shards[0]).resolve().parent if self.shards else None

    def read(self, shard: int, start: int = 0) -> Iterator[Sample]:  # pragma: no cover - abstract
        raise NotImplementedError

    def peek(self, n: int = 8) -> list[dict[str, Any]]:
        """The first ``n`` rows (to check that the columns a recipe names exist)."""
        rows: list[dict[str, Any]] = []
        for i in range(len(self.shards)):
            for sample in self.read(i):
                rows.append(sample.row)
                if len(rows) >= n:
                    return rows
        return rows

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self.shards)):
            yield from self.read(i)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "shards": len(self.shards), "samples": self.total}


# ------------------------------------------------------------------------------------------ tar
def count_tar(path: Path) -> int:
    """Samples (distinct keys) of a tar shard, from its headers alone (member data is seeked over).

    A shard that ends inside a member, or without tar's end-of-archive blocks (cut at a member
    boundary), is a DataError naming it: it was truncated; so is a header whose checksum is wrong."""
    keys: list[str] = []
    try:
        with path.open("rb") as fh:
            for name in _tar_members(fh, path.stat().st_size, path, keys):
                if _META.match(name):  # skipped by webdataset's reader too
                    continue
                key = _split_name(name)[0]
                if key and (not keys or keys[-1] != key):
                    keys.append(key)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the shard: {exc.strerror or exc}") from None
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise DataError(f"{path}: key {dup!r} appears in two places; a sample's members must be adjacent")
    return len(keys)


def _tar_members(fh: Any, size: int, path: Path, keys: list[str]) -> Iterator[str]:
    """The names of a tar's regular members, reading only their 512-byte headers (ustar, GNU long
    names, PAX ``path`` records); ``keys`` (filled by the caller) only words the errors.

    Python's ``tarfile`` parses a header ~10x slower, which a 100,000-sample split pays at every start."""
    pos, long_name = 0, None
    while True:
        fh.seek(pos)
        header = fh.read(512)
        if len(header) < 512 or (header == _ZERO and fh.read(512) != _ZERO):
            raise DataError(f"{path}: truncated after {len(keys)} sample(s): no end-of-archive marker after the "
                            f"last member (re-create the shard)")
        if header == _ZERO:
            return
        length = _header_size(header, path, pos)
        kind, start = header[156:157], pos + 512
        name = _header_name(header)
        if start + length > size:
            raise DataError(f"{path}: truncated inside member {long_name or name!r} (the shard is {size} bytes; "
                            f"the member needs {start + length})")
        pos = start + (length + 511) // 512 * 512
        if kind in (b"L", b"x", b"X"):  # the next member's long name
            fh.seek(start)
            data = fh.read(length)
            long_name = data.rstrip(b"\0").decode("utf-8", "replace") if kind == b"L" else _pax_path(data)
            continue
        if kind in (b"0", b"\0", b"7"):
            yield long_name or name
        long_name = None


_ZERO = bytes(512)


def _header_size(header: bytes, path: Path, pos: int) -> int:
    """A header's member size, once its checksum is right (else a DataError: not tar, or corrupt)."""
    try:
        if int(header[148:156].strip(b" \0") or b"0", 8) == sum(header[:148]) + 256 + sum(header[156:]):
            raw = header[124:136]
            return int.from_bytes(raw[1:], "big") if raw[0] & 0x80 else int(raw.strip(b" \0") or b"0", 8)
    except ValueError:
        pass
    raise DataError(f"{path}: not a tar shard, or corrupt at byte {pos} (a header's checksum is wrong)")


def _header_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
    return (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a PAX extended header (``"LEN path=NAME\\n"`` records), if any."""
    try:
        while data.strip(b"\0"):
            length = int(data.split(b" ", 1)[0])
            record, data = data[:length], data[length:]
            key, _, value = record.split(b" ", 1)[1].partition(b"=")
            if key == b"path":
                return value[:-1].decode("utf-8", "replace")
    except (ValueError, IndexError):
        pass
    return None


def _split_name(name: str) -> tuple[str, str]:
    """``dir/000042.image.png`` -> (``dir/000042``, ``image.png``): WebDataset's key/extension rule."""
    from webdataset.tariterators import base_plus_ext

    key, ext = base_plus_ext(name)
    return (key or "", (ext or "").lower())


def decode_member(ext: str, data: bytes) -> Any:
    """A member's cell: text for ``txt``, an int for ``cls``, parsed JSON for ``json``, bytes otherwise
    (image/audio bytes are decoded by their modality, in the DataLoader workers); empty -> None."""
    if not data:
        return None
    last = ext.rsplit(".", 1)[-1]
    if last in _TEXT_EXT:
        return data.decode("utf-8")
    if last in _INT_EXT:
        return int(data.decode("ascii").strip())
    if last == "json":
        return json.loads(data.decode("utf-8"))
    return data


class TarSource(Source):
    """WebDataset tar shards, read with the ``webdataset`` library's tar iterator."""

    kind = "webdataset"

    def read(self, shard: int, start: int = 0) -> Iterator[Sample]:
        from webdataset.tariterators import group_by_keys, tar_file_iterator

        path = self.shards[shard]
        number = 0
        try:
            with open(path, "rb") as fh:
                for group in group_by_keys(self._members(tar_file_iterator(fh), path)):
                    number += 1
                    if number <= start:
                        continue
                    key = str(group.pop("__key__"))
                    yield Sample(self.offsets[shard] + number - 1, self._row(group, path, number, key), path, key,
                                 number)
        except DataError:
            raise
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read sample {number + 1}: {_tar_message(exc)}; the shard may be "
                            f"truncated") from None
        if number != self.counts[shard]:
            raise DataError(f"{path}: holds {number} samples, {self.counts[shard]} when training started; "
                            f"was the shard changed or truncated?")

    @staticmethod
    def _members(files: Iterator[dict[str, Any]], path: str) -> Iterator[dict[str, Any]]:
        for item in files:
            item["__url__"] = path
            yield item

    @staticmethod
    def _row(group: dict[str, Any], path: str, number: int, key: str) -> dict[str, Any]:
        group.pop("__url__", None)
        row: dict[str, Any] = {}
        for ext, data in group.items():
            if ext.startswith("__"):
                continue
            try:
                row[ext] = decode_member(ext, data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise DataError(f"{path} row {number} (key {key}) member {key}.{ext}: cannot decode: {exc}") from None
        extra = row.get("json")
        if isinstance(extra, dict):
            for name, value in extra.items():
                row.setdefault(str(name), value)
        return row


def _tar_message(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.split(" @ ")[0]


# ------------------------------------------------------------------------------------------ parquet
def _parquet(path: Path) -> Any:
    from mmkit._internal.manifest import open_parquet

    return open_parquet(path, "streaming", "stream")


class ParquetSource(Source):
    """Parquet files read one row group at a time; all files must agree on each column's type."""

    kind = "parquet"

    def __init__(self, spec: str, shards: Sequence[Path], counts: Sequence[int], schema: Mapping[str, str]) -> None:
        super().__init__(spec, shards, counts)
        self.schema = dict(schema)

    def read(self, shard: int, start: int = 0) -> Iterator[Sample]:
        path = self.shards[shard]
        pf = _parquet(Path(path))
        meta = pf.metadata
        first = 0
        for group in range(meta.num_row_groups):
            rows_in = meta.row_group(group).num_rows
            if first + rows_in <= start:  # whole row groups before the start are never read
                first += rows_in
                continue
            try:
                table = pf.read_row_group(group)
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"{path}: cannot read row group {group} (rows {first + 1}-{first + rows_in}): "
                                f"{exc}") from None
            for i, row in enumerate(table.to_pylist()):
                number = first + i + 1
                if number > start:
                    yield Sample(self.offsets[shard] + number - 1, row, path, str(number), number)
            first += rows_in


def _parquet_counts(files: Sequence[Path]) -> tuple[list[int], dict[str, str]]:
    """Rows per file and the column types; a column whose type differs between files is a DataError
    naming both files."""
    counts: list[int] = []
    schema: dict[str, str] = {}
    origin: dict[str, Path] = {}
    for path in files:
        pf = _parquet(path)
        counts.append(int(pf.metadata.num_rows))
        for fld in pf.schema_arrow:
            kind = str(fld.type)
            if fld.name in schema and schema[fld.name] != kind:
                raise DataError(f"{path}: column {fld.name!r} is {kind}, but it is {schema[fld.name]} in "
                                f"{origin[fld.name]}; every file of a split must use one type per column")
            schema.setdefault(fld.name, kind)
            origin.setdefault(fld.name, path)
    return counts, schema


def open_source(spec: str, where: str) -> Source:
    """Expand ``spec`` and count its samples; DataError (naming ``where`` and the shard) on bad input."""
    files = expand(spec, where)
    if _kind(files[0]) == "tar":
        counts = [count_tar(p) for p in files]
        source: Source = TarSource(spec, files, counts)
    else:
        counts, schema = _parquet_counts(files)
        source = ParquetSource(spec, files, counts, schema)
    if source.total == 0:
        raise DataError(f"{where}: {spec!r} holds no samples ({len(files)} empty shard(s))")
    return source




# ------------------------------------------------------------------------------------------ splits
@dataclass
class StreamSplits(DataSplits):
    """:class:`~mmkit.DataSplits` whose streamed splits are :class:`Source` s (their row
    lists stay empty); other splits are manifests read into memory as usual."""

    streams: dict[str, Source] = field(default_factory=dict)
    shuffle_buffer: int = 0
    skip_bad_rows: bool = False


def load_stream_splits(paths: Mapping[str, str | None], stream: bool | str, columns: Mapping[str, Any],
                       split_column: str | None, where: str, shuffle_buffer: int = 0,
                       skip_bad_rows: bool = False) -> DataSplits:
    """The splits of ``[data]``: streamed ones opened (counted), the others read by
    :func:`mmkit._internal.manifest.load_manifest_splits`; ``paths`` are absolute."""
    from mmkit._internal.manifest import load_manifest_splits

    streamed = {s: p for s, p in paths.items() if p and is_stream(p, stream)}
    if not streamed:
        return load_manifest_splits(**paths, split_column=split_column, columns=columns)
    if split_column is not None:
        raise DataError(f"{where}: split_column does not work with streamed splits; give train/val/test "
                        f"shard patterns")
    others = {s: p for s, p in paths.items() if p and s not in streamed}
    plain = load_manifest_splits(**others, columns=columns) if others else DataSplits({})
    sources = {s: open_source(p, f"{where}.{s}") for s, p in streamed.items()}
    first = sources.get("train") or next(iter(sources.values()))
    return StreamSplits({**plain.splits, **{s: [] for s in sources}}, columns=dict(columns or {}),
                        base_dir=plain.base_dir if "train" in others else first.base_dir,
                        name=first.spec if "train" in sources else plain.name,
                        files={**plain.files, **{s: src.spec for s, src in sources.items()}}, streams=sources,
                        shuffle_buffer=shuffle_buffer, skip_bad_rows=skip_bad_rows)


def streams_of(splits: Any) -> dict[str, Source]:
    """A split name -> :class:`Source` mapping of ``splits`` (empty for in-memory data)."""
    return dict(getattr(splits, "streams", None) or {})


__all__ = ["ParquetSource", "Sample", "Source", "StreamSplits", "TarSource", "count_tar", "decode_member", "expand",
           "is_stream", "load_stream_splits", "open_source", "streams_of"]
