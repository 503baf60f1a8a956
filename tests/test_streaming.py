"""Streamed splits: WebDataset tar shards and Parquet files, sharded over ranks and DataLoader workers
(each sample once per epoch), seeded, resumable mid-epoch bitwise, and clear errors for bad shards."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from mmkit._internal.assembly import assemble, load_splits, make_fields, plan_data
from mmkit._internal.callbacks import Callback
from mmkit._internal.cli import cli as cli_main
from mmkit._internal.errors import DataError
from mmkit._internal.recipe import load_recipe
from mmkit._internal.registry import get_registry
from mmkit._internal.shards import open_source
from mmkit._internal.streaming import StreamDataset, batches_of, rank_segments, shard_order, stream_loader
from mmkit._internal.trainer import Trainer, train

RECIPE = """
[run]
name = "s"
output_dir = "{out}"
seed = 3

[data]
train = "{train}"
columns = {{ image = "{image}", text = "claim", label = "label" }}
shuffle_buffer = {buffer}

[model.encoders.image]
type = "timm"
model = "test_resnet"

[model.encoders.text]
type = "text-transformer"
dim = 16
layers = 1
heads = 2
dropout = 0.0

[model.fusion]
type = "concat"
dim = 16
dropout = 0.0

[model.head]
type = "classification"

[train]
max_steps = 6
batch_size = 5
num_workers = {workers}
eval_every = 0
"""


def _export(tmp: Path, fmt: str, n: int, shard_size: int) -> Path:
    out = tmp / fmt
    args = ["data", "export", "shapes", "--split-sizes", f"{n},0,0", "-o", "image_size=32", "--seed", "1",
            "--format", fmt, "--shard-size", str(shard_size), "--out", str(out)]
    done = CliRunner().invoke(cli_main, args)
    assert done.exit_code == 0, done.output
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("shards")
    return {"webdataset": _export(tmp, "webdataset", 46, 10), "parquet": _export(tmp, "parquet", 46, 10),
            "tmp": tmp}


def _pattern(folder: Path, fmt: str) -> str:
    return str(folder / ("train-{000000..000004}.tar" if fmt == "webdataset" else "*.parquet"))


def _recipe(tmp: Path, train_spec: str, *, workers: int = 0, buffer: int = 0, name: str = "r") -> Path:
    path = tmp / f"{name}.toml"
    image = "image" if "parquet" in train_spec else "png"
    path.write_text(RECIPE.format(out=(tmp / "runs").as_posix(), train=train_spec, workers=workers, buffer=buffer,
                                  image=image), encoding="utf-8")
    return path


def _dataset(recipe_path: Path, rank: int, world: int, **kw: Any) -> StreamDataset:
    recipe = load_recipe(recipe_path)
    registry = get_registry()
    plan = plan_data(recipe, load_splits(recipe, registry))
    model = assemble(recipe, registry, plan)
    fields = make_fields(model, plan, registry)
    return StreamDataset(plan.stream("train"), fields, model.head, plan.target_columns, batch_size=5, seed=3,
                         rank=rank, world=world, train=True, **kw)


def _epoch(ds: StreamDataset, epoch: int, workers: int, skip: int = 0) -> list[list[int]]:
    ds.set_epoch(epoch, skip)
    return [batch.index.tolist() for batch, _ in batches_of(stream_loader(ds, workers, torch.device("cpu")))]


# ------------------------------------------------------------------------------------------ the plan
def test_rank_segments_cover_every_sample_once_and_pad_equally() -> None:
    counts = [7, 3, 10, 4]
    order = shard_order(4, seed=1, epoch=0, shuffle=True)
    seen: Counter[tuple[int, int]] = Counter()
    sizes = []
    for rank in range(3):
        pieces = rank_segments(counts, order, rank, 3, pad=True)
        sizes.append(sum(hi - lo for _, lo, hi in pieces))
        seen.update((s, i) for s, lo, hi in pieces for i in range(lo, hi))
    assert sizes == [8, 8, 8]  # 24 samples / 3 ranks
    assert set(seen) == {(s, i) for s in range(4) for i in range(counts[s])} and max(seen.values()) == 1
    uneven = [rank_segments([5, 6], [1, 0], r, 4, pad=True) for r in range(4)]
    assert [sum(hi - lo for _, lo, hi in p) for p in uneven] == [3, 3, 3, 3]  # 11 -> 12: one sample repeats
    assert shard_order(8, 1, 0, True) == shard_order(8, 1, 0, True) != shard_order(8, 1, 1, True)


# ------------------------------------------------------------------------------------------ datasets
@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_two_ranks_two_workers_see_every_sample_once_per_epoch(shards: dict[str, Path], fmt: str) -> None:
    tmp = shards["tmp"]
    recipe = _recipe(tmp, _pattern(shards[fmt], fmt), name=f"once-{fmt}")
    data = [_dataset(recipe, rank, 2) for rank in range(2)]
    assert data[0].source.total == 46 and [d.samples for d in data] == [23, 23]
    epochs = []
    for epoch in range(2):
        batches = [_epoch(d, epoch, workers=2) for d in data]
        assert [len(b) for b in batches] == [5, 5]  # equal batch counts: no rank waits for another
        seen = [i for rank in batches for b in rank for i in b]
        assert sorted(seen) == list(range(46))
        epochs.append(batches)
    assert epochs[0] != epochs[1], "the shard order changes with the epoch"
    # the rank's batch sequence does not depend on the number of workers
    assert _epoch(data[1], 1, workers=0) == _epoch(data[1], 1, workers=1) == epochs[1][1]


def test_shuffle_buffer_is_seeded_and_resume_skips_exactly(shards: dict[str, Path]) -> None:
    recipe = _recipe(shards["tmp"], _pattern(shards["webdataset"], "webdataset"), name="buffer")
    ds = _dataset(recipe, 0, 1, shuffle_buffer=8)
    full = _epoch(ds, 0, workers=2)
    assert sorted(i for b in full for i in b) == list(range(46))
    plain = _epoch(_dataset(recipe, 0, 1), 0, workers=0)
    assert full != plain and full == _epoch(ds, 0, workers=0)
    assert _epoch(ds, 0, workers=2, skip=4) == full[4:]
    assert _epoch(_dataset(recipe, 0, 1), 0, workers=2, skip=3) == plain[3:]


# ------------------------------------------------------------------------------------------ training
class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Any) -> None:
        if trainer.state.step == self.step:
            trainer.request_stop("test", interrupt=True)


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_resume_mid_epoch_is_bitwise_equal_to_an_uninterrupted_run(shards: dict[str, Path], fmt: str) -> None:
    tmp = shards["tmp"] / f"resume-{fmt}"
    tmp.mkdir()
    recipe = _recipe(tmp, _pattern(shards[fmt], fmt), workers=2, buffer=6 if fmt == "webdataset" else 0)
    whole = train(load_recipe(recipe, ["run.name=whole"]), quiet=True)
    cut = train(load_recipe(recipe, ["run.name=cut"]), quiet=True, callbacks=[_StopAt(3)])
    assert cut.interrupted
    state = json.loads((cut.run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert state["batch_in_epoch"] == 3 and state["data"]["stream"]["samples"] == 46
    resumed = train(load_recipe(recipe, ["run.name=cut"]), mode="resume", quiet=True)
    assert resumed.summary["steps"] == whole.summary["steps"] == 6  # 10 batches per epoch: still epoch 0
    a = load_file(str(whole.run_dir / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCRIPT = """
import json, os, sys
from mmkit._internal.recipe import load_recipe
from mmkit._internal.trainer import Trainer

class Recording(Trainer):
    seen = []
    def train_step(self, batch):
        self.seen.append(batch.index.tolist())
        return super().train_step(batch)

t = Recording(load_recipe(sys.argv[1]), quiet=True)
t.fit()
with open(sys.argv[2] + f".{os.environ['RANK']}", "w") as fh:
    json.dump(Recording.seen, fh)
"""


@pytest.mark.slow
def test_real_two_process_run_with_two_workers_each(shards: dict[str, Path]) -> None:
    tmp = shards["tmp"] / "ddp"
    tmp.mkdir()
    recipe = _recipe(tmp, _pattern(shards["webdataset"], "webdataset"), workers=2)
    text = recipe.read_text().replace("max_steps = 6", "max_steps = 0\nepochs = 1")
    recipe.write_text(text)
    script = tmp / "rec.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(_free_port()), str(script), str(recipe), str(tmp / "seen")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**_env(), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    per_rank = [json.loads((tmp / f"seen.{r}").read_text()) for r in range(2)]
    assert [len(b) for b in per_rank] == [5, 5]
    assert sorted(i for rank in per_rank for b in rank for i in b) == list(range(46))


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


# ------------------------------------------------------------------------------------------ bad input
def _copy(src: Path, dst: Path, cut: int | None = None) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dst.write_bytes(data if cut is None else data[:cut])


def _member_end(path: Path, index: int) -> tuple[int, int]:
    with tarfile.open(path) as tar:
        info = tar.getmembers()[index]
    return info.offset_data, info.offset_data + ((info.size + 511) // 512) * 512


def test_truncated_shards_are_named(shards: dict[str, Path], tmp_path: Path) -> None:
    src = shards["webdataset"] / "train-000001.tar"
    start, end = _member_end(src, 5)
    _copy(src, tmp_path / "mid" / "a.tar", cut=start + 100)  # inside member 5's data
    with pytest.raises(DataError, match=r"mid/a.tar: truncated inside member '000012.png'"):
        open_source(str(tmp_path / "mid" / "*.tar"), "r.toml: data.train")
    _copy(src, tmp_path / "edge" / "a.tar", cut=end)  # at a member boundary: only the end marker is missing
    with pytest.raises(DataError, match=r"edge/a.tar: truncated after 3 sample\(s\)"):
        open_source(str(tmp_path / "edge" / "a.tar"), "r.toml: data.train")


def test_patterns_that_match_nothing(tmp_path: Path, shards: dict[str, Path]) -> None:
    with pytest.raises(DataError, match=r"r.toml: data.train: the pattern .* matches no files"):
        open_source(str(tmp_path / "x-{000000..000003}.tar"), "r.toml: data.train")
    with pytest.raises(DataError, match=r"2 of the 7 shards .* are missing, e.g. .*train-000005.tar"):
        open_source(str(shards["webdataset"] / "train-{000000..000006}.tar"), "r.toml: data.train")
    with pytest.raises(DataError, match=r"matches no files"):
        open_source(str(tmp_path / "*.parquet"), "r.toml: data.train")


def _tar(path: Path, samples: list[dict[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, sample in enumerate(samples):
            for ext, data in sample.items():
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_a_sample_missing_a_modality_file(shards: dict[str, Path], tmp_path: Path) -> None:
    good = open_source(str(shards["webdataset"] / "train-000000.tar"), "w")
    with tarfile.open(good.shards[0]) as tar:
        png = tar.extractfile("000000.png").read()  # type: ignore[union-attr]
    metas = [json.dumps({"claim": "a red circle", "label": i % 2}).encode() for i in range(6)]
    samples = [{"png": png, "json": meta} for meta in metas]
    samples[4] = {"json": metas[4]}  # no image member
    _tar(tmp_path / "bad" / "t-000000.tar", samples)
    recipe = _recipe(tmp_path, str(tmp_path / "bad" / "t-000000.tar"), name="missing")
    ds = _dataset(recipe, 0, 1)
    with pytest.raises(DataError, match=r"t-000000.tar row 5 \(key 000004\): no 'png' in this sample \(it has "
                                         r"claim, json, label\)"):
        _epoch(ds, 0, workers=2)
    skipping = _dataset(recipe, 0, 1, skip_bad=True)
    skipping.set_epoch(0)
    out = list(batches_of(stream_loader(skipping, 0, torch.device("cpu"))))
    assert [b.size for b, _ in out] == [4, 1] and sum(bad.count for _, bad in out) == 1
    assert "key 000004" in out[0][1].first[0]


def test_parquet_columns_of_the_wrong_type(shards: dict[str, Path], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    folder.mkdir()
    table = pq.read_table(shards["parquet"] / "train-000000.parquet")
    pq.write_table(table, folder / "a-0.parquet")
    labels = pa.array([str(v) for v in table.column("label").to_pylist()])
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", labels), folder / "a-1.parquet")
    with pytest.raises(DataError, match=r"a-1.parquet: column 'label' is string, but it is int64 in .*a-0.parquet"):
        open_source(str(folder), "r.toml: data.train")
    (folder / "a-1.parquet").unlink()
    images = pa.array(list(range(table.num_rows)))
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", images), folder / "a-0.parquet")
    recipe = _recipe(tmp_path, str(folder), name="wrongtype")
    with pytest.raises(DataError, match=r"a-0.parquet row 1 column image: an image cell must be"):
        _dataset(recipe, 0, 1).make_batch(list(_dataset(recipe, 0, 1).raw(0))[:2])


def test_trainer_refuses_a_bad_first_batch_before_training(shards: dict[str, Path], tmp_path: Path) -> None:
    metas = [json.dumps({"claim": "x", "label": i % 2}).encode() for i in range(3)]
    _tar(tmp_path / "b" / "t.tar", [{"png": b"not an image", "json": meta} for meta in metas])
    recipe = _recipe(tmp_path, str(tmp_path / "b" / "t.tar"), name="badfirst")
    with pytest.raises(DataError, match=r"t.tar row 1 \(key 000000\) column png: cannot read image"):
        Trainer(load_recipe(recipe), quiet=True).fit()


def test_export_refuses_a_non_empty_folder_and_replaces_its_own(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    args = ["data", "export", "shapes", "--split-sizes", "6,0,0", "-o", "image_size=16", "--format", "webdataset",
            "--shard-size", "4", "--out", str(out)]
    done = CliRunner().invoke(cli_main, args)
    assert done.exit_code == 2 and "not an mmkit export" in done.output
    (out / "mine.txt").unlink()
    assert CliRunner().invoke(cli_main, args).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["train-000000.tar", "train-000001.tar"]
    again = CliRunner().invoke(cli_main, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert CliRunner().invoke(cli_main, [*args, "--overwrite"]).exit_code == 0
    assert open_source(str(out / "train-{000000..000001}.tar"), "x").counts == [4, 2]


@pytest.mark.slow
def test_a_bad_sample_on_one_rank_ends_the_two_process_run_with_its_message(shards: dict[str, Path]) -> None:
    tmp = shards["tmp"] / "ddp-bad"
    src = shards["webdataset"]
    for i in range(4):
        _copy(src / f"train-{i:06d}.tar", tmp / f"train-{i:06d}.tar")
    with tarfile.open(src / "train-000004.tar") as old, tarfile.open(tmp / "train-000004.tar", "w") as new:
        for member in old.getmembers():
            if member.name != "000043.png":  # in one rank's part only
                new.addfile(member, old.extractfile(member))
    recipe = _recipe(tmp, str(tmp / "train-{000000..000004}.tar"), workers=2)
    cmd = [sys.executable, "-m", "mmkit", "run", str(recipe), "--nproc", "2", "--master-port", str(_free_port()),
           "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**_env(), "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert "error: " in done.stderr and "train-000004.tar row 4 (key 000043): no 'png' in this sample" in done.stderr


def test_what_streams(tmp_path: Path, shards: dict[str, Path]) -> None:
    from mmkit._internal.shards import is_stream

    one = str(shards["parquet"] / "train-000000.parquet")
    assert is_stream("s/train-{0..3}.tar") and is_stream("p/*.parquet") and is_stream("a.tar")
    assert is_stream(str(shards["parquet"])) and not is_stream("train.jsonl")
    assert not is_stream(one) and is_stream(one, True) and not is_stream("a.tar", False)
    odd = tmp_path / "rows[1].jsonl"
    odd.write_text("{}\n")
    assert not is_stream(str(odd)) and is_stream(str(tmp_path / "rows[12].jsonl"))  # a file, or a glob
    recipe = _recipe(tmp_path, one, name="single")
    plan = plan_data(load_recipe(recipe), load_splits(load_recipe(recipe), get_registry()))
    assert plan.stream("train") is None and len(plan.rows("train")) == 10  # stream = "auto": in memory
    rec = load_recipe(recipe, ["data.stream=true"])
    assert plan_data(rec, load_splits(rec, get_registry())).stream("train").total == 10


def test_resume_refuses_shards_that_changed(shards: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "own"
    for i in range(5):
        _copy(shards["webdataset"] / f"train-{i:06d}.tar", folder / f"train-{i:06d}.tar")
    recipe = _recipe(tmp_path, str(folder / "train-{000000..000004}.tar"))
    assert train(load_recipe(recipe), quiet=True, callbacks=[_StopAt(2)]).interrupted
    with tarfile.open(shards["webdataset"] / "train-000004.tar") as old, \
            tarfile.open(folder / "train-000004.tar", "w") as new:
        for member in old.getmembers()[:-2]:  # the last sample (its .json and .png) is gone
            new.addfile(member, old.extractfile(member))
    with pytest.raises(DataError, match=r"trained on 46 samples in 5 shards, the shards now hold 45 in 5"):
        train(load_recipe(recipe), mode="resume", quiet=True)


def _missing_png_shard(shards: dict[str, Path], folder: Path) -> Path:
    """A copy of the first shard (10 samples) whose sample 000004 has no image member."""
    with tarfile.open(shards["webdataset"] / "train-000000.tar") as old, tarfile.open(folder / "t.tar", "w") as new:
        for member in old.getmembers():
            if member.name != "000004.png":
                new.addfile(member, old.extractfile(member))
    return folder / "t.tar"


def test_skip_bad_rows_trains_and_counts_and_check_lists_the_sample(shards: dict[str, Path], tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, str(_missing_png_shard(shards, tmp_path)), name="skip")
    done = CliRunner().invoke(cli_main, ["check", str(recipe)])
    assert done.exit_code == 2 and "t.tar row 5 (key 000004): no 'png' in this sample" in done.output
    result = train(load_recipe(recipe, ["data.skip_bad_rows=true", "train.max_steps=4"]), quiet=True)
    state = json.loads((result.run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert result.summary["steps"] == 4 and state["data"]["stream"]["skipped"] == 2  # once in each of 2 epochs
    assert result.summary["samples_seen"] == 4 * 5 - 2


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_counting_reads_long_names_and_pax_headers_like_tarfile(tmp_path: Path, fmt: int) -> None:
    from mmkit._internal.shards import count_tar

    path = tmp_path / "x.tar"
    deep = "d" * 60 + "/" + "e" * 60  # over 100 characters: a ustar prefix, a GNU long name or a PAX path
    with tarfile.open(path, "w", format=fmt) as tar:
        for i in range(7):
            for ext in ("txt", "bin"):
                info = tarfile.TarInfo(f"{deep}/{i:06d}.{ext}")
                data = b"x" * (i * 300)
                info.size, info.mtime = len(data), 1.5  # a float mtime: PAX writes a header per member
                tar.addfile(info, io.BytesIO(data))
    assert count_tar(path) == 7
    src = open_source(str(path), "x")
    assert [s.key for s in src] == [f"{deep}/{i:06d}" for i in range(7)]
    path.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(DataError, match=r"x.tar: not a tar shard, or corrupt at byte 0"):
        count_tar(path)
