"""The thread policy (``train.threads``): usable cores from affinity and cgroup quotas (fake files),
division among local ranks and loader workers, the busy-machine back-off, and the run's record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmkit._internal import threads as T


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert T.cgroup_quota(tmp_path) == pytest.approx(1.5)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert T.cgroup_quota(tmp_path) is None


def test_cgroup_v1_quota_and_garbage(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("300000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert T.cgroup_quota(tmp_path) == pytest.approx(3.0)
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no limit"
    assert T.cgroup_quota(tmp_path) is None
    (cpu / "cpu.cfs_quota_us").write_text("lots\n")
    assert T.cgroup_quota(tmp_path) is None
    assert T.cgroup_quota(tmp_path / "nowhere") is None


def test_usable_cores_is_affinity_capped_by_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(T.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert T.usable_cores(tmp_path) == 8  # no cgroup files: affinity alone
    (tmp_path / "cpu.max").write_text("250000 100000")
    assert T.usable_cores(tmp_path) == 3  # 2.5 cores of quota -> 3 threads can run
    (tmp_path / "cpu.max").write_text("50000 100000")
    assert T.usable_cores(tmp_path) == 1
    monkeypatch.setattr(T.os, "sched_getaffinity", lambda pid: {5})
    (tmp_path / "cpu.max").write_text("400000 100000")
    assert T.usable_cores(tmp_path) == 1


@pytest.mark.parametrize(("cores", "world", "workers", "expected"),
                         [(16, 1, 0, 16), (16, 4, 0, 4), (16, 4, 2, 2), (16, 8, 4, 1), (2, 1, 0, 2), (2, 2, 0, 1),
                          (1, 1, 3, 1)])
def test_share_divides_among_ranks_and_workers(cores: int, world: int, workers: int, expected: int) -> None:
    assert T.share(cores, world, workers) == expected


def test_choose_threads_without_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    choice = T.choose_threads("auto", workers=2, local_world=2, cores=16, probe=False)
    assert choice.threads == 6 and "2 local rank(s)" in choice.reason and "2 loader worker(s)" in choice.reason
    assert T.choose_threads(3, cores=16).threads == 3  # a number is taken as given
    assert T.choose_threads("auto", local_world=4, cores=4, probe=False).threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    capped = T.choose_threads("auto", local_world=1, cores=16, probe=False)
    assert capped.threads == 2 and "OMP_NUM_THREADS" in capped.reason


def test_backs_off_to_one_when_the_probe_finds_busy_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(T, "probe_speedup", lambda n, seconds=0.04: 0.6)  # extra threads made it slower
    busy = T.choose_threads("auto", local_world=1, cores=4)
    assert busy.threads == 1 and "backed off" in busy.reason and busy.probe_speedup == 0.6
    monkeypatch.setattr(T, "probe_speedup", lambda n, seconds=0.04: 3.1)
    quiet = T.choose_threads("auto", local_world=1, cores=4)
    assert quiet.threads == 4 and quiet.probe_speedup == 3.1


def test_probe_restores_torch_threads() -> None:
    import torch

    before = torch.get_num_threads()
    speedup = T.probe_speedup(2, seconds=0.01)
    assert speedup > 0 and torch.get_num_threads() == before


def test_run_header_and_summary_record_the_choice(tmp_path: Path, write_tiny_recipe,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from mmkit._internal.recipe import load_recipe
    from mmkit._internal.trainer import train

    recipe = write_tiny_recipe(tmp_path / "t.toml", "train.max_steps=1", "train.threads=1", "data.options.n_val=0",
                               "data.options.n_test=0", "train.data_cache='off'")
    result = train(load_recipe(recipe))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["threads"]["threads"] == 1 and summary["threads"]["setting"] == "1"
    err = capsys.readouterr().err
    assert "threads: 1 intra-op" in err and "data cache: off" in err


def test_threads_key_is_validated(tmp_path: Path, write_tiny_recipe) -> None:
    from mmkit._internal.errors import RecipeError
    from mmkit._internal.recipe import load_recipe

    with pytest.raises(RecipeError, match="train.threads"):
        load_recipe(write_tiny_recipe(tmp_path / "t.toml", "train.threads=0"))
    with pytest.raises(RecipeError, match="data_cache"):
        load_recipe(write_tiny_recipe(tmp_path / "u.toml", "train.data_cache='ram'"))
