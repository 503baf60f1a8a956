"""The decoded-sample cache (``train.data_cache``) on a manifest of PNG files: cached epochs feed the
model exactly the tensors uncached ones do (with and without augmentation), resuming is unchanged,
the memory budget spills to a memory-mapped file that nothing leaves behind, loader workers prefill."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmkit import Callback
from mmkit._internal import sample_cache as SC
from mmkit._internal.recipe import load_recipe
from mmkit._internal.trainer import Trainer, train

RECIPE = """
[run]
name = "{name}"
output_dir = "runs"
seed = 1
[data]
train = "train.csv"
val = "val.csv"
[model.encoders.image]
type = "timm"
model = "test_resnet"
augment = "{augment}"
{size}
[model.encoders.text]
type = "text-transformer"
dim = 16
layers = 1
heads = 2
[model.fusion]
type = "concat"
dim = 16
[model.head]
type = "classification"
[train]
epochs = 3
batch_size = 8
data_cache = "{cache}"
num_workers = {workers}
threads = 1
"""


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 training and 8 validation PNGs (32 px, noise tinted by the label) with a caption each."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("pngs")
    (folder / "img").mkdir()
    rng = np.random.default_rng(0)
    words = ["red", "blue", "green", "round", "square"]
    for split, n in (("train", 24), ("val", 8)):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["image", "text", "label"])
            for i in range(n):
                label = int(rng.integers(0, 3))
                pixels = rng.integers(0, 256, (32, 36, 3), dtype=np.uint8)
                pixels[..., label] //= 2
                Image.fromarray(pixels).save(folder / f"img/{split}{i}.png")
                out.writerow([f"img/{split}{i}.png", " ".join(rng.choice(words, 3)), f"c{label}"])
    return folder


def recipe_file(folder: Path, name: str, cache: str, augment: str = "none", workers: int = 0,
                size: int | None = None) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(RECIPE.format(name=name, cache=cache, augment=augment, workers=workers,
                                  size=f"image_size = {size}" if size else ""), encoding="utf-8")
    return path


def data_of(path: Path) -> Any:
    """The TrainData a Trainer builds for the recipe (model and loaders, no training)."""
    trainer = Trainer(load_recipe(path), mode="overwrite", quiet=True)
    trainer.setup_process()
    trainer.setup_run_dir()
    trainer.setup_model()
    trainer.setup_data()
    return trainer.data


def epochs(data: Any, n: int) -> list[Any]:
    """Every training batch of ``n`` epochs, as the loop draws them."""

    class State:
        epoch, batch_in_epoch = 0, 0

    out, it = [], data.batches(State)
    for epoch in range(n):
        State.epoch = epoch
        out += [next(it) for _ in range(data.batches_per_epoch)]
    return out


def same_batches(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.index, y.index) and torch.equal(x.targets, y.targets)
        assert torch.equal(x.inputs["image"], y.inputs["image"])  # bitwise
        assert all(torch.equal(x.inputs["text"][k], y.inputs["text"][k]) for k in ("ids", "mask"))


@pytest.mark.parametrize(("augment", "size"), [("none", None), ("none", 24), ("crop", 24)])
def test_cached_epochs_feed_the_same_tensors(manifest: Path, augment: str, size: int | None) -> None:
    plain = data_of(recipe_file(manifest, f"off-{augment}", "off", augment, size=size))
    cached = data_of(recipe_file(manifest, f"mem-{augment}", "memory", augment, size=size))
    same_batches(epochs(plain, 3), epochs(cached, 3))
    store = cached.stores["train"]
    assert store.summary()["rows"] == 24 and store.hits >= 48  # epochs 2 and 3 read the cache
    first = store.items[(0, "image")]
    kept = (32, 36) if augment != "none" or size is None else (size, size)  # augmentation runs after the cache
    assert first.dtype == torch.uint8 and tuple(first.shape) == (3, *kept)  # pixels kept as uint8


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "last" / "model.safetensors"))


class InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Any) -> None:
        if trainer.state.step >= self.step:
            trainer.request_stop("test interrupt", interrupt=True)


def test_training_and_resume_are_unchanged_by_the_cache(manifest: Path) -> None:
    off = train(load_recipe(recipe_file(manifest, "t-off", "off")), mode="overwrite", quiet=True)
    cached_path = recipe_file(manifest, "t-mem", "memory")
    first = train(load_recipe(cached_path), mode="overwrite", quiet=True, callbacks=[InterruptAt(4)])
    assert first.interrupted
    resumed = train(load_recipe(cached_path), mode="resume", quiet=True)
    assert resumed.summary["steps"] == off.summary["steps"] == 9
    assert resumed.summary["data_cache"]["train"]["mode"] == "memory"
    assert off.summary["data_cache"] == {}
    a, b = weights(off.run_dir), weights(resumed.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_memory_budget_from_meminfo_and_cgroup(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")
    assert SC.memory_budget(1, meminfo=meminfo, cgroup=tmp_path) == 4000000 * 1024 // 2
    assert SC.memory_budget(4, meminfo=meminfo, cgroup=tmp_path) == 4000000 * 1024 // 2 // 4
    (tmp_path / "memory.max").write_text("1000000\n")
    (tmp_path / "memory.current").write_text("400000\n")
    assert SC.memory_budget(1, meminfo=meminfo, cgroup=tmp_path) == 300000  # the cgroup's headroom is smaller
    (tmp_path / "memory.max").write_text("max\n")
    assert SC.memory_budget(1, meminfo=meminfo, cgroup=tmp_path) == 4000000 * 1024 // 2


def test_store_spills_past_the_budget_and_leaves_nothing(tmp_path: Path) -> None:
    items = [torch.randint(0, 255, (3, 8, 8 + i), dtype=torch.uint8) for i in range(5)]
    spill = tmp_path / "run" / ".sample-cache" / "train-rank0.bin"
    store = SC.SampleStore("auto", SC.Budget(2.5 * items[0].numel()), spill)
    for i, item in enumerate(items):
        store.put(i, "image", item)
    store.put(5, "image", None)  # an absent cell
    assert store.memory_bytes == items[0].numel() + items[1].numel()  # what fits the budget
    assert store.disk_bytes == sum(t.numel() for t in items[2:])  # the rest is on disk
    assert not spill.exists()  # unlinked while open: nothing left behind
    for i, item in enumerate(items):
        found, got = store.get(i, "image")
        assert found and torch.equal(got, item)
    assert store.get(5, "image") == (True, None) and store.get(6, "image") == (False, None)
    disk = SC.SampleStore("disk", SC.Budget(float("inf")), spill)
    disk.put(0, "image", items[0])
    assert disk.memory_bytes == 0 and torch.equal(disk.get(0, "image")[1], items[0])
    store.close()
    disk.close()


def test_auto_spills_to_disk_with_the_same_batches(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmkit._internal.loaders

    monkeypatch.setattr(mmkit._internal.loaders, "memory_budget", lambda local_world: 20_000)  # ~6 images of 3x32x36
    plain = data_of(recipe_file(manifest, "b-off", "off"))
    cached = data_of(recipe_file(manifest, "b-auto", "auto"))
    same_batches(epochs(plain, 2), epochs(cached, 2))
    info = cached.cache_summary()["train"]
    assert 0 < info["memory_mb"] < info["disk_mb"] and info["rows"] == 24


def test_loader_workers_prefill_the_cache(manifest: Path) -> None:
    plain = data_of(recipe_file(manifest, "w-off", "off"))
    cached = data_of(recipe_file(manifest, "w-mem", "memory", workers=1))
    assert cached.workers == 1 and cached.stores["train"].summary()["rows"] == 24  # before the first epoch
    same_batches(epochs(plain, 2), epochs(cached, 2))
